//! Several replicas on one PostgreSQL: singleton jobs run in exactly one of them (a lease), and
//! another takes over when the holder's lease dies; subscribers on every replica receive the
//! events of every replica, once, in one order, and resume without a gap.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::common::fresh_spool_dir;
use crate::common::{Subscriber, TestApp};
use crate::faults::{ServerProcess, assert_all_logged, direct_url, predict};
use crate::models::copy_models;
use crate::monitoring::{monitored_config, run_replay};
use crate::registry::{app_config, publish_version};

/// A `predictionLogged` subscription on `app`, after the row `after` (when given).
async fn subscribe_logged(app: &TestApp, after: Option<&str>) -> Subscriber {
    let mut ws = Subscriber::connect(app, "graphql-transport-ws").await;
    ws.send(json!({ "id": "logged", "type": "subscribe", "payload": {
        "query": "subscription($after: ID) { predictionLogged(after: $after) { id } }",
        "variables": { "after": after } } }))
        .await;
    ws
}

/// The ids of the next `n` `predictionLogged` events, in order (30 s at most).
async fn next_ids(ws: &mut Subscriber, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    while ids.len() < n {
        let event = tokio::time::timeout_at(deadline, ws.next_result("logged"))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived: {ids:?}", ids.len()));
        ids.push(event["payload"]["data"]["predictionLogged"]["id"].as_str().expect("an id").to_owned());
    }
    ids
}

/// Asserts that no further event arrives within a second (nothing delivered twice).
async fn no_more_events(ws: &mut Subscriber) {
    if let Ok(event) = tokio::time::timeout(Duration::from_secs(1), ws.next_result("logged")).await {
        panic!("unexpected extra event: {event}");
    }
}

