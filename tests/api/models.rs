use std::path::{Path, PathBuf};

use house_price_api::Application;
use house_price_api::config::AppConfig;
use house_price_api::config::TrainConfig;
use house_price_api::model::train::train;
use house_price_api::model::{ModelRegistry, ModelRoles};
use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, committed_model, error_code, error_field, model_dir, price_of};

/// Copies the committed model directory (all versions) to `to`.
pub fn copy_models(to: &Path) {
    for entry in walk(&model_dir()) {
        let target = to.join(entry.strip_prefix(model_dir()).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

fn load_error(dir: &Path, default: &str) -> String {
    format!("{:#}", anyhow::Error::new(ModelRegistry::load(dir, ModelRoles::new(default)).unwrap_err()))
}

#[test]
fn a_corrupted_artifact_is_refused_with_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let artifact = dir.path().join("baseline-linear/2.0.0/model.postcard");
    let mut bytes = std::fs::read(&artifact).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&artifact, bytes).unwrap();

    let chain = load_error(dir.path(), "baseline-linear");

    assert!(chain.contains("checksum mismatch"), "{chain}");
    assert!(chain.contains("model.postcard"), "names the file: {chain}");
}

#[test]
fn a_missing_artifact_or_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    std::fs::remove_file(dir.path().join("ridge-log/2.0.0/model.postcard")).unwrap();
    let chain = load_error(dir.path(), "baseline-linear");
    assert!(chain.contains("cannot read") && chain.contains("ridge-log/2.0.0/model.postcard"), "{chain}");

    let empty = tempfile::tempdir().unwrap();
    assert!(load_error(empty.path(), "baseline-linear").contains("no model found"));
}

#[test]
fn a_card_with_a_malformed_reference_distribution_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let card_path = dir.path().join("ridge-log/2.0.0/card.json");
    let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["features"][0]["reference"]["counts"].as_array_mut().unwrap().pop();
    std::fs::write(&card_path, serde_json::to_vec(&card).unwrap()).unwrap();
    let chain = load_error(dir.path(), "baseline-linear");
    assert!(chain.contains("reference distribution of squareFeet is malformed"), "{chain}");
}

#[test]
fn an_unknown_default_or_shadow_model_is_refused() {
    assert!(load_error(&model_dir(), "no-such-model").contains("no-such-model"));
    let err = ModelRegistry::load(&model_dir(), ModelRoles::new("baseline-linear").shadow("nope@9")).unwrap_err();
    assert!(err.to_string().contains("shadow model \"nope@9\""), "{err}");
    assert!(ModelRegistry::load(&model_dir(), ModelRoles::new("baseline-linear@2.0.0").shadow("ridge-log")).is_ok());
}

#[sqlx::test]
async fn the_server_refuses_to_start_on_a_corrupt_model(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    std::fs::write(dir.path().join("baseline-linear/2.0.0/model.postcard"), b"not a model").unwrap();
    let result = Application::build(AppConfig::with_model_dir(dir.path()), pool, "127.0.0.1:0".parse().unwrap()).await;
    let err = result.err().expect("refuses to start");
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
}

/// `train` as the committed cards were made, into `out`.
fn retrain(out: &Path, only: &[&str], cross_validate: bool) {
    let committed = model_dir().join("baseline-linear/2.0.0");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(committed.join("card.json")).unwrap()).unwrap();
    train(&TrainConfig {
        data: "data/ames_housing.csv".into(),
        out_dir: out.to_owned(),
        seed: card["training"]["split_seed"].as_u64().unwrap(),
        holdout_fraction: card["training"]["holdout_fraction"].as_f64().unwrap(),
        trained_at: Some(card["trained_at"].as_str().unwrap().parse().unwrap()),
        only: only.iter().map(|s| (*s).to_owned()).collect(),
        cross_validate,
    })
    .unwrap();
}

