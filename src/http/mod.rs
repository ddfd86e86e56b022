//! The HTTP surface: this module only assembles the router (routes, body limit, CORS, request
//! ids, tracing). The handlers: [`graphql`] (GraphQL over HTTP), [`websocket`] (GraphQL over WebSocket), [`rest`] (the
//! seed-compatible route), [`health`], [`metrics`], [`assets`] (the embedded pages); [`request`]
//! is the request context they share, [`state`] the router state.

pub mod assets;
pub mod graphql;
pub mod guard;
pub mod health;
pub mod inference;
pub mod metrics;
pub mod openapi;
pub mod request;
pub mod rest;
pub mod state;
pub mod websocket;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, header};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::request::{MakeRequestUuidV7, drop_unusable_request_id, header_str};
use self::state::HttpState;
use crate::graphql::AppSchema;
use crate::service::AppState;

/// Builds the service's router. `main`, every test and nothing else call this.
pub fn app(schema: AppSchema, state: AppState) -> Router {
    let cors = cors_layer(&state.config.cors_allowed_origins);
    let max_body = state.config.max_body_bytes;
    let limits = std::sync::Arc::new(guard::RateLimits::new(&state.config.access));
    let http_state = HttpState { schema, app: state, limits };
    // The REST routes, each registered from its `#[utoipa::path]` annotation, which also makes
    // its entry in the OpenAPI document (`openapi.rs`): the two cannot disagree.
    let (guarded_rest, guarded_doc) = OpenApiRouter::<HttpState>::new()
        .routes(routes!(rest::prever_precos))
        .routes(routes!(rest::prever_precos_no_slash))
        .routes(routes!(inference::server_metadata))
        .routes(routes!(inference::model_metadata))
        .routes(routes!(inference::model_version_metadata))
        .routes(routes!(inference::infer))
        .routes(routes!(inference::infer_version))
        .split_for_parts();
    // Probes and metrics, like the pages, need no key.
    let (open_rest, open_doc) = OpenApiRouter::<HttpState>::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(inference::server_live))
        .routes(routes!(inference::server_ready))
        .routes(routes!(inference::model_ready))
        .routes(routes!(inference::model_version_ready))
        .split_for_parts();
    let mut document = open_doc;
    document.merge(guarded_doc);
    let document: std::sync::Arc<str> = document.to_json().unwrap_or_default().into();
    // The API routes, behind the key check and the rate limits.
    let api = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/ws", get(websocket::websocket))
        .merge(guarded_rest)
        .route_layer(axum::middleware::from_fn_with_state(http_state.clone(), guard::guard));
    let router = api
        .merge(open_rest)
        .route("/", get(assets::index))
        .route("/dashboard", get(assets::dashboard))
        .route("/docs", get(assets::docs))
        .route("/redoc", get(assets::redoc))
        .route("/assets/{file}", get(assets::asset))
        .route("/openapi.json", get(move || openapi_json(document.clone())))
        // Runs after routing (a Router layer wraps each route), so the route label is the
        // matched path; outside the body limit, so a 413 is counted too.
        .layer(axum::middleware::from_fn(metrics::record))
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
                // Named `METHOD /route` once the route is matched (`metrics::record`).
                let span = tracing::info_span!(
                    "http",
                    otel.kind = "server",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %header_str(req.headers(), "x-request-id").unwrap_or_default(),
                );
                crate::telemetry::continue_trace(&span, req.headers());
                span
            }))
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

/// `GET /openapi.json`: the OpenAPI document, built once with the router.
async fn openapi_json(document: std::sync::Arc<str>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response()
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
