//! Shadow scoring: a challenger model prices every accepted prediction after its row committed,
//! and its price is written next to the champion's with one batched UPDATE — never on the path of
//! the answer. Best effort by design: when the scorer falls behind, rows are skipped (counted in
//! `shadow_skipped_total`), never the requests.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::store;
use crate::model::{HouseFeatures, ModelRegistry};

/// Rows waiting for the shadow model.
const QUEUE_CAPACITY: usize = 50_000;
/// Rows scored and updated together.
const BATCH: usize = 1_000;

/// A committed row to score: its key (id and `created_at`, the partition key) and its input.
pub type ShadowJob = (Uuid, DateTime<Utc>, HouseFeatures);

/// Handle to the shadow scorer task.
#[derive(Clone)]
pub struct ShadowScorer {
    tx: mpsc::Sender<ShadowJob>,
}

impl ShadowScorer {
    /// Starts the scorer. It reads the shadow model from the registry's current set for every
    /// batch, so a reload changes the challenger too.
    pub fn spawn(pool: PgPool, models: Arc<ModelRegistry>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(pool, models, rx));
        Self { tx }
    }

    /// Queues committed rows for scoring; drops them (and counts it) if the queue is full.
    pub fn submit(&self, rows: impl IntoIterator<Item = ShadowJob>) {
        for row in rows {
            if self.tx.try_send(row).is_err() {
                metrics::counter!("shadow_skipped_total").increment(1);
            }
        }
    }
}

async fn run(pool: PgPool, models: Arc<ModelRegistry>, mut rx: mpsc::Receiver<ShadowJob>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let set = models.snapshot();
        let Some(shadow) = set.shadow_model().cloned() else {
            batch.clear();
            continue;
        };
        let (keys, houses): (Vec<(Uuid, DateTime<Utc>)>, Vec<HouseFeatures>) =
            std::mem::take(&mut batch).into_iter().map(|(id, at, house)| ((id, at), house)).unzip();
        let model = shadow.clone();
        // Tree ensembles take milliseconds per batch: keep them off the async workers.
        let scored = match tokio::task::spawn_blocking(move || model.score(&houses.iter().collect::<Vec<_>>())).await {
            Ok(scored) => scored,
            Err(err) => {
                tracing::error!(error = %err, "shadow scoring task failed");
                continue;
            }
        };
        let (keys, prices): (Vec<(Uuid, DateTime<Utc>)>, Vec<f64>) =
            keys.into_iter().zip(scored).filter_map(|(key, s)| s.ok().map(|s| (key, s.price))).unzip();
        match store::set_shadow_prices(&pool, &keys, &prices, &shadow.card.name, &shadow.card.version).await {
            Ok(n) => metrics::counter!("shadow_scored_total").increment(n),
            Err(err) => {
                metrics::counter!("shadow_skipped_total").increment(keys.len() as u64);
                tracing::warn!(error = %err, rows = keys.len(), "shadow prices not stored");
            }
        }
    }
}
