use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::common::{Subscriber, TestApp, config, error_code};

#[sqlx::test]
async fn queries_deeper_than_the_limit_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // 12 levels with the default limit of 10 (introspection has a budget of its own, see web.rs).
    let deep = "{ a { b { c { d { e { f { g { h { i { j { k { l } } } } } } } } } } } }";
    let body = app.graphql(deep, json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");
    // Within the limit, the same kind of query works.
    let body = app.graphql("{ __schema { types { name } } }", json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[sqlx::test]
async fn queries_costlier_than_the_budget_are_refused_with_the_cost_and_the_budget(pool: PgPool) {
    let mut config = config();
    config.limits.max_query_cost = 5;
    let app = TestApp::spawn_with(pool, config).await;
    // `model` 1 + six fields 1 each.
    let body = app.graphql("{ model { name version description algorithm checksum trainedAt } }", json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COSTLY", "{body}");
    let ext = &body["errors"][0]["extensions"];
    assert_eq!((ext["limit"].as_str(), ext["cost"].as_u64(), ext["budget"].as_u64()), (Some("cost"), Some(7), Some(5)));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("budget of 5"), "{body}");
    assert!(app.graphql("{ model { name version } }", json!({})).await["errors"].is_null());
}

#[sqlx::test]
async fn a_request_over_the_time_budget_fails_with_request_timeout(pool: PgPool) {
    let mut config = config();
    config.limits.request_timeout_ms = 300;
    // No spool: it would take the stalled batches after LOG_FAILOVER_MS and answer OK.
    config.log.log_fallback = house_price_api::config::LogFallback::Fail;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    // Stall the log: a transaction holds an exclusive lock on the table the writer inserts into.
    let mut stall = pool.begin().await.unwrap();
    sqlx::query("lock table prediction_log in access exclusive mode").execute(&mut *stall).await.unwrap();

    let body = app.predict(1500.0, 3, 2.0).await;

    assert_eq!(error_code(&body), "REQUEST_TIMEOUT", "{body}");
    assert!(body["data"].is_null(), "{body}");
    // The same budget holds for an operation sent over the WebSocket.
    let mut ws = Subscriber::connect(&app, "graphql-transport-ws").await;
    ws.send(json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { price } }" } }))
        .await;
    let event = tokio::time::timeout(Duration::from_secs(5), ws.next_result("1")).await.expect("answered in time");
    let error = &event["payload"]["errors"][0]["extensions"];
    assert_eq!(error["code"], "REQUEST_TIMEOUT", "{event}");
    assert!(error["requestId"].is_string(), "{event}");
    stall.rollback().await.unwrap();
    // The timed-out request's row is still written once the database moves again (an answer that
    // was not OK may still be logged; an OK answer is never unlogged).
    let mut rows = 0;
    for _ in 0..100 {
        rows = app.count_rows("true").await;
        if rows == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows, 2);
}

#[sqlx::test]
async fn syntax_errors_have_a_parse_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app.graphql("{ predictPrice(", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
}

#[sqlx::test]
async fn unknown_operation_names_and_missing_variables_are_validation_errors(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "query A { model { name } }", "operationName": "B" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let body = app.graphql("query($input: HouseInput!) { predictPrice(input: $input) { price } }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

#[sqlx::test]
async fn too_many_operations_or_too_large_a_body_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ops: Vec<serde_json::Value> = (0..17).map(|_| json!({ "query": "{ model { name } }" })).collect();
    let body: serde_json::Value =
        app.client.post(app.url("/graphql")).json(&ops).send().await.unwrap().json().await.unwrap();
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("at most 16 operations"), "{body}");
    let huge = format!(r#"{{"query": "{{ model {{ name }} }}", "variables": {{"pad": "{}"}}}}"#, "x".repeat(2 << 20));
    for path in ["/graphql", "/prever_precos/"] {
        // With a Content-Length, and chunked (no length known up front).
        let bodies = [reqwest::Body::from(huge.clone()), reqwest::Body::wrap_stream(chunks(&huge))];
        for body in bodies {
            let response = app
                .client
                .post(app.url(path))
                .header("content-type", "application/json")
                .header("x-request-id", "too-big-1")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 413, "{path}");
            assert_eq!(response.headers()["x-request-id"], "too-big-1", "{path}");
            let body: serde_json::Value = response.json().await.unwrap();
            let code = if path == "/graphql" { &body["errors"][0]["extensions"]["code"] } else { &body["code"] };
            assert_eq!(code, "PAYLOAD_TOO_LARGE", "{path}: {body}");
        }
    }
    assert_eq!(app.count_rows("true").await, 0, "no prediction was attempted");
}

/// `body` as a stream of 64 KiB chunks (sent with chunked transfer encoding).
fn chunks(body: &str) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + use<> {
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        body.as_bytes().chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    futures_util::stream::iter(parts)
}

#[sqlx::test]
async fn a_body_that_is_not_a_graphql_request_gets_bad_request(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for body in ["not json", "42", r#"{"query": 7}"#] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.headers().contains_key("x-request-id"));
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{body}: {answer}");
        assert!(answer["errors"][0]["extensions"]["requestId"].is_string(), "{answer}");
    }
}

#[sqlx::test]
async fn a_repeated_document_is_parsed_and_validated_once_and_answers_as_if_it_were_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let query = "query($n: Int!) { modelEvents(first: $n) { id event } }";
    let first = app.graphql(query, json!({ "n": 1 })).await;
    assert_eq!(first["data"]["modelEvents"][0]["event"], "loaded", "{first}");
    // The same text again (cached): its variables are checked on every request.
    let bad = app.graphql(query, json!({ "n": "one" })).await;
    assert!(bad["data"].is_null() || bad["data"]["modelEvents"].is_null(), "{bad}");
    assert!(bad["errors"].as_array().is_some_and(|e| !e.is_empty()), "{bad}");
    let again = app.graphql(query, json!({ "n": 1 })).await;
    assert_eq!(again, first, "a cached document answers the same");

    // Once an operation validated, valid variables skip validation and the rest are validated in
    // full: every bad request gets the error a server that never saw the document gives.
    let predict = "query($i: HouseInput!) { predictPrice(input: $i) { price } }";
    let good = json!({ "i": { "squareFeet": 1500, "bedrooms": 3, "bathrooms": 2 } });
    for _ in 0..2 {
        let body = app.graphql(predict, good.clone()).await;
        assert!(body["data"]["predictPrice"]["price"].is_number(), "{body}");
    }
    let fresh = TestApp::spawn(app.pool.clone()).await;
    let bad = [
        json!({ "i": { "squareFeet": "big", "bedrooms": 3, "bathrooms": 2 } }),
        json!({ "i": { "squareFeet": 1500, "bedrooms": 3 } }),
        json!({ "i": { "squareFeet": 1500, "bedrooms": 3, "bathrooms": 2, "pool": true } }),
        json!({ "i": { "squareFeet": 1500, "bedrooms": 2.5, "bathrooms": 2 } }),
        json!({ "i": null }),
        json!({ "i": 7 }),
        json!({ "i": { "squareFeet": 1500, "bedrooms": 99, "bathrooms": 2 } }),
    ];
    let without_request_ids = |mut body: serde_json::Value| {
        for error in body["errors"].as_array_mut().into_iter().flatten() {
            error["extensions"].as_object_mut().map(|e| e.remove("requestId"));
        }
        body
    };
    for variables in bad {
        let cached = app.graphql(predict, variables.clone()).await;
        let uncached = fresh.graphql(predict, variables.clone()).await;
        assert!(cached["errors"].as_array().is_some_and(|e| !e.is_empty()), "{variables}: {cached}");
        assert_eq!(without_request_ids(cached), without_request_ids(uncached), "{variables}");
    }
    // A document over the depth limit is refused every time (never cached).
    let deep = "{ a { b { c { d { e { f { g { h { i { j { k { l } } } } } } } } } } } }";
    for _ in 0..2 {
        assert_eq!(error_code(&app.graphql(deep, json!({})).await), "GRAPHQL_VALIDATION_FAILED");
    }
}