fn card_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every artifact byte for byte, and every card but its cross-validation (five more fits of each
/// model, most of `make train`'s time: checked for the cheaper models below, by the same code).
#[test]
fn training_reproduces_every_committed_model_byte_for_byte() {
    let out = tempfile::tempdir().unwrap();
    retrain(out.path(), &[], false);
    let (fresh, committed) = (walk(out.path()), walk(&model_dir()));
    assert_eq!(fresh.len(), committed.len(), "the same set of files");
    for file in committed {
        let relative = file.strip_prefix(model_dir()).unwrap();
        let stale =
            format!("{} differs: run `make train` after changing the training code or data", relative.display());
        if file.file_name().unwrap() == "card.json" {
            let mut card = card_json(&file);
            assert!(card["cross_validation"]["folds"] == 5, "{} has its cross-validation", relative.display());
            card["cross_validation"] = serde_json::Value::Null;
            assert_eq!(card_json(&out.path().join(relative)), card, "{stale}");
        } else {
            assert!(std::fs::read(out.path().join(relative)).unwrap() == std::fs::read(&file).unwrap(), "{stale}");
        }
    }
}

#[test]
fn cross_validation_in_the_cards_is_reproduced() {
    let out = tempfile::tempdir().unwrap();
    let models = ["baseline-linear", "ridge-log", "three-input-boosting"];
    retrain(out.path(), &models, true);
    for name in models {
        let relative = format!("{name}/{}/card.json", committed_model(name).card.version);
        let (fresh, committed) = (card_json(&out.path().join(&relative)), card_json(&model_dir().join(&relative)));
        assert_eq!(fresh["cross_validation"], committed["cross_validation"], "{relative}");
    }
}

#[test]
fn the_models_that_answer_by_default_meet_their_accuracy_targets() {
    let config = AppConfig::with_model_dir(model_dir());
    let set = house_price_api::model::ModelSet::load(&model_dir(), &config.model_roles()).unwrap();
    let best = set.models().iter().max_by(|a, b| a.card.metrics.r2.total_cmp(&b.card.metrics.r2)).unwrap();
    assert_eq!(best.id(), set.default_model().id(), "the most accurate model answers rich requests");
    let m = &best.card.metrics;
    assert!(m.r2 >= 0.925 && m.rmsle <= 0.108, "{}: R² {}, RMSLE {}", best.id(), m.r2, m.rmsle);
    let three = set.three_input_model().expect("a three-input model is configured");
    let m = &three.card.metrics;
    assert_eq!(three.card.features.len(), 3);
    assert!(m.r2 >= 0.67 && m.mae <= 29_500.0, "{}: R² {}, MAE {}", three.id(), m.r2, m.mae);
    let baseline = set.find("baseline-linear").unwrap();
    assert!(m.mae < baseline.card.metrics.mae, "beats the seed's linear model on the seed's inputs");
    for model in set.models() {
        let cv = model.card.cross_validation.as_ref().expect("cross-validated");
        assert!((cv.mean.r2 - model.card.metrics.r2).abs() < 0.05, "{}: holdout and CV agree", model.id());
    }
}

#[test]
fn the_readme_model_table_is_generated_from_the_cards() {
    let cards = house_price_api::model::registry::read_cards(&model_dir()).unwrap();
    let table = house_price_api::model::card::markdown_table(&cards);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's model table is stale; replace it with the output of `house-price-api model-table`:\n{table}"
    );
}

#[sqlx::test]
async fn the_model_query_reports_the_card_and_models_lists_every_version(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app
        .graphql(
            "{ model { name version isDefault checksum trainedAt features { name kind required min max imputation }
                       metrics { r2 rmsle mae rmse holdoutRows } }
               models { name version isDefault metrics { r2 rmsle } } }",
            json!({}),
        )
        .await;
    let model = &body["data"]["model"];
    let card = &committed_model("price-blend").card;
    assert_eq!(model["name"], card.name.as_str());
    assert_eq!(model["checksum"], card.artifact.sha256.as_str());
    assert_eq!(model["metrics"]["r2"].as_f64(), Some(card.metrics.r2));
    assert_eq!(model["features"][0]["name"], "squareFeet");
    assert_eq!(model["features"][0]["required"], true);
    let names: Vec<&str> =
        body["data"]["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["baseline-linear", "gradient-boosting", "price-blend", "ridge-log", "three-input-boosting"]);
    let defaults = body["data"]["models"].as_array().unwrap().iter().filter(|m| m["isDefault"] == true).count();
    assert_eq!(defaults, 1);

    let body = app
        .graphql("{ model(name: \"gradient-boosting@2.0.0\") { name features { name kind categories } } }", json!({}))
        .await;
    let features = body["data"]["model"]["features"].as_array().unwrap();
    assert_eq!(features.len(), 20);
    let neighborhood = features.iter().find(|f| f["name"] == "neighborhood").unwrap();
    assert_eq!(neighborhood["kind"], "categorical");
    assert!(neighborhood["categories"].as_array().unwrap().contains(&json!("North_Ames")));

    let body = app.graphql("{ model(name: \"nope\") { name } }", json!({})).await;
    assert_eq!((error_code(&body), error_field(&body)), ("BAD_USER_INPUT", "name"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("unknown model \"nope\""), "{body}");
}

const PREDICT: &str = "query($input: HouseInput!, $model: String) {
    predictPrice(input: $input, model: $model) { id price imputedFeatures model { name version } } }";

