use std::time::Duration;

use house_price_api::config::{LogFallback, LogMode};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::common::{TestApp, config, error_code};

/// Makes the test database refuse connections and kills the existing ones (the app's pool
/// included), as a database outage does. Returns the admin connection (to the main database,
/// since a database cannot close itself) and the test database's name.
async fn take_database_down(pool: &PgPool) -> (PgConnection, String) {
    let db = pool.connect_options().get_database().expect("test database name").to_owned();
    let main_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut admin = PgConnection::connect(&main_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"alter database "{db}" allow_connections false"#)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&db)
        .execute(&mut admin)
        .await
        .unwrap();
    (admin, db)
}

async fn bring_database_back(admin: &mut PgConnection, db: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"alter database "{db}" allow_connections true"#)))
        .execute(&mut *admin)
        .await
        .unwrap();
}

#[sqlx::test]
async fn when_the_database_is_down_predictions_fail_with_service_unavailable_not_ok(pool: PgPool) {
    let mut config = config();
    config.log.log_mode = LogMode::Durable;
    // Without the spool: the behaviour before it, and `LOG_FALLBACK=fail`'s now.
    config.log.log_fallback = LogFallback::Fail;
    let app = TestApp::spawn_with(pool, config).await;
    assert!(app.predict(1500.0, 3, 2.0).await["data"]["predictPrice"]["price"].is_number());

    let (mut admin, db) = take_database_down(&app.pool).await;

    let body = app.predict(1500.0, 3, 2.0).await;
    assert_eq!(error_code(&body), "SERVICE_UNAVAILABLE", "{body}");
    assert_eq!(body["data"], Value::Null, "no price without a committed row");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("insert") && !message.contains("prediction_log ("), "no SQL leaks: {message}");

    let rest = app.post_rest(r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}"#).await;
    assert_eq!(rest.status(), 503);

    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    bring_database_back(&mut admin, &db).await;
    let body = app.predict(1500.0, 3, 2.0).await;
    assert!(body["data"]["predictPrice"]["price"].is_number(), "recovers once the database is back: {body}");
    // Exactly the two answered-OK predictions are logged; the failed ones were never acknowledged.
    assert_eq!(app.count_rows("status = 'ok'").await, 2);
}

#[sqlx::test]
async fn shutdown_drains_the_queued_rows_before_exiting(pool: PgPool) {
    let mut config = config();
    // Async mode with a long linger: rows sit in the queue until shutdown forces the flush.
    config.log.log_mode = LogMode::Async;
    config.log.log_flush_interval_ms = 60_000;
    config.log.log_batch_size = 10_000;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    for i in 0..30 {
        let body = app.predict(1000.0 + f64::from(i), 3, 2.0).await;
        assert!(body["data"]["predictPrice"]["price"].is_number(), "{body}");
    }
    assert_eq!(app.count_rows("true").await, 0, "still queued");

    tokio::time::timeout(Duration::from_secs(10), app.stop()).await.expect("shutdown does not wait for the linger");

    let rows: i64 = sqlx::query_scalar("select count(*) from prediction_log").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 30);
}

#[sqlx::test]
async fn async_mode_answers_before_the_commit_and_still_logs(pool: PgPool) {
    let mut config = config();
    config.log.log_mode = LogMode::Async;
    let app = TestApp::spawn_with(pool, config).await;
    let body = app.predict(1500.0, 3, 2.0).await;
    let id = body["data"]["predictPrice"]["id"].as_str().unwrap().to_owned();
    let mut found = 0;
    for _ in 0..100 {
        found = app.count_rows(&format!("id = '{id}'")).await;
        if found == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found, 1);
}

#[sqlx::test]
async fn concurrent_batch_writers_lose_nothing_and_keep_counters_consistent(pool: PgPool) {
    let mut config = config();
    config.log.log_writer_concurrency = 3;
    let app = TestApp::spawn_with(pool, config).await;
    let requests = (0..300).map(|i| {
        let app = &app;
        async move { app.predict(900.0 + f64::from(i), if i % 4 == 0 { 99 } else { 3 }, 2.0).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let ok = answers.iter().filter(|b| b["data"]["predictPrice"]["price"].is_number()).count() as i64;
    assert_eq!(ok, 225);
    assert_eq!(app.count_rows("true").await, 300);
    // One `_price` counter per accepted row: counters and rows agree.
    let counted: i64 = sqlx::query_scalar("select sum(n)::bigint from drift_counts where feature = '_price'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(counted, ok);
}
