//! OpenTelemetry traces: the real binary exports its spans over OTLP/HTTP to a receiver in the
//! test, continuing the caller's W3C `traceparent`, and the log row stores the trace id.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::common::fresh_spool_dir;
use crate::faults::{ServerProcess, direct_url};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
}

/// An OTLP/HTTP receiver on 127.0.0.1:0 (protobuf, as the exporter sends by default): its URL,
/// and the spans it receives.
async fn otlp_receiver() -> (String, mpsc::UnboundedReceiver<Span>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let _ = tx.send(Span {
                            name: span.name,
                            kind: span.kind,
                            trace_id: hex::encode(span.trace_id),
                            span_id: hex::encode(span.span_id),
                            parent_span_id: hex::encode(span.parent_span_id),
                            service: service.clone(),
                        });
                    }
                }
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// Spans received until `done` holds for them (20 s at most).
async fn spans_until(rx: &mut mpsc::UnboundedReceiver<Span>, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&spans) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(span)) => spans.push(span),
            _ => panic!("the expected spans did not arrive; received {spans:#?}"),
        }
    }
    spans
}

/// Prices one house with `headers`; returns the prediction's id.
async fn predict_with(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::new().post(format!("http://{addr}/graphql")).json(&json!({
        "query": "{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { id price } }"
    }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["data"]["predictPrice"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

async fn stored_trace_id(pool: &PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("select trace_id from prediction_log where id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_predictions_spans_are_exported_under_the_callers_trace_and_its_row_keeps_the_trace_id(pool: PgPool) {
    let (endpoint, mut received) = otlp_receiver().await;
    let server = ServerProcess::start_with(
        &direct_url(&pool),
        &fresh_spool_dir(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100"), ("RUST_LOG", "info")],
    )
    .await;
    let (trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let id = predict_with(server.addr, &[("traceparent", &traceparent)]).await;

    // The request's root span is the caller's child; the log write is inside it.
    let spans = spans_until(&mut received, |spans| {
        spans.iter().any(|s| s.trace_id == trace && s.name == "log.submit")
            && spans.iter().any(|s| s.trace_id == trace && s.parent_span_id == caller_span)
    })
    .await;
    let root = spans.iter().find(|s| s.trace_id == trace && s.parent_span_id == caller_span).unwrap();
    assert_eq!(root.name, "POST /graphql", "{spans:#?}");
    assert_eq!(root.kind, SpanKind::Server as i32, "{root:?}");
    assert!(root.service.contains("house-price-api"), "{root:?}");
    let mut ancestry = spans.iter().find(|s| s.trace_id == trace && s.name == "log.submit").unwrap();
    while ancestry.span_id != root.span_id {
        ancestry = spans
            .iter()
            .find(|s| s.span_id == ancestry.parent_span_id)
            .unwrap_or_else(|| panic!("log.submit is not under the request's span: {spans:#?}"));
    }
    assert_eq!(stored_trace_id(&pool, &id).await.as_deref(), Some(trace));

    // Without a traceparent the request starts a trace of its own, and its row names it.
    let id = predict_with(server.addr, &[]).await;
    let own = stored_trace_id(&pool, &id).await.expect("a trace id for a request without traceparent");
    assert!(own.len() == 32 && own != trace, "{own}");
    spans_until(&mut received, |spans| spans.iter().any(|s| s.trace_id == own && s.parent_span_id.is_empty())).await;
}

#[sqlx::test]
async fn without_an_exporter_the_row_keeps_the_callers_trace_id_and_ignores_a_malformed_one(pool: PgPool) {
    let server = ServerProcess::start(&direct_url(&pool), &fresh_spool_dir()).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let id = predict_with(server.addr, &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))]).await;
    assert_eq!(stored_trace_id(&pool, &id).await.as_deref(), Some(trace));
    let id = predict_with(server.addr, &[("traceparent", "00-not-a-trace-01")]).await;
    assert_eq!(stored_trace_id(&pool, &id).await, None);
    let id = predict_with(server.addr, &[]).await;
    assert_eq!(stored_trace_id(&pool, &id).await, None);
}
