//! The log writer's handle: the only path by which rows reach `prediction_log`.
//!
//! Requests hand their rows to a bounded queue that [`GroupCommit`] writes in batches. In durable
//! mode each request waits for the commit (or the fsynced spool append) of the batch holding its
//! rows; in async mode requests return once queued. Memory is bounded in rows: a request takes one
//! permit per row before it is queued (`LOG_QUEUE_ROWS`), and gives them back when its rows are
//! committed, spooled or failed. On shutdown the queue is closed and drained before the task
//! ends; what is still spooled is drained at the next start.
//!
//! The jobs, one per file: [`super::group_commit`] (queue → batch → commit),
//! [`super::failover`] (to the spool when PostgreSQL does not take a batch in time),
//! [`super::drain`] (spool → PostgreSQL), [`super::connections`] (the writer's own connections
//! and the insert), [`super::committed`] (shadow scoring).
//!
//! In async mode the writer, its drain and its connections run on a runtime thread of their own
//! (`log-writer`): requests that do not wait for commits can keep the request workers saturated,
//! and a writer sharing their run queue was polled so late that a batch outlived `LOG_FAILOVER_MS`
//! and the log spilled to the spool with PostgreSQL healthy. In durable mode requests wait for the
//! writer, so they cannot outrun it, and it shares the request workers: handing every request's
//! rows and answer between threads costs more CPU per request than it saves (bench/README.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::committed::Committed;
use super::connections::Connections;
use super::drain::Drain;
use super::failover::Failover;
use super::group_commit::{GroupCommit, Job};
use super::record::{PredictionRecord, PredictionStatus};
use super::shadow::ShadowScorer;
use super::spool::{Backlog, Spool};
use crate::config::{LogFallback, LogMode, LogWriterConfig};

/// Longest one INSERT may take without a spool to fail over to, and the longest a drain statement
/// may take (a stalled database must not hang requests or shutdown forever). A statement that
/// commits later is harmless: inserts are idempotent on the row id.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);
/// Async mode: the writer's pause when a batch leaves the queue empty (see
/// [`GroupCommit::coalesce`]).
const ASYNC_COALESCE: Duration = Duration::from_millis(1);

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

/// What `/health/ready` reports about the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStatus {
    /// Whether batches currently go to the spool instead of PostgreSQL.
    pub spooling: bool,
    /// What waits in the spool (and how many segments cannot be read).
    pub backlog: Backlog,
    /// Whether a batch that PostgreSQL does not take can still be answered OK (spool enabled
    /// and not full).
    pub can_spool: bool,
    /// Rows held in memory: queued, or in a batch being written.
    pub in_memory_rows: usize,
}

impl LogStatus {
    /// Whether every row answered so far is in PostgreSQL: nothing in memory, nothing spooled.
    /// (Unreadable segments do not count: nothing will move them until a build that reads them.)
    pub fn is_settled(&self) -> bool {
        self.in_memory_rows == 0 && self.backlog.rows == 0 && !self.spooling
    }
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Job>,
    mode: LogMode,
    failover: Option<Arc<Failover>>,
    conns: Arc<Connections>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    drain: Mutex<Option<JoinHandle<()>>>,
    /// The writer's own runtime (async mode); shut down after the writer has drained (or when
    /// the last handle is dropped without a shutdown).
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    /// One permit per row that may wait in memory (`LOG_QUEUE_ROWS`).
    rows: Arc<Semaphore>,
    capacity: usize,
}

