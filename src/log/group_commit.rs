//! Group commit: queue → batch → one statement → answer every request in the batch.
//!
//! One task takes whatever is queued (up to `LOG_BATCH_SIZE` rows, waiting at most
//! `LOG_FLUSH_INTERVAL_MS` for more) and inserts it with one statement, up to
//! `LOG_WRITER_CONCURRENCY` batches at a time. Under load, rows that arrive while a batch is being
//! written form the next batch, so throughput scales with batch size instead of being capped at
//! one commit per request.
//!
//! A batch PostgreSQL does not take within `LOG_FAILOVER_MS` goes to the [`Failover`] (and is
//! answered OK once fsynced); with `LOG_FALLBACK=fail` its requests fail (async mode: retried,
//! then dropped). Rows the database refuses as data are never spooled: each request is retried
//! alone so only the culprit fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::committed::Committed;
use super::connections::{Connections, InsertError};
use super::failover::Failover;
use super::record::PredictionRecord;
use super::writer::LogError;

/// Retry delays for async-mode batches whose insert failed.
const ASYNC_RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];

/// One request's rows in the queue.
pub struct Job {
    /// The rows, in item order.
    pub records: Vec<PredictionRecord>,
    /// Durable mode: told when the batch holding `records` commits, is spooled, or fails.
    pub done: Option<oneshot::Sender<Result<(), LogError>>>,
    /// When it was queued (for the queue-wait histogram).
    pub queued_at: Instant,
    /// One permit per row, returned when the job is done with.
    pub rows: OwnedSemaphorePermit,
}

