//! A table's new rows as an ordered event feed that every replica reads from PostgreSQL
//! (`predictionLogged`, `driftAlert`): whichever replica wrote a row, subscribers on every
//! replica receive it, once, in one order, and a subscriber can resume from a row it saw.
//!
//! A row's [`Position`] is the id of the transaction that wrote it (an `xid8` column defaulting
//! to `pg_current_xact_id()`) and then its own id. The *horizon*,
//! `pg_snapshot_xmin(pg_current_snapshot())`, is the oldest transaction still running: every
//! transaction below it has finished and no new one can start below it, so the rows below the
//! horizon are final. Reading them in position order and moving the cursor to the horizon misses
//! no row and reads none twice, however the commits of several replicas interleave (a serial id
//! or a timestamp cursor cannot promise that: a row can commit after a later-numbered one was
//! read). The price: a write transaction held open delays every later event until it ends (it
//! holds the horizon back); it never loses one.
//!
//! Each replica runs one poller per feed on its own connection, every `EVENT_POLL_MS`, and fans
//! the rows out to its subscribers through an in-process broadcast; with no subscriber it only
//! moves its cursor. When the poller's connection drops it reconnects and goes on from its cursor:
//! nothing is skipped. A subscriber that falls behind the broadcast, or resumes from a position,
//! reads the rows it missed from the table in pages, then joins the broadcast again.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows read per statement, by the poller and by a catching-up subscriber.
pub const PAGE: usize = 500;
/// Events kept for a slow subscriber before it falls back to reading the table.
const CAPACITY: usize = 4_096;
/// Pause after a failed read before the next attempt.
const RETRY: Duration = Duration::from_secs(1);

/// Where a row is in a feed: the writing transaction, then the row's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// `xid8` of the transaction that wrote the row (as a number).
    pub xid: i64,
    /// The row's id (orders the rows of one transaction).
    pub id: Uuid,
}

impl Position {
    /// Before every row written by transaction `xid` or later.
    pub fn start_of(xid: i64) -> Self {
        Self { xid, id: Uuid::nil() }
    }
}

/// The oldest transaction still running: rows of transactions below it are final.
pub async fn horizon(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select pg_snapshot_xmin(pg_current_snapshot())::text::int8").fetch_one(conn).await
}

/// The table behind a feed.
pub trait Source: Send + Sync + 'static {
    /// One event (a row).
    type Item: Clone + Send + Sync + 'static;

    /// Up to `limit` rows positioned after `after` and written below `horizon`, in position order.
    fn page(
        &self,
        conn: &mut PgConnection,
        after: Position,
        horizon: i64,
        limit: usize,
    ) -> impl Future<Output = sqlx::Result<Vec<(Position, Self::Item)>>> + Send;
}

type Event<T> = Arc<(Position, T)>;

/// The broadcast and the position of the last event sent on it (or the horizon the cursor moved
/// to), under one lock: a subscriber learns exactly which events it will receive.
struct Outlet<T> {
    sender: broadcast::Sender<Event<T>>,
    position: Option<Position>,
}

/// A running feed: its poller's broadcast and where it stands.
pub struct Feed<S: Source> {
    name: &'static str,
    source: S,
    pool: PgPool,
    outlet: Mutex<Outlet<S::Item>>,
}

impl<S: Source> Feed<S> {
    /// Starts the poller of `source` (every `interval`, on its own connection named
    /// `house-price-api feed: <name>`), until `stop`. `pool` serves catching-up subscribers.
    pub fn spawn(
        name: &'static str,
        source: S,
        pool: PgPool,
        interval: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let feed = Arc::new(Self {
            name,
            source,
            pool,
            outlet: Mutex::new(Outlet { sender: broadcast::channel(CAPACITY).0, position: None }),
        });
        tokio::spawn(feed.clone().poll_until(interval, stop));
        feed
    }

