use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use house_price_api::auth::hash_key;
use house_price_api::config::ReplayConfig;
use house_price_api::replay::{self, ReplaySummary};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, config, error_code, error_field};

pub(crate) const LABELLER: &str = "labeller-key";

pub(crate) fn monitored_config() -> house_price_api::config::AppConfig {
    let mut config = config();
    config.access.api_keys =
        vec![format!("{}:outcomes", hash_key(LABELLER)), format!("{}:models", hash_key("admin-key"))];
    config
}

pub(crate) async fn run_replay(app: &TestApp, shifts: &[&str]) -> ReplaySummary {
    replay_with(app, Some("gradient-boosting"), shifts, None).await
}

/// Replays the holdout (or a `slice` of it) through `app` with `model` (or the routing), shifted,
/// and records the true prices.
pub(crate) async fn replay_with(
    app: &TestApp,
    model: Option<&str>,
    shifts: &[&str],
    slice: Option<&str>,
) -> ReplaySummary {
    replay::run(&ReplayConfig {
        url: format!("http://{}", app.addr),
        model: model.map(str::to_owned),
        slice: slice.map(str::to_owned),
        data: "data/ames_housing.csv".into(),
        seed: 42,
        holdout_fraction: 0.2,
        shifts: shifts.iter().map(|s| (*s).to_owned()).collect(),
        api_key: Some(LABELLER.into()),
        batch: 50,
        limit: None,
    })
    .await
    .expect("replay runs")
}

async fn keyed(app: &TestApp, key: &str, query: &str, variables: Value) -> Value {
    app.client
        .post(app.url("/graphql"))
        .header("x-api-key", key)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const RECORD: &str = "mutation($id: ID!, $price: Float!) { recordOutcome(predictionId: $id, actualPrice: $price) {
    predictionId actualPrice revision change } }";

