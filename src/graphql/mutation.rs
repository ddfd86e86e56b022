//! Mutation root: operator actions, each guarded by an API key scope.

use async_graphql::{Context, Object};

use super::query::{data, resolve};
use super::types::{ModelInfo, ReloadResult};
use crate::auth::{PresentedKey, Scope};
use crate::service::AppState;

/// The mutation root (`Mutation` in the schema).
pub struct MutationRoot;

/// Operator actions. Each needs an `x-api-key` header with the right scope: `UNAUTHENTICATED`
/// without a valid key, `FORBIDDEN` when the key lacks the scope.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Re-scans `MODEL_DIR` and swaps the whole model set in atomically (scope `models`; SIGHUP does
    /// the same). Requests in flight finish on the models they started with. If any model is
    /// unusable (missing file, checksum mismatch, ...) nothing changes and the error is
    /// `MODEL_LOAD_FAILED`. Every attempt is recorded in the `model_events` table.
    async fn reload_models(&self, ctx: &Context<'_>) -> async_graphql::Result<ReloadResult> {
        resolve(async {
            let state = data::<AppState>(ctx)?;
            let key = ctx.data_opt::<PresentedKey>().and_then(|k| k.0.as_deref());
            let actor = state.api_keys.authorize(key, Scope::Models)?;
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
}
