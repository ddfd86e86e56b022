use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::TestApp;

#[sqlx::test]
async fn liveness_and_readiness_report_ok_with_database_migrations_and_model(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let live = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"], json!({ "database": "ok", "migrations": "ok", "model": "price-blend@1.0.0" }));
    assert_eq!(body["models"]["threeInputModel"], "three-input-boosting@1.0.0", "{body}");
}

#[sqlx::test(migrations = false)]
async fn readiness_fails_while_migrations_are_pending(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(body["checks"]["migrations"].as_str().unwrap().starts_with("pending"), "{body}");
}

#[sqlx::test]
async fn graphiql_is_served_on_get(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("graphiql") && html.contains("/ws"), "GraphiQL page pointing at /ws");
}

#[sqlx::test]
async fn metrics_expose_the_log_writer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.predict(1500.0, 3, 2.0).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("prediction_log_rows_written_total"), "{text}");
    assert!(text.contains("prediction_log_batch_rows"), "{text}");
}

#[sqlx::test]
async fn cors_is_off_by_default_and_on_for_configured_origins(pool: PgPool) {
    async fn from_browser(app: &TestApp) -> reqwest::Response {
        let request = app.client.post(app.url("/graphql")).header("origin", "https://app.example");
        request.json(&json!({"query": "{ model { name } }"})).send().await.unwrap()
    }
    let app = TestApp::spawn(pool.clone()).await;
    assert!(!from_browser(&app).await.headers().contains_key("access-control-allow-origin"));

    let mut config = crate::common::config();
    config.cors_allowed_origins = vec!["https://app.example".into()];
    let app = TestApp::spawn_with(pool, config).await;
    assert_eq!(from_browser(&app).await.headers()["access-control-allow-origin"], "https://app.example");
    // The preflight of a mutation from a browser: the API key header is allowed.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-api-key")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(allowed.contains("x-api-key") && allowed.contains("content-type"), "{allowed}");
}
