//! `/metrics`: the Prometheus text exposition of the service's metrics.

use axum::http::header;
use axum::response::IntoResponse;

use crate::telemetry;

/// The current metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition (README Operations lists the families)", body = String, content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::metrics_handle().render())
}

/// Counts every request by route and status, times it, and keeps the in-flight gauge. The route
/// label is the matched path, so clients cannot grow the label set (unmatched paths share one).
pub async fn record(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    crate::telemetry::name_request_span(req.method(), &route);
    let started = std::time::Instant::now();
    let _in_flight = InFlight::enter();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "route" => route, "status" => status).increment(1);
    response
}

/// One request in `http_requests_in_flight`, until dropped (also when the client goes away).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}