#[sqlx::test]
async fn a_model_is_chosen_by_name_or_name_at_version_and_recorded(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let input = json!({ "squareFeet": 1500.0, "bedrooms": 3, "bathrooms": 2.0 });
    for (spec, name) in [
        ("ridge-log", "ridge-log"),
        ("gradient-boosting@2.0.0", "gradient-boosting"),
        ("baseline-linear", "baseline-linear"),
    ] {
        let body = app.graphql(PREDICT, json!({ "input": input, "model": spec })).await;
        let p = &body["data"]["predictPrice"];
        assert_eq!(p["model"], json!({ "name": name, "version": "2.0.0" }), "{body}");
        let house = house_price_api::model::HouseFeatures::new(1500.0, 3, 2.0);
        assert_eq!(p["price"].as_f64(), Some(price_of(&committed_model(spec), &house)));
        let row = app
            .count_rows(&format!(
                "id = '{}' and model_name = '{name}' and model_version = '2.0.0'",
                p["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(row, 1);
    }
    let body = app.graphql(PREDICT, json!({ "input": input, "model": "ridge-log@7.0.0" })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_field(&body), "model");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("ridge-log@2.0.0"),
        "lists the loaded models: {body}"
    );
    assert_eq!(app.count_rows("status = 'rejected' and error_field = 'model' and model_name is null").await, 1);

    // A batch for an unknown model: one rejected row per item, each with its own input and index.
    let body = app
        .graphql(
            "query($inputs: [HouseInput!]!) { predictPrices(inputs: $inputs, model: \"nope\") { index } }",
            json!({ "inputs": [input, { "squareFeet": 900.0, "bedrooms": 2, "bathrooms": 1.0 }] }),
        )
        .await;
    assert_eq!(error_field(&body), "model", "{body}");
    app.wait_durable().await;
    let rows: Vec<(Option<i32>, f64)> = sqlx::query_as(
        "select item_index, (raw_input->>'squareFeet')::float8 from prediction_log
          where status = 'rejected' and error_field = 'model' and item_index is not null order by item_index",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(Some(0), input["squareFeet"].as_f64().unwrap()), (Some(1), 900.0)]);

    // A huge model name is not quoted back (nor logged per item) in full.
    let body = app.graphql(PREDICT, json!({ "input": input, "model": "x".repeat(100_000) })).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.len() < 400 && message.contains("xxx\"…"), "{message}");
    app.wait_durable().await;
    let longest: i32 =
        sqlx::query_scalar("select max(length(error_message)) from prediction_log").fetch_one(&app.pool).await.unwrap();
    assert!(longest < 400, "{longest}");
}

#[sqlx::test]
async fn missing_optional_features_are_imputed_and_reported(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let seed_only = json!({ "squareFeet": 1500.0, "bedrooms": 3, "bathrooms": 2.0 });
    let body = app.graphql(PREDICT, json!({ "input": seed_only, "model": "gradient-boosting" })).await;
    let p = &body["data"]["predictPrice"];
    let imputed: Vec<&str> = p["imputedFeatures"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(imputed.len(), 17, "{imputed:?}");
    assert!(imputed.contains(&"neighborhood") && imputed.contains(&"yearBuilt") && !imputed.contains(&"squareFeet"));
    app.wait_durable().await;
    let stored: Vec<String> =
        sqlx::query_scalar("select unnest(imputed_features) from prediction_log where id = $1::uuid")
            .bind(p["id"].as_str().unwrap())
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, imputed);

    let complete = json!({ "squareFeet": 1500.0, "bedrooms": 3, "bathrooms": 2.0, "lotArea": 9000.0, "yearBuilt": 1995,
        "yearRemodeled": 2005, "basementSqFt": 1000.0, "basementBathrooms": 1.0, "garageCars": 2, "garageArea": 480.0,
        "fireplaces": 1, "kitchens": 1, "centralAir": true, "overallCondition": "Good", "neighborhood": "Gilbert",
        "houseStyle": "Two_Story", "buildingType": "OneFam", "heatingQuality": "Excellent", "foundation": "PConc",
        "saleCondition": "Normal" });
    let body = app.graphql(PREDICT, json!({ "input": complete, "model": "gradient-boosting" })).await;
    assert_eq!(body["data"]["predictPrice"]["imputedFeatures"], json!([]), "{body}");
    // The baseline uses only the seed's inputs: nothing to impute, extra features are ignored.
    let body = app.graphql(PREDICT, json!({ "input": seed_only, "model": "baseline-linear" })).await;
    assert_eq!(body["data"]["predictPrice"]["imputedFeatures"], json!([]));
}

#[sqlx::test]
async fn an_unseen_category_is_imputed_with_a_warning(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let input = json!({ "squareFeet": 1500.0, "bedrooms": 3, "bathrooms": 2.0, "neighborhood": "Atlantis" });
    let query = "query($input: HouseInput!) { predictPrice(input: $input, model: \"gradient-boosting\") {
        id price imputedFeatures warnings { feature kind message } } }";
    let body = app.graphql(query, json!({ "input": input })).await;
    let p = &body["data"]["predictPrice"];
    assert!(p["price"].is_number(), "still answered: {body}");
    assert!(p["imputedFeatures"].as_array().unwrap().contains(&json!("neighborhood")));
    assert_eq!(p["warnings"][0]["feature"], "neighborhood");
    assert_eq!(p["warnings"][0]["kind"], "UNSEEN_CATEGORY");
    assert!(p["warnings"][0]["message"].as_str().unwrap().contains("Atlantis"));
    // Same price as not sending the neighbourhood at all.
    let without =
        app.graphql(query, json!({ "input": { "squareFeet": 1500.0, "bedrooms": 3, "bathrooms": 2.0 } })).await;
    assert_eq!(p["price"], without["data"]["predictPrice"]["price"]);
    let condition = format!(
        "id = '{}' and warnings @> '[{{\"feature\": \"neighborhood\", \"kind\": \"unseen_category\"}}]'",
        p["id"].as_str().unwrap()
    );
    assert_eq!(app.count_rows(&condition).await, 1);
}

