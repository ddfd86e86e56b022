//! The spool drain: writes spooled rows into PostgreSQL, oldest segment first, through the same
//! insert as direct writes (rows and drift counters in one statement, idempotent on the row id),
//! and deletes a segment once all its rows are committed. It backs off while the database stays away, and clears the failover's `spooling`
//! once the spool is empty.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connections::{Connections, InsertError};
use super::failover::Failover;
use super::record::PredictionRecord;
use super::spool::Spool;
use super::spool::format::{ReadError, read_segment};
use super::spool::row::SpoolRow;

/// Most rows one drain statement writes: big enough to drain fast, small enough for one round trip.
const CHUNK_ROWS: usize = 5_000;
/// Retries back off from the first delay to the last while the database stays away.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// The drain task's parts.
pub struct Drain {
    /// The writer's connections (the drain uses the spare one).
    pub conns: Arc<Connections>,
    /// The spool and the spooling state.
    pub failover: Arc<Failover>,
    /// Cancelled at shutdown: what is still spooled is drained at the next start.
    pub stop: CancellationToken,
    /// Longest one statement may take.
    pub insert_timeout: Duration,
}

impl Drain {
    /// Drains the spool whenever it holds something, until `stop`.
    pub async fn run(self) {
        let mut backoff = BACKOFF.0;
        let mut failing = false;
        let spool = self.failover.spool().clone();
        loop {
            self.failover.publish_backlog();
            if spool.is_empty() {
                self.failover.drained();
                tokio::select! {
                    () = self.failover.drain_wanted() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = self.stop.cancelled() => return,
                }
                continue;
            }
            match self.drain_once(&spool).await {
                Ok(rows) => {
                    if failing {
                        tracing::info!("the database takes log rows again: draining the spool");
                    }
                    failing = false;
                    backoff = BACKOFF.0;
                    if rows > 0 {
                        tracing::debug!(rows, "drained spooled log rows");
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "cannot drain the spool yet; retrying with backoff");
                    }
                    failing = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    /// Drains every closed segment, oldest first; a segment is deleted once all its rows are
    /// committed. A segment that turns out unreadable is set aside (kept on disk, reported).
    /// Returns the rows written.
    async fn drain_once(&self, spool: &Arc<Spool>) -> Result<usize, InsertError> {
        let sealing = spool.clone();
        let segments = tokio::task::spawn_blocking(move || sealing.seal()).await.unwrap_or_default();
        let mut written = 0;
        for segment in segments {
            let path = segment.path.clone();
            let content = match tokio::task::spawn_blocking(move || read_segment(&path)).await {
                Ok(Ok(content)) => content,
                Ok(Err(err @ ReadError::Unreadable { .. })) => {
                    tracing::error!(error = %err, "a spool segment cannot be read: kept on disk, not drained");
                    spool.set_aside(segment.seq, err.to_string());
                    self.failover.publish_backlog();
                    continue;
                }
                Ok(Err(err)) => return Err(InsertError::Spool(err.to_string())),
                Err(join) => return Err(InsertError::Spool(join.to_string())),
            };
            for (rows, groups) in chunks(content.batches, CHUNK_ROWS) {
                written += rows.len();
                self.drain_chunk(rows, &groups).await?;
            }
            let removing = spool.clone();
            let seq = segment.seq;
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || removing.remove(seq)).await {
                tracing::error!(error = %err, "cannot delete a drained spool segment (its rows would be skipped as duplicates)");
            }
            self.failover.publish_backlog();
        }
        Ok(written)
    }

    /// Writes one chunk of spooled rows (`groups`: the lengths of the spooled batches in it), then
    /// publishes them.
    #[tracing::instrument(name = "log.drain_chunk", skip_all, fields(rows = rows.len()))]
    async fn drain_chunk(&self, rows: Vec<PredictionRecord>, groups: &[usize]) -> Result<(), InsertError> {
        let refs: Vec<&PredictionRecord> = rows.iter().collect();
        match self.conns.insert(&refs, groups, self.insert_timeout).await {
            Ok(()) => {}
            Err(err) if err.is_data_error() => {
                // A row the database refuses would block the spool forever: write the rows one
                // by one and set the refused ones aside, loudly (the row is in the server log).
                for row in &refs {
                    match self.conns.insert(std::slice::from_ref(row), &[1], self.insert_timeout).await {
                        Ok(()) => {}
                        Err(err) if err.is_data_error() => {
                            metrics::counter!("prediction_log_rows_dropped_total").increment(1);
                            tracing::error!(error = %err, id = %row.id, request_id = %row.request_id,
                                            row = %serde_json::to_string(&SpoolRow::of(row)).unwrap_or_default(),
                                            "spooled log row refused by the database: dropped");
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            Err(err) => return Err(err),
        }
        drop(refs);
        let n = rows.len() as u64;
        metrics::counter!("prediction_log_rows_drained_total").increment(n);
        // Deprecated name of the counter above (see telemetry::DEPRECATED_METRICS).
        metrics::counter!("prediction_log_rows_replayed_total").increment(n);
        metrics::counter!("prediction_log_rows_written_total").increment(n);
        Ok(())
    }
}

/// Splits a segment's batches into statements of about `max_rows` rows, each made of whole
/// spooled batches, with the batch lengths as the insert's groups: each batch was written all or
/// nothing before, which is what lets the insert count a batch's drift bins from its first row.
fn chunks(batches: Vec<Vec<PredictionRecord>>, max_rows: usize) -> Vec<(Vec<PredictionRecord>, Vec<usize>)> {
    let mut out = Vec::new();
    let mut chunk: Vec<PredictionRecord> = Vec::new();
    let mut groups: Vec<usize> = Vec::new();
    for batch in batches {
        if !chunk.is_empty() && chunk.len() + batch.len() > max_rows {
            out.push((std::mem::take(&mut chunk), std::mem::take(&mut groups)));
        }
        groups.push(batch.len());
        chunk.extend(batch);
    }
    if !chunk.is_empty() {
        out.push((chunk, groups));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample;

    fn batch(ids: std::ops::Range<i32>) -> Vec<PredictionRecord> {
        ids.map(sample).collect()
    }

    #[test]
    fn chunks_hold_whole_batches_in_order_with_their_lengths_as_groups() {
        let batches = vec![batch(0..3), batch(3..5), batch(5..9), batch(9..10)];
        let chunks = chunks(batches, 5);
        let shape: Vec<(Vec<i32>, Vec<usize>)> = chunks
            .iter()
            .map(|(rows, groups)| (rows.iter().map(|r| r.item_index.unwrap()).collect(), groups.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![(vec![0, 1, 2, 3, 4], vec![3, 2]), (vec![5, 6, 7, 8, 9], vec![4, 1])],
            "a batch is never split, and order is kept"
        );
    }

    #[test]
    fn a_batch_larger_than_a_chunk_is_a_chunk_of_its_own() {
        let chunks = chunks(vec![batch(0..1), batch(1..8), batch(8..9)], 5);
        let groups: Vec<Vec<usize>> = chunks.into_iter().map(|(_, g)| g).collect();
        assert_eq!(groups, vec![vec![1], vec![7], vec![1]]);
    }

    #[test]
    fn nothing_spooled_is_no_chunk() {
        assert!(chunks(Vec::new(), 5).is_empty());
    }
}
