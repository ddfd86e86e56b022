//! The front door as people and tools use it: the standard introspection query, the
//! GraphQL-over-HTTP audit (npm `graphql-http`), GraphiQL and the dashboard in headless Chromium
//! with every request outside 127.0.0.1 blocked, and the Python and TypeScript client examples —
//! all against the real server. The Node scripts live in `web/tests/`, the clients in
//! `examples/`; `make test` installs what they need (`scripts/web-build.sh`, `scripts/test-tools.sh`).

use std::path::{Path, PathBuf};

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Command;

use crate::common::{TestApp, config, error_code};
use crate::monitoring::{LABELLER, monitored_config, run_replay};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the browser tests write their screenshots on every run.
fn screenshot(name: &str) -> PathBuf {
    let dir = root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir.join(format!("{name}.png"))
}

/// Runs a program that prints one JSON object as its last stdout line; panics with its output
/// unless it exits 0. Returns that object. Asynchronously: the server under test runs on this
/// test's (single-threaded) runtime and must keep answering while the program talks to it.
pub(crate) async fn run_json(command: Command) -> Value {
    let (value, ok, shown) = run_json_any(command).await;
    assert!(ok, "{shown} failed: {value:#}");
    value
}

/// [`run_json`] for a program expected to fail: its JSON and whether it exited 0.
async fn run_json_any(mut command: Command) -> (Value, bool, String) {
    let shown = format!("{:?}", command.as_std());
    command.kill_on_drop(true);
    let output =
        command.output().await.unwrap_or_else(|e| panic!("cannot run {shown}: {e} (did `make test-tools` run?)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let value: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{shown}: last line is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    (value, output.status.success(), format!("{shown} (stderr: {stderr})"))
}

/// A Node script of `web/tests/` against `app`.
fn node_command(app: &TestApp, script: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new("node");
    command
        .current_dir(root().join("web"))
        .arg(format!("tests/{script}"))
        .env("BASE_URL", format!("http://{}", app.addr));
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

async fn node(app: &TestApp, script: &str, env: &[(&str, &str)]) -> Value {
    run_json(node_command(app, script, env)).await
}

fn standard_introspection_query() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/introspection_query.graphql")).expect("fixture")
}

#[sqlx::test]
async fn the_standard_introspection_query_builds_exactly_the_committed_schema(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let answer = app.graphql(&standard_introspection_query(), json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("introspection.json");
    std::fs::write(&result, answer.to_string()).unwrap();
    let mut command = Command::new("node");
    command
        .current_dir(root().join("web"))
        .arg("tests/introspection.mjs")
        .arg(&result)
        .arg(root().join("schema.graphql"));
    let checked = run_json(command).await;
    assert_eq!(checked["ok"], true, "{checked}");
}

#[sqlx::test]
async fn depth_limits_still_refuse_abusive_queries_and_deep_introspection(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let nested = |field: &str, levels: usize, leaf: &str| {
        format!("{}{leaf}{}", format!("{field} {{ ").repeat(levels), " }".repeat(levels))
    };
    // A regular query one level past MAX_QUERY_DEPTH (10), and one past the parser's recursion guard.
    for levels in [10, 50] {
        let body = app.graphql(&format!("{{ {} }}", nested("a", levels, "b")), json!({})).await;
        assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{levels}: {body}");
        assert_eq!(body["errors"][0]["message"], "Query is nested too deep.");
    }
    // Introspection nested far beyond the standard query's 15 levels.
    let body =
        app.graphql(&format!("{{ __schema {{ types {{ {} }} }} }}", nested("ofType", 30, "name")), json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    // A deep introspection within its budget still answers.
    let body =
        app.graphql(&format!("{{ __schema {{ types {{ {} }} }} }}", nested("ofType", 15, "name")), json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[sqlx::test]
async fn introspection_can_be_turned_off(pool: PgPool) {
    let mut config = config();
    config.limits.introspection = false;
    let app = TestApp::spawn_with(pool, config).await;
    let body = app.graphql(&standard_introspection_query(), json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("introspection is disabled"), "{body}");
    // Queries keep working.
    assert!(app.predict(1500.0, 3, 2.0).await["data"]["predictPrice"]["price"].is_number());
}

#[sqlx::test]
async fn a_body_without_a_query_is_a_bad_request(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.client.post(app.url("/graphql")).json(&json!({ "foo": 1 })).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
}

/// A body that is not JSON and a body that is JSON of the wrong shape are refused with different
/// messages, so a client can tell a broken serialiser from a wrong request.
#[sqlx::test]
async fn bad_json_and_wrong_shapes_are_told_apart(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (body, expected) in [
        ("{\"query\": ", "the body is not JSON"),
        ("[{\"query\": \"{ __typename }\"}] trailing", "the body is not JSON"),
        ("nope", "the body is not JSON"),
        ("   ", "the body is not JSON"),
        ("42", "the body must be a JSON object (or an array of them)"),
        ("\"{ __typename }\"", "the body must be a JSON object (or an array of them)"),
        (
            "{\"query\": \"{ __typename }\", \"query\": \"{ __typename }\"}",
            "the body must be a JSON object (or an array of them)",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error_code(&answer), "BAD_REQUEST", "{body}: {answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{body}: {message}");
    }
}

#[sqlx::test]
async fn content_negotiation_and_methods_follow_graphql_over_http(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let post = |accept: &'static str, query: &'static str| {
        app.client.post(app.url("/graphql")).header("accept", accept).json(&json!({ "query": query })).send()
    };
    // application/graphql-response+json: a validation failure is 400 without `data`.
    let response = post("application/graphql-response+json", "{ nope }").await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/graphql-response+json"));
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    // application/json: the same failure is 200 with `data: null`, as legacy clients expect.
    let response = post("application/json", "{ nope }").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(response.json::<Value>().await.unwrap()["data"], Value::Null);
    // A rejected input is an execution error, not a request error: 200 either way.
    let response = post(
        "application/graphql-response+json",
        "{ predictPrice(input: {squareFeet: -1, bedrooms: 3, bathrooms: 2}) { price } }",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(error_code(&response.json::<Value>().await.unwrap()), "BAD_USER_INPUT");
    // Neither JSON type acceptable: 406. Not JSON: 415.
    assert_eq!(post("text/plain", "{ __typename }").await.unwrap().status(), 406);
    let response =
        app.client.post(app.url("/graphql")).header("content-type", "text/plain").body("{ __typename }").send().await;
    assert_eq!(response.unwrap().status(), 415);
    // GET runs queries and refuses mutations.
    let get = app.client.get(app.url("/graphql")).header("accept", "application/json");
    let response = get.query(&[("query", "{ model { name } }")]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["data"]["model"]["name"], "price-blend");
    let get = app.client.get(app.url("/graphql")).header("accept", "application/json");
    let response = get.query(&[("query", "mutation { reloadModels { defaultModel } }")]).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[sqlx::test]
async fn the_graphql_http_audit_passes_every_must_and_should(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let audit = node(&app, "audit.mjs", &[]).await;
    assert_eq!(audit["ok"], true, "{audit:#}");
    for level in ["MUST", "SHOULD"] {
        let counts = &audit["counts"][level];
        assert!(counts["ok"].as_i64().unwrap() > 0, "{audit:#}");
        assert_eq!(
            counts["warn"].as_i64().unwrap_or(0) + counts["error"].as_i64().unwrap_or(0),
            0,
            "{level}: {audit:#}"
        );
    }
}

#[sqlx::test]
async fn pages_and_hashed_assets_are_served_from_the_binary_with_cache_headers(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let page = app.client.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no external URL in the page");
    let asset = html.split("/assets/").nth(1).and_then(|rest| rest.split('"').next()).expect("the page links an asset");
    let response = app.client.get(app.url(&format!("/assets/{asset}"))).send().await.unwrap();
    assert_eq!(response.status(), 200, "{asset}");
    assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(!response.bytes().await.unwrap().is_empty());
    assert_eq!(app.client.get(app.url("/assets/nope-0000.js")).send().await.unwrap().status(), 404);
    let index = app.client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(index.contains("/dashboard") && index.contains("/graphql"), "the landing page links both pages");
}

#[sqlx::test]
async fn graphiql_works_offline_in_chromium_docs_query_and_subscription(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let shot = screenshot("graphiql");
    let result = node(&app, "graphiql.mjs", &[("SCREENSHOT", shot.to_str().unwrap())]).await;
    assert_eq!(result["docsHasPredictPrice"], true, "{result:#}");
    let expected = app.expected_price(1500.0, 3, 2.0);
    assert!((result["price"].as_f64().unwrap() - expected).abs() < 1e-6, "{result:#} vs {expected}");
    assert_eq!(result["subscriptionEvent"], true, "{result:#}");
    assert_eq!(result["blocked"], json!([]), "nothing may leave 127.0.0.1");
    assert!(shot.exists());
}

#[sqlx::test]
async fn graphiql_sends_the_session_key_with_queries_and_subscriptions_under_keys_access(pool: PgPool) {
    let mut config = config();
    config.access.access = house_price_api::auth::Access::Keys;
    config.access.api_keys = vec![format!("{}:predict+history", house_price_api::auth::hash_key("explorer-key"))];
    let app = TestApp::spawn_with(pool, config).await;
    let result = node(&app, "graphiql.mjs", &[("API_KEY", "explorer-key")]).await;
    assert_eq!(result["docsHasPredictPrice"], true, "introspection needs no key: {result:#}");
    let expected = app.expected_price(1500.0, 3, 2.0);
    assert!((result["price"].as_f64().unwrap() - expected).abs() < 1e-6, "{result:#} vs {expected}");
    assert_eq!(result["subscriptionEvent"], true, "{result:#}");
    assert_eq!(result["initHadKey"], true, "the key went in connection_init: {result:#}");
    assert_eq!(result["localHasKey"], false, "the key stays out of localStorage: {result:#}");
}

#[sqlx::test]
async fn the_dashboard_shows_the_drifting_feature_first_and_the_apis_accuracy(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    run_replay(&app, &[]).await;
    run_replay(&app, &["squareFeet=+30%"]).await;
    let shot = screenshot("dashboard");
    let result =
        node(&app, "dashboard.mjs", &[("SCREENSHOT", shot.to_str().unwrap()), ("MODEL", "gradient-boosting")]).await;
    for (panel, state) in result["panels"].as_object().unwrap() {
        if panel != "live" {
            assert_eq!(state, "ready", "{panel} has data: {result:#}");
        }
    }
    let rows = result["driftRows"].as_array().unwrap();
    assert_eq!(rows.len(), 20, "every input feature: {result:#}");
    assert_eq!(rows[0], json!({ "feature": "squareFeet", "status": "DRIFT" }), "{result:#}");
    let flagged: Vec<&Value> = rows[1..].iter().filter(|r| r["status"] != "OK").collect();
    assert!(flagged.is_empty(), "only the shifted feature drifts: {flagged:?}");
    assert_eq!(result["histogramShown"], true);
    assert!(result["liveRows"].as_i64().unwrap() >= 1, "{result:#}");

    // The MAE the page shows is the API's over the same window.
    let now = Utc::now();
    let body = app
        .graphql(
            "query($from: DateTime, $to: DateTime) { performance(model: \"gradient-boosting\", from: $from, to: $to, bucket: HOUR) {
                 predictions labelled mae intervalLabelled coverage estimatedMae } }",
            json!({ "from": (now - TimeDelta::hours(24)).to_rfc3339(), "to": (now + TimeDelta::minutes(1)).to_rfc3339() }),
        )
        .await;
    let buckets = body["data"]["performance"].as_array().unwrap();
    let labelled: f64 = buckets.iter().map(|b| b["labelled"].as_f64().unwrap()).sum();
    let mae = buckets.iter().map(|b| b["labelled"].as_f64().unwrap() * b["mae"].as_f64().unwrap_or(0.0)).sum::<f64>()
        / labelled;
    assert_eq!(result["mae"], format!("{} USD", thousands(mae.round() as i64)), "{result:#}");
    // And so are the coverage of the 90 % intervals and the estimated MAE (labelled an estimate).
    let weighted = |key: &str, weight: &str| {
        let n: f64 = buckets.iter().map(|b| b[weight].as_f64().unwrap()).sum();
        buckets.iter().map(|b| b[weight].as_f64().unwrap() * b[key].as_f64().unwrap_or(0.0)).sum::<f64>() / n
    };
    let coverage = weighted("coverage", "intervalLabelled");
    assert_eq!(result["coverage"], format!("{:.1} %", 100.0 * coverage), "{result:#}");
    let estimated = weighted("estimatedMae", "predictions");
    assert_eq!(result["estimatedMae"], format!("{} USD", thousands(estimated.round() as i64)), "{result:#}");
    assert!(shot.exists());
}

#[sqlx::test]
async fn the_dashboard_says_so_when_there_is_no_data_or_the_api_fails(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // A fresh database: every data panel explains itself instead of drawing an empty chart.
    let result = node(&app, "dashboard.mjs", &[("MODEL", "gradient-boosting")]).await;
    for panel in ["traffic", "drift", "accuracy"] {
        assert_eq!(result["initialPanels"][panel], "empty", "{panel}: {result:#}");
        let message = result["initialMessages"][panel].as_str().unwrap_or_default();
        assert!(message.starts_with("No "), "{panel} says why it is empty: {result:#}");
    }
    // A model the API does not know: the panels show the API's error, and the run reports them.
    let (result, ok, _) = run_json_any(node_command(&app, "dashboard.mjs", &[("MODEL", "no-such-model")])).await;
    assert!(!ok, "panels in error fail the page check");
    assert_eq!(result["panels"]["drift"], "error", "{result:#}");
    let message = result["panelMessages"]["drift"].as_str().unwrap_or_default();
    assert!(message.contains("unknown model"), "the API's message is shown: {result:#}");
}

#[sqlx::test]
async fn the_dashboard_takes_a_key_under_keys_access_and_keeps_it_in_the_session_only(pool: PgPool) {
    let mut config = config();
    config.access.access = house_price_api::auth::Access::Keys;
    config.access.api_keys = vec![format!("{}:monitoring+history", house_price_api::auth::hash_key("dash-key"))];
    let app = TestApp::spawn_with(pool, config).await;
    let result = node(&app, "dashboard-key.mjs", &[("API_KEY", "dash-key")]).await;
    assert_eq!(result["withoutKey"], "error", "{result:#}");
    assert!(result["message"].as_str().unwrap_or_default().contains("API key"), "the refusal is shown: {result:#}");
    for panel in ["traffic", "drift", "accuracy", "models", "live"] {
        assert_ne!(result["withKey"][panel], "error", "{panel}: {result:#}");
    }
    assert_eq!(result["liveStatus"], "connected", "the WebSocket sent the key: {result:#}");
    assert_eq!((result["sessionKey"].as_bool(), result["localKey"].as_bool()), (Some(true), Some(false)), "{result:#}");
}

/// `13916` → `13,916`.
fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The environment both client examples read.
fn client_env(app: &TestApp) -> [(&'static str, String); 3] {
    [
        ("GRAPHQL_URL", format!("http://{}/graphql", app.addr)),
        ("WS_URL", format!("ws://{}/ws", app.addr)),
        ("API_KEY", LABELLER.to_owned()),
    ]
}

fn assert_client_did_everything(result: &Value, app_price: f64) {
    assert_eq!(result["ok"], true, "{result:#}");
    assert!(result["schemaTypes"].as_i64().unwrap() > 40, "{result:#}");
    assert!((result["price"].as_f64().unwrap() - app_price).abs() < 1e-6, "{result:#}");
    assert_eq!(result["subscriptionEvent"], true);
    assert!(result["historyPages"].as_i64().unwrap() >= 1);
    assert_eq!(result["outcome"], "CREATED");
}

#[sqlx::test]
async fn the_python_gql_client_example_runs_against_the_server(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let mut command = Command::new(root().join("target/py-venv/bin/python"));
    command.current_dir(root()).arg("examples/python/client.py").envs(client_env(&app));
    let result = run_json(command).await;
    assert_client_did_everything(&result, app.expected_price(1500.0, 3, 2.0));
    let id = result["predictionId"].as_str().unwrap();
    let stored: f64 = sqlx::query_scalar("select actual_price from prediction_outcomes where prediction_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 187_500.0);
}

#[sqlx::test]
async fn the_typescript_client_example_type_checks_and_runs_against_the_server(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let mut command = Command::new("npm");
    command.current_dir(root().join("examples/typescript")).args(["run", "--silent", "all"]).envs(client_env(&app));
    let result = run_json(command).await;
    assert_client_did_everything(&result, app.expected_price(1500.0, 3, 2.0));
}

#[sqlx::test]
async fn swagger_ui_tries_the_seed_route_and_redoc_renders_with_the_network_blocked(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let shot = screenshot("docs");
    let result = node(&app, "docs.mjs", &[("SCREENSHOT", shot.to_str().unwrap())]).await;
    assert_eq!(result["tryItOut"]["status"], "200", "{result:#}");
    assert!(result["operations"].as_u64().unwrap() >= 14, "{result:#}");
    // The price Swagger UI showed was logged, from the browser, through the seed route.
    app.wait_durable().await;
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from prediction_log where route = 'rest:/prever_precos/' and status = 'ok'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
}
