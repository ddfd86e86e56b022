//! The log writer: the only path by which rows reach `prediction_log`.
//!
//! Requests hand their rows to a bounded queue; one task takes whatever is queued (up to
//! `LOG_BATCH_SIZE` rows, waiting at most `LOG_FLUSH_INTERVAL_MS` for more) and inserts it with one
//! statement. Under load, rows that arrive while a batch is being written form the next batch, so
//! throughput scales with batch size instead of being capped at one commit per request.
//!
//! In durable mode each request waits for the commit of the batch holding its rows (group commit).
//! In async mode requests return once queued. Memory is bounded in rows: a request takes one
//! permit per row before it is queued (`LOG_QUEUE_ROWS`), and gives them back when its rows are
//! committed, spooled or failed.
//!
//! When PostgreSQL does not take a batch within `LOG_FAILOVER_MS` (unreachable, too slow,
//! restarting), the batch goes to the local [`Spool`] (fsynced) and its requests are answered OK;
//! until the spool is drained, new batches follow it there, in order. A replay task drains the
//! spool through the same insert (rows and drift counters in one statement, idempotent on the row
//! id) and publishes the rows to subscribers once they are in PostgreSQL. With
//! `LOG_FALLBACK=fail`, a failed batch fails its requests (async mode: retried, then dropped).
//! Rows the database refuses as data are never spooled: each request is retried alone so only the
//! culprit fails. On shutdown the queue is closed and drained before the task ends; what is still
//! spooled is replayed at the next start.
//!
//! In async mode the writer, its replay and its connections run on a runtime thread of their own
//! (`log-writer`): requests that do not wait for commits can keep the request workers saturated,
//! and a writer sharing their run queue was polled so late that a batch outlived `LOG_FAILOVER_MS`
//! and the log spilled to the spool with PostgreSQL healthy. In durable mode requests wait for the
//! writer, so they cannot outrun it, and it shares the request workers: handing every request's
//! rows and answer between threads costs more CPU per request than it saves (bench/README.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::record::LogRecord;
use super::shadow::ShadowScorer;
use super::spool::{Backlog, Spool, SpoolError};
use super::store;
use crate::config::{LogFallback, LogMode, LogWriterConfig};

/// Retry delays for async-mode batches whose insert failed.
const ASYNC_RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];
/// Committed rows kept for slow subscribers before they skip ahead.
const EVENT_CAPACITY: usize = 4_096;
/// Longest one INSERT may take before its waiters are failed (`LOG_FALLBACK=fail`) or before a
/// replay attempt gives up (a stalled database must not hang requests or shutdown forever). A
/// statement that commits later is harmless: inserts are idempotent on the row id.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);
/// Async mode: how long the writer waits, when a batch leaves the queue empty, before it takes the
/// next. Its requests do not wait for it, so this costs them nothing; without it, a writer that
/// is faster than the requests (the spool's appends are) parks on the queue after every batch and
/// each request's row wakes its thread: a futex and a context switch per request on the server's
/// core, and a spool append per few rows.
const ASYNC_COALESCE: Duration = Duration::from_millis(1);
/// Most rows one replay statement writes: big enough to drain fast, small enough for one round trip.
const REPLAY_CHUNK_ROWS: usize = 5_000;
/// Replay retries back off from the first delay to the last while the database stays away.
const REPLAY_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Why rows could not be logged. Every variant means: the request must not be answered OK.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The insert failed (database unreachable, constraint violated, ...).
    #[error("insert into prediction_log failed: {0}")]
    Insert(String),
    /// Async mode only: the queue is full; the request is refused instead of dropping its row.
    #[error("the log queue is full")]
    QueueFull,
    /// The writer has stopped (shutdown).
    #[error("the log writer has stopped")]
    Stopped,
    /// The database did not take the rows and the spool could not either (full, or the disk
    /// failed): the request is refused rather than answered without a durable row.
    #[error("the database is unavailable and the spool cannot take more rows: {0}")]
    SpoolUnavailable(String),
    /// More rows in one submission than the whole queue holds (a configuration error:
    /// `MAX_ROWS_PER_REQUEST` above `LOG_QUEUE_ROWS`).
    #[error("{rows} rows exceed the log queue ({capacity} rows)")]
    TooManyRows {
        /// Rows submitted.
        rows: usize,
        /// `LOG_QUEUE_ROWS`.
        capacity: usize,
    },
}

