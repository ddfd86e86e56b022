//! The log writer's own connections, and the one insert every log row goes through.
//!
//! One connection per concurrent batch plus one for the drain, from the service pool's connect
//! options. Its own, so history and monitoring queries can never hold the connections commits
//! wait for; and without sqlx's ping before each acquire (a round trip per batch), because
//! [`Connections::insert`] already retries a statement that finds its connection dead.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use super::partitions::KnownDays;
use super::record::PredictionRecord;
use super::store;
use crate::db::DbFault;

/// A failed insert: the database's error, or the statement outlived its time budget.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// PostgreSQL (or the connection) refused the statement.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The statement did not finish in time (it may still commit later: inserts are idempotent).
    #[error("insert did not finish within {0:?}")]
    Timeout(Duration),
    /// Reading the spool for the drain failed.
    #[error("spool: {0}")]
    Spool(String),
}

impl InsertError {
    /// The rows, not the database, are at fault: retrying them fails again, and spooling them
    /// would block the spool.
    pub fn is_data_error(&self) -> bool {
        matches!(self, Self::Database(err) if DbFault::of(err) == DbFault::Data)
    }
}

/// The writer pool, with the connections of batches that succeeded kept checked out.
///
/// sqlx's pool pings every connection returned to it (a `Sync` round trip, which also wakes the
/// backend) and spawns a task to do so, so that a connection left mid-statement by a cancelled
/// future is clean or closed before anyone reuses it. A statement that completed leaves its
/// connection clean, so the writer keeps it for the next batch instead. A connection whose
/// statement failed or was cancelled (the failover timeout drops the future) is never kept: it
/// goes back to the pool, which resyncs or closes it.
pub struct Connections {
    pool: PgPool,
    kept: std::sync::Mutex<Vec<PoolConnection<Postgres>>>,
    /// Days whose `prediction_log` partition is known to exist.
    days: KnownDays,
}

impl Connections {
    /// A lazily connecting pool of `concurrency + 1` connections with `service`'s connect options.
    /// Call it inside the runtime the writer runs on: the pool's tasks belong to it.
    pub fn new(service: &PgPool, concurrency: usize, acquire_timeout: Duration) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(concurrency + 1).unwrap_or(u32::MAX))
            .test_before_acquire(false)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(service.connect_options().as_ref().clone());
        Self { pool, kept: std::sync::Mutex::default(), days: KnownDays::default() }
    }

    fn take_kept(&self) -> Option<PoolConnection<Postgres>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    fn keep(&self, conn: PoolConnection<Postgres>) {
        if !self.pool.is_closed() {
            self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        }
    }

    /// Inserts the rows and their drift counters (one statement; `groups` as in
    /// [`store::insert_batch`]) within `budget`, after making sure their days have partitions. The first statement on a connection the server
    /// dropped (a restart, a killed backend) fails at once, and that connection is discarded: the
    /// statement is retried, at most once per pooled connection, so a database that is back
    /// answers the request even when every idle connection had died.
    pub async fn insert(
        &self,
        rows: &[&PredictionRecord],
        groups: &[usize],
        budget: Duration,
    ) -> Result<(), InsertError> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut retries = self.pool.options().get_max_connections();
        loop {
            // The connection lives inside the attempt: cancelled or failed, it is dropped (back to
            // the pool, which resyncs or closes it); only a completed statement's is kept.
            let attempt = async {
                let mut conn = match self.take_kept() {
                    Some(conn) => conn,
                    None => self.pool.acquire().await?,
                };
                self.days.ensure_for(&mut conn, rows).await?;
                store::insert_batch(&mut conn, rows, groups).await?;
                Ok::<_, sqlx::Error>(conn)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(conn)) => {
                    self.keep(conn);
                    return Ok(());
                }
                Ok(Err(err)) if retries > 0 && DbFault::of(&err).is_dead_connection() => {
                    tracing::debug!(error = %err, "log insert hit a dead connection; retrying on another");
                    retries -= 1;
                }
                Ok(Err(err)) => return Err(err.into()),
                Err(_) => return Err(InsertError::Timeout(budget)),
            }
        }
    }

    /// Closes the pool, returning the kept connections to it. The pool is marked closed first
    /// (`close` does that before its future is polled), so an insert that ends meanwhile drops its
    /// connection instead of keeping it, and the close, which waits for every connection to come
    /// back, cannot wait for a kept one.
    pub async fn close(&self) {
        let closed = self.pool.close();
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        closed.await;
    }
}
