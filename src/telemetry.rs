//! Tracing subscriber, OpenTelemetry trace export, and the Prometheus metrics recorder.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{TelemetryConfig, TraceFormat};

/// Whether spans are exported over OTLP (set once, at start).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the trace exporter alive; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops the trace export"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: the last spans could not be exported: {err}");
        }
    }
}

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), pretty or JSON
/// output, and, when an OTLP endpoint is configured, the export of the same spans over OTLP/HTTP.
/// Without an endpoint no exporter exists and spans cost what they cost before.
pub fn init_tracing(config: &TelemetryConfig) -> TracingGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let output = match config.format() {
        TraceFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
        TraceFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).boxed()
        }
    };
    let (provider, problem) = match config.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        None => (None, None),
        Some(endpoint) => match otlp_provider(endpoint) {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(err)),
        },
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("house-price-api")));
    let installed = tracing_subscriber::registry().with(filter).with(output).with(otel).try_init().is_ok();
    // Already installed (tests, or a second call) is fine; then this call exports nothing.
    let provider = provider.filter(|_| installed);
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    if let Some(err) = problem {
        tracing::error!(error = %format!("{err:#}"), "traces are not exported: the OTLP exporter cannot be built");
    }
    TracingGuard { provider }
}

/// The tracer provider: batches spans on the SDK's own thread and posts them as protobuf to
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` if set, else `{endpoint}/v1/traces`. The SDK reads the
/// other standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`).
fn otlp_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter.build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "house-price-api".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Whether spans are exported.
pub fn exporting_traces() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Names the current request span `METHOD /matched/path` for the trace backend (the raw path
/// would make one span name per URL a client invents).
pub fn name_request_span(method: &axum::http::Method, route: &str) {
    if exporting_traces() {
        // On the OpenTelemetry span itself: once its context exists (a continued `traceparent`
        // creates it), tracing-opentelemetry no longer applies a recorded `otel.name`.
        tracing::Span::current().context().span().update_name(format!("{method} {route}"));
    }
}

/// Makes `span` (a request's root span) continue the caller's trace when the request carries a
/// valid W3C `traceparent` and spans are exported.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !exporting_traces() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled by the filter; then there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// The trace id a request's log rows store (32 lowercase hex digits): the exported span's trace
/// (continued from `traceparent` or new) when it is sampled, else the caller's `traceparent`
/// trace id, so rows can still be joined with the caller's traces.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    if exporting_traces() {
        let context = tracing::Span::current().context();
        let span = context.span();
        let ids = span.span_context();
        // An unsampled trace is never exported: a row naming it would lead nowhere.
        if ids.is_valid() && ids.is_sampled() {
            return Some(ids.trace_id().to_string());
        }
    }
    traceparent_trace_id(headers.get("traceparent")?.to_str().ok()?)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is valid.
fn traceparent_trace_id(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

/// Every metric the service exports: name, kind, help text. `/metrics` prints the help of each;
/// deploy/prometheus and deploy/grafana use these names (a test checks both against this list and
/// against a live `/metrics`).
pub const METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "http_requests_total",
        MetricKind::Counter,
        "HTTP requests answered, by route (the matched path) and status code.",
    ),
    (
        "http_request_duration_seconds",
        MetricKind::Histogram,
        "Time to answer an HTTP request, by route (for /ws: until the upgrade).",
    ),
    ("http_requests_in_flight", MetricKind::Gauge, "HTTP requests being answered now (what the HPA scales on)."),
    (
        "predictions_total",
        MetricKind::Counter,
        "Prediction rows answered, by status: ok, rejected, failed (logged), unlogged (the log refused them: SERVICE_UNAVAILABLE).",
    ),
    (
        "graphql_errors_total",
        MetricKind::Counter,
        "GraphQL errors returned, by extensions.code (GraphQL answers errors with HTTP 200).",
    ),
    ("service_ready", MetricKind::Gauge, "1 when the last readiness check passed, else 0."),
    ("prediction_log_rows_written_total", MetricKind::Counter, "Rows committed to prediction_log by the writer."),
    (
        "prediction_log_rows_spooled_total",
        MetricKind::Counter,
        "Rows written to the local spool because the database could not take them.",
    ),
    ("prediction_log_rows_drained_total", MetricKind::Counter, "Spooled rows moved into prediction_log."),
    (
        "prediction_log_rows_dropped_total",
        MetricKind::Counter,
        "Rows lost: async-mode rows neither committed nor spooled, and spooled rows the database refused (each logged in full).",
    ),
    (
        "prediction_log_write_failures_total",
        MetricKind::Counter,
        "Group commits that failed (the rows then go to the spool or are retried).",
    ),
    ("prediction_log_queue_rows", MetricKind::Gauge, "Rows waiting in the writer's queue."),
    ("prediction_log_batch_rows", MetricKind::Histogram, "Rows per group commit."),
    ("prediction_log_commit_seconds", MetricKind::Histogram, "Time of one group commit."),
    (
        "prediction_log_queue_wait_seconds",
        MetricKind::Histogram,
        "Time a row waits in the queue before its commit starts.",
    ),
    ("prediction_log_spool_rows", MetricKind::Gauge, "Rows in the spool waiting for the drain."),
    ("prediction_log_spool_records", MetricKind::Gauge, "Records (group commits) in the spool."),
    ("prediction_log_spool_segments", MetricKind::Gauge, "Spool segment files."),
    ("prediction_log_spool_bytes", MetricKind::Gauge, "Bytes of spool segment files."),
    (
        "prediction_log_spool_unreadable_segments",
        MetricKind::Gauge,
        "Spool segments this build cannot read (kept on disk).",
    ),
    (
        "prediction_log_spool_oldest_row_age_seconds",
        MetricKind::Gauge,
        "Age of the oldest spooled row (0 when the spool is empty).",
    ),
    (
        "prediction_log_drain_lag_seconds",
        MetricKind::Gauge,
        "How far behind the drain is: age of the oldest row it has yet to move.",
    ),
    ("shadow_scored_total", MetricKind::Counter, "Rows priced by the shadow model."),
    ("shadow_skipped_total", MetricKind::Counter, "Rows the shadow scorer skipped (queue full or no shadow price)."),
    (
        "drift_status",
        MetricKind::Gauge,
        "Drift of a feature or of the prediction over the monitoring window: 0 OK, 1 WARN, 2 DRIFT.",
    ),
    (
        "drift_psi",
        MetricKind::Gauge,
        "Population stability index of a feature or of the prediction against the training data.",
    ),
    (
        "interval_coverage",
        MetricKind::Gauge,
        "Share of recorded outcomes inside the 0.9 interval served, over the last days.",
    ),
    (
        "lease_held",
        MetricKind::Gauge,
        "1 on the replica that runs a cluster-wide job (evaluator, partition maintenance).",
    ),
    ("model_set_revision", MetricKind::Gauge, "Revision of the model set in force this replica has applied."),
    ("model_set_converged", MetricKind::Gauge, "1 when this replica serves the model set in force."),
    ("event_feed_errors_total", MetricKind::Counter, "Errors of the database feeds behind subscriptions, by feed."),
    ("rate_limited_total", MetricKind::Counter, "Requests refused by a rate limit, by limit (key, address)."),
    ("query_refused_total", MetricKind::Counter, "GraphQL documents refused before execution, by limit."),
];

