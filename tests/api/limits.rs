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
    assert_eq!(app.count_rows("true").await, 0);
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
}

#[sqlx::test]
async fn syntax_errors_have_a_parse_code(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app.graphql("{ predictPrice(", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
}
