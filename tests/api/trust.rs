//! Prices people can trust: routing by input shape, intervals (served, stored, monitored),
//! contributions checked against independent computations, and the estimated error.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, committed_model, error_code, error_field};
use crate::monitoring::{monitored_config, replay_with};

const PREDICT: &str = "query($input: HouseInput!, $model: String) { predictPrice(input: $input, model: $model) {
    id price model { name version } estimatedError
    interval { low high level } narrow: interval(level: 0.5) { low high level }
    contributions { scale baseValue features { feature value contribution } } } }";

async fn predict(app: &TestApp, input: Value, model: Option<&str>) -> Value {
    let body = app.graphql(PREDICT, json!({ "input": input, "model": model })).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["predictPrice"].clone()
}

fn seed_input() -> Value {
    json!({ "squareFeet": 1710.0, "bedrooms": 3, "bathrooms": 2.5 })
}

fn rich_input() -> Value {
    json!({ "squareFeet": 1710.0, "bedrooms": 3, "bathrooms": 2.5, "overallCondition": "Above_Average",
            "yearBuilt": 2003, "neighborhood": "College_Creek", "garageCars": 2 })
}

#[sqlx::test]
async fn the_input_shape_routes_to_a_model_and_an_explicit_model_wins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let name = |p: &Value| p["model"]["name"].as_str().unwrap().to_owned();
    assert_eq!(name(&predict(&app, seed_input(), None).await), "three-input-boosting");
    assert_eq!(name(&predict(&app, rich_input(), None).await), "price-blend");
    assert_eq!(name(&predict(&app, rich_input(), Some("baseline-linear")).await), "baseline-linear");
    assert_eq!(name(&predict(&app, seed_input(), Some("gradient-boosting")).await), "gradient-boosting");

    // A batch routes item by item.
    let body = app
        .graphql(
            "query($inputs: [HouseInput!]!) { predictPrices(inputs: $inputs) {
                 index prediction { model { name } interval { low high } } } }",
            json!({ "inputs": [seed_input(), rich_input()] }),
        )
        .await;
    let items = body["data"]["predictPrices"].as_array().unwrap();
    assert_eq!(items[0]["prediction"]["model"]["name"], "three-input-boosting", "{body}");
    assert_eq!(items[1]["prediction"]["model"]["name"], "price-blend", "{body}");
    assert!(
        items
            .iter()
            .all(|i| i["prediction"]["interval"]["low"].as_f64() < i["prediction"]["interval"]["high"].as_f64())
    );

    // The seed's REST route is priced by the three-input model, byte-compatible.
    let response = app.post_rest(r#"{"square_feet": 1710, "num_bedrooms": 3, "num_bathrooms": 2.5}"#).await;
    let text = response.text().await.unwrap();
    let price =
        committed_model("three-input-boosting").score(&[&house_price_api::model::HouseFeatures::new(1710.0, 3, 2.5)]);
    let price = price[0].as_ref().unwrap().price;
    assert_eq!(text, serde_json::to_string(&json!({ "previsao": [price] })).unwrap());
    app.wait_durable().await;
    assert_eq!(app.count_rows("route = 'rest:/prever_precos/' and model_name = 'three-input-boosting'").await, 1);
}

