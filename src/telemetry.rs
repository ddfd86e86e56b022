//! Tracing subscriber and the Prometheus metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::TraceFormat;

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), pretty or JSON.
pub fn init_tracing(format: TraceFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match format {
        TraceFormat::Pretty => builder.try_init(),
        TraceFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    // Already installed (tests, or a second call) is fine.
    drop(result);
}

/// Metrics renamed, still exported under their old name with the same value until the next
/// release: (old, new). The old names' HELP says so, and the server warns once at start.
pub const DEPRECATED_METRICS: &[(&str, &str)] = &[
    ("prediction_log_rows_replayed_total", "prediction_log_rows_drained_total"),
    ("prediction_log_replay_lag_seconds", "prediction_log_drain_lag_seconds"),
];

/// Warns once that the [`DEPRECATED_METRICS`] are deprecated (called at server start).
pub fn warn_deprecated_metrics() {
    for (old, new) in DEPRECATED_METRICS {
        tracing::warn!(metric = old, replacement = new, "metric {old} is deprecated and will be removed: scrape {new}");
    }
}

/// The process-wide Prometheus recorder, installed on first use (server start or `/metrics`).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then /metrics is empty but serving works.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will not show service metrics");
        }
        for (old, new) in DEPRECATED_METRICS {
            metrics::describe_counter!(*old, format!("DEPRECATED: use {new}"));
        }
        handle
    })
}
