//! Mutation root: operator actions, each guarded by an API key scope.

use async_graphql::{Context, Object};

use super::context::{authorize, resolve};
use super::types::{ModelInfo, OutcomeInput, OutcomeItem, PredictionError, ReloadResult};
use crate::auth::Scope;
use crate::error::AppError;
use crate::monitoring::outcomes::{self, NewOutcome, Outcome};
use crate::service::AppState;

/// Most outcomes in one `recordOutcomes` call.
pub const MAX_OUTCOMES_PER_CALL: usize = 1_000;

/// The state and the acting key's id, if the caller's key has `scope`.
fn authorize_key<'a>(ctx: &Context<'a>, scope: Scope) -> Result<(&'a AppState, String), AppError> {
    let (state, key) = authorize(ctx, Some(scope))?;
    let actor = key.ok_or_else(|| AppError::Internal(anyhow::anyhow!("{scope:?} was authorized without a key")))?;
    Ok((state, actor.to_owned()))
}

/// The mutation root (`Mutation` in the schema).
pub struct MutationRoot;

/// Operator actions. Each needs an `x-api-key` header with the right scope: `UNAUTHENTICATED`
/// without a valid key, `FORBIDDEN` when the key lacks the scope.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Re-scans `MODEL_DIR` and swaps the whole model set in atomically (scope `models`; SIGHUP does
    /// the same). Requests in flight finish on the models they started with. If any model is
    /// unusable (missing file, checksum mismatch, ...) nothing changes and the error is
    /// `MODEL_LOAD_FAILED`. Every attempt is recorded in the `model_events` table. Cost 100.
    async fn reload_models(&self, ctx: &Context<'_>) -> async_graphql::Result<ReloadResult> {
        resolve(async {
            let (state, actor) = authorize_key(ctx, Scope::Models)?;
            let outcome = state.reload_models("api", Some(&actor)).await?;
            let set = &outcome.set;
            Ok(ReloadResult {
                models: set.models().iter().map(|m| ModelInfo::new(m, set)).collect(),
                added: outcome.added,
                removed: outcome.removed,
                default_model: set.default_model().id(),
                shadow_model: set.shadow_model().map(|m| m.id()),
            })
        })
        .await
    }

    /// Records the true sale price of a predicted house (scope `outcomes`). Idempotent: the same
    /// value again changes nothing (`UNCHANGED`); a different value replaces it (`UPDATED`, the old
    /// value kept in `prediction_outcome_history`). Unknown id: `NOT_FOUND`. Cost 5.
    async fn record_outcome(
        &self,
        ctx: &Context<'_>,
        prediction_id: async_graphql::ID,
        actual_price: f64,
        observed_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> async_graphql::Result<Outcome> {
        resolve(async {
            let (state, _) = authorize_key(ctx, Scope::Outcomes)?;
            let item = NewOutcome { prediction_id: prediction_id.to_string(), actual_price, observed_at };
            let mut results = outcomes::record(&state.pool, &[item], |_| String::new()).await?;
            let result = results.pop().ok_or_else(|| AppError::Internal(anyhow::anyhow!("no outcome result")))?;
            // Single-item paths read better without the empty item prefix.
            result.map_err(|err| match err {
                AppError::InvalidInput { field, message } => {
                    AppError::invalid(field.trim_start_matches('.').to_owned(), message)
                }
                other => other,
            })
        })
        .await
    }

    /// Records up to 1,000 outcomes (scope `outcomes`); each succeeds or fails on its own, with
    /// the same rules as `recordOutcome`. Cost 5 per outcome.
    async fn record_outcomes(
        &self,
        ctx: &Context<'_>,
        outcomes: Vec<OutcomeInput>,
    ) -> async_graphql::Result<Vec<OutcomeItem>> {
        resolve(async {
            let (state, _) = authorize_key(ctx, Scope::Outcomes)?;
            if outcomes.is_empty() || outcomes.len() > MAX_OUTCOMES_PER_CALL {
                return Err(AppError::invalid(
                    "outcomes",
                    format!("must hold between 1 and {MAX_OUTCOMES_PER_CALL} items, got {}", outcomes.len()),
                ));
            }
            let items: Vec<NewOutcome> = outcomes
                .into_iter()
                .map(|o| NewOutcome {
                    prediction_id: o.prediction_id.to_string(),
                    actual_price: o.actual_price,
                    observed_at: o.observed_at,
                })
                .collect();
            let results = outcomes::record(&state.pool, &items, |i| format!("outcomes[{i}]")).await?;
            Ok(results
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let index = i32::try_from(i).unwrap_or(i32::MAX);
                    match r {
                        Ok(outcome) => OutcomeItem { index, outcome: Some(outcome), error: None },
                        Err(err) => OutcomeItem { index, outcome: None, error: Some(PredictionError::from(&err)) },
                    }
                })
                .collect())
        })
        .await
    }
}