#[sqlx::test]
async fn intervals_come_from_the_card_are_stored_with_the_row_and_refuse_other_levels(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let p = predict(&app, seed_input(), None).await;
    let card = &committed_model("three-input-boosting").card;
    let price = p["price"].as_f64().unwrap();
    for (field, level) in [("interval", 0.9), ("narrow", 0.5)] {
        let q = card.intervals.quantile(level).unwrap();
        let interval = &p[field];
        assert_eq!(interval["level"], level);
        assert!((interval["low"].as_f64().unwrap() - price * (-q).exp()).abs() < 1e-6, "{p}");
        assert!((interval["high"].as_f64().unwrap() - price * q.exp()).abs() < 1e-6, "{p}");
    }
    assert!(p["narrow"]["high"].as_f64() < p["interval"]["high"].as_f64());
    assert!(p["estimatedError"].as_f64().unwrap() > 0.0);

    // The row stores the 0.9 interval and the estimate; history serves them.
    app.wait_durable().await;
    let (low, high, estimated): (f64, f64, f64) =
        sqlx::query_as("select interval_low, interval_high, estimated_error from prediction_log where id = $1::uuid")
            .bind(p["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((json!(low), json!(high)), (p["interval"]["low"].clone(), p["interval"]["high"].clone()));
    assert_eq!(json!(estimated), p["estimatedError"]);
    let body = app
        .graphql(
            "query($id: ID!) { prediction(id: $id) { interval { low high } wide: interval(level: 0.95) { low high } estimatedError } }",
            json!({ "id": p["id"] }),
        )
        .await;
    let row = &body["data"]["prediction"];
    assert_eq!(row["interval"]["low"], p["interval"]["low"], "{body}");
    assert_eq!(row["estimatedError"], p["estimatedError"]);
    assert!(row["wide"]["high"].as_f64() > p["interval"]["high"].as_f64(), "{body}");

    // An uncalibrated level is the client's error, on the argument.
    let body = app
        .graphql(
            "query($input: HouseInput!) { predictPrice(input: $input) { price interval(level: 0.85) { low } } }",
            json!({ "input": seed_input() }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(error_field(&body), "level");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("0.5, 0.8, 0.9, 0.95"), "{body}");
}

/// Shapley values of `outputs` (indexed by coalition bit mask over `n` players), by enumeration.
fn shapley(n: usize, outputs: &[f64]) -> Vec<f64> {
    let factorial = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
    (0..n)
        .map(|i| {
            (0..1usize << n)
                .filter(|s| s & (1 << i) == 0)
                .map(|s| {
                    let size = s.count_ones() as usize;
                    factorial(size) * factorial(n - size - 1) / factorial(n) * (outputs[s | (1 << i)] - outputs[s])
                })
                .sum()
        })
        .collect()
}

fn contributions(p: &Value) -> Vec<(String, f64)> {
    p["contributions"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["feature"].as_str().unwrap().to_owned(), f["contribution"].as_f64().unwrap()))
        .collect()
}

#[sqlx::test]
async fn contributions_add_up_to_the_price_and_match_independent_computations(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Every model: base value + Σ contributions is the price, on the scale the answer states.
    for model in ["baseline-linear", "three-input-boosting", "ridge-log", "gradient-boosting", "price-blend"] {
        for input in [seed_input(), rich_input()] {
            let p = predict(&app, input, Some(model)).await;
            let total = p["contributions"]["baseValue"].as_f64().unwrap()
                + contributions(&p).iter().map(|(_, c)| c).sum::<f64>();
            let price = p["price"].as_f64().unwrap();
            let (scale, rebuilt) = match p["contributions"]["scale"].as_str().unwrap() {
                "LN_USD" => ("LN_USD", total.exp()),
                other => (other, total),
            };
            assert_eq!(scale, if model == "baseline-linear" { "USD" } else { "LN_USD" });
            assert!((rebuilt - price).abs() <= price * 1e-9, "{model}: {rebuilt} vs {price}");
        }
    }
    // Features a rich model did not receive sit at its typical value and contribute nothing.
    let p = predict(&app, seed_input(), Some("price-blend")).await;
    for (feature, c) in contributions(&p) {
        if !["squareFeet", "bedrooms", "bathrooms"].contains(&feature.as_str()) {
            assert_eq!(c, 0.0, "{feature}");
        }
    }

    // The typical house: the card's imputation values, as the `model` query reports them.
    let typical = |model: &str| {
        let card = &committed_model(model).card;
        let value = |name: &str| card.features.iter().find(|f| f.name == name).unwrap().imputation.clone();
        [value("squareFeet"), value("bedrooms"), value("bathrooms")]
            .map(|v| serde_json::to_value(v).unwrap().as_f64().unwrap())
    };
    let house = [1710.0, 3.0, 2.5];
    let input = |v: [f64; 3]| json!({ "squareFeet": v[0], "bedrooms": v[1] as i64, "bathrooms": v[2] });

    // Linear model: each contribution is coefficient × (value − typical value), the coefficients
    // measured by finite differences of the service's own prices.
    let z = typical("baseline-linear");
    let at = predict(&app, input(house), Some("baseline-linear")).await;
    let base = at["price"].as_f64().unwrap();
    for (i, (feature, c)) in contributions(&at).into_iter().enumerate() {
        let mut moved = house;
        moved[i] += 1.0;
        let coefficient = predict(&app, input(moved), Some("baseline-linear")).await["price"].as_f64().unwrap() - base;
        let expected = coefficient * (house[i] - z[i]);
        assert!((c - expected).abs() < 1e-6 * base, "{feature}: {c} vs {expected}");
    }

    // Boosted trees on three inputs: exact Shapley values by enumerating the 8 coalitions through
    // the API (ln of each hybrid house's price).
    let z = typical("three-input-boosting");
    let mut outputs = Vec::new();
    for mask in 0..8usize {
        let hybrid: [f64; 3] = std::array::from_fn(|i| if mask & (1 << i) != 0 { house[i] } else { z[i] });
        outputs.push(predict(&app, input(hybrid), Some("three-input-boosting")).await["price"].as_f64().unwrap().ln());
    }
    let expected = shapley(3, &outputs);
    let p = predict(&app, input(house), Some("three-input-boosting")).await;
    assert!((p["contributions"]["baseValue"].as_f64().unwrap() - outputs[0]).abs() < 1e-9);
    for ((feature, c), e) in contributions(&p).into_iter().zip(expected) {
        assert!((c - e).abs() < 1e-9, "{feature}: {c} vs {e}");
    }
}

/// `(labelled, coverage, mean width, mean absolute error)` of `model`'s rows with an outcome,
/// straight from the log and the outcomes (not the rollups or the service's code).
async fn realized(app: &TestApp, model: &str) -> (i64, f64, f64, f64) {
    sqlx::query_as(
        "select count(*), avg((o.actual_price between l.interval_low and l.interval_high)::int::float8),
                avg(l.interval_high - l.interval_low), avg(abs(l.price - o.actual_price))
           from prediction_log l join prediction_outcomes o on o.prediction_id = l.id
          where l.model_name = $1",
    )
    .bind(model)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn performance(app: &TestApp, model: &str) -> Value {
    let body = app
        .graphql(
            "query($m: String!) { performance(model: $m, bucket: WEEK) { labelled intervalLabelled coverage meanIntervalWidth mae estimatedMae } }",
            json!({ "m": model }),
        )
        .await;
    assert_eq!(body["data"]["performance"].as_array().map(Vec::len), Some(1), "{body}");
    body["data"]["performance"][0].clone()
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() <= b.abs() * 1e-9
}

#[sqlx::test]
async fn replaying_the_holdout_covers_about_ninety_percent_and_the_estimate_is_the_cards(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    for (model, replayed) in [("price-blend", None), ("three-input-boosting", Some("three-input-boosting"))] {
        let summary = replay_with(&app, replayed, &[], None).await;
        assert_eq!(summary.outcomes_recorded, 585, "{model}");
        let (labelled, coverage, width, mae) = realized(&app, model).await;
        assert_eq!(labelled, 585);
        assert!((0.85..=0.97).contains(&coverage), "{model}: 90 % intervals covered {coverage}");
        // The API's rollups say the same.
        let bucket = performance(&app, model).await;
        assert_eq!(bucket["intervalLabelled"], 585);
        assert!(close(&bucket["coverage"], coverage) && close(&bucket["meanIntervalWidth"], width), "{bucket}");
        assert!(close(&bucket["mae"], mae), "{bucket}");
        // The estimate before outcomes is the one the card reports for this holdout, within 25 %
        // of the realized error.
        let card = &committed_model(model).card;
        assert!(close(&bucket["estimatedMae"], card.error_model.holdout_estimated_mae), "{bucket}");
        let estimated = bucket["estimatedMae"].as_f64().unwrap();
        assert!((estimated - mae).abs() <= 0.25 * mae, "{model}: estimated {estimated}, realized {mae}");
    }
}

#[sqlx::test]
async fn the_estimated_error_follows_a_shift_to_larger_houses(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    replay_with(&app, None, &[], Some("squareFeet=top30%")).await;
    let bucket = performance(&app, "price-blend").await;
    let (estimated, mae) = (bucket["estimatedMae"].as_f64().unwrap(), bucket["mae"].as_f64().unwrap());
    let whole_holdout = committed_model("price-blend").card.error_model.holdout_estimated_mae;
    assert!(estimated > whole_holdout * 1.1, "larger houses, larger errors expected: {estimated} vs {whole_holdout}");
    assert!((estimated - mae).abs() <= 0.25 * mae, "estimated {estimated}, realized {mae}");
}

#[sqlx::test]
async fn intervals_that_stop_covering_raise_a_coverage_alert(pool: PgPool) {
    let mut config = monitored_config();
    config.monitor_interval_ms = 200;
    let app = TestApp::spawn_with(pool, config).await;
    let mut alerts = app.subscribe_alerts().await;
    // Houses 60 % larger than they are: the prices, and their intervals, move away from the sales.
    replay_with(&app, Some("three-input-boosting"), &["squareFeet=+60%"], None).await;
    let (labelled, coverage, _, _) = realized(&app, "three-input-boosting").await;
    assert!(coverage < 0.85, "the shift breaks coverage: {coverage}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let event = tokio::time::timeout_at(deadline, alerts.next_event()).await.expect("a coverage alert arrives");
        let alert = event["payload"]["data"]["driftAlert"].clone();
        if alert["feature"] == "_coverage" {
            break alert;
        }
    };
    assert_eq!(alert["status"], "DRIFT");
    assert_eq!(alert["modelName"], "three-input-boosting");
    // The evaluator may judge before the replay recorded every outcome: at least the minimum sample.
    let sample = alert["sampleSize"].as_i64().unwrap();
    assert!((100..=labelled).contains(&sample), "{alert}");
    let (stored, stored_sample): (f64, i64) =
        sqlx::query_as("select coverage, sample_size from drift_alerts where feature = '_coverage'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(stored < 0.85 && stored_sample == sample, "{stored} over {stored_sample}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("interval_coverage{model=\"three-input-boosting\",version=\"1.0.0\"}"), "{metrics}");
}