impl Job {
    /// Answers the waiting request (durable mode), if any.
    fn answer(self, result: Result<(), LogError>) {
        metrics::histogram!("prediction_log_queue_wait_seconds").record(self.queued_at.elapsed().as_secs_f64());
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// The group-commit task's parts and settings.
pub struct GroupCommit {
    /// The writer's connections.
    pub conns: Arc<Connections>,
    /// Where committed rows go.
    pub committed: Arc<Committed>,
    /// `LOG_FALLBACK=spool`.
    pub failover: Option<Arc<Failover>>,
    /// Cancelled at shutdown: the queue is closed and drained.
    pub stop: CancellationToken,
    /// `LOG_BATCH_SIZE`.
    pub batch_size: usize,
    /// `LOG_FLUSH_INTERVAL_MS`.
    pub flush_interval: Duration,
    /// Async mode: how long to wait, when a batch leaves the queue empty, before taking the next.
    /// Its requests do not wait for it, so this costs them nothing; without it, a writer that is
    /// faster than the requests parks on the queue after every batch and each request's row wakes
    /// its thread (a futex and a context switch per request). Zero in durable mode.
    pub coalesce: Duration,
    /// How long a direct insert may take: `LOG_FAILOVER_MS` with a spool, longer without.
    pub insert_timeout: Duration,
    /// Rows held in memory (queued or being written), for the queue gauge.
    pub rows: Arc<Semaphore>,
    /// `LOG_QUEUE_ROWS`.
    pub capacity: usize,
}

/// What [`next_batch`] saw besides the batch.
#[cfg_attr(test, derive(Debug, PartialEq))]
enum Collected {
    /// Jobs to write.
    Batch(Vec<Job>),
    /// `stop` fired: close the queue and drain it.
    Stop,
    /// The queue is closed and empty.
    Closed,
}

#[cfg(test)]
impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("rows", &self.records.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

/// Waits for the first job, then takes what else is queued, up to `batch_size` rows, waiting up
/// to `flush_interval` for more (not at all while `closing`: drain what is there).
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Job>,
    stop: &CancellationToken,
    closing: bool,
    batch_size: usize,
    flush_interval: Duration,
) -> Collected {
    let first = if closing {
        rx.recv().await
    } else {
        tokio::select! {
            job = rx.recv() => job,
            () = stop.cancelled() => return Collected::Stop,
        }
    };
    let Some(first) = first else { return Collected::Closed };
    let mut rows = first.records.len();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + flush_interval;
    while rows < batch_size {
        match rx.try_recv() {
            Ok(job) => {
                rows += job.records.len();
                batch.push(job);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if closing || flush_interval.is_zero() {
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
            // Stop is seen by the next call; this batch is written first.
            () = stop.cancelled() => break,
        }
    }
    Collected::Batch(batch)
}

impl GroupCommit {
    /// Collects batches and inserts them, up to `in_flight`'s permits at a time: while every
    /// permit is busy the queue fills, which is what makes the next batches big. Returns once the
    /// queue is closed and every batch written.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>, in_flight: Arc<Semaphore>) {
        let mut closing = false;
        let mut flushes = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            // Reap finished flushes so the set does not grow.
            while flushes.try_join_next().is_some() {}
            if !self.coalesce.is_zero() && !closing && rx.is_empty() {
                tokio::time::sleep(self.coalesce).await;
            }
            let batch = match next_batch(&mut rx, &self.stop, closing, self.batch_size, self.flush_interval).await {
                Collected::Batch(batch) => batch,
                Collected::Stop => {
                    rx.close();
                    closing = true;
                    tracing::info!(queued = rx.len(), "log writer draining");
                    continue;
                }
                Collected::Closed => break,
            };
            // Rows held: queued plus being written.
            metrics::gauge!("prediction_log_queue_rows")
                .set(self.capacity.saturating_sub(self.rows.available_permits()) as f64);
            let task = self.clone();
            flushes.spawn(async move {
                task.flush(batch).await;
                drop(permit);
            });
        }
        // Every batch still being written finishes before the writer reports stopped.
        while flushes.join_next().await.is_some() {}
        tracing::info!("log writer stopped");
    }

    #[tracing::instrument(name = "log.flush", skip_all, fields(jobs = batch.len()))]
    async fn flush(&self, batch: Vec<Job>) {
        if let Some(failover) = &self.failover
            && failover.is_spooling()
        {
            return Self::spool(failover, batch).await;
        }
        let rows: Vec<&PredictionRecord> = batch.iter().flat_map(|job| &job.records).collect();
        let started = Instant::now();
        let result = self.conns.insert(&rows, &[rows.len()], self.insert_timeout).await;
        metrics::histogram!("prediction_log_batch_rows").record(rows.len() as f64);
        metrics::histogram!("prediction_log_commit_seconds").record(started.elapsed().as_secs_f64());
        drop(rows);
        match result {
            Ok(()) => batch.into_iter().for_each(|job| self.committed(job)),
            // Bad data in one job (a value PostgreSQL refuses) must not fail the others: write
            // each job alone so only the culprit fails.
            Err(err) if batch.len() > 1 && err.is_data_error() => {
                tracing::warn!(error = %err, jobs = batch.len(), "batch refused by the database; writing jobs one by one");
                for job in batch {
                    let rows: Vec<&PredictionRecord> = job.records.iter().collect();
                    let result = self.conns.insert(&rows, &[rows.len()], self.insert_timeout).await;
                    drop(rows);
                    match (result, &self.failover) {
                        (Ok(()), _) => self.committed(job),
                        (Err(err), Some(failover)) if !err.is_data_error() => Self::spool(failover, vec![job]).await,
                        (Err(err), _) => self.failed(vec![job], err).await,
                    }
                }
            }
            Err(err) => match &self.failover {
                Some(failover) if !err.is_data_error() => {
                    if !failover.is_spooling() {
                        tracing::warn!(error = %err, "the database did not take a log batch in time: spooling to local disk");
                    }
                    metrics::counter!("prediction_log_write_failures_total").increment(1);
                    Self::spool(failover, batch).await;
                }
                _ => self.failed(batch, err).await,
            },
        }
    }

    /// Spools the jobs' rows (fsynced) and answers their requests OK; if the spool cannot take
    /// them, the requests get `SpoolUnavailable` (async rows are counted as dropped).
    #[tracing::instrument(name = "log.spool", skip_all, fields(jobs = batch.len()))]
    async fn spool(failover: &Failover, mut batch: Vec<Job>) {
        let records: Vec<PredictionRecord> =
            batch.iter_mut().flat_map(|job| std::mem::take(&mut job.records)).collect();
        let rows = records.len();
        match failover.spool_batch(records).await {
            Ok(()) => batch.into_iter().for_each(|job| job.answer(Ok(()))),
            Err(err) => {
                tracing::error!(error = %err, rows, "cannot spool log rows: their requests are refused");
                let failure = LogError::SpoolUnavailable(err.to_string());
                let unanswered = batch.iter().filter(|job| job.done.is_none()).count();
                for job in batch {
                    job.answer(Err(failure.clone()));
                }
                if unanswered > 0 {
                    metrics::counter!("prediction_log_rows_dropped_total").increment(rows as u64);
                    tracing::error!(
                        jobs = unanswered,
                        "async-mode log rows dropped: neither the database nor the spool took them"
                    );
                }
            }
        }
    }

    async fn failed(&self, jobs: Vec<Job>, err: InsertError) {
        metrics::counter!("prediction_log_write_failures_total").increment(1);
        let rows: usize = jobs.iter().map(|job| job.records.len()).sum();
        tracing::error!(error = %err, rows, "prediction log insert failed");
        let failure = LogError::Insert(err.to_string());
        // Bad data fails again on retry: only connection trouble and timeouts are worth retrying.
        let retryable = !err.is_data_error();
        let mut retry = Vec::new();
        for job in jobs {
            if job.done.is_some() {
                // A client is waiting: fail it now rather than hold it through retries.
                job.answer(Err(failure.clone()));
            } else if retryable {
                retry.push(job);
            } else {
                metrics::counter!("prediction_log_rows_dropped_total").increment(job.records.len() as u64);
                tracing::error!(
                    rows = job.records.len(),
                    "async-mode log rows dropped: the database refused their data"
                );
            }
        }
        if !retry.is_empty() {
            self.retry(retry).await;
        }
    }

    /// Async mode: the clients were already answered, so keep trying before giving the rows up.
    async fn retry(&self, jobs: Vec<Job>) {
        let rows: Vec<&PredictionRecord> = jobs.iter().flat_map(|job| &job.records).collect();
        for delay in ASYNC_RETRY_DELAYS {
            tokio::time::sleep(delay).await;
            // The jobs were one failed statement (or part of one): all or nothing, one group.
            match self.conns.insert(&rows, &[rows.len()], self.insert_timeout).await {
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

    fn committed(&self, mut job: Job) {
        metrics::counter!("prediction_log_rows_written_total").increment(job.records.len() as u64);
        let records = std::mem::take(&mut job.records);
        job.answer(Ok(()));
        self.committed.written(&records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample;

    fn job(rows: &Arc<Semaphore>, n: i32, size: usize) -> Job {
        let permit = rows.clone().try_acquire_many_owned(size as u32).unwrap();
        Job {
            records: (0..size).map(|i| sample(n * 100 + i as i32)).collect(),
            done: None,
            queued_at: Instant::now(),
            rows: permit,
        }
    }

    fn sizes(collected: Collected) -> Vec<usize> {
        match collected {
            Collected::Batch(batch) => batch.iter().map(|j| j.records.len()).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_the_batch_size() {
        let permits = Arc::new(Semaphore::new(100));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (n, size) in [2, 3, 4, 1].into_iter().enumerate() {
            tx.send(job(&permits, n as i32, size)).unwrap();
        }
        let stop = CancellationToken::new();
        // Whole jobs: the batch that reaches 5 rows stops there, the next job starts the next one.
        assert_eq!(sizes(next_batch(&mut rx, &stop, false, 5, Duration::ZERO).await), vec![2, 3]);
        assert_eq!(sizes(next_batch(&mut rx, &stop, false, 5, Duration::ZERO).await), vec![4, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_interval_waits_for_more_rows_until_its_deadline() {
        let permits = Arc::new(Semaphore::new(100));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(job(&permits, 0, 1)).unwrap();
        let late = job(&permits, 1, 1);
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sender.send(late).unwrap();
        });
        let stop = CancellationToken::new();
        let batch = next_batch(&mut rx, &stop, false, 10, Duration::from_millis(20)).await;
        assert_eq!(sizes(batch), vec![1, 1], "the row queued within the interval joined the batch");
    }

    #[tokio::test]
    async fn stop_is_reported_and_a_closing_queue_is_drained_then_closed() {
        let permits = Arc::new(Semaphore::new(100));
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(next_batch(&mut rx, &stop, false, 5, Duration::ZERO).await, Collected::Stop);
        tx.send(job(&permits, 0, 2)).unwrap();
        drop(tx);
        assert_eq!(sizes(next_batch(&mut rx, &stop, true, 5, Duration::from_secs(60)).await), vec![2]);
        assert_eq!(next_batch(&mut rx, &stop, true, 5, Duration::ZERO).await, Collected::Closed);
    }
}
