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
    assert_eq!(app.count_rows_now("true").await, 0, "still queued");

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

/// Async mode answers without waiting for commits, so requests can keep the request workers
/// saturated; the writer must commit anyway. Here the test's runtime, which serves the requests,
/// is blocked outright while the writer's linger runs out: the row still reaches PostgreSQL,
/// watched from a thread of its own. (Sharing the request runtime, the writer's timer could not
/// even fire until the block ended.)
#[sqlx::test]
async fn async_mode_commits_while_the_request_workers_are_busy(pool: PgPool) {
    let mut config = config();
    config.log.log_mode = LogMode::Async;
    // The batch is sent only when the linger ends, which is after the block below has begun.
    config.log.log_flush_interval_ms = 200;
    config.log.log_batch_size = 10_000;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    let body = app.predict(1500.0, 3, 2.0).await;
    let id: uuid::Uuid = body["data"]["predictPrice"]["id"].as_str().unwrap().parse().unwrap();

    let options = pool.connect_options().as_ref().clone();
    let watcher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut conn = PgConnection::connect_with(&options).await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < deadline {
                let found: i64 = sqlx::query_scalar("select count(*) from prediction_log where id = $1")
                    .bind(id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                if found == 1 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        })
    });
    // Busy request workers, at the extreme: this runtime does nothing until the watcher is done.
    let committed_meanwhile = watcher.join().unwrap();
    assert!(committed_meanwhile, "the row was not committed while the request runtime was busy");
    assert_eq!(app.count_rows(&format!("id = '{id}'")).await, 1);
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

/// The writer has its own connections: a service pool exhausted by other work (here: its only
/// connection held) must not delay or fail commits. With `LOG_FALLBACK=fail` a writer sharing the
/// pool would wait for the connection and fail the request.
#[sqlx::test]
async fn an_exhausted_service_pool_does_not_hold_up_the_log(pool: PgPool) {
    let service_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let mut config = config();
    config.log.log_fallback = LogFallback::Fail;
    let app = TestApp::spawn_with(service_pool.clone(), config).await;
    let _held = service_pool.acquire().await.unwrap();

    let started = std::time::Instant::now();
    let body = app.predict(1500.0, 3, 2.0).await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
    let id = body["data"]["predictPrice"]["id"].as_str().unwrap();
    let logged: i64 = sqlx::query_scalar("select count(*) from prediction_log where id = $1::uuid")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(logged, 1);
}

/// An accepted row with two drift bins, as the service would log it.
fn logged_row(n: i32) -> house_price_api::log::PredictionRecord {
    house_price_api::log::PredictionRecord {
        id: uuid::Uuid::now_v7(),
        request_id: format!("groups-{n}"),
        item_index: Some(n),
        created_at: chrono::Utc::now(),
        route: "graphql".into(),
        operation: None,
        client: None,
        api_key_id: None,
        trace_id: None,
        status: house_price_api::log::PredictionStatus::Ok,
        error_code: None,
        error_field: None,
        error_message: None,
        square_feet: Some(1500.0),
        bedrooms: Some(3),
        bathrooms: Some(2.0),
        raw_input: serde_json::json!({ "squareFeet": 1500 }),
        price: Some(180_000.0),
        model_name: Some("baseline-linear".into()),
        model_version: Some("2.0.0".into()),
        latency_us: 12,
        imputed_features: vec![],
        features: Some(serde_json::json!({ "squareFeet": 1500 })),
        shadow_price: None,
        shadow_model_name: None,
        shadow_model_version: None,
        interval_low: Some(150_000.0),
        interval_high: Some(215_000.0),
        estimated_error: Some(21_000.0),
        warnings: serde_json::json!([]),
        house: None,
        drift_bins: vec![("squareFeet", 4), ("bedrooms", n % 2)],
    }
}

/// The counters are summed in memory per group and applied when the group's first row is
/// inserted: a drained chunk holding one batch that had committed and one that had not must
/// count exactly the second, and draining it again must count nothing.
#[sqlx::test]
async fn a_drained_chunk_counts_the_drift_bins_of_exactly_the_batches_it_inserts(pool: PgPool) {
    use house_price_api::log::store::insert_batch;
    let committed: Vec<_> = (0..3).map(logged_row).collect();
    let lost: Vec<_> = (3..7).map(logged_row).collect();
    let counters = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i32, i64)>(
            "select feature, bin, n from drift_counts where model_name = 'baseline-linear' order by 1, 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };

    let first: Vec<_> = committed.iter().collect();
    let mut conn = pool.acquire().await.unwrap();
    insert_batch(&mut conn, &first, &[first.len()]).await.unwrap();
    assert_eq!(
        counters(pool.clone()).await,
        [("bedrooms".into(), 0, 2), ("bedrooms".into(), 1, 1), ("squareFeet".into(), 4, 3)]
    );

    let chunk: Vec<_> = committed.iter().chain(&lost).collect();
    let expected = [("bedrooms".into(), 0, 4), ("bedrooms".into(), 1, 3), ("squareFeet".into(), 4, 7)];
    for _ in 0..2 {
        insert_batch(&mut conn, &chunk, &[committed.len(), lost.len()]).await.unwrap();
        assert_eq!(counters(pool.clone()).await, expected, "each accepted row counted once");
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from prediction_log").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 7);
}