struct Job {
    records: Vec<LogRecord>,
    /// Durable mode: told when the batch holding `records` commits, is spooled, or fails.
    done: Option<oneshot::Sender<Result<(), LogError>>>,
    queued_at: Instant,
    /// One permit per row, returned when the job is done with.
    _rows: OwnedSemaphorePermit,
}

/// What `/health/ready` reports about the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStatus {
    /// Whether batches currently go to the spool instead of PostgreSQL.
    pub spooling: bool,
    /// What waits in the spool.
    pub backlog: Backlog,
    /// Whether a batch that PostgreSQL does not take can still be answered OK (spool enabled
    /// and not full).
    pub can_spool: bool,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Job>,
    mode: LogMode,
    events: broadcast::Sender<Arc<LogRecord>>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    replay: Mutex<Option<JoinHandle<()>>>,
    /// The writer's own runtime (async mode); shut down after the writer has drained (or when
    /// the last handle is dropped without a shutdown).
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    /// One permit per row that may wait in memory (`LOG_QUEUE_ROWS`).
    rows: Arc<Semaphore>,
    capacity: usize,
    writer: Arc<Task>,
}

impl LogWriter {
    /// Starts the writer task (and, with `LOG_FALLBACK=spool`, opens the spool and starts its
    /// replay task, which first drains what an earlier run left). Committed `ok` rows are handed
    /// to `shadow` when given.
    pub fn spawn(pool: PgPool, config: &LogWriterConfig, shadow: Option<ShadowScorer>) -> anyhow::Result<Self> {
        let spool = match config.log_fallback {
            LogFallback::Spool => {
                Some(Arc::new(Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(|err| {
                    anyhow::anyhow!("cannot open the log spool in {}: {err}", config.spool_dir.display())
                })?))
            }
            LogFallback::Fail => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let stop = CancellationToken::new();
        let capacity = config.log_queue_rows.max(1);
        let rows = Arc::new(Semaphore::new(capacity));
        let concurrency = config.log_writer_concurrency.max(1);
        let own_runtime = match config.log_mode {
            LogMode::Async => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("log-writer")
                    .enable_all()
                    .build()
                    .map_err(|err| anyhow::anyhow!("cannot start the log writer's runtime: {err}"))?,
            ),
            LogMode::Durable => None,
        };
        let runtime = match &own_runtime {
            Some(own) => own.handle().clone(),
            None => tokio::runtime::Handle::try_current()
                .map_err(|err| anyhow::anyhow!("the log writer must be started inside a tokio runtime: {err}"))?,
        };
        // The pool's maintenance tasks and connections belong to the writer's runtime too.
        let writer_pool = {
            let _writer_runtime = runtime.enter();
            writer_pool(&pool, concurrency)
        };
        let task = Arc::new(Task {
            conns: Connections::new(writer_pool),
            shadow,
            events: events.clone(),
            stop: stop.clone(),
            batch_size: config.log_batch_size.max(1),
            flush_interval: config.flush_interval(),
            coalesce: if config.log_mode == LogMode::Async { ASYNC_COALESCE } else { Duration::ZERO },
            insert_timeout: if spool.is_some() { config.failover() } else { INSERT_TIMEOUT },
            spool,
            spooling: AtomicBool::new(false),
            replay_wanted: Notify::new(),
            rows: rows.clone(),
            capacity,
        });
        let in_flight = Arc::new(Semaphore::new(concurrency));
        let handle = runtime.spawn(task.clone().run(rx, in_flight));
        let replay = task.spool.clone().map(|spool| runtime.spawn(task.clone().replay_loop(spool)));
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                mode: config.log_mode,
                events,
                stop,
                task: Mutex::new(Some(handle)),
                replay: Mutex::new(replay),
                runtime: std::sync::Mutex::new(own_runtime),
                rows,
                capacity,
                writer: task,
            }),
        })
    }

    /// Whether batches go to the spool, what it holds, and whether it can take more.
    pub fn status(&self) -> LogStatus {
        let task = &self.inner.writer;
        match &task.spool {
            Some(spool) => LogStatus {
                spooling: task.spooling.load(Ordering::Acquire),
                backlog: spool.backlog(),
                can_spool: spool.has_room(),
            },
            None => LogStatus { spooling: false, backlog: Backlog::default(), can_spool: false },
        }
    }

    /// The configured durability mode.
    pub fn mode(&self) -> LogMode {
        self.inner.mode
    }

    /// Logs `records`. Durable mode: returns once they are committed (or spooled). Async mode:
    /// once queued.
    #[tracing::instrument(name = "log.submit", skip_all, fields(rows = records.len()))]
    pub async fn submit(&self, records: Vec<LogRecord>) -> Result<(), LogError> {
        if cfg!(feature = "bench-null-log") {
            // Benchmark-only build (see Cargo.toml): measure the service without the log.
            return Ok(());
        }
        let inner = &self.inner;
        let n = records.len();
        let permits = u32::try_from(n).ok().filter(|_| n <= inner.capacity);
        let Some(permits) = permits else { return Err(LogError::TooManyRows { rows: n, capacity: inner.capacity }) };
        match inner.mode {
            LogMode::Durable => {
                let rows = inner.rows.clone().acquire_many_owned(permits).await.map_err(|_| LogError::Stopped)?;
                let (done, committed) = oneshot::channel();
                let job = Job { records, done: Some(done), queued_at: Instant::now(), _rows: rows };
                inner.tx.send(job).map_err(|_| LogError::Stopped)?;
                committed.await.map_err(|_| LogError::Stopped)?
            }
            LogMode::Async => {
                // Answered before the rows are anywhere durable: refuse what could not be
                // spooled either, instead of accepting rows bound to be dropped.
                let task = &inner.writer;
                if task.spooling.load(Ordering::Acquire) && task.spool.as_ref().is_some_and(|s| !s.has_room()) {
                    return Err(LogError::SpoolUnavailable("the spool is full".into()));
                }
                let rows = inner.rows.clone().try_acquire_many_owned(permits).map_err(|err| match err {
                    tokio::sync::TryAcquireError::NoPermits => LogError::QueueFull,
                    tokio::sync::TryAcquireError::Closed => LogError::Stopped,
                })?;
                let job = Job { records, done: None, queued_at: Instant::now(), _rows: rows };
                inner.tx.send(job).map_err(|_| LogError::Stopped)
            }
        }
    }

    /// Committed rows, as they commit (for the `predictionLogged` subscription).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogRecord>> {
        // Committed rows only: a spooled row is published when replay writes it to PostgreSQL.
        self.inner.events.subscribe()
    }

    /// Stops accepting rows, writes everything still queued, and waits for the task to end.
    /// Call after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let handle = self.inner.task.lock().await.take();
        if let Some(handle) = handle
            && let Err(err) = handle.await
        {
            tracing::error!(error = %err, "log writer task ended abnormally");
        }
        let replay = self.inner.replay.lock().await.take();
        if let Some(replay) = replay {
            let _ = replay.await;
        }
        self.inner.writer.conns.close().await;
        self.inner.stop_runtime();
        let status = self.status();
        if status.backlog.rows > 0 {
            tracing::warn!(
                rows = status.backlog.rows,
                "log rows left in the spool; they are replayed at the next start"
            );
        }
    }
}

