//! Failover to the spool: where batches go when PostgreSQL does not take them in time, and the
//! state that says whether the log is spooling.
//!
//! Once one batch is spooled, the following ones are too (the database just failed, and rows
//! keep their order) until the drain has emptied the spool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::record::PredictionRecord;
use super::spool::{Backlog, Spool, SpoolError};

/// The spool and whether batches are currently diverted to it.
pub struct Failover {
    spool: Arc<Spool>,
    /// Set when a batch is spooled; cleared by the drain once the spool is empty.
    spooling: AtomicBool,
    /// Wakes the drain when something was spooled.
    drain_wanted: Notify,
}

impl Failover {
    /// Failover to `spool`.
    pub fn new(spool: Spool) -> Self {
        Self { spool: Arc::new(spool), spooling: AtomicBool::new(false), drain_wanted: Notify::new() }
    }

    /// The spool itself (for the drain).
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Whether batches go to the spool instead of PostgreSQL.
    pub fn is_spooling(&self) -> bool {
        self.spooling.load(Ordering::Acquire)
    }

    /// Whether a batch could be spooled now.
    pub fn has_room(&self) -> bool {
        self.spool.has_room()
    }

    /// Appends `records` as one batch and fsyncs it (on a blocking thread); from now on batches
    /// follow it to the spool until the drain empties it. `Ok` means the rows are durable.
    pub async fn spool_batch(&self, records: Vec<PredictionRecord>) -> Result<(), SpoolError> {
        let rows = records.len();
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&PredictionRecord> = records.iter().collect();
            spool.append(&refs)
        })
        .await
        .unwrap_or_else(|err| Err(SpoolError::Io(std::io::Error::other(err))))?;
        if !self.spooling.swap(true, Ordering::AcqRel) {
            tracing::warn!("log rows are being spooled until the database takes them again");
        }
        metrics::counter!("prediction_log_rows_spooled_total").increment(rows as u64);
        self.publish_backlog();
        self.drain_wanted.notify_one();
        Ok(())
    }

    /// Waits until something is spooled (or a little while: the drain also rechecks on a timer).
    pub async fn drain_wanted(&self) {
        self.drain_wanted.notified().await;
    }

    /// Called by the drain when the spool is empty: batches go to PostgreSQL again.
    pub fn drained(&self) {
        if self.spooling.swap(false, Ordering::AcqRel) {
            tracing::info!("spool drained: log rows go to the database again");
        }
    }

    /// What the spool holds.
    pub fn backlog(&self) -> Backlog {
        self.spool.backlog()
    }

    /// Sets the spool gauges.
    pub fn publish_backlog(&self) {
        let backlog = self.spool.backlog();
        let now = chrono::Utc::now();
        let age = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
        let lag = age(backlog.oldest_spooled_at);
        metrics::gauge!("prediction_log_spool_bytes").set(backlog.bytes as f64);
        metrics::gauge!("prediction_log_spool_records").set(backlog.records as f64);
        metrics::gauge!("prediction_log_spool_rows").set(backlog.rows as f64);
        metrics::gauge!("prediction_log_spool_segments").set(backlog.segments as f64);
        metrics::gauge!("prediction_log_spool_unreadable_segments").set(backlog.unreadable_segments as f64);
        metrics::gauge!("prediction_log_drain_lag_seconds").set(lag);
        // Deprecated name of the gauge above (see telemetry::DEPRECATED_METRICS).
        metrics::gauge!("prediction_log_replay_lag_seconds").set(lag);
        metrics::gauge!("prediction_log_spool_oldest_row_age_seconds").set(age(backlog.oldest_row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample;

    #[tokio::test]
    async fn a_spooled_batch_turns_spooling_on_until_drained() {
        let dir = tempfile::tempdir().unwrap();
        let failover = Failover::new(Spool::open(dir.path(), 1 << 20).unwrap());
        assert!(!failover.is_spooling());
        failover.spool_batch(vec![sample(1), sample(2)]).await.unwrap();
        assert!(failover.is_spooling());
        assert_eq!(failover.backlog().rows, 2);
        // The drain was told: the wait returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), failover.drain_wanted()).await.unwrap();
        failover.drained();
        assert!(!failover.is_spooling());
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_does_not_turn_spooling_on() {
        let dir = tempfile::tempdir().unwrap();
        let failover = Failover::new(Spool::open(dir.path(), 10).unwrap());
        let err = failover.spool_batch(vec![sample(1)]).await.unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert!(!failover.is_spooling());
        assert!(!failover.has_room());
    }
}