#[sqlx::test]
async fn an_input_outside_the_training_range_is_answered_with_a_warning(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app
        .graphql("{ predictPrice(input: {squareFeet: 9000, bedrooms: 3, bathrooms: 2}) { price warnings { feature kind message } } }", json!({}))
        .await;
    let p = &body["data"]["predictPrice"];
    assert!(p["price"].is_number(), "{body}");
    assert_eq!(
        p["warnings"],
        json!([{ "feature": "squareFeet", "kind": "OUT_OF_RANGE",
        "message": "squareFeet: 9000 is outside the training range 334 to 3820" }])
    );
    let in_range = app
        .graphql(
            "{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { warnings { feature } } }",
            json!({}),
        )
        .await;
    assert_eq!(in_range["data"]["predictPrice"]["warnings"], json!([]));
}

#[test]
fn the_services_tree_walk_gives_smartcores_prices_bit_for_bit() {
    let data = house_price_api::model::dataset::read_dataset("data/ames_housing.csv".as_ref()).unwrap();
    let houses: Vec<&house_price_api::model::HouseFeatures> = data.houses.iter().step_by(7).collect();
    let set = house_price_api::model::ModelSet::load(&model_dir(), &ModelRoles::new("baseline-linear")).unwrap();
    for model in set.models() {
        let (compiled, smartcore) =
            (model.predict_compiled(&houses).unwrap(), model.predict_with_smartcore(&houses).unwrap());
        assert_eq!(compiled.len(), houses.len());
        for (c, s) in compiled.iter().zip(&smartcore) {
            assert!(c.0.to_bits() == s.0.to_bits() && c.1.to_bits() == s.1.to_bits(), "{}: {c:?} vs {s:?}", model.id());
        }
    }
}
