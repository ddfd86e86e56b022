//! Health probes: `/health/live` (the process answers) and `/health/ready` (it can serve).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::HttpState;
use crate::db;

/// Always OK while the process serves HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health", summary = "Liveness: the process answers",
    responses((status = 200, description = "Always, while the process runs", body = super::openapi::Live)))]
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// How long readiness waits for the database: a probe must answer fast, and a database slower
/// than this is one the writer is spooling around anyway.
const READY_DB_TIMEOUT: Duration = Duration::from_millis(500);

/// Ready when the database answers, every embedded migration is applied and a model is loaded —
/// or, with the database away, while the log can spool (the service still answers, durably).
/// `log` says whether rows are being spooled, what waits for the drain, and how many spool
/// segments cannot be read; `models` which set this replica serves and whether it is the set in
/// force across replicas.
#[utoipa::path(get, path = "/health/ready", tag = "health", summary = "Readiness: the service can answer durably",
    description = "`status` ok, degraded (database away, the spool takes the rows) or unavailable; `checks`, `models`, `log` say why (README Operations).",
    responses(
        (status = 200, description = "Ready (ok or degraded)", body = Object),
        (status = 503, description = "Unavailable", body = Object)
    ))]
pub async fn ready(State(s): State<HttpState>) -> Response {
    let readiness = check(&s).await;
    let status = if readiness.serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness.body)).into_response()
}

/// What a readiness check found.
pub struct Readiness {
    /// Whether the replica can answer durably (the status of `/health/ready`).
    pub serving: bool,
    /// The body of `/health/ready`.
    pub body: serde_json::Value,
}

/// The readiness check behind `/health/ready` and the inference protocol's `/v2/health/ready`.
pub async fn check(s: &HttpState) -> Readiness {
    let check = tokio::time::timeout(READY_DB_TIMEOUT, db::pending_migrations(&s.app.pool)).await;
    let (database, migrations) = match check {
        Ok(Ok(pending)) if pending.is_empty() => ("ok".to_owned(), "ok".to_owned()),
        Ok(Ok(pending)) => ("ok".to_owned(), format!("pending: {pending:?}")),
        Ok(Err(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "readiness: database check failed");
            ("unreachable".to_owned(), "unknown".to_owned())
        }
        Err(_) => ("timeout".to_owned(), "unknown".to_owned()),
    };
    let set = s.app.models.snapshot();
    let model = set.default_model().id();
    let sync = s.app.model_sync.get();
    let log = s.app.log.status();
    let serving = if database == "ok" { migrations == "ok" } else { log.can_spool };
    metrics::gauge!("service_ready").set(if serving { 1.0 } else { 0.0 });
    let backlog = &log.backlog;
    let body = json!({
        "status": match (serving, database == "ok") { (true, true) => "ok", (true, false) => "degraded", _ => "unavailable" },
        "checks": { "database": database, "migrations": migrations, "model": model },
        // Whether this replica serves the model set in force (src/convergence.rs). A diverged
        // replica stays ready: it answers correctly with the models it has.
        "models": {
            "inForce": sync.differences.is_empty(),
            "revision": sync.revision,
            "serving": set.ids(),
            "defaultModel": model,
            "threeInputModel": set.three_input_model().map(|m| m.id()),
            "shadowModel": set.shadow_model().map(|m| m.id()),
            "differences": sync.differences,
            "checkedAt": sync.checked_at,
        },
        "log": {
            "state": if log.spooling || backlog.rows > 0 { "spooling" } else { "ok" },
            "backlog": {
                "rows": backlog.rows,
                "records": backlog.records,
                "segments": backlog.segments,
                "bytes": backlog.bytes,
                "oldestRow": backlog.oldest_row,
            },
            // Segments that cannot be read stay on disk for a build (or an operator) that can;
            // the service keeps serving, so this does not make the replica unready.
            "unreadableSegments": backlog.unreadable_segments,
        },
    });
    Readiness { serving, body }
}
