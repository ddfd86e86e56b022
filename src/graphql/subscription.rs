//! Subscription root: committed log rows, pushed over `/ws`.

use async_graphql::{Context, ErrorExtensions, Subscription};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::context::data;
use crate::log::{PredictionRecord, PredictionStatus};
use crate::monitoring::evaluator::DriftAlert;
use crate::service::AppState;

/// The subscription root (`Subscription` in the schema).
pub struct SubscriptionRoot;

/// Live events over `/ws` (graphql-transport-ws or the legacy graphql-ws protocol).
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every prediction-log row, pushed after its batch has committed (optionally only one status).
    /// A subscriber that falls more than 4,096 rows behind skips ahead (the skipped rows are in the log).
    async fn prediction_logged(
        &self,
        ctx: &Context<'_>,
        status: Option<PredictionStatus>,
    ) -> async_graphql::Result<impl Stream<Item = PredictionRecord> + use<>> {
        let state = data::<AppState>(ctx).map_err(|e| e.extend())?;
        let shutdown = state.shutdown.clone().cancelled_owned();
        let stream = BroadcastStream::new(state.log.subscribe())
            .filter_map(move |event| async move {
                match event {
                    Ok(record) if status.is_none_or(|s| s == record.status) => Some(PredictionRecord::clone(&record)),
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "predictionLogged subscriber lagged");
                        None
                    }
                }
            })
            .take_until(shutdown);
        Ok(stream)
    }

    /// Drift alerts: a feature of a model version whose status changed to WARN or DRIFT at an
    /// evaluator run (every `MONITOR_INTERVAL_MS`).
    async fn drift_alert(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = DriftAlert> + use<>> {
        let state = data::<AppState>(ctx).map_err(|e| e.extend())?;
        let shutdown = state.shutdown.clone().cancelled_owned();
        Ok(BroadcastStream::new(state.alerts.subscribe())
            .filter_map(|event| async move { event.ok() })
            .take_until(shutdown))
    }
}
