//! The HTTP surface: one router for GraphQL (over HTTP and WebSocket, [`graphql`]), the web
//! pages ([`assets`]), health, metrics and the seed-compatible REST route, with request ids,
//! tracing and CORS.

pub mod assets;
pub mod graphql;

use std::time::Duration;

use async_graphql::ErrorExtensions;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{AppError, codes};
use crate::graphql::AppSchema;
use crate::model::{Feature, HouseFeatures};
use crate::service::{AppState, ItemPath, PredictionItem, RequestMeta, Route};
use crate::{db, telemetry};

/// Router state: the schema plus the application state injected into each GraphQL request.
#[derive(Clone)]
struct HttpState {
    schema: AppSchema,
    app: AppState,
}

/// Builds the service's router. `main`, every test and nothing else call this.
pub fn app(schema: AppSchema, state: AppState) -> Router {
    let cors = cors_layer(&state.config.cors_allowed_origins);
    let max_body = state.config.max_body_bytes;
    let http_state = HttpState { schema, app: state };
    let router = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/ws", get(graphql::websocket))
        .route("/", get(assets::index))
        .route("/dashboard", get(assets::dashboard))
        .route("/assets/{file}", get(assets::asset))
        .route("/prever_precos/", post(prever_precos))
        .route("/prever_precos", post(prever_precos))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        // Applies to every body extractor (GraphQL and REST), chunked or not: 413 above it.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(http_state);
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Outermost first: the id is set before the span is made, so the span and the handler see it,
    // and copied to the response last.
    router.layer(
        ServiceBuilder::new()
            .map_request(drop_unusable_request_id)
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                tracing::info_span!(
                    "http",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %header_str(req.headers(), "x-request-id").unwrap_or_default(),
                )
            }))
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

/// Generates missing `x-request-id`s as UUIDv7: time-ordered, so the log's `request_id` index
/// grows at its right edge like the time indexes, instead of taking a random B-tree page per row.
#[derive(Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
        Some(RequestId::new(HeaderValue::from_str(id).ok()?))
    }
}

/// Longest accepted client `x-request-id`.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client `x-request-id` that is too long or not printable ASCII is dropped, so a fresh UUID
/// replaces it everywhere (header, span, row) instead of the row and the echo disagreeing.
fn drop_unusable_request_id<B>(mut req: Request<B>) -> Request<B> {
    let unusable = req.headers().get("x-request-id").is_some_and(|v| {
        v.len() > MAX_REQUEST_ID_LEN || v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_graphic)
    });
    if unusable {
        req.headers_mut().remove("x-request-id");
    }
    req
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-request-id"),
                header::HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([header::HeaderName::from_static("x-request-id")]),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn request_meta(headers: &HeaderMap, route: Route) -> RequestMeta {
    // SetRequestIdLayer guarantees the header; the fallback only guards a misconfigured router.
    let request_id =
        header_str(headers, "x-request-id").map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let client = header_str(headers, header::USER_AGENT.as_str()).map(str::to_owned);
    RequestMeta::new(request_id, route, client)
}

/// Status, code and message for a body that could not be read: over `MAX_BODY_BYTES` (enforced by
/// `DefaultBodyLimit` whether or not the client sent a Content-Length) or broken off. Such requests
/// attempted no prediction and are not logged.
fn body_refusal(rejection: &BytesRejection, limit: usize) -> graphql::Refusal {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE, format!("the body exceeds {limit} bytes"))
        }
        status => (status, codes::BAD_REQUEST, rejection.body_text()),
    }
}