impl Inner {
    /// Stops the writer's runtime without waiting (safe from async code, unlike dropping it).
    fn stop_runtime(&self) {
        let runtime = self.runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Inner {
    /// Without a [`LogWriter::shutdown`], the queue still drains: the channel closes with the last
    /// handle, and a thread of its own waits for the writer to write what is queued before it
    /// drops the runtime (which must not be dropped from async code).
    fn drop(&mut self) {
        let runtime = self.runtime.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(runtime) = runtime else { return };
        let Some(task) = self.task.get_mut().take() else { return runtime.shutdown_background() };
        // Shared with the thread, so a thread that cannot start leaves the runtime here to stop.
        let runtime = Arc::new(std::sync::Mutex::new(Some(runtime)));
        let for_thread = runtime.clone();
        let drained = std::thread::Builder::new().name("log-writer-drain".into()).spawn(move || {
            let runtime = for_thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(runtime) = runtime {
                let _ = runtime.block_on(task);
            }
        });
        if let Err(err) = drained {
            tracing::error!(error = %err, "cannot drain the log writer: queued rows are dropped");
            let runtime = runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(runtime) = runtime {
                runtime.shutdown_background();
            }
        }
    }
}

struct Task {
    conns: Connections,
    shadow: Option<ShadowScorer>,
    events: broadcast::Sender<Arc<LogRecord>>,
    stop: CancellationToken,
    batch_size: usize,
    flush_interval: Duration,
    /// [`ASYNC_COALESCE`] in async mode, zero in durable mode (where requests wait for the batch).
    coalesce: Duration,
    /// How long a direct insert may take: `LOG_FAILOVER_MS` with a spool, [`INSERT_TIMEOUT`] without.
    insert_timeout: Duration,
    /// `LOG_FALLBACK=spool`.
    spool: Option<Arc<Spool>>,
    /// Set when a batch is spooled; cleared by the replay task once the spool is empty. While
    /// set, batches go straight to the spool (the database just failed them, and order is kept).
    spooling: AtomicBool,
    /// Wakes the replay task when something was spooled.
    replay_wanted: Notify,
    rows: Arc<Semaphore>,
    capacity: usize,
}

impl Task {
    /// Collects batches and inserts them, up to `in_flight`'s permits at a time: while every
    /// permit is busy the queue fills, which is what makes the next batches big.
    async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>, in_flight: Arc<Semaphore>) {
        let mut closing = false;
        let mut flushes = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            // Reap finished flushes so the set does not grow.
            while flushes.try_join_next().is_some() {}
            if !self.coalesce.is_zero() && !closing && rx.is_empty() {
                tokio::time::sleep(self.coalesce).await;
            }
            let first = if closing {
                rx.recv().await
            } else {
                tokio::select! {
                    job = rx.recv() => job,
                    () = self.stop.cancelled() => {
                        rx.close();
                        closing = true;
                        tracing::info!(queued = rx.len(), "log writer draining");
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let mut rows = batch[0].records.len();
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while rows < self.batch_size {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.records.len();
                        batch.push(job);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                if closing || self.flush_interval.is_zero() {
                    break;
                }
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => {
                            rows += job.records.len();
                            batch.push(job);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = self.stop.cancelled(), if !closing => {
                        rx.close();
                        closing = true;
                    }
                }
            }
            // Rows held: queued plus being written.
            metrics::gauge!("prediction_log_queue_rows")
                .set(self.capacity.saturating_sub(self.rows.available_permits()) as f64);
            let task = self.clone();
            flushes.spawn(async move {
                task.flush(batch).await;
                drop(permit);
            });
        }
        // Drain: every batch still being written finishes before the writer reports stopped.
        while flushes.join_next().await.is_some() {}
        tracing::info!("log writer stopped");
    }

    #[tracing::instrument(name = "log.flush", skip_all, fields(jobs = batch.len()))]
    async fn flush(&self, batch: Vec<Job>) {
        if let Some(spool) = &self.spool
            && self.spooling.load(Ordering::Acquire)
        {
            return self.spool_jobs(spool, batch).await;
        }
        let rows: Vec<&LogRecord> = batch.iter().flat_map(|job| &job.records).collect();
        let started = Instant::now();
        let result = self.conns.insert(&rows, &[rows.len()], self.insert_timeout).await;
        metrics::histogram!("prediction_log_batch_rows").record(rows.len() as f64);
        metrics::histogram!("prediction_log_commit_seconds").record(started.elapsed().as_secs_f64());
        drop(rows);
        match result {
            Ok(()) => batch.into_iter().for_each(|job| self.committed(job)),
            // Bad data in one job (a value PostgreSQL refuses) must not fail the others: write
            // each job alone so only the culprit fails.
            Err(err) if batch.len() > 1 && is_data_error(&err) => {
                tracing::warn!(error = %err, jobs = batch.len(), "batch refused by the database; writing jobs one by one");
                for job in batch {
                    let rows: Vec<&LogRecord> = job.records.iter().collect();
                    let result = self.conns.insert(&rows, &[rows.len()], self.insert_timeout).await;
                    drop(rows);
                    match (result, &self.spool) {
                        (Ok(()), _) => self.committed(job),
                        (Err(err), Some(spool)) if !is_data_error(&err) => self.spool_jobs(spool, vec![job]).await,
                        (Err(err), _) => self.failed(vec![job], err).await,
                    }
                }
            }
            Err(err) => match &self.spool {
                Some(spool) if !is_data_error(&err) => {
                    if !self.spooling.load(Ordering::Acquire) {
                        tracing::warn!(error = %err, "the database did not take a log batch in time: spooling to local disk");
                    }
                    metrics::counter!("prediction_log_write_failures_total").increment(1);
                    self.spool_jobs(spool, batch).await;
                }
                _ => self.failed(batch, err).await,
            },
        }
    }

    /// Appends the jobs' rows to the spool (fsynced) and answers their requests OK; if the spool
    /// cannot take them, the requests get `SpoolUnavailable` (async rows are counted as dropped).
    #[tracing::instrument(name = "log.spool", skip_all, fields(jobs = batch.len()))]
    async fn spool_jobs(&self, spool: &Arc<Spool>, mut batch: Vec<Job>) {
        let spool = spool.clone();
        let records: Vec<LogRecord> = batch.iter_mut().flat_map(|job| std::mem::take(&mut job.records)).collect();
        let rows = records.len();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&LogRecord> = records.iter().collect();
            spool.append(&refs)
        })
        .await
        .unwrap_or_else(|err| Err(SpoolError::Io(std::io::Error::other(err))));
        match result {
            Ok(()) => {
                if !self.spooling.swap(true, Ordering::AcqRel) {
                    tracing::warn!("log rows are being spooled until the database takes them again");
                }
                metrics::counter!("prediction_log_rows_spooled_total").increment(rows as u64);
                self.publish_backlog();
                self.replay_wanted.notify_one();
                for job in batch {
                    metrics::histogram!("prediction_log_queue_wait_seconds")
                        .record(job.queued_at.elapsed().as_secs_f64());
                    if let Some(done) = job.done {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, rows, "cannot spool log rows: their requests are refused");
                let failure = LogError::SpoolUnavailable(err.to_string());
                let mut dropped = 0;
                for job in batch {
                    match job.done {
                        Some(done) => {
                            let _ = done.send(Err(failure.clone()));
                        }
                        None => dropped += 1,
                    }
                }
                if dropped > 0 {
                    metrics::counter!("prediction_log_rows_dropped_total").increment(rows as u64);
                    tracing::error!(
                        jobs = dropped,
                        "async-mode log rows dropped: neither the database nor the spool took them"
                    );
                }
            }
        }
    }

    /// Sets the spool gauges.
    fn publish_backlog(&self) {
        let Some(spool) = &self.spool else { return };
        let backlog = spool.backlog();
        let now = chrono::Utc::now();
        let age = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
        metrics::gauge!("prediction_log_spool_bytes").set(backlog.bytes as f64);
        metrics::gauge!("prediction_log_spool_records").set(backlog.records as f64);
        metrics::gauge!("prediction_log_spool_rows").set(backlog.rows as f64);
        metrics::gauge!("prediction_log_spool_segments").set(backlog.segments as f64);
        metrics::gauge!("prediction_log_replay_lag_seconds").set(age(backlog.oldest_spooled_at));
        metrics::gauge!("prediction_log_spool_oldest_row_age_seconds").set(age(backlog.oldest_row));
    }

    /// Drains the spool into PostgreSQL whenever it holds something, backing off while the
    /// database stays away; clears `spooling` once it is empty.
    async fn replay_loop(self: Arc<Self>, spool: Arc<Spool>) {
        let mut backoff = REPLAY_BACKOFF.0;
        let mut failing = false;
        loop {
            self.publish_backlog();
            if spool.is_empty() {
                if self.spooling.swap(false, Ordering::AcqRel) {
                    tracing::info!("spool drained: log rows go to the database again");
                }
                tokio::select! {
                    () = self.replay_wanted.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = self.stop.cancelled() => return,
                }
                continue;
            }
            match self.replay_once(&spool).await {
                Ok(rows) => {
                    if failing {
                        tracing::info!("the database takes log rows again: replaying the spool");
                    }
                    failing = false;
                    backoff = REPLAY_BACKOFF.0;
                    if rows > 0 {
                        tracing::debug!(rows, "replayed spooled log rows");
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "cannot replay the spool yet; retrying with backoff");
                    }
                    failing = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(REPLAY_BACKOFF.1);
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    /// Replays every closed segment, oldest first; a segment is deleted once all its rows are
    /// committed. Returns the rows written.
    async fn replay_once(&self, spool: &Arc<Spool>) -> Result<usize, InsertError> {
        let sealing = spool.clone();
        let segments = tokio::task::spawn_blocking(move || sealing.seal()).await.unwrap_or_default();
        let mut written = 0;
        for segment in segments {
            let path = segment.path.clone();
            let content = match tokio::task::spawn_blocking(move || super::spool::read_segment(&path)).await {
                Ok(Ok(content)) => content,
                Ok(Err(err)) => {
                    // Unreadable as a whole (not a torn tail): keep the file for an operator,
                    // out of the way of the rows behind it.
                    tracing::error!(error = %err, path = %segment.path.display(), "cannot read a spool segment: set aside as .bad");
                    let _ = std::fs::rename(&segment.path, segment.path.with_extension("bad"));
                    let _ = spool.remove(segment.seq);
                    continue;
                }
                Err(err) => return Err(InsertError::Spool(err.to_string())),
            };
            // Whole spooled batches per chunk: each was written all or nothing before, which is
            // what lets the insert count a batch's drift bins from its first row.
            let mut chunk: Vec<LogRecord> = Vec::new();
            let mut groups: Vec<usize> = Vec::new();
            let mut batches = content.batches.into_iter().peekable();
            while let Some(batch) = batches.next() {
                groups.push(batch.len());
                chunk.extend(batch);
                if chunk.len() >= REPLAY_CHUNK_ROWS || batches.peek().is_none() {
                    written += chunk.len();
                    self.replay_chunk(std::mem::take(&mut chunk), &std::mem::take(&mut groups)).await?;
                }
            }
            let removing = spool.clone();
            let seq = segment.seq;
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || removing.remove(seq)).await {
                tracing::error!(error = %err, "cannot delete a replayed spool segment (its rows would be skipped as duplicates)");
            }
            self.publish_backlog();
        }
        Ok(written)
    }

    /// Writes one chunk of spooled rows (`groups`: the lengths of the spooled batches in it), then
    /// publishes them.
    #[tracing::instrument(name = "log.replay_chunk", skip_all, fields(rows = rows.len()))]
    async fn replay_chunk(&self, rows: Vec<LogRecord>, groups: &[usize]) -> Result<(), InsertError> {
        let refs: Vec<&LogRecord> = rows.iter().collect();
        match self.conns.insert(&refs, groups, INSERT_TIMEOUT).await {
            Ok(()) => {}
            Err(err) if is_data_error(&err) => {
                // A row the database refuses would block the spool forever: write the rows one
                // by one and set the refused ones aside, loudly.
                for row in &refs {
                    match self.conns.insert(std::slice::from_ref(row), &[1], INSERT_TIMEOUT).await {
                        Ok(()) => {}
                        Err(err) if is_data_error(&err) => {
                            metrics::counter!("prediction_log_rows_dropped_total").increment(1);
                            tracing::error!(error = %err, id = %row.id, request_id = %row.request_id,
                                            row = %serde_json::to_string(row).unwrap_or_default(),
                                            "spooled log row refused by the database: dropped");
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            Err(err) => return Err(err),
        }
        drop(refs);
        metrics::counter!("prediction_log_rows_replayed_total").increment(rows.len() as u64);
        metrics::counter!("prediction_log_rows_written_total").increment(rows.len() as u64);
        self.publish(rows);
        Ok(())
    }

    /// Sends committed rows to `predictionLogged` subscribers. With none (the usual case under
    /// load), the rows are not moved into `Arc`s at all; a subscriber arriving meanwhile is one
    /// that subscribed a moment later.
    fn publish(&self, records: Vec<LogRecord>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for record in records {
            let _ = self.events.send(Arc::new(record));
        }
    }

    async fn failed(&self, jobs: Vec<Job>, err: InsertError) {
        metrics::counter!("prediction_log_write_failures_total").increment(1);
        let rows: usize = jobs.iter().map(|job| job.records.len()).sum();
        tracing::error!(error = %err, rows, "prediction log insert failed");
        let failure = LogError::Insert(err.to_string());
        // Bad data fails again on retry: only connection trouble and timeouts are worth retrying.
        let retryable = !is_data_error(&err);
        let mut retry = Vec::new();
        for job in jobs {
            match job.done {
                // A client is waiting: fail it now rather than hold it through retries.
                Some(done) => {
                    let _ = done.send(Err(failure.clone()));
                }
                None if retryable => retry.push(job),
                None => {
                    metrics::counter!("prediction_log_rows_dropped_total").increment(job.records.len() as u64);
                    tracing::error!(
                        rows = job.records.len(),
                        "async-mode log rows dropped: the database refused their data"
                    );
                }
            }
        }
        if !retry.is_empty() {
            self.retry(retry).await;
        }
    }

    /// Async mode: the clients were already answered, so keep trying before giving the rows up.
    async fn retry(&self, jobs: Vec<Job>) {
        let rows: Vec<&LogRecord> = jobs.iter().flat_map(|job| &job.records).collect();
        for delay in ASYNC_RETRY_DELAYS {
            tokio::time::sleep(delay).await;
            // The jobs were one failed statement (or part of one): all or nothing, one group.
            match self.conns.insert(&rows, &[rows.len()], INSERT_TIMEOUT).await {
                Ok(()) => {
                    drop(rows);
                    for job in jobs {
                        self.committed(job);
                    }
                    return;
                }
                Err(err) => tracing::warn!(error = %err, rows = rows.len(), "prediction log retry failed"),
            }
        }
        metrics::counter!("prediction_log_rows_dropped_total").increment(rows.len() as u64);
        tracing::error!(rows = rows.len(), "async-mode log rows dropped after retries");
    }

    fn committed(&self, job: Job) {
        metrics::counter!("prediction_log_rows_written_total").increment(job.records.len() as u64);
        metrics::histogram!("prediction_log_queue_wait_seconds").record(job.queued_at.elapsed().as_secs_f64());
        if let Some(done) = job.done {
            let _ = done.send(Ok(()));
        }
        if let Some(shadow) = &self.shadow {
            shadow.submit(job.records.iter().filter_map(|r| Some((r.id, r.house.clone()?))));
        }
        self.publish(job.records);
    }
}

/// A failed insert: the database's error, or the statement outlived its time budget.
#[derive(Debug, thiserror::Error)]
enum InsertError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("insert did not finish within {0:?}")]
    Timeout(Duration),
    #[error("spool: {0}")]
    Spool(String),
}

/// The writer's own connections: one per concurrent batch plus one for replay, from the service
/// pool's connect options. Its own, so history and monitoring queries can never hold the
/// connections commits wait for; and without sqlx's ping before each acquire (a round trip per
/// batch), because [`Connections::insert`] already retries a statement that finds its connection
/// dead.
fn writer_pool(pool: &PgPool, concurrency: usize) -> PgPool {
    PgPoolOptions::new()
        .max_connections(u32::try_from(concurrency + 1).unwrap_or(u32::MAX))
        .test_before_acquire(false)
        .acquire_timeout(INSERT_TIMEOUT)
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// The writer pool, with the connections of batches that succeeded kept checked out.
///
/// sqlx's pool pings every connection returned to it (a `Sync` round trip, which also wakes the
/// backend) and spawns a task to do so, so that a connection left mid-statement by a cancelled
/// future is clean or closed before anyone reuses it. A statement that completed leaves its
/// connection clean, so the writer keeps it for the next batch instead. A connection whose
/// statement failed or was cancelled (the failover timeout drops the future) is never kept: it
/// goes back to the pool, which resyncs or closes it, as before.
struct Connections {
    pool: PgPool,
    kept: std::sync::Mutex<Vec<PoolConnection<Postgres>>>,
}

impl Connections {
    fn new(pool: PgPool) -> Self {
        Self { pool, kept: std::sync::Mutex::default() }
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
    /// [`store::insert_batch`]) within `budget`. The first statement on a connection the server
    /// dropped (a restart, a killed backend) fails at once, and that connection is discarded: the
    /// statement is retried, at most once per pooled connection, so a database that is back
    /// answers the request even when every idle connection had died.
    async fn insert(&self, rows: &[&LogRecord], groups: &[usize], budget: Duration) -> Result<(), InsertError> {
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
                store::insert_batch(&mut conn, rows, groups).await?;
                Ok::<_, sqlx::Error>(conn)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(conn)) => {
                    self.keep(conn);
                    return Ok(());
                }
                Ok(Err(err)) if retries > 0 && is_dead_connection(&err) => {
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
    async fn close(&self) {
        let closed = self.pool.close();
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        closed.await;
    }
}

/// The connection, not the statement, failed: I/O error, or the server ended the session
/// (SQLSTATE 57P01-57P03 admin shutdown / crash / cannot connect now, class 08 connection exception).
fn is_dead_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// SQLSTATE class 22 (data exception) or 23 (integrity constraint): the rows, not the database,
/// are at fault.
fn is_data_error(err: &InsertError) -> bool {
    match err {
        InsertError::Database(sqlx::Error::Database(db)) => {
            db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
        }
        _ => false,
    }
}