/// The id of a new prediction made on `app`.
async fn predicted_id(app: &TestApp, square_feet: f64) -> String {
    let body = app.predict(square_feet, 3, 2.0).await;
    body["data"]["predictPrice"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

#[sqlx::test]
async fn subscribers_on_every_replica_receive_every_replicas_rows_once_in_one_order_and_resume_anywhere(pool: PgPool) {
    let a = TestApp::spawn(pool.clone()).await;
    let b = TestApp::spawn(pool.clone()).await;
    let start = predicted_id(&a, 1500.0).await;
    let mut on_a = subscribe_logged(&a, Some(&start)).await;
    let mut on_b = subscribe_logged(&b, Some(&start)).await;

    // 15 predictions on each replica, concurrently.
    let (made_a, made_b) = tokio::join!(
        async {
            let mut ids = Vec::new();
            for i in 0..15 {
                ids.push(predicted_id(&a, 1000.0 + 10.0 * f64::from(i)).await);
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for i in 0..15 {
                ids.push(predicted_id(&b, 2000.0 + 10.0 * f64::from(i)).await);
            }
            ids
        }
    );
    let made: HashSet<String> = made_a.into_iter().chain(made_b).collect();
    let seen_a = next_ids(&mut on_a, 30).await;
    let seen_b = next_ids(&mut on_b, 30).await;
    assert_eq!(seen_a.iter().cloned().collect::<HashSet<_>>(), made, "replica A's subscriber sees both replicas' rows");
    assert_eq!(seen_a, seen_b, "both subscribers see the same rows in the same order");
    no_more_events(&mut on_a).await;

    // A client that saw 10 rows on A reconnects to B after 10 more were made: it gets the 30
    // rows it had not seen, in the same order, and nothing it had seen.
    drop(on_a);
    let mut later = Vec::new();
    for i in 0..10 {
        later.push(predicted_id(&a, 3000.0 + 10.0 * f64::from(i)).await);
    }
    let mut resumed = subscribe_logged(&b, Some(&seen_a[9])).await;
    let rest = next_ids(&mut resumed, 30).await;
    assert_eq!(rest[..20], seen_a[10..], "the rows after the resume point, in the same order");
    assert_eq!(rest[20..].iter().collect::<HashSet<_>>(), later.iter().collect::<HashSet<_>>());
    no_more_events(&mut resumed).await;
    assert_eq!(next_ids(&mut on_b, 10).await, rest[20..], "the live subscriber saw the same order");

    // A resume point that is no logged row is refused, naming the argument.
    let mut bad = subscribe_logged(&b, Some("0190a0b4-0000-7000-8000-000000000000")).await;
    let event = bad.next_result("logged").await;
    let error = &event["payload"]["errors"][0]["extensions"];
    assert_eq!((error["code"].as_str(), error["field"].as_str()), (Some("BAD_USER_INPUT"), Some("after")), "{event}");
    a.stop().await;
    b.stop().await;
}

#[sqlx::test]
async fn no_event_is_lost_when_the_feeds_database_connection_is_terminated(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let start = predicted_id(&app, 1500.0).await;
    let mut ws = subscribe_logged(&app, Some(&start)).await;
    let feed_backends = "select pid from pg_stat_activity where application_name = 'house-price-api feed: predictions'";
    let mut made = Vec::new();
    let mut cut: Vec<i32> = Vec::new();
    for round in 0..4 {
        // Rows committed since the feed's last read, then its connection cut (waiting for it to
        // be back: a backend not cut before, as a terminated one lingers in pg_stat_activity).
        for i in 0..15 {
            made.push(predicted_id(&app, 1000.0 + f64::from(round * 100 + i)).await);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let live: Vec<i32> = sqlx::query_scalar(feed_backends).fetch_all(&pool).await.unwrap();
            if let Some(&pid) = live.iter().find(|pid| !cut.contains(pid)) {
                let terminated: bool =
                    sqlx::query_scalar("select pg_terminate_backend($1)").bind(pid).fetch_one(&pool).await.unwrap();
                if terminated {
                    cut.push(pid);
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "round {round}: no feed connection to cut");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(cut.len(), 4, "the feed's connection was cut once per round");
    let seen = next_ids(&mut ws, made.len()).await;
    assert_eq!(seen.iter().collect::<HashSet<_>>(), made.iter().collect::<HashSet<_>>());
    no_more_events(&mut ws).await;
}

#[sqlx::test]
async fn a_drift_alert_raised_by_one_replica_reaches_subscribers_on_both_once(pool: PgPool) {
    let mut config = monitored_config();
    config.monitor_interval_ms = 200;
    let a = TestApp::spawn_with(pool.clone(), config.clone()).await;
    let b = TestApp::spawn_with(pool.clone(), config).await;
    let query = "subscription { driftAlert { id modelName feature status } }";
    let mut subscribers = Vec::new();
    for app in [&a, &b] {
        let mut ws = Subscriber::connect(app, "graphql-transport-ws").await;
        ws.send(json!({ "id": "alerts", "type": "subscribe", "payload": { "query": query } })).await;
        subscribers.push(ws);
    }
    run_replay(&a, &["squareFeet=+30%"]).await;

    // Each subscriber gets squareFeet's alerts (a WARN may come before the DRIFT) up to DRIFT.
    let mut seen = Vec::new();
    for ws in &mut subscribers {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut ids = Vec::new();
        loop {
            let event =
                tokio::time::timeout_at(deadline, ws.next_result("alerts")).await.expect("a drift alert arrives");
            let alert = event["payload"]["data"]["driftAlert"].clone();
            assert_eq!(alert["modelName"], "gradient-boosting", "{alert}");
            if alert["feature"] == "squareFeet" {
                ids.push(alert["id"].as_str().unwrap().to_owned());
                if alert["status"] == "DRIFT" {
                    break;
                }
            }
        }
        seen.push(ids);
    }
    assert_eq!(seen[0], seen[1], "the same alerts on both replicas");
    let raised: Vec<String> = sqlx::query_scalar(
        "select id::text from drift_alerts where model_name = 'gradient-boosting' and feature = 'squareFeet' order by logged_xid, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(raised, seen[0], "each raised once, by one evaluator");
    a.stop().await;
    b.stop().await;
}

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

/// `/health/ready`'s `models` section of `app`.
async fn models_readiness(app: &TestApp) -> serde_json::Value {
    let body: serde_json::Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    body["models"].clone()
}

#[sqlx::test]
async fn a_reload_on_one_replica_reaches_the_other_which_says_why_until_it_can_follow(pool: PgPool) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_models(dir_a.path());
    copy_models(dir_b.path());
    let a = TestApp::spawn_with(pool.clone(), app_config(dir_a.path())).await;
    let b = TestApp::spawn_with(pool.clone(), app_config(dir_b.path())).await;
    until("B serves the set in force", || async { models_readiness(&b).await["inForce"] == true }).await;

    // A new version reaches only A's directory; A reloads.
    publish_version(dir_a.path(), "ridge-log", "2.0.0", "2.1.0");
    let body = a
        .client
        .post(a.url("/graphql"))
        .header("x-api-key", "admin-key")
        .json(&json!({ "query": "mutation { reloadModels { defaultModel } }" }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(body["data"]["reloadModels"]["defaultModel"], "ridge-log@2.1.0", "{body}");

    // B cannot follow, and says why: in readiness and once in model_events.
    until("B reports that it diverged", || async { models_readiness(&b).await["inForce"] == false }).await;
    let readiness = models_readiness(&b).await;
    let differences = readiness["differences"].to_string();
    assert!(differences.contains("ridge-log@2.1.0 is not in this replica's MODEL_DIR"), "{readiness}");
    assert!(differences.contains("the default model is ridge-log@2.0.0 here, ridge-log@2.1.0 in force"), "{readiness}");
    assert_eq!(models_readiness(&a).await["inForce"], true);

    // Once the version reaches B's directory, B follows on its own.
    publish_version(dir_b.path(), "ridge-log", "2.0.0", "2.1.0");
    until("B follows the set in force", || async { models_readiness(&b).await["inForce"] == true }).await;
    let p = b.predict(1500.0, 3, 2.0).await;
    assert_eq!(p["data"]["predictPrice"]["model"]["version"], "2.1.0", "{p}");
    let events: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "select event, trigger, revision from model_events where event in ('diverged', 'reloaded') order by id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let in_force: i64 = sqlx::query_scalar("select revision from model_set_in_force").fetch_one(&pool).await.unwrap();
    let at = |event: &str, trigger: &str| {
        events.iter().filter(|(e, t, r)| e == event && t == trigger && *r == Some(in_force)).count()
    };
    assert_eq!((at("reloaded", "api"), at("diverged", "replica"), at("reloaded", "replica")), (1, 1, 1), "{events:?}");
    a.stop().await;
    b.stop().await;
}

#[sqlx::test]
async fn a_replica_killed_under_load_loses_no_row_answered_ok_and_the_others_keep_answering(pool: PgPool) {
    let url = direct_url(&pool);
    let spools: Vec<_> = (0..3).map(|_| fresh_spool_dir()).collect();
    let mut replicas = Vec::new();
    for spool in &spools {
        replicas.push(Some(ServerProcess::start(&url, spool).await));
    }
    let addrs: Vec<_> = replicas.iter().map(|r| r.as_ref().unwrap().addr).collect();
    let client = reqwest::Client::new();
    let stop = tokio_util::sync::CancellationToken::new();

    // Eight clients, each going round the replicas; a replica that cannot be reached is skipped.
    let clients = (0..8).map(|c| {
        let (client, addrs, stop) = (client.clone(), addrs.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut unreachable, mut refused) = (Vec::new(), 0, Vec::new());
            let mut i = c;
            while !stop.is_cancelled() {
                let addr = addrs[i % addrs.len()];
                i += 1;
                match predict(&client, addr, 900.0 + f64::from(u32::try_from(i % 2000).unwrap())).await {
                    Ok(id) => ok.push((addr, id)),
                    // A GraphQL error code (the service refused), or a transport error (the
                    // replica is gone, or died mid-answer: the client never got an OK).
                    Err(code) if code.chars().all(|c| c.is_ascii_uppercase() || c == '_') => refused.push(code),
                    Err(_) => unreachable += 1,
                }
            }
            (ok, unreachable, refused)
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = addrs[1];
    replicas[1].take().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let mut ok = Vec::new();
    let mut unreachable = 0;
    for client in clients {
        let (answers, lost, refused) = client.await.unwrap();
        assert!(refused.is_empty(), "no request was refused: {refused:?}");
        ok.extend(answers);
        unreachable += lost;
    }
    assert!(unreachable > 0, "the killed replica was tried after its death");
    let survivors_after: usize = ok.iter().filter(|(addr, _)| *addr != killed).count();
    assert!(survivors_after > 0 && ok.iter().any(|(addr, _)| *addr == killed), "every replica answered");

    // The killed replica restarts on its spool (as a pod on its persistent volume) and drains
    // whatever it had answered OK but not yet written.
    let restarted = ServerProcess::start(&url, &spools[1]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body: serde_json::Value =
            client.get(format!("http://{}/health/ready", restarted.addr)).send().await.unwrap().json().await.unwrap();
        if body["log"]["backlog"]["rows"] == 0 && body["log"]["state"] == "ok" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<String> = ok.into_iter().map(|(_, id)| id).collect();
    assert!(ids.len() > 100, "load ran: {} answers", ids.len());
    assert_all_logged(&pool, &ids).await;
    restarted.kill();
    for replica in replicas.into_iter().flatten() {
        replica.kill();
    }
}
