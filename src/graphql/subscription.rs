//! Subscription root: committed log rows and drift alerts of every replica, pushed over `/ws`.

use async_graphql::{Context, ErrorExtensions, ID, Subscription};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::context::authorize;
use crate::auth::Scope;
use crate::error::AppError;
use crate::log::{PredictionRecord, PredictionStatus, store};
use crate::monitoring::alerts::DriftAlert;
use crate::service::AppState;

/// Whether the key a subscription started with still works (checked before each event, so a
/// revoked or expired key's stream ends instead of delivering).
fn while_key_works(state: &AppState, key: Option<&str>) -> impl Fn() -> bool + Send + Sync + use<> {
    let keys = state.keys.clone();
    let key = key.map(str::to_owned);
    move || key.as_deref().is_none_or(|id| keys.is_active(id, chrono::Utc::now()))
}

/// The subscription root (`Subscription` in the schema).
pub struct SubscriptionRoot;

/// Live events over `/ws` (graphql-transport-ws or the legacy graphql-ws protocol).
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every prediction-log row, from every replica, once its transaction has committed,
    /// in commit order (optionally only one status); a row spooled during a database outage comes
    /// when it reaches PostgreSQL. Rows arrive within about `EVENT_POLL_MS` (200 ms).
    /// `after`: the id of the last row a client received; the rows committed after it are sent
    /// first, so a client that reconnects (to any replica) resumes without a gap. Scope `history`;
    /// cost 10.
    async fn prediction_logged(
        &self,
        ctx: &Context<'_>,
        status: Option<PredictionStatus>,
        after: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = PredictionRecord> + use<>> {
        let (state, key) = authorize(ctx, Some(Scope::History)).map_err(|e| e.extend())?;
        let while_key_works = while_key_works(state, key);
        let after = match after {
            None => None,
            Some(id) => {
                let id: Uuid = id.parse().map_err(|_| AppError::invalid("after", "is not a prediction id").extend())?;
                let position = store::position_of(&state.pool, id).await.map_err(|e| AppError::from(e).extend())?;
                Some(position.ok_or_else(|| {
                    AppError::invalid(
                        "after",
                        "no logged prediction has this id (or it is older than the log's retention)",
                    )
                    .extend()
                })?)
            }
        };
        let shutdown = state.shutdown.clone().cancelled_owned();
        Ok(state
            .events
            .subscribe(after)
            .filter(move |record| std::future::ready(status.is_none_or(|s| s == record.status)))
            .take_while(move |_| std::future::ready(while_key_works()))
            .take_until(shutdown))
    }

    /// Drift alerts, from whichever replica's evaluator raised them: a feature of a model version
    /// whose status changed to WARN or DRIFT at an evaluator run (every `MONITOR_INTERVAL_MS`).
    /// Scope `monitoring`; cost 1.
    async fn drift_alert(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = DriftAlert> + use<>> {
        let (state, key) = authorize(ctx, Some(Scope::Monitoring)).map_err(|e| e.extend())?;
        let while_key_works = while_key_works(state, key);
        let shutdown = state.shutdown.clone().cancelled_owned();
        Ok(state.alerts.subscribe(None).take_while(move |_| std::future::ready(while_key_works())).take_until(shutdown))
    }
}
