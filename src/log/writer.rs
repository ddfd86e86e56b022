//! The log writer: the only path by which rows reach `prediction_log`.
//!
//! Requests hand their rows to a bounded queue; one task takes whatever is queued (up to
//! `LOG_BATCH_SIZE` rows, waiting at most `LOG_FLUSH_INTERVAL_MS` for more) and inserts it with one
//! statement. Under load, rows that arrive while a batch is being written form the next batch, so
//! throughput scales with batch size instead of being capped at one commit per request.
//!
//! In durable mode each request waits for the commit of the batch holding its rows (group commit);
//! an insert failure is reported to every waiter of that batch. In async mode requests return once
//! queued; failed batches are retried with backoff and counted as dropped only after the last try.
//! On shutdown the queue is closed and drained before the task ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Mutex, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::record::LogRecord;
use super::shadow::ShadowScorer;
use super::store;
use crate::config::{LogMode, LogWriterConfig};

/// Retry delays for async-mode batches whose insert failed.
const ASYNC_RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];
/// Committed rows kept for slow subscribers before they skip ahead.
const EVENT_CAPACITY: usize = 4_096;
/// Longest one INSERT may take before its waiters are failed (a stalled database must not hang
/// requests or shutdown forever). A statement that commits later is harmless: inserts are
/// idempotent on the row id.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);

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
}

struct Job {
    records: Vec<LogRecord>,
    /// Durable mode: told when the batch holding `records` commits or fails.
    done: Option<oneshot::Sender<Result<(), LogError>>>,
    queued_at: Instant,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Job>,
    mode: LogMode,
    events: broadcast::Sender<Arc<LogRecord>>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the writer task. Committed `ok` rows are handed to `shadow` when given.
    pub fn spawn(pool: PgPool, config: &LogWriterConfig, shadow: Option<ShadowScorer>) -> Self {
        let (tx, rx) = mpsc::channel(config.log_queue_capacity.max(1));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let stop = CancellationToken::new();
        let task = Task {
            pool,
            shadow,
            events: events.clone(),
            stop: stop.clone(),
            batch_size: config.log_batch_size.max(1),
            flush_interval: config.flush_interval(),
            capacity: config.log_queue_capacity.max(1),
        };
        let in_flight = Arc::new(Semaphore::new(config.log_writer_concurrency.max(1)));
        let handle = tokio::spawn(Arc::new(task).run(rx, in_flight));
        Self { inner: Arc::new(Inner { tx, mode: config.log_mode, events, stop, task: Mutex::new(Some(handle)) }) }
    }

    /// The configured durability mode.
    pub fn mode(&self) -> LogMode {
        self.inner.mode
    }

    /// Logs `records`. Durable mode: returns once they are committed. Async mode: once queued.
    pub async fn submit(&self, records: Vec<LogRecord>) -> Result<(), LogError> {
        match self.inner.mode {
            LogMode::Durable => {
                let (done, committed) = oneshot::channel();
                let job = Job { records, done: Some(done), queued_at: Instant::now() };
                self.inner.tx.send(job).await.map_err(|_| LogError::Stopped)?;
                committed.await.map_err(|_| LogError::Stopped)?
            }
            LogMode::Async => {
                let job = Job { records, done: None, queued_at: Instant::now() };
                self.inner.tx.try_send(job).map_err(|err| match err {
                    mpsc::error::TrySendError::Full(_) => LogError::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => LogError::Stopped,
                })
            }
        }
    }

    /// Committed rows, as they commit (for the `predictionLogged` subscription).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogRecord>> {
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
    }
}

struct Task {
    pool: PgPool,
    shadow: Option<ShadowScorer>,
    events: broadcast::Sender<Arc<LogRecord>>,
    stop: CancellationToken,
    batch_size: usize,
    flush_interval: Duration,
    capacity: usize,
}

impl Task {
    /// Collects batches and inserts them, up to `in_flight`'s permits at a time: while every
    /// permit is busy the queue fills, which is what makes the next batches big.
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job>, in_flight: Arc<Semaphore>) {
        let mut closing = false;
        let mut flushes = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            // Reap finished flushes so the set does not grow.
            while flushes.try_join_next().is_some() {}
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
            metrics::gauge!("prediction_log_queue_depth")
                .set((self.capacity - rx.capacity().min(self.capacity)) as f64);
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

    async fn flush(&self, batch: Vec<Job>) {
        let rows: Vec<&LogRecord> = batch.iter().flat_map(|job| &job.records).collect();
        let started = Instant::now();
        let result = insert(&self.pool, &rows).await;
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
                    let result = insert(&self.pool, &rows).await;
                    drop(rows);
                    match result {
                        Ok(()) => self.committed(job),
                        Err(err) => self.failed(vec![job], err).await,
                    }
                }
            }
            Err(err) => self.failed(batch, err).await,
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
            match insert(&self.pool, &rows).await {
                Ok(()) => {
                    drop(rows);
                    jobs.into_iter().for_each(|job| self.committed(job));
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
        for record in job.records {
            // No receivers is fine: nobody is subscribed.
            let _ = self.events.send(Arc::new(record));
        }
    }
}

/// A failed insert: the database's error, or the statement outlived [`INSERT_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
enum InsertError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("insert did not finish within {INSERT_TIMEOUT:?}")]
    Timeout,
}

/// Inserts the rows and their drift counters (one statement).
async fn insert(pool: &PgPool, rows: &[&LogRecord]) -> Result<(), InsertError> {
    match tokio::time::timeout(INSERT_TIMEOUT, store::insert_batch(pool, rows)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(InsertError::Timeout),
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
