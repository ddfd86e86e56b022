//! `/metrics`: the Prometheus text exposition of the service's metrics.

use axum::http::header;
use axum::response::IntoResponse;

use crate::telemetry;

/// The current metrics.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::metrics_handle().render())
}