/// The Prometheus type of a metric in [`METRICS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Distribution (buckets for `http_request_duration_seconds`, summaries for the others).
    Histogram,
}

/// Counter series that exist from the start at 0, with every label value they can take: Prometheus
/// sees the first drop or refusal as an increase (a series that appears already at 4 does not
/// register in `increase()`), and dashboards show 0 rather than "no data". Counters labelled by
/// route or feed appear with their first use.
const ZERO_AT_START: &[(&str, &[(&str, &str)])] = &[
    ("predictions_total", &[("status", "ok")]),
    ("predictions_total", &[("status", "rejected")]),
    ("predictions_total", &[("status", "failed")]),
    ("predictions_total", &[("status", "unlogged")]),
    ("graphql_errors_total", &[("code", "INTERNAL_SERVER_ERROR")]),
    ("graphql_errors_total", &[("code", "SERVICE_UNAVAILABLE")]),
    ("prediction_log_rows_written_total", &[]),
    ("prediction_log_rows_spooled_total", &[]),
    ("prediction_log_rows_drained_total", &[]),
    ("prediction_log_rows_dropped_total", &[]),
    ("prediction_log_write_failures_total", &[]),
    ("shadow_scored_total", &[]),
    ("shadow_skipped_total", &[]),
    ("rate_limited_total", &[("limit", "address")]),
    ("rate_limited_total", &[("limit", "key")]),
    ("query_refused_total", &[("limit", "cost")]),
    ("query_refused_total", &[("limit", "aliases")]),
    ("query_refused_total", &[("limit", "directives")]),
    ("query_refused_total", &[("limit", "tokens")]),
];

/// Buckets of `http_request_duration_seconds`: a Prometheus histogram, not a summary, so latency
/// quantiles can be aggregated across replicas (`histogram_quantile` over `sum by (le)`).
const LATENCY_BUCKETS: &[f64] = &[0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

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
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency buckets are a non-empty constant");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then /metrics is empty but serving works.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will not show service metrics");
        }
        for &(name, kind, help) in METRICS {
            match kind {
                MetricKind::Counter => metrics::describe_counter!(name, help),
                MetricKind::Gauge => metrics::describe_gauge!(name, help),
                MetricKind::Histogram => metrics::describe_histogram!(name, help),
            }
        }
        for (old, new) in DEPRECATED_METRICS {
            metrics::describe_counter!(*old, format!("DEPRECATED: use {new}"));
        }
        for &(name, labels) in ZERO_AT_START {
            metrics::counter!(name, labels).increment(0);
        }
        // Histogram samples are buffered until drained; `/metrics` drains them, and so does this
        // thread, so memory stays bounded when nothing scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the metrics upkeep thread; histograms grow until scraped");
        }
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::traceparent_trace_id;

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(traceparent_trace_id(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(), Some(id));
        // A later version may append fields.
        assert_eq!(traceparent_trace_id(&format!("01-{id}-00f067aa0ba902b7-01-extra")).as_deref(), Some(id));
    }

    #[test]
    fn malformed_traceparents_give_none() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad:?}");
        }
    }
}
