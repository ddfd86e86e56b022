//! Several replicas on one PostgreSQL: singleton jobs run in exactly one of them (a lease), and
//! another takes over when the holder's lease dies.

use std::time::Duration;

use sqlx::PgPool;

use crate::common::TestApp;
use crate::monitoring::monitored_config;

/// Backends holding the lease `name` (see `src/db/lease.rs`).
async fn holders(pool: &PgPool, name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_locks
          where locktype = 'advisory' and granted and objsubid = 1 and database = (select oid from pg_database where datname = current_database())
            and ((classid::int8 << 32) | objid::int8) = hashtextextended('house-price-api lease: ' || $1, 0)",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits (up to 30 s) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn latest_tick(pool: &PgPool) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("select max(tick) from monitoring_reports").fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn one_evaluator_runs_across_replicas_and_another_takes_over_when_its_lease_dies(pool: PgPool) {
    let mut config = monitored_config();
    config.monitor_interval_ms = 300;
    let a = TestApp::spawn_with(pool.clone(), config.clone()).await;
    let b = TestApp::spawn_with(pool.clone(), config).await;
    for i in 0..10 {
        let body = b.predict(1000.0 + 50.0 * f64::from(i), 3, 2.0).await;
        assert!(body["data"]["predictPrice"]["price"].is_number(), "{body}");
    }
    a.wait_durable().await;
    until("reports are written", || async { latest_tick(&pool).await.is_some() }).await;

    // Exactly one replica holds each singleton job.
    let first = holders(&pool, "evaluator").await;
    assert_eq!(first.len(), 1, "one evaluator lease holder: {first:?}");
    until("partition maintenance has one holder", || async {
        holders(&pool, "partition-maintenance").await.len() == 1
    })
    .await;
    let duplicates: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from monitoring_reports group by model_name, model_version, tick having count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);

    // The holder's lease connection dies (as when its replica is killed or cut off).
    let before = latest_tick(&pool).await;
    let _: bool = sqlx::query_scalar("select pg_terminate_backend($1)").bind(first[0]).fetch_one(&pool).await.unwrap();
    until("another backend holds the evaluator lease", || async {
        let now = holders(&pool, "evaluator").await;
        now.len() == 1 && now[0] != first[0]
    })
    .await;
    until("reports go on", || async { latest_tick(&pool).await > before }).await;
    assert_eq!(holders(&pool, "evaluator").await.len(), 1, "still exactly one holder");
    a.stop().await;
    b.stop().await;
}