impl LogWriter {
    /// Starts the writer task (and, with `LOG_FALLBACK=spool`, opens the spool and starts its
    /// drain, which first writes what an earlier run left). Committed `ok` rows are handed to
    /// `shadow` when given.
    pub fn spawn(pool: PgPool, config: &LogWriterConfig, shadow: Option<ShadowScorer>) -> anyhow::Result<Self> {
        let failover = match config.log_fallback {
            LogFallback::Spool => {
                let spool = Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(|err| {
                    anyhow::anyhow!("cannot open the log spool in {}: {err}", config.spool_dir.display())
                })?;
                Some(Arc::new(Failover::new(spool)))
            }
            LogFallback::Fail => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
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
        let conns = {
            let _writer_runtime = runtime.enter();
            Arc::new(Connections::new(&pool, concurrency, INSERT_TIMEOUT))
        };
        let group_commit = Arc::new(GroupCommit {
            conns: conns.clone(),
            committed: Arc::new(Committed::new(shadow)),
            failover: failover.clone(),
            stop: stop.clone(),
            batch_size: config.log_batch_size.max(1),
            flush_interval: config.flush_interval(),
            coalesce: if config.log_mode == LogMode::Async { ASYNC_COALESCE } else { Duration::ZERO },
            insert_timeout: if failover.is_some() { config.failover() } else { INSERT_TIMEOUT },
            rows: rows.clone(),
            capacity,
        });
        let task = runtime.spawn(group_commit.run(rx, Arc::new(Semaphore::new(concurrency))));
        let drain = failover.clone().map(|failover| {
            runtime.spawn(
                Drain { conns: conns.clone(), failover, stop: stop.clone(), insert_timeout: INSERT_TIMEOUT }.run(),
            )
        });
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                mode: config.log_mode,
                failover,
                conns,
                stop,
                task: Mutex::new(Some(task)),
                drain: Mutex::new(drain),
                runtime: std::sync::Mutex::new(own_runtime),
                rows,
                capacity,
            }),
        })
    }

    /// Whether batches go to the spool, what it holds, whether it can take more, and how many
    /// rows wait in memory.
    pub fn status(&self) -> LogStatus {
        let inner = &self.inner;
        let in_memory_rows = inner.capacity.saturating_sub(inner.rows.available_permits());
        match &inner.failover {
            Some(failover) => LogStatus {
                spooling: failover.is_spooling(),
                backlog: failover.backlog(),
                can_spool: failover.has_room(),
                in_memory_rows,
            },
            None => LogStatus { spooling: false, backlog: Backlog::default(), can_spool: false, in_memory_rows },
        }
    }

    /// The configured durability mode.
    pub fn mode(&self) -> LogMode {
        self.inner.mode
    }

    /// Logs `records`. Durable mode: returns once they are committed (or spooled). Async mode:
    /// once queued.
    #[tracing::instrument(name = "log.submit", skip_all, fields(rows = records.len()))]
    pub async fn submit(&self, records: Vec<PredictionRecord>) -> Result<(), LogError> {
        if cfg!(feature = "bench-null-log") {
            // Benchmark-only build (see Cargo.toml): measure the service without the log.
            return Ok(());
        }
        let counts = StatusCounts::of(&records);
        let result = self.enqueue(records).await;
        counts.publish(result.is_ok());
        result
    }

    /// Queues `records` and, in durable mode, waits for their commit (or spool).
    async fn enqueue(&self, records: Vec<PredictionRecord>) -> Result<(), LogError> {
        let inner = &self.inner;
        let n = records.len();
        let permits = u32::try_from(n).ok().filter(|_| n <= inner.capacity);
        let Some(permits) = permits else { return Err(LogError::TooManyRows { rows: n, capacity: inner.capacity }) };
        match inner.mode {
            LogMode::Durable => {
                let rows = inner.rows.clone().acquire_many_owned(permits).await.map_err(|_| LogError::Stopped)?;
                let (done, committed) = oneshot::channel();
                let job = Job { records, done: Some(done), queued_at: Instant::now(), rows };
                inner.tx.send(job).map_err(|_| LogError::Stopped)?;
                committed.await.map_err(|_| LogError::Stopped)?
            }
            LogMode::Async => {
                // Answered before the rows are anywhere durable: refuse what could not be
                // spooled either, instead of accepting rows bound to be dropped.
                if inner.failover.as_ref().is_some_and(|f| f.is_spooling() && !f.has_room()) {
                    return Err(LogError::SpoolUnavailable("the spool is full".into()));
                }
                let rows = inner.rows.clone().try_acquire_many_owned(permits).map_err(|err| match err {
                    tokio::sync::TryAcquireError::NoPermits => LogError::QueueFull,
                    tokio::sync::TryAcquireError::Closed => LogError::Stopped,
                })?;
                let job = Job { records, done: None, queued_at: Instant::now(), rows };
                inner.tx.send(job).map_err(|_| LogError::Stopped)
            }
        }
    }

    /// Stops accepting rows, writes everything still queued, and waits for the task to end.
    /// Call after the HTTP server has finished its in-flight requests.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let task = self.inner.task.lock().await.take();
        if let Some(task) = task
            && let Err(err) = task.await
        {
            tracing::error!(error = %err, "log writer task ended abnormally");
        }
        let drain = self.inner.drain.lock().await.take();
        if let Some(drain) = drain {
            let _ = drain.await;
        }
        self.inner.conns.close().await;
        self.inner.stop_runtime();
        let status = self.status();
        if status.backlog.rows > 0 {
            tracing::warn!(
                rows = status.backlog.rows,
                "log rows left in the spool; they are drained at the next start"
            );
        }
    }
}

/// A submission's rows by status, for `predictions_total`.
struct StatusCounts([u64; 3]);

impl StatusCounts {
    const STATUSES: [PredictionStatus; 3] =
        [PredictionStatus::Ok, PredictionStatus::Rejected, PredictionStatus::Failed];

    fn of(records: &[PredictionRecord]) -> Self {
        let mut counts = [0_u64; 3];
        for r in records {
            counts[Self::STATUSES.iter().position(|&s| s == r.status).unwrap_or(2)] += 1;
        }
        Self(counts)
    }

    /// Logged rows count under their status; rows the log refused (the request was answered
    /// `SERVICE_UNAVAILABLE`) under `unlogged`, whatever their status would have been.
    fn publish(&self, logged: bool) {
        if !logged {
            metrics::counter!("predictions_total", "status" => "unlogged").increment(self.0.iter().sum());
            return;
        }
        for (status, &n) in Self::STATUSES.iter().zip(&self.0) {
            if n > 0 {
                metrics::counter!("predictions_total", "status" => status.as_str()).increment(n);
            }
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