    /// The events after `after` (or, without it, from now on), in position order. Memory stays
    /// bounded: a subscriber behind the broadcast reads the table a page at a time.
    pub fn subscribe(self: &Arc<Self>, after: Option<Position>) -> impl Stream<Item = S::Item> + Send + use<S> {
        let (rx, now) = {
            let outlet = self.outlet.lock().unwrap_or_else(PoisonError::into_inner);
            (outlet.sender.subscribe(), outlet.position)
        };
        let state = Subscriber {
            feed: self.clone(),
            rx,
            catching_up: after.is_some(),
            delivered: after.or(now),
            buffer: VecDeque::new(),
        };
        futures_util::stream::unfold(state, Subscriber::next)
    }

    async fn poll_until(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name(&format!("house-price-api feed: {}", self.name));
        let mut conn: Option<PgConnection> = None;
        let mut cursor: Option<Position> = None;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => break,
            }
            let result = match &mut conn {
                Some(conn) => self.poll(conn, &mut cursor).await,
                None => match PgConnection::connect_with(&options).await {
                    Ok(fresh) => {
                        conn = Some(fresh);
                        continue;
                    }
                    Err(err) => Err(err),
                },
            };
            if let Err(err) = result {
                // The cursor stays: the next poll, on a new connection, goes on from it.
                tracing::warn!(feed = self.name, error = %err, "event feed read failed; reconnecting");
                metrics::counter!("event_feed_errors_total", "feed" => self.name).increment(1);
                conn = None;
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }

    /// Publishes the rows between `cursor` and the horizon (or, with no subscriber, only moves
    /// `cursor` there).
    async fn poll(&self, conn: &mut PgConnection, cursor: &mut Option<Position>) -> sqlx::Result<()> {
        let horizon = horizon(conn).await?;
        let end = Position::start_of(horizon);
        let Some(mut at) = *cursor else {
            *cursor = Some(end);
            self.moved_to(end);
            return Ok(());
        };
        if self.receivers() > 0 {
            loop {
                let page = self.source.page(conn, at, horizon, PAGE).await?;
                let full = page.len() == PAGE;
                for (position, item) in page {
                    at = position;
                    *cursor = Some(at);
                    self.send(Arc::new((position, item)));
                }
                if !full {
                    break;
                }
            }
        }
        let end = at.max(end);
        *cursor = Some(end);
        self.moved_to(end);
        Ok(())
    }

    fn receivers(&self) -> usize {
        self.outlet.lock().unwrap_or_else(PoisonError::into_inner).sender.receiver_count()
    }

    fn send(&self, event: Event<S::Item>) {
        let mut outlet = self.outlet.lock().unwrap_or_else(PoisonError::into_inner);
        outlet.position = Some(event.0);
        let _ = outlet.sender.send(event);
    }

    fn moved_to(&self, position: Position) {
        self.outlet.lock().unwrap_or_else(PoisonError::into_inner).position = Some(position);
    }

    /// One page of the table after `after`, for a subscriber catching up.
    async fn read_after(&self, after: Position) -> sqlx::Result<Vec<(Position, S::Item)>> {
        let mut conn = self.pool.acquire().await?;
        let horizon = horizon(&mut conn).await?;
        self.source.page(&mut conn, after, horizon, PAGE).await
    }
}

/// One subscriber's state: live on the broadcast, or reading the table from `delivered`.
struct Subscriber<S: Source> {
    feed: Arc<Feed<S>>,
    rx: broadcast::Receiver<Event<S::Item>>,
    catching_up: bool,
    /// The last event delivered (or the position the subscription started at).
    delivered: Option<Position>,
    buffer: VecDeque<S::Item>,
}

impl<S: Source> Subscriber<S> {
    async fn next(mut self) -> Option<(S::Item, Self)> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                return Some((item, self));
            }
            if self.catching_up {
                let Some(after) = self.delivered else {
                    self.catching_up = false;
                    continue;
                };
                match self.feed.read_after(after).await {
                    Ok(page) => {
                        self.catching_up = page.len() == PAGE;
                        for (position, item) in page {
                            self.delivered = Some(position);
                            self.buffer.push_back(item);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(feed = self.feed.name, error = %err, "catching up from the table failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if self.delivered.is_some_and(|d| event.0 <= d) {
                        continue; // already read from the table
                    }
                    self.delivered = Some(event.0);
                    return Some((event.1.clone(), self));
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::info!(feed = self.feed.name, skipped, "subscriber fell behind; reading the table");
                    self.rx = self.rx.resubscribe();
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