/// `POST /prever_precos/`: the seed service's contract, `{"square_feet", "num_bedrooms",
/// "num_bathrooms"}` → `{"previsao": [price]}`, with FastAPI-shaped 422 errors.
async fn prever_precos(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, code, detail) = body_refusal(&rejection, s.app.config.max_body_bytes);
            return (status, Json(json!({ "detail": detail, "code": code }))).into_response();
        }
    };
    let meta = request_meta(&headers, Route::RestPreverPrecos);
    let timeout = s.app.config.limits.request_timeout();
    let work = async {
        let (features, raw_input) = match serde_json::from_slice::<Value>(&body) {
            Ok(value) => (parse_seed_body(&value), value),
            Err(err) => (
                Err(AppError::invalid("body", format!("is not valid JSON: {err}"))),
                json!({ "unparsed": String::from_utf8_lossy(&body.slice(..body.len().min(4096))) }),
            ),
        };
        let item = PredictionItem { path: ItemPath::Single, features, raw_input };
        s.app.predict(&meta, None, vec![item]).await
    };
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(mut outcomes)) => {
            outcomes.pop().unwrap_or_else(|| Err(AppError::Internal(anyhow::anyhow!("no outcome"))))
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(AppError::Timeout(timeout.as_millis() as u64)),
    };
    match outcome {
        Ok(priced) => Json(json!({ "previsao": [priced.price] })).into_response(),
        Err(err) => rest_error(err),
    }
}

/// Reads the seed body like pydantic does: numbers for the floats, integral numbers for the int,
/// every field required. Errors name the field as the seed did.
fn parse_seed_body(body: &Value) -> Result<HouseFeatures, AppError> {
    let Some(obj) = body.as_object() else {
        return Err(AppError::invalid("body", "must be a JSON object"));
    };
    let number = |feature: Feature| -> Result<f64, AppError> {
        let name = feature.rest_name();
        match obj.get(name) {
            None | Some(Value::Null) => Err(AppError::invalid(name, "field required")),
            Some(v) => v.as_f64().ok_or_else(|| AppError::invalid(name, "must be a number")),
        }
    };
    let square_feet = number(Feature::SquareFeet)?;
    let bedrooms = number(Feature::Bedrooms)?;
    if bedrooms.fract() != 0.0 || bedrooms.abs() > 1e15 {
        return Err(AppError::invalid(Feature::Bedrooms.rest_name(), "must be a whole number"));
    }
    Ok(HouseFeatures::new(square_feet, bedrooms as i64, number(Feature::Bathrooms)?))
}

fn rest_error(err: AppError) -> Response {
    let code = err.code();
    let (status, detail) = match &err {
        AppError::InvalidInput { field, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{ "loc": ["body", field], "msg": message, "type": "value_error" }]),
        ),
        AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, json!(err.to_string())),
        AppError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, json!(err.to_string())),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, json!(err.to_string())),
        AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, json!(err.to_string())),
        AppError::Forbidden(_) => (StatusCode::FORBIDDEN, json!(err.to_string())),
        AppError::ModelLoad(_) | AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, json!(err.to_string())),
    };
    // Log server faults with their cause chain, exactly as for GraphQL.
    let _ = err.extend();
    (status, Json(json!({ "detail": detail, "code": code }))).into_response()
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// How long readiness waits for the database: a probe must answer fast, and a database slower
/// than this is one the writer is spooling around anyway.
const READY_DB_TIMEOUT: Duration = Duration::from_millis(500);

/// Ready when the database answers, every embedded migration is applied and a model is loaded —
/// or, with the database away, while the log can spool (the service still answers, durably).
/// `log` says whether rows are being spooled, what waits for the drain, and how many spool
/// segments cannot be read.
async fn ready(State(s): State<HttpState>) -> Response {
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
    let model = s.app.models.snapshot().default_model().id();
    let log = s.app.log.status();
    let serving = if database == "ok" { migrations == "ok" } else { log.can_spool };
    let status = if serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let backlog = &log.backlog;
    let body = json!({
        "status": match (serving, database == "ok") { (true, true) => "ok", (true, false) => "degraded", _ => "unavailable" },
        "checks": { "database": database, "migrations": migrations, "model": model },
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
    (status, Json(body)).into_response()
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::metrics_handle().render())
}
