//! Reads have bounds: an API read runs under PostgreSQL's `statement_timeout` (the request
//! timeout), so no query outlives its request in the database.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, config, error_code};

/// Queries of the service (not of this test) still running against prediction_log.
async fn service_queries_on_the_log(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid() and state = 'active'
            and query ilike '%from prediction_log%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_read_stuck_in_the_database_is_cancelled_there_when_its_request_times_out(pool: PgPool) {
    let mut config = config();
    config.limits.request_timeout_ms = 500;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    // Another session holds the log exclusively: any read of it waits.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table prediction_log in access exclusive mode").execute(&mut *blocker).await.unwrap();

    let body = app.graphql("{ predictions(first: 5) { edges { node { id } } } }", json!({})).await;
    let code = error_code(&body);
    assert!(["REQUEST_TIMEOUT", "SERVICE_UNAVAILABLE"].contains(&code), "{body}");
    // PostgreSQL cancels the waiting statement itself; without the timeout it would wait for the
    // lock for as long as the blocker holds it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service_queries_on_the_log(&pool).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the service's query is still waiting in PostgreSQL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.rollback().await.unwrap();
    // And the service reads normally once the lock is gone.
    let body = app.graphql("{ predictions(first: 5) { edges { node { id } } } }", json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}
