//! The `model_events` table: every load, reload and failed reload of the model set, for the
//! audit trail and the dashboard's reload history.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::registry::ModelSet;

/// One load or reload of the model set.
#[derive(Debug, Clone, SimpleObject, sqlx::FromRow)]
pub struct ModelEvent {
    /// Event id.
    #[sqlx(try_from = "i64")]
    pub id: ID,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// `loaded` (startup), `reloaded`, `reload_failed`, or `diverged` (the replica cannot serve
    /// the set in force; `error` says why).
    pub event: String,
    /// `startup`, `sighup`, `api` (the `reloadModels` mutation), or `replica` (the set in force
    /// changed in another replica).
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
    /// Why a reload failed (the previous set kept serving), or how the replica diverged.
    pub error: Option<String>,
    /// The replica it happened in (`host:port`).
    pub replica: Option<String>,
    /// Revision of the set in force it made or followed.
    pub revision: Option<i64>,
}

/// What happened to a replica's model set, for [`record`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Change<'a> {
    /// `loaded`, `reloaded`, `reload_failed` or `diverged`.
    pub event: &'a str,
    /// `startup`, `sighup`, `api` or `replica`.
    pub trigger: &'a str,
    /// Who asked (an API key's short digest).
    pub actor: Option<&'a str>,
    /// `name@version` added.
    pub added: &'a [String],
    /// `name@version` removed.
    pub removed: &'a [String],
    /// Why it failed or diverged.
    pub error: Option<&'a str>,
    /// The replica (host:port).
    pub replica: &'a str,
    /// The revision of the set in force it made or followed.
    pub revision: Option<i64>,
}

/// Appends to `model_events`; `set` is the set serving after the change. Failures are logged,
/// not raised: the event log must not block or undo a reload that already happened.
pub async fn record(pool: &PgPool, set: &ModelSet, change: Change<'_>) {
    let result = sqlx::query(
        "insert into model_events (event, trigger, actor, models, added, removed, default_model, shadow_model, error, replica, revision)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(change.event)
    .bind(change.trigger)
    .bind(change.actor)
    .bind(set.ids())
    .bind(change.added)
    .bind(change.removed)
    .bind(set.default_model().id())
    .bind(set.shadow_model().map(|m| m.id()))
    .bind(change.error)
    .bind(change.replica)
    .bind(change.revision)
    .execute(pool)
    .await;
    if let Err(err) = result {
        tracing::error!(error = %err, event = change.event, "cannot record model event");
    }
}

/// The newest `limit` events, newest first.
#[tracing::instrument(name = "model_events.recent", skip(conn))]
pub async fn recent(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<ModelEvent>> {
    sqlx::query_as(
        "select id, occurred_at, event, trigger, actor, models, added, removed, default_model, shadow_model, error,
                replica, revision
           from model_events order by occurred_at desc, id desc limit $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}