#[sqlx::test]
async fn outcomes_are_idempotent_corrections_are_audited_and_unknown_ids_not_found(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let id = app.predict(1500.0, 3, 2.0).await["data"]["predictPrice"]["id"].as_str().unwrap().to_owned();

    let first = keyed(&app, LABELLER, RECORD, json!({ "id": id, "price": 180000.0 })).await;
    assert_eq!(first["data"]["recordOutcome"]["change"], "CREATED", "{first}");
    let again = keyed(&app, LABELLER, RECORD, json!({ "id": id, "price": 180000.0 })).await;
    assert_eq!(again["data"]["recordOutcome"]["change"], "UNCHANGED");
    assert_eq!(again["data"]["recordOutcome"]["revision"], 1);
    let corrected = keyed(&app, LABELLER, RECORD, json!({ "id": id, "price": 185000.0 })).await;
    assert_eq!(corrected["data"]["recordOutcome"]["change"], "UPDATED");
    assert_eq!(corrected["data"]["recordOutcome"]["revision"], 2);

    let (price, revision): (f64, i32) =
        sqlx::query_as("select actual_price, revision from prediction_outcomes").fetch_one(&app.pool).await.unwrap();
    assert_eq!((price, revision), (185000.0, 2));
    let history: Vec<f64> =
        sqlx::query_scalar("select actual_price from prediction_outcome_history").fetch_all(&app.pool).await.unwrap();
    assert_eq!(history, [180000.0], "the replaced value is kept");

    let unknown = keyed(&app, LABELLER, RECORD, json!({ "id": uuid::Uuid::now_v7().to_string(), "price": 1.0 })).await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");
    let bad_price = keyed(&app, LABELLER, RECORD, json!({ "id": id, "price": -5.0 })).await;
    assert_eq!(error_field(&bad_price), "actualPrice");
    let rejected = app.predict(-1.0, 3, 2.0).await;
    assert!(rejected["errors"].is_array());
    app.wait_durable().await;
    let rejected_id: uuid::Uuid = sqlx::query_scalar("select id from prediction_log where status = 'rejected'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let body = keyed(&app, LABELLER, RECORD, json!({ "id": rejected_id.to_string(), "price": 1.0 })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "an unpriced prediction has no outcome");
}

#[sqlx::test]
async fn recording_outcomes_needs_the_outcomes_scope(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let id = app.predict(1500.0, 3, 2.0).await["data"]["predictPrice"]["id"].as_str().unwrap().to_owned();
    let body = app.graphql(RECORD, json!({ "id": id, "price": 1.0 })).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(error_code(&keyed(&app, "admin-key", RECORD, json!({ "id": id, "price": 1.0 })).await), "FORBIDDEN");
}

#[sqlx::test]
async fn bulk_outcomes_succeed_or_fail_per_item(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let id = app.predict(1500.0, 3, 2.0).await["data"]["predictPrice"]["id"].as_str().unwrap().to_owned();
    let body = keyed(
        &app,
        LABELLER,
        "mutation($o: [OutcomeInput!]!) { recordOutcomes(outcomes: $o) { index outcome { change } error { code field } } }",
        json!({ "o": [
            { "predictionId": id, "actualPrice": 200000.0, "observedAt": "2026-11-01T00:00:00Z" },
            { "predictionId": "not-a-uuid", "actualPrice": 1.0 },
            { "predictionId": uuid::Uuid::now_v7().to_string(), "actualPrice": 1.0 },
            { "predictionId": id, "actualPrice": 250000.0 },
            // chrono parses this; PostgreSQL could not store it. It must fail alone, as input.
            { "predictionId": uuid::Uuid::now_v7().to_string(), "actualPrice": 1.0, "observedAt": "-10000-01-01T00:00:00Z" },
        ] }),
    )
    .await;
    let items = body["data"]["recordOutcomes"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(items[0]["outcome"]["change"], "CREATED");
    assert_eq!(items[1]["error"], json!({ "code": "BAD_USER_INPUT", "field": "outcomes[1].predictionId" }));
    assert_eq!(items[2]["error"]["code"], "NOT_FOUND");
    assert_eq!(items[3]["error"]["field"], "outcomes[3].predictionId", "one prediction twice in a call is refused");
    assert_eq!(items[4]["error"], json!({ "code": "BAD_USER_INPUT", "field": "outcomes[4].observedAt" }));
    let price: f64 =
        sqlx::query_scalar("select actual_price from prediction_outcomes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(price, 200000.0);
    let observed: chrono::DateTime<Utc> =
        sqlx::query_scalar("select observed_at from prediction_outcomes").fetch_one(&app.pool).await.unwrap();
    assert_eq!(observed.to_rfc3339(), "2026-11-01T00:00:00+00:00");
}

fn today() -> (String, String) {
    let start = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    (start.to_rfc3339(), (start + TimeDelta::days(1)).to_rfc3339())
}

const DRIFT: &str = "query($from: DateTime, $to: DateTime) { drift(model: \"gradient-boosting\", from: $from, to: $to) {
    predictions status
    features { feature kind sampleSize warnings psi jsDistance ksStatistic ksPValue wassersteinNormalized chiSquare chiSquarePValue status }
    prediction { feature psi status sampleSize } } }";

fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["feature"].as_str().unwrap().to_owned(), f["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[sqlx::test]
async fn an_unshifted_replay_shows_no_drift_and_accuracy_matches_a_hand_computation(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let summary = run_replay(&app, &[]).await;
    assert_eq!(summary.sent, 585);
    assert_eq!(summary.priced.len(), 585, "{:?}", summary.rejected);
    assert_eq!(summary.outcomes_recorded, 585);

    let (from, to) = today();
    let body = app.graphql(DRIFT, json!({ "from": from, "to": to })).await;
    let report = &body["data"]["drift"];
    assert_eq!(report["predictions"], 585, "{body}");
    let statuses = statuses(report);
    assert_eq!(statuses.len(), 20);
    let flagged: Vec<&Value> = report["features"].as_array().unwrap().iter().filter(|f| f["status"] != "OK").collect();
    assert!(flagged.is_empty(), "holdout traffic looks like training: {flagged:#?}");
    assert_eq!(report["status"], "OK");
    assert_eq!(report["prediction"]["status"], "OK");

    // Accuracy: the API, the SQL view and a computation from the replay's own answers agree.
    let body = app
        .graphql(
            "query($from: DateTime, $to: DateTime) { performance(model: \"gradient-boosting@2.0.0\", from: $from, to: $to, bucket: DAY) {
                predictions labelled mae rmse mape meanError } }",
            json!({ "from": from, "to": to }),
        )
        .await;
    let bucket = &body["data"]["performance"][0];
    assert_eq!((bucket["predictions"].as_i64(), bucket["labelled"].as_i64()), (Some(585), Some(585)), "{body}");
    let by_hand = summary.mae();
    assert!((bucket["mae"].as_f64().unwrap() - by_hand).abs() < 1e-6, "{} vs {by_hand}", bucket["mae"]);
    let rmse_by_hand =
        (summary.priced.iter().map(|r| (r.price - r.actual).powi(2)).sum::<f64>() / summary.priced.len() as f64).sqrt();
    assert!((bucket["rmse"].as_f64().unwrap() - rmse_by_hand).abs() < 1e-6);
    let (view_mae, view_labelled): (f64, i64) =
        sqlx::query_as("select mae, labelled from v_performance_daily where model_name = 'gradient-boosting'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!((view_mae - by_hand).abs() < 1e-6);
    assert_eq!(view_labelled, 585);
    // The holdout MAE of the card was computed on the same houses by the same model.
    let card_mae = crate::common::committed_model("gradient-boosting").card.metrics.mae;
    assert!((by_hand - card_mae).abs() < 1e-6, "{by_hand} vs card {card_mae}");
}

#[sqlx::test]
async fn a_shifted_replay_flags_exactly_the_shifted_feature_in_the_api_and_the_sql_view(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    run_replay(&app, &["squareFeet=+30%"]).await;

    let (from, to) = today();
    let body = app.graphql(DRIFT, json!({ "from": from, "to": to })).await;
    let report = &body["data"]["drift"];
    let statuses = statuses(report);
    assert_eq!(statuses["squareFeet"], "DRIFT", "{body}");
    let others: Vec<_> = statuses.iter().filter(|(f, s)| *f != "squareFeet" && *s == "DRIFT").collect();
    assert!(others.is_empty(), "only the shifted feature drifts: {others:?}");
    assert_eq!(report["status"], "DRIFT");
    let square_feet = report["features"].as_array().unwrap().iter().find(|f| f["feature"] == "squareFeet").unwrap();
    assert!(square_feet["warnings"].as_i64().unwrap() > 0, "shifted houses beyond the training range are counted");
    assert!(square_feet["ksPValue"].as_f64().unwrap() < 1e-6);

    // The SQL view computes the same PSI per feature for the day.
    let rows: Vec<(String, f64, i64)> = sqlx::query_as(
        "select feature, psi, n::bigint from v_drift_psi_daily where model_name = 'gradient-boosting' and day = date_trunc('day', now(), 'UTC')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 21, "20 features and the prediction");
    for (feature, psi, n) in rows {
        let api = if feature == "_price" {
            report["prediction"].clone()
        } else {
            report["features"].as_array().unwrap().iter().find(|f| f["feature"] == feature.as_str()).unwrap().clone()
        };
        assert!((api["psi"].as_f64().unwrap() - psi).abs() < 1e-9, "{feature}: API {} vs SQL {psi}", api["psi"]);
        assert_eq!(api["sampleSize"].as_i64(), Some(n), "{feature}");
    }

    // The daily history is the same view, with statuses from the PSI thresholds.
    let body = app
        .graphql("{ driftHistory(model: \"gradient-boosting\") { day feature sampleSize psi status } }", json!({}))
        .await;
    let points = body["data"]["driftHistory"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(points.len(), 21, "{body}");
    let square_feet = points.iter().find(|p| p["feature"] == "squareFeet").unwrap();
    assert_eq!(square_feet["status"], "DRIFT", "{square_feet}");
    let api_psi =
        report["features"].as_array().unwrap().iter().find(|f| f["feature"] == "squareFeet").unwrap()["psi"].clone();
    assert!((square_feet["psi"].as_f64().unwrap() - api_psi.as_f64().unwrap()).abs() < 1e-9);
}

#[sqlx::test]
async fn the_evaluator_stores_reports_and_pushes_a_drift_alert(pool: PgPool) {
    let mut config = monitored_config();
    config.monitor_interval_ms = 200;
    let app = TestApp::spawn_with(pool, config).await;
    let mut alerts = app.subscribe_alerts().await;
    run_replay(&app, &["squareFeet=+30%"]).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let event = tokio::time::timeout_at(deadline, alerts.next_event()).await.expect("a drift alert arrives");
        let alert = event["payload"]["data"]["driftAlert"].clone();
        if alert["feature"] == "squareFeet" {
            break alert;
        }
    };
    assert_eq!(alert["status"], "DRIFT");
    assert_eq!(alert["modelName"], "gradient-boosting");
    let reports: i64 = sqlx::query_scalar(
        "select count(*) from monitoring_reports where model_name = 'gradient-boosting' and status = 'DRIFT'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(reports >= 1);
    let body = app
        .graphql(
            "{ driftReports(model: \"gradient-boosting\") { evaluatedAt status modelVersion drifting } }",
            json!({}),
        )
        .await;
    let first = &body["data"]["driftReports"][0];
    assert_eq!(first["status"], "DRIFT", "{body}");
    assert!(first["drifting"].as_array().unwrap().contains(&json!("squareFeet")), "{body}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("drift_status{model=\"gradient-boosting\",version=\"2.0.0\",feature=\"squareFeet\"} 2"),
        "{metrics}"
    );
}

#[sqlx::test]
async fn outcomes_loaded_with_sql_count_and_sql_corrections_are_audited(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let p = app.predict(1500.0, 3, 2.0).await;
    let (id, price) = (
        p["data"]["predictPrice"]["id"].as_str().unwrap().to_owned(),
        p["data"]["predictPrice"]["price"].as_f64().unwrap(),
    );
    // What an analyst's `\copy prediction_outcomes (prediction_id, actual_price, observed_at) from …` does.
    sqlx::query(
        "insert into prediction_outcomes (prediction_id, actual_price, observed_at) values ($1::uuid, $2, now())",
    )
    .bind(&id)
    .bind(price + 1000.0)
    .execute(&app.pool)
    .await
    .unwrap();
    let body =
        app.graphql("{ performance(model: \"three-input-boosting\") { labelled mae meanError } }", json!({})).await;
    let bucket = &body["data"]["performance"][0];
    assert_eq!(bucket["labelled"], 1, "{body}");
    assert!((bucket["mae"].as_f64().unwrap() - 1000.0).abs() < 1e-6);
    assert!((bucket["meanError"].as_f64().unwrap() + 1000.0).abs() < 1e-6, "the model under-priced by 1000");

    sqlx::query("update prediction_outcomes set actual_price = actual_price + 1").execute(&app.pool).await.unwrap();
    sqlx::query("update prediction_outcomes set actual_price = actual_price").execute(&app.pool).await.unwrap();
    let (revision, history): (i32, i64) =
        sqlx::query_as("select revision, (select count(*) from prediction_outcome_history) from prediction_outcomes")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((revision, history), (2, 1), "a real change is audited, a no-op update is not");
}

#[sqlx::test]
async fn traffic_counts_outcomes_by_error_code_with_the_views_latency_percentiles(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for sqft in [900.0, 1500.0, 2400.0] {
        app.predict(sqft, 3, 2.0).await;
    }
    app.predict(-5.0, 3, 2.0).await;
    let body = app
        .graphql(
            "{ traffic(model: \"three-input-boosting@1.0.0\", bucket: HOUR) { start requests ok rejected failed
                 errors { code count } latencyP50Us latencyP99Us } }",
            json!({}),
        )
        .await;
    let buckets = body["data"]["traffic"].as_array().unwrap_or_else(|| panic!("{body}"));
    let (requests, ok, rejected): (i64, i64, i64) = (
        buckets.iter().map(|b| b["requests"].as_i64().unwrap()).sum(),
        buckets.iter().map(|b| b["ok"].as_i64().unwrap()).sum(),
        buckets.iter().map(|b| b["rejected"].as_i64().unwrap()).sum(),
    );
    assert_eq!((requests, ok, rejected), (4, 3, 1), "{body}");
    let last = buckets.last().unwrap();
    assert!(
        last["errors"].as_array().unwrap().contains(&json!({ "code": "BAD_USER_INPUT", "count": 1 }))
            || buckets.len() > 1
    );
    // The same numbers as v_predictions_hourly for each hour.
    let view: Vec<(chrono::DateTime<Utc>, i64, i64, f64, f64)> = sqlx::query_as(
        "select hour, requests, ok, p50_latency_us, p99_latency_us from v_predictions_hourly
          where model_name = 'three-input-boosting' order by hour",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(view.len(), buckets.len());
    for ((hour, requests, ok, p50, p99), bucket) in view.iter().zip(buckets) {
        assert_eq!(bucket["start"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap(), *hour);
        assert_eq!((bucket["requests"].as_i64(), bucket["ok"].as_i64()), (Some(*requests), Some(*ok)));
        assert!((bucket["latencyP50Us"].as_f64().unwrap() - p50).abs() < 1e-6);
        assert!((bucket["latencyP99Us"].as_f64().unwrap() - p99).abs() < 1e-6);
    }
    // Another model's traffic is not counted; no model means all.
    let body = app.graphql("{ traffic(model: \"ridge-log\") { requests } }", json!({})).await;
    assert_eq!(body["data"]["traffic"], json!([]), "{body}");
    let body = app.graphql("{ traffic { requests } }", json!({})).await;
    let all: i64 = body["data"]["traffic"].as_array().unwrap().iter().map(|b| b["requests"].as_i64().unwrap()).sum();
    assert_eq!(all, 4);
}

#[sqlx::test]
async fn model_events_list_loads_and_reloads_newest_first(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let reload = app
        .client
        .post(app.url("/graphql"))
        .header("x-api-key", "admin-key")
        .json(&json!({ "query": "mutation { reloadModels { defaultModel } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let body = app
        .graphql(
            "{ modelEvents(first: 10) { id occurredAt event trigger actor models defaultModel error } }",
            json!({}),
        )
        .await;
    let events = body["data"]["modelEvents"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!((events[0]["event"].as_str(), events[0]["trigger"].as_str()), (Some("reloaded"), Some("api")));
    let fingerprint = format!("env:{}", &hash_key("admin-key")[..12]);
    assert_eq!(events[0]["actor"].as_str(), Some(fingerprint.as_str()), "the key's id: {body}");
    assert_eq!((events[1]["event"].as_str(), events[1]["trigger"].as_str()), (Some("loaded"), Some("startup")));
    assert_eq!(events[1]["defaultModel"], "price-blend@1.0.0");
    let body = app.graphql("{ modelEvents(first: 0) { id } }", json!({})).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

/// The SQL contract's views and the API read one definition of each metric (the functions of
/// migrations/20261203000000_metric_functions.sql): on the same rows they give the same numbers,
/// to the last bit.
#[sqlx::test]
async fn the_sql_views_and_the_api_give_the_same_numbers(pool: PgPool) {
    type Perf = (chrono::DateTime<Utc>, String, String, i64, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    type Hourly = (chrono::DateTime<Utc>, String, String, i64, i64, i64, i64, Option<f64>, Option<f64>);
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let batch = "query($items: [HouseInput!]!, $model: String) { predictPrices(inputs: $items, model: $model) {
        prediction { id } error { code } } }";
    for (model, n) in [("baseline-linear", 7), ("gradient-boosting", 5)] {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({ "squareFeet": 900.0 + 150.0 * f64::from(i), "bedrooms": if i == 3 { 99 } else { 3 }, "bathrooms": 2 }))
            .collect();
        let body = app.graphql(batch, json!({ "items": items, "model": model })).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    app.wait_durable().await;
    // Outcomes for some of the accepted predictions, as an analyst's \copy would load them.
    sqlx::query(
        "insert into prediction_outcomes (prediction_id, actual_price, observed_at)
         select id, price * (1 + (item_index - 2) * 0.07), now() from prediction_log
          where status = 'ok' and item_index % 2 = 0",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (from, to) = (Utc::now() - TimeDelta::days(2), Utc::now() + TimeDelta::hours(1));
    let window = json!({ "from": from, "to": to });

    // Each view row is compared with the API's bucket that starts at the same instant (a test
    // that runs across midnight or the hour has two).
    let bucket_at = |body: &Value, list: &str, start: chrono::DateTime<Utc>| -> Value {
        let buckets = body["data"][list].as_array().unwrap_or_else(|| panic!("{body}"));
        let found = buckets.iter().find(|b| b["start"].as_str().and_then(|s| s.parse().ok()) == Some(start));
        found.unwrap_or_else(|| panic!("no {list} bucket at {start}: {body}")).clone()
    };
    let view: Vec<Perf> = sqlx::query_as(
        "select day, model_name, model_version, predictions, labelled, mae, rmse, mape, mean_error
           from v_performance_daily order by 1, 2, 3",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let models: std::collections::BTreeSet<&str> = view.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(models.len(), 2, "{view:?}");
    for (day, name, version, predictions, labelled, mae, rmse, mape, mean_error) in view {
        let body = app
            .graphql(
                "query($m: String!, $from: DateTime, $to: DateTime) { performance(model: $m, from: $from, to: $to, bucket: DAY) {
                    start predictions labelled mae rmse mape meanError } }",
                json!({ "m": format!("{name}@{version}"), "from": from, "to": to }),
            )
            .await;
        let api = &bucket_at(&body, "performance", day);
        assert_eq!((api["predictions"].as_i64(), api["labelled"].as_i64()), (Some(predictions), Some(labelled)));
        for (field, value) in [("mae", mae), ("rmse", rmse), ("mape", mape), ("meanError", mean_error)] {
            assert_eq!(api[field].as_f64(), value, "{name}@{version} {field}");
        }
    }

    let labelled: i64 =
        sqlx::query_scalar("select sum(labelled)::int8 from v_performance_daily").fetch_one(&app.pool).await.unwrap();
    assert!(labelled > 0, "the comparison covered accuracy figures");

    let view: Vec<Hourly> = sqlx::query_as(
        "select hour, model_name, model_version, requests, ok, rejected, failed, p50_latency_us, p99_latency_us
           from v_predictions_hourly where model_name is not null order by 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (hour, name, version, requests, ok, rejected, failed, p50, p99) in view {
        let query = "query($m: String, $from: DateTime, $to: DateTime) { traffic(model: $m, from: $from, to: $to, bucket: HOUR) {
            start requests ok rejected failed latencyP50Us latencyP99Us } }";
        let body = app.graphql(query, json!({ "m": format!("{name}@{version}"), "from": from, "to": to })).await;
        let api = &bucket_at(&body, "traffic", hour);
        let counts = [api["requests"].as_i64(), api["ok"].as_i64(), api["rejected"].as_i64(), api["failed"].as_i64()];
        assert_eq!(counts, [Some(requests), Some(ok), Some(rejected), Some(failed)], "{name}: {body}");
        assert_eq!((api["latencyP50Us"].as_f64(), api["latencyP99Us"].as_f64()), (p50, p99), "{name}");
    }

    let view: Vec<(String, i64)> =
        sqlx::query_as("select error_code, sum(rejected)::int8 from v_rejections_daily group by 1 order by 2 desc, 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(view, [("BAD_USER_INPUT".to_owned(), 2)]);
    let body = app
        .graphql("query($from: DateTime, $to: DateTime) { traffic(from: $from, to: $to, bucket: WEEK) { errors { code count } } }", window)
        .await;
    let errors: Vec<&Value> =
        body["data"]["traffic"].as_array().unwrap().iter().flat_map(|b| b["errors"].as_array().unwrap()).collect();
    let total: i64 = errors.iter().map(|e| e["count"].as_i64().unwrap()).sum();
    assert!(errors.iter().all(|e| e["code"] == "BAD_USER_INPUT") && total == 2, "{body}");

    // One definition: each view is a call of the function the API reads, not a copy of it.
    for (view, function) in [
        ("v_performance_daily", "performance_buckets"),
        ("v_predictions_hourly", "traffic_buckets"),
        ("v_rejections_daily", "rejection_buckets"),
    ] {
        let definition: String =
            sqlx::query_scalar("select pg_get_viewdef($1::regclass)").bind(view).fetch_one(&app.pool).await.unwrap();
        assert!(definition.contains(function) && !definition.contains("prediction_log"), "{view}: {definition}");
    }
}
