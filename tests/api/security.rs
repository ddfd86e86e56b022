//! Safe to expose: keys in the database and their scopes, rate limits, the cost model and the
//! document limits, bounded and cancelled reads, the analysts' read-only role, and the overloads
//! an attacker without a key would try.

use std::fmt::Write;
use std::time::{Duration, Instant};

use house_price_api::auth::{Access, Scope, keys};
use house_price_api::config::AppConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Subscriber, TestApp, config, error_code};
use crate::faults::direct_url;

const PREDICT: &str = "query($i: HouseInput!) { predictPrice(input: $i) { id price } }";

fn house() -> Value {
    json!({ "i": { "squareFeet": 1500, "bedrooms": 3, "bathrooms": 2 } })
}

fn keys_config() -> AppConfig {
    let mut config = config();
    config.access.access = Access::Keys;
    config.access.key_refresh_ms = 100;
    config
}

async fn graphql_with_key(app: &TestApp, key: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `POST /prever_precos/` for one house, with `key` if given.
async fn rest(app: &TestApp, key: Option<&str>) -> reqwest::Response {
    let body = json!({"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2});
    let mut request = app.client.post(app.url("/prever_precos/")).json(&body);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap()
}

/// Polls `check` every 50 ms for up to 10 s; returns how long it took to hold.
async fn within_seconds(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: still not true after 10 s");
}

#[sqlx::test]
async fn database_keys_follow_their_scopes_on_every_replica_and_a_revocation_lands_within_seconds(pool: PgPool) {
    let a = TestApp::spawn_with(pool.clone(), keys_config()).await;
    let b = TestApp::spawn_with(pool.clone(), keys_config()).await;
    let issued = keys::create(&pool, "analyst app", &[Scope::Predict, Scope::History], None).await.unwrap();
    let key = issued.key.as_str();
    assert!(key.starts_with("hpk_") && key.len() == 4 + 12 + 1 + 64, "{key}");
    let stored: Vec<u8> = sqlx::query_scalar("select secret_sha256 from api_keys").fetch_one(&pool).await.unwrap();
    let secret = &key[4 + 12 + 1..];
    assert_eq!(
        hex::encode(&stored),
        house_price_api::auth::hash_key(secret),
        "the SHA-256 of the secret, nothing else"
    );

    // Both replicas pick the new key up.
    for app in [&a, &b] {
        within_seconds("the new key is accepted", async || {
            graphql_with_key(app, Some(key), PREDICT, house()).await["errors"].is_null()
        })
        .await;
    }
    // Its scopes, and nothing else; no key at all is refused everywhere under ACCESS=keys.
    let body = graphql_with_key(&a, Some(key), "{ predictions(first: 5) { nodes { id apiKeyId } } }", json!({})).await;
    let nodes = body["data"]["predictions"]["nodes"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert!(!nodes.is_empty() && nodes.iter().all(|n| n["apiKeyId"] == issued.record.id.as_str()), "{body}");
    let body = graphql_with_key(&a, Some(key), "{ traffic { requests } }", json!({})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("monitoring"), "{body}");
    for query in ["{ traffic { requests } }", "{ models { name } }", "{ predictions { nodes { id } } }"] {
        assert_eq!(error_code(&graphql_with_key(&a, None, query, json!({})).await), "UNAUTHENTICATED", "{query}");
    }
    assert_eq!(error_code(&graphql_with_key(&a, None, PREDICT, house()).await), "UNAUTHENTICATED");
    // Introspection follows its own setting, not the keys.
    assert!(graphql_with_key(&a, None, "{ __schema { queryType { name } } }", json!({})).await["errors"].is_null());
    // The REST route follows `predict`.
    let refused = rest(&a, None).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "UNAUTHENTICATED");
    assert_eq!(rest(&a, Some(key)).await.status(), 200);
    a.wait_durable().await;
    let keyed: i64 = sqlx::query_scalar("select count(*) from prediction_log where api_key_id = $1")
        .bind(&issued.record.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(keyed >= 3, "the rows name the key: {keyed}");
    within_seconds("last_used_at is written", async || {
        let used: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select last_used_at from api_keys").fetch_one(&pool).await.unwrap();
        used.is_some()
    })
    .await;

    // Revoked: both replicas refuse it within seconds, without a restart.
    assert!(keys::revoke(&pool, &issued.record.id).await.unwrap());
    for app in [&a, &b] {
        let took = within_seconds("the revoked key is refused", async || {
            let body = graphql_with_key(app, Some(key), PREDICT, house()).await;
            body["errors"][0]["message"] == "the API key has been revoked"
        })
        .await;
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[sqlx::test]
async fn rotation_keeps_the_old_key_for_its_grace_and_expired_keys_are_refused(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), keys_config()).await;
    let old = keys::create(&pool, "batch job", &[Scope::Predict], None).await.unwrap();
    let with_grace = keys::rotate(&pool, &old.record.id, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(with_grace.record.rotated_from.as_deref(), Some(old.record.id.as_str()));
    assert_eq!(with_grace.record.scopes, ["predict"]);
    for key in [&old.key, &with_grace.key] {
        within_seconds("both keys work during the grace period", async || {
            graphql_with_key(&app, Some(key), PREDICT, house()).await["errors"].is_null()
        })
        .await;
    }
    // Without grace the replaced key stops at once.
    let newest = keys::rotate(&pool, &with_grace.record.id, Duration::ZERO).await.unwrap();
    within_seconds("the key rotated without grace is refused", async || {
        let body = graphql_with_key(&app, Some(&with_grace.key), PREDICT, house()).await;
        body["errors"][0]["message"] == "the API key has expired"
    })
    .await;
    within_seconds("the newest key works", async || {
        graphql_with_key(&app, Some(&newest.key), PREDICT, house()).await["errors"].is_null()
    })
    .await;
    assert!(keys::rotate(&pool, &with_grace.record.id, Duration::ZERO).await.is_err(), "an expired key is not rotated");
    let expired =
        keys::create(&pool, "old", &[Scope::Predict], Some(chrono::Utc::now() - chrono::TimeDelta::minutes(1)))
            .await
            .unwrap();
    within_seconds("an expired key is refused", async || {
        let body = graphql_with_key(&app, Some(&expired.key), PREDICT, house()).await;
        body["errors"][0]["message"] == "the API key has expired"
    })
    .await;
    let states: Vec<(String, bool)> = keys::list(&pool)
        .await
        .unwrap()
        .iter()
        .map(|k| (k.state(chrono::Utc::now()).to_owned(), k.last_used_at.is_some()))
        .collect();
    // The first key is in its hour of grace; the second was rotated without any.
    assert_eq!(states.len(), 4);
    assert_eq!(states.iter().filter(|(s, _)| s == "expired").count(), 2, "{states:?}");
}

#[sqlx::test]
async fn the_keys_command_creates_lists_rotates_and_revokes(pool: PgPool) {
    let url = direct_url(&pool);
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_house-price-api"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, key, err) =
        run(&["create", "--name", "grafana", "--scopes", "monitoring,history", "--expires-in-days", "30"]);
    assert!(ok, "{err}");
    let key = key.trim();
    assert!(key.starts_with("hpk_"), "{key}");
    let id = &key[4..16];
    let (ok, list, _) = run(&["list"]);
    assert!(ok && list.contains(id) && list.contains("monitoring,history") && list.contains("active"), "{list}");
    assert!(!list.contains(&key[17..]), "the secret is never listed");
    let (ok, rotated, err) = run(&["rotate", id, "--grace-hours", "0"]);
    assert!(ok && rotated.trim().starts_with("hpk_") && rotated.trim() != key, "{err}");
    let (ok, _, err) = run(&["revoke", &rotated.trim()[4..16]]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["revoke", "000000000000"]);
    assert!(!ok && err.contains("no active key"), "{err}");
    let (ok, _, err) = run(&["create", "--name", "x", "--scopes", "admin"]);
    assert!(!ok && err.contains("unknown API key scope"), "{err}");
    let (_, list, _) = run(&["list"]);
    assert_eq!(list.matches("revoked").count() + list.matches("expired").count(), 2, "{list}");
}

#[sqlx::test]
async fn a_client_over_its_rate_gets_429_with_retry_after(pool: PgPool) {
    let mut config = config();
    config.access.rate_limit_per_address = 5;
    config.access.rate_limit_per_key = 20;
    config.access.rate_limit_burst_seconds = 1;
    config.access.api_keys = vec![house_price_api::auth::hash_key("busy-client")];
    let app = TestApp::spawn_with(pool, config).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.post_graphql("{ __typename }", json!({})).await);
    }
    let limited =
        statuses.into_iter().find(|r| r.status() == 429).expect("the sixth request within a second is refused");
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "address");
    // The REST route answers in its own shape.
    let rest = app.post_rest(json!({"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}).to_string()).await;
    assert_eq!(rest.status(), 429);
    assert!(rest.headers().contains_key("retry-after"));
    assert_eq!(rest.json::<Value>().await.unwrap()["code"], "RATE_LIMITED");
    // A key has its own bucket.
    let keyed = app
        .client
        .post(app.url("/graphql"))
        .header("x-api-key", "busy-client")
        .json(&json!({"query": "{ __typename }"}));
    assert_eq!(keyed.send().await.unwrap().status(), 200);
    // Pages and health are not limited; the refusals are counted.
    assert_eq!(app.client.get(app.url("/health/live")).send().await.unwrap().status(), 200);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("rate_limited_total{limit=\"address\"}")), "{metrics}");
    // After the wait, the client is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.post_graphql("{ __typename }", json!({})).await.status(), 200);
}

#[sqlx::test]
async fn operations_on_a_websocket_pass_the_rate_limit_too(pool: PgPool) {
    let mut config = config();
    // A burst of 5, then one request a second.
    config.access.rate_limit_per_address = 1;
    config.access.rate_limit_burst_seconds = 5;
    let app = TestApp::spawn_with(pool, config).await;
    let mut socket = Subscriber::connect(&app, "graphql-transport-ws").await;
    for id in 0..8 {
        socket
            .send(json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": "{ __typename }" } }))
            .await;
    }
    // Each operation ends with `complete` or `error`; the answers say which were refused.
    let (mut answered, mut limited, mut ended) = (0, 0, 0);
    while ended < 8 {
        let event = tokio::time::timeout(Duration::from_secs(10), socket.next_event()).await.expect("an answer");
        let errors = match event["type"].as_str() {
            Some("next") => event["payload"]["errors"].clone(),
            Some("error") => event["payload"].clone(),
            _ => Value::Null,
        };
        match event["type"].as_str() {
            Some("next") if errors.is_null() => answered += 1,
            Some("complete") => ended += 1,
            Some("error") => ended += 1,
            _ => {}
        }
        if errors[0]["extensions"]["code"] == "RATE_LIMITED" {
            limited += 1;
            assert!(errors[0]["extensions"]["retryAfterSeconds"].as_u64().is_some(), "{event}");
        }
    }
    // The upgrade took one of the 5; the socket's operations share the rest (one more may have
    // been refilled meanwhile on a slow machine).
    assert_eq!(answered + limited, 8);
    assert!((4..=5).contains(&answered), "answered {answered}, limited {limited}");
}

/// Aliases of `field` (up to the alias limit), each costing what the probe asked for.
fn aliases(field: &str, count: usize) -> String {
    (0..count).map(|i| format!("a{i}: {field} ")).collect()
}

#[sqlx::test]
async fn costly_aliases_of_every_database_backed_field_are_refused_before_they_run(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let month_ago = (chrono::Utc::now() - chrono::TimeDelta::days(30)).to_rfc3339();
    let fields = [
        "predictions(first: 100) { nodes { id } }".to_owned(),
        format!("traffic(from: \"{month_ago}\", bucket: HOUR) {{ requests }}"),
        format!("performance(model: \"price-blend\", from: \"{month_ago}\") {{ predictions }}"),
        format!("shadowComparison(from: \"{month_ago}\") {{ start }}"),
        format!("drift(model: \"price-blend\", from: \"{month_ago}\") {{ status }}"),
        "driftHistory(model: \"price-blend\", from: \"2026-01-01T00:00:00Z\") { psi }".to_owned(),
        "driftReports(model: \"price-blend\", first: 1000) { id }".to_owned(),
        "modelEvents(first: 1000) { id }".to_owned(),
        "predictPrices(inputs: $b) { index }".to_owned(),
    ];
    let batch: Vec<Value> = (0..100).map(|_| json!({"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2})).collect();
    for field in &fields {
        let declared = if field.contains("$b") { "($b: [HouseInput!])" } else { "" };
        let query = format!("query{declared} {{ {} }}", aliases(field, 30));
        let body = app.graphql(&query, json!({ "b": batch })).await;
        assert_eq!(error_code(&body), "QUERY_TOO_COSTLY", "{field}: {body}");
        let ext = &body["errors"][0]["extensions"];
        assert_eq!(ext["limit"], "cost", "{field}: {body}");
        assert!(ext["cost"].as_u64().unwrap() > ext["budget"].as_u64().unwrap(), "{body}");
        assert_eq!(ext["budget"], 5000);
        assert!(body.get("data").is_none_or(Value::is_null), "nothing ran: {body}");
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("query_refused_total{limit=\"cost\"} 9")), "{metrics}");
    // One of each is within the budget.
    let one = app.graphql(&format!("{{ {} }}", aliases(&fields[0], 1)), json!({})).await;
    assert!(one["errors"].is_null(), "{one}");
    app.wait_durable().await;
    assert_eq!(app.count_rows("true").await, 0, "the refused batches logged nothing");
    // The probe: 300 aliases of `traffic` (and of `predictions(first: 100)`) are refused by count.
    for field in ["traffic(bucket: HOUR) { requests }", "predictions(first: 100) { nodes { id } }"] {
        let body = app.graphql(&format!("{{ {} }}", aliases(field, 300)), json!({})).await;
        assert_eq!(error_code(&body), "QUERY_TOO_COSTLY", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["limit"], "aliases");
        assert_eq!(body["errors"][0]["extensions"]["count"], 300);
    }
    // A batch shares one budget: 2 operations of 3,000 are refused in the second.
    let heavy = format!("{{ {} }}", aliases(&format!("traffic(from: \"{month_ago}\") {{ requests }}"), 8));
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!([{ "query": heavy }, { "query": heavy }]))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(response[0]["errors"].is_null(), "{response}");
    assert_eq!(response[1]["errors"][0]["extensions"]["code"], "QUERY_TOO_COSTLY", "{response}");
}

#[sqlx::test]
async fn overloads_of_aliases_directives_tokens_and_fragments_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let refused = |body: &Value, limit: &str| {
        assert_eq!(error_code(body), "QUERY_TOO_COSTLY", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["limit"], limit, "{body}");
    };
    // The probes: 10,000 aliases of __typename, 20,000 repeated @include, 10,000 duplicated fields.
    refused(&app.graphql(&format!("{{ {} }}", aliases("__typename", 10_000)), json!({})).await, "tokens");
    refused(
        &app.graphql(&format!("{{ __typename {} }}", "@include(if: true) ".repeat(20_000)), json!({})).await,
        "tokens",
    );
    refused(&app.graphql(&format!("{{ {} }}", "__typename ".repeat(10_000)), json!({})).await, "tokens");
    // Under the token limit, the alias and directive limits hold.
    refused(&app.graphql(&format!("{{ {} }}", aliases("__typename", 31)), json!({})).await, "aliases");
    assert!(app.graphql(&format!("{{ {} }}", aliases("__typename", 30)), json!({})).await["errors"].is_null());
    refused(
        &app.graphql(&format!("{{ __typename {} }}", "@include(if: true) ".repeat(51)), json!({})).await,
        "directives",
    );
    // Through fragments: each level spreads the next twice (2^20 aliases from 40 in the text).
    let mut bomb = String::from("{ ...F0 }");
    for i in 0..20 {
        write!(bomb, " fragment F{i} on Query {{ a: models {{ name }} b: model {{ name }} ...F{} }}", i + 1).unwrap();
    }
    bomb.push_str(" fragment F20 on Query { __typename }");
    refused(&app.graphql(&bomb, json!({})).await, "aliases");
    // Spreads that double at the root for 30 levels (2^30 paths) are measured in linear time.
    let mut doubling = String::from("{ ...F0 }");
    for i in 0..30 {
        write!(doubling, " fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1).unwrap();
    }
    doubling.push_str(" fragment F30 on Query { traffic { requests } }");
    let started = Instant::now();
    let body =
        tokio::time::timeout(Duration::from_secs(30), app.graphql(&doubling, json!({}))).await.expect("answered");
    refused(&body, "cost");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Circular fragments are a validation error, not a hang.
    let body = app.graphql("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    // The refusals are request errors: status 400 with the spec's media type.
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": format!("{{ {} }}", aliases("__typename", 31)) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[sqlx::test]
async fn a_read_past_the_statement_timeout_fails_and_leaves_nothing_running(pool: PgPool) {
    let mut config = config();
    config.limits.read_timeout_ms = 300;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    app.predict(1500.0, 3, 2.0).await;
    // An open transaction holding the log keeps every read of it waiting.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table prediction_log in access exclusive mode").execute(&mut *blocker).await.unwrap();
    let started = Instant::now();
    let body = app.graphql("{ predictions(first: 5) { nodes { id } } }", json!({})).await;
    assert_eq!(error_code(&body), "REQUEST_TIMEOUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("300 ms"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off by PostgreSQL, not the request timeout");
    assert_eq!(running_reads(&pool).await, 0);
    blocker.rollback().await.unwrap();
    assert!(app.graphql("{ predictions(first: 5) { nodes { id } } }", json!({})).await["errors"].is_null());
}

/// API reads still running in PostgreSQL (`pg_stat_activity`, by the read pool's name).
async fn running_reads(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity where application_name = $1 and state = 'active' and datname = current_database()",
    )
    .bind(house_price_api::db::reads::APPLICATION_NAME)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn an_abandoned_read_is_cancelled_in_postgres(pool: PgPool) {
    let mut config = config();
    config.limits.request_timeout_ms = 400;
    config.limits.read_timeout_ms = 60_000;
    let app = TestApp::spawn_with(pool.clone(), config).await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table prediction_log in access exclusive mode").execute(&mut *blocker).await.unwrap();
    // The request times out while its read waits: the read is cancelled, not left waiting.
    let body = app.graphql("{ predictions(first: 5) { nodes { id } } }", json!({})).await;
    assert_eq!(error_code(&body), "REQUEST_TIMEOUT", "{body}");
    within_seconds("the timed-out request's read is cancelled", async || running_reads(&pool).await == 0).await;
    // A client that hangs up mid-read: the same.
    let gone = app
        .client
        .post(app.url("/graphql"))
        .timeout(Duration::from_millis(150))
        .json(&json!({ "query": "{ prediction(id: \"01a23ce1-0624-716b-a8a1-33f62a037804\") { id } }" }))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    within_seconds("the abandoned read is cancelled", async || running_reads(&pool).await == 0).await;
    blocker.rollback().await.unwrap();
    assert!(app.graphql("{ traffic { requests } }", json!({})).await["errors"].is_null(), "the pool is usable");
}

#[sqlx::test]
async fn the_analyst_role_reads_the_sql_contract_and_can_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.predict(1500.0, 3, 2.0).await;
    app.wait_durable().await;
    let mut url = reqwest::Url::parse(&direct_url(&pool)).unwrap();
    url.set_username("house_price_analyst").unwrap();
    url.set_password(Some("house_price_analyst")).unwrap();
    let analyst = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url.as_str())
        .await
        .expect("the analyst role exists (scripts/db-setup.sh creates it)");
    for table in [
        "prediction_log",
        "prediction_outcomes",
        "model_events",
        "drift_alerts",
        "v_predictions_hourly",
        "v_rejections_daily",
        "v_performance_daily",
        "v_drift_psi_daily",
        "v_shadow_comparison",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("select * from {table} limit 1")))
            .execute(&analyst)
            .await
            .unwrap_or_else(|err| panic!("{table}: {err}"));
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from prediction_log").fetch_one(&analyst).await.unwrap();
    assert_eq!(rows, 1);
    let read_only: String = sqlx::query_scalar("show default_transaction_read_only").fetch_one(&analyst).await.unwrap();
    assert_eq!(read_only, "on", "its transactions are read-only, so it cannot hold write locks either");
    // Even with read-write transactions (a session setting it may change), it has no privilege to write.
    sqlx::query("set default_transaction_read_only = off").execute(&analyst).await.unwrap();
    for statement in [
        "insert into prediction_log (id, request_id, created_at, route, status, raw_input, latency_us) values (gen_random_uuid(), 'x', now(), 'graphql', 'ok', '{}', 1)",
        "update prediction_log set price = 1",
        "delete from prediction_log",
        "truncate prediction_log",
        "delete from prediction_outcomes",
        "select * from api_keys",
        "create table mine (x int)",
        "create temporary table mine (x int)",
        "select ensure_prediction_log_partition(current_date + 400)",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&analyst).await.unwrap_err();
        let code = err.as_database_error().and_then(sqlx::error::DatabaseError::code).map(std::borrow::Cow::into_owned);
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err}");
    }
    assert_eq!(app.count_rows("true").await, 1, "nothing changed");
}

#[sqlx::test]
async fn subscriptions_take_the_key_from_the_connection_init_payload_and_end_when_it_is_revoked(pool: PgPool) {
    let mut config = keys_config();
    config.access.api_keys = vec![format!("{}:predict", house_price_api::auth::hash_key("predictor"))];
    let app = TestApp::spawn_with(pool.clone(), config).await;
    let issued = keys::create(&pool, "watcher", &[Scope::History], None).await.unwrap();
    let watcher = issued.key.as_str();
    within_seconds("the watcher's key is known", async || {
        graphql_with_key(&app, Some(watcher), "{ predictions(first: 1) { nodes { id } } }", json!({})).await["errors"]
            .is_null()
    })
    .await;
    let subscribe =
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { predictionLogged { id } }" } });
    let mut anonymous = Subscriber::connect(&app, "graphql-transport-ws").await;
    anonymous.send(subscribe.clone()).await;
    let refused = anonymous.next_event().await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
    let mut keyed = Subscriber::connect_with(&app, "graphql-transport-ws", json!({ "x-api-key": watcher })).await;
    keyed.send(subscribe).await;
    let body = graphql_with_key(&app, Some(watcher), PREDICT, house()).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "the watcher may not predict: {body}");
    // Rows priced with a key that may predict reach the watcher (once its subscription is live).
    for attempt in 0.. {
        let priced = graphql_with_key(&app, Some("predictor"), PREDICT, house()).await;
        assert!(priced["errors"].is_null(), "{priced}");
        match tokio::time::timeout(Duration::from_secs(1), keyed.next_result("1")).await {
            Ok(event) => {
                assert!(event["payload"]["data"]["predictionLogged"]["id"].is_string(), "{event}");
                break;
            }
            Err(_) => assert!(attempt < 10, "no event reached the keyed subscriber"),
        }
    }
    // Revoked: the open subscription ends at its next event, and the socket refuses new operations.
    assert!(keys::revoke(&pool, &issued.record.id).await.unwrap());
    within_seconds("the revocation reached the replica", async || {
        let body = graphql_with_key(&app, Some(watcher), "{ predictions(first: 1) { nodes { id } } }", json!({})).await;
        body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    })
    .await;
    let after = graphql_with_key(&app, Some("predictor"), PREDICT, house()).await;
    let priced_after = after["data"]["predictPrice"]["id"].as_str().unwrap_or_else(|| panic!("{after}")).to_owned();
    // Rows of the earlier attempts may still be on their way; the row priced after the revocation
    // never comes, and the stream completes.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), keyed.next_event()).await.expect("the stream ends");
        if event["id"] == "1" && event["type"] == "complete" {
            break;
        }
        assert_ne!(
            event["payload"]["data"]["predictionLogged"]["id"].as_str(),
            Some(priced_after.as_str()),
            "nothing priced after the revocation is delivered: {event}"
        );
    }
    keyed.send(json!({ "id": "2", "type": "subscribe", "payload": { "query": "{ predictions(first: 1) { nodes { id } } }" } })).await;
    let refused = tokio::time::timeout(Duration::from_secs(10), keyed.next_event()).await.expect("an answer");
    let errors = if refused["type"] == "error" { &refused["payload"] } else { &refused["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
}

#[sqlx::test]
async fn half_open_connections_and_a_subscriber_that_never_reads_do_not_hold_the_server(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // 300 connections that start a request and never finish it.
    let mut half_open = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"que").await.unwrap();
        half_open.push(stream);
    }
    // A header with a NUL byte is refused, and the server goes on.
    let mut nul = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    nul.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nX-Api-Key: a\0b\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), nul.read(&mut answer)).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    // A WebSocket subscriber that never reads, while large rows are logged: the server's memory
    // stays bounded (the feed is a bounded broadcast; a socket that does not drain stops being
    // written to), and everyone else is served.
    let mut subscriber = Subscriber::connect(&app, "graphql-transport-ws").await;
    subscriber
        .send(json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { predictionLogged { id client rawInput } }" } }))
        .await;
    let user_agent = "x".repeat(16 * 1024);
    let batch: Vec<Value> = (0..100).map(|i| json!({"squareFeet": 900 + i, "bedrooms": 3, "bathrooms": 2})).collect();
    let before = resident_bytes();
    for _ in 0..120 {
        let body: Value = app
            .client
            .post(app.url("/graphql"))
            .header("user-agent", &user_agent)
            .json(&json!({ "query": "query($b: [HouseInput!]!) { predictPrices(inputs: $b) { index } }", "variables": { "b": batch } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body["errors"].is_null(), "{body}");
    }
    app.wait_durable().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = resident_bytes().saturating_sub(before);
    // 12,000 rows of 16 KiB would be 190 MiB if the subscriber's events were buffered.
    assert!(grown < 100 << 20, "resident memory grew by {} MiB", grown >> 20);
    assert!(app.predict(1500.0, 3, 2.0).await["errors"].is_null());
    drop(half_open);
}

/// This process's resident set (the test and the server share it; nextest runs one test per process).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
