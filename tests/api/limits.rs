use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, config, error_code};

#[sqlx::test]
async fn queries_deeper_than_the_limit_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // 12 levels with the default limit of 10.
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let body = app.graphql(deep, json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");
    // Within the limit, the same kind of query works.
    let body = app.graphql("{ __schema { types { name } } }", json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[sqlx::test]
async fn queries_more_complex_than_the_limit_are_refused(pool: PgPool) {
    let mut config = config();
    config.limits.max_query_complexity = 5;
    let app = TestApp::spawn_with(pool, config).await;
    let body = app.graphql("{ model { name version description algorithm checksum trainedAt } }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("complex"), "{body}");
}

#[sqlx::test]
async fn a_request_over_the_time_budget_fails_with_request_timeout(pool: PgPool) {
    let mut config = config();
    config.limits.request_timeout_ms = 300;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    // Stall the log: a transaction holds an exclusive lock on the table the writer inserts into.
    let mut stall = pool.begin().await.unwrap();
    sqlx::query("lock table prediction_log in access exclusive mode").execute(&mut *stall).await.unwrap();

    let body = app.predict(1500.0, 3, 2.0).await;

    assert_eq!(error_code(&body), "REQUEST_TIMEOUT", "{body}");
    assert!(body["data"].is_null(), "{body}");
    stall.rollback().await.unwrap();
    // The timed-out request's row is still written once the database moves again (an answer that
    // was not OK may still be logged; an OK answer is never unlogged).
    let mut rows = 0;
    for _ in 0..100 {
        rows = app.count_rows("true").await;
        if rows == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rows, 1);
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
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let huge = format!(r#"{{"query": "{{ model {{ name }} }}", "variables": {{"pad": "{}"}}}}"#, "x".repeat(2 << 20));
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}
