//! The `model_events` table: every load, reload and failed reload of the model set, for the
//! audit trail and the dashboard's reload history.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::registry::ModelSet;

/// One load or reload of the model set.
#[derive(Debug, Clone, SimpleObject, sqlx::FromRow)]
pub struct ModelEvent {
    /// Event id.
    #[sqlx(try_from = "i64")]
    pub id: ID,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// `loaded` (startup), `reloaded` or `reload_failed`.
    pub event: String,
    /// `startup`, `sighup` or `api` (the `reloadModels` mutation).
    pub trigger: String,
    /// For `api`: the first 12 hex digits of the API key's sha256 (never the key).
    pub actor: Option<String>,
    /// `name@version` of every model serving after the event.
    pub models: Vec<String>,
    /// `name@version` added by a reload.
    pub added: Vec<String>,
    /// `name@version` removed by a reload.
    pub removed: Vec<String>,
    /// `name@version` answering by default after the event.
    pub default_model: String,
    /// `name@version` of the shadow model, if any.
    pub shadow_model: Option<String>,
    /// Why a reload failed (the previous set kept serving).
    pub error: Option<String>,
}

/// Appends to `model_events`. Failures are logged, not raised: the event log must not block or
/// undo a reload that already happened.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    pool: &PgPool,
    event: &str,
    trigger: &str,
    actor: Option<&str>,
    set: &ModelSet,
    added: &[String],
    removed: &[String],
    error: Option<&str>,
) {
    let result = sqlx::query(
        "insert into model_events (event, trigger, actor, models, added, removed, default_model, shadow_model, error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event)
    .bind(trigger)
    .bind(actor)
    .bind(set.ids())
    .bind(added)
    .bind(removed)
    .bind(set.default_model().id())
    .bind(set.shadow_model().map(|m| m.id()))
    .bind(error)
    .execute(pool)
    .await;
    if let Err(err) = result {
        tracing::error!(error = %err, event, "cannot record model event");
    }
}

/// The newest `limit` events, newest first.
#[tracing::instrument(name = "model_events.recent", skip(pool))]
pub async fn recent(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<ModelEvent>> {
    sqlx::query_as(
        "select id, occurred_at, event, trigger, actor, models, added, removed, default_model, shadow_model, error
           from model_events order by occurred_at desc, id desc limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
