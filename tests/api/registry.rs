use std::path::Path;
use std::time::Duration;

use house_price_api::auth::hash_key;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, config, error_code};
use crate::models::copy_models;

const RELOAD: &str = "mutation { reloadModels { added removed defaultModel models { name version } } }";

async fn reload(app: &TestApp, key: Option<&str>) -> Value {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": RELOAD }));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Publishes `name@version` in `dir` as a copy of the committed `from` model with another version.
pub(crate) fn publish_version(dir: &Path, name: &str, from: &str, version: &str) {
    let source = dir.join(name).join(from);
    let target = dir.join(name).join(version);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(source.join("model.postcard"), target.join("model.postcard")).unwrap();
    let mut card: Value = serde_json::from_slice(&std::fs::read(source.join("card.json")).unwrap()).unwrap();
    card["version"] = json!(version);
    std::fs::write(target.join("card.json"), serde_json::to_vec_pretty(&card).unwrap()).unwrap();
}

pub(crate) fn app_config(dir: &Path) -> house_price_api::config::AppConfig {
    let mut config = config();
    config.model_dir = dir.to_owned();
    config.default_model = "ridge-log".into();
    // ridge-log answers every request that names no model, three inputs included.
    config.three_input_model = String::new();
    config.access.api_keys = vec![hash_key("admin-key"), format!("{}:outcomes", hash_key("labeller-key"))];
    config
}

#[sqlx::test]
async fn reloading_needs_an_api_key_with_the_models_scope(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let app = TestApp::spawn_with(pool.clone(), app_config(dir.path())).await;
    assert_eq!(error_code(&reload(&app, None).await), "UNAUTHENTICATED");
    assert_eq!(error_code(&reload(&app, Some("wrong")).await), "UNAUTHENTICATED");
    assert_eq!(error_code(&reload(&app, Some("labeller-key")).await), "FORBIDDEN");
    let ok = reload(&app, Some("admin-key")).await;
    assert_eq!(ok["data"]["reloadModels"]["defaultModel"], "ridge-log@2.0.0", "{ok}");

    // With no keys configured, mutations are disabled.
    let mut no_keys = app_config(dir.path());
    no_keys.access.api_keys.clear();
    let app = TestApp::spawn_with(pool, no_keys).await;
    assert_eq!(error_code(&reload(&app, Some("admin-key")).await), "FORBIDDEN");
}

#[sqlx::test]
async fn a_reload_under_load_swaps_versions_without_failing_a_request(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let app = TestApp::spawn_with(pool, app_config(dir.path())).await;
    let stop = tokio_util::sync::CancellationToken::new();

    // Four clients predicting continuously through the reload.
    let clients = (0..4).map(|c| {
        let app = &app;
        let stop = stop.clone();
        async move {
            let mut seen = Vec::new();
            while !stop.is_cancelled() {
                let body = app.predict(1000.0 + f64::from(c), 3, 2.0).await;
                let p = &body["data"]["predictPrice"];
                assert!(p["price"].is_number(), "no request fails during a reload: {body}");
                seen.push((p["id"].as_str().unwrap().to_owned(), p["model"]["version"].as_str().unwrap().to_owned()));
            }
            seen
        }
    });
    let reloader = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        publish_version(dir.path(), "ridge-log", "2.0.0", "2.1.0");
        let body = reload(&app, Some("admin-key")).await;
        assert_eq!(body["data"]["reloadModels"]["added"], json!(["ridge-log@2.1.0"]), "{body}");
        assert_eq!(body["data"]["reloadModels"]["defaultModel"], "ridge-log@2.1.0");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    };
    let (seen, ()) = tokio::join!(futures_util::future::join_all(clients), reloader);

    let seen: Vec<(String, String)> = seen.into_iter().flatten().collect();
    let versions: std::collections::BTreeSet<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions, ["2.0.0", "2.1.0"].into(), "traffic before and after the swap");
    // Every row records the version that answered it.
    for (id, version) in &seen {
        assert_eq!(app.count_rows(&format!("id = '{id}' and model_version = '{version}'")).await, 1);
    }
    // Per client, versions never go back: the swap is atomic.
    let events: i64 = sqlx::query_scalar(
        "select count(*) from model_events where event = 'reloaded' and trigger = 'api' and actor is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
}

#[sqlx::test]
async fn a_broken_new_artifact_is_rejected_and_the_old_models_keep_serving(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let app = TestApp::spawn_with(pool, app_config(dir.path())).await;
    publish_version(dir.path(), "ridge-log", "2.0.0", "3.0.0");
    std::fs::write(dir.path().join("ridge-log/3.0.0/model.postcard"), b"corrupted").unwrap();

    let body = reload(&app, Some("admin-key")).await;

    assert_eq!(error_code(&body), "MODEL_LOAD_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("checksum mismatch"), "{body}");
    let p = app.predict(1500.0, 3, 2.0).await;
    assert_eq!(p["data"]["predictPrice"]["model"]["version"], "2.0.0", "the old set serves: {p}");
    let (event, error): (String, Option<String>) =
        sqlx::query_as("select event, error from model_events order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(event, "reload_failed");
    assert!(error.unwrap().contains("ridge-log/3.0.0"));
}

#[sqlx::test]
async fn sighup_reloads_the_models(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let app = TestApp::spawn_with(pool, app_config(dir.path())).await;
    publish_version(dir.path(), "ridge-log", "2.0.0", "2.2.0");

    let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());

    let mut version = String::new();
    for _ in 0..100 {
        let body = app.predict(1500.0, 3, 2.0).await;
        version = body["data"]["predictPrice"]["model"]["version"].as_str().unwrap().to_owned();
        if version == "2.2.0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(version, "2.2.0");
    let references: i64 = sqlx::query_scalar(
        "select count(*) from model_references where model_name = 'ridge-log' and model_version = '2.2.0'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(references > 0, "a new version's reference distributions are stored before it serves");
    // A signal has no response to wait for, and the event is recorded just after the swap.
    let mut trigger = None;
    for _ in 0..100 {
        trigger = sqlx::query_scalar::<_, String>(
            "select trigger from model_events where event = 'reloaded' order by id desc limit 1",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        if trigger.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trigger.as_deref(), Some("sighup"));
}

#[sqlx::test]
async fn the_shadow_model_scores_every_accepted_prediction(pool: PgPool) {
    let mut config = config();
    config.shadow_model = Some("gradient-boosting".into());
    let app = TestApp::spawn_with(pool, config).await;
    let shadow = crate::common::committed_model("gradient-boosting");
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = app.predict(1200.0 + 100.0 * f64::from(i), 3, 2.0).await;
        ids.push(body["data"]["predictPrice"]["id"].as_str().unwrap().to_owned());
    }
    app.predict(-1.0, 3, 2.0).await; // rejected: nothing to shadow

    let mut filled = 0;
    for _ in 0..100 {
        filled = app.count_rows("shadow_price is not null").await;
        if filled == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(filled, 5);
    assert_eq!(app.count_rows("status = 'rejected' and shadow_price is null").await, 1);
    app.wait_durable().await;
    let (price, name, version): (f64, String, String) = sqlx::query_as(
        "select shadow_price, shadow_model_name, shadow_model_version from prediction_log where id = $1::uuid",
    )
    .bind(&ids[0])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((name.as_str(), version.as_str()), ("gradient-boosting", "2.0.0"));
    assert_eq!(price, crate::common::price_of(&shadow, &house_price_api::model::HouseFeatures::new(1200.0, 3, 2.0)));
    let days: i64 = sqlx::query_scalar("select sum(predictions)::bigint from v_shadow_comparison")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(days, 5);
    // The history API shows the shadow price too.
    let body = app
        .graphql("query($id: ID!) { prediction(id: $id) { shadow { price model { name } } } }", json!({ "id": ids[0] }))
        .await;
    assert_eq!(body["data"]["prediction"]["shadow"]["price"].as_f64(), Some(price));
}
