use std::path::Path;

use house_price_api::Application;
use house_price_api::config::AppConfig;
use house_price_api::model::ModelRegistry;
use house_price_api::model::train::{TrainOptions, train};
use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, model_dir};

fn copy_models(to: &Path) {
    for entry in walk(&model_dir()) {
        let target = to.join(entry.strip_prefix(model_dir()).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn a_corrupted_artifact_is_refused_with_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let artifact = dir.path().join("baseline-linear/1.0.0/model.postcard");
    let mut bytes = std::fs::read(&artifact).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&artifact, bytes).unwrap();

    let err = ModelRegistry::load(dir.path(), "baseline-linear").unwrap_err();

    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(chain.contains("checksum mismatch"), "{chain}");
    assert!(chain.contains("model.postcard"), "names the file: {chain}");
}

#[test]
fn a_missing_artifact_or_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    std::fs::remove_file(dir.path().join("baseline-linear/1.0.0/model.postcard")).unwrap();
    let chain = format!("{:#}", anyhow::Error::new(ModelRegistry::load(dir.path(), "baseline-linear").unwrap_err()));
    assert!(chain.contains("cannot read") && chain.contains("model.postcard"), "{chain}");

    let empty = tempfile::tempdir().unwrap();
    let chain = format!("{:#}", anyhow::Error::new(ModelRegistry::load(empty.path(), "baseline-linear").unwrap_err()));
    assert!(chain.contains("no model found"), "{chain}");
}

#[test]
fn an_unknown_default_model_is_refused() {
    let err = ModelRegistry::load(&model_dir(), "no-such-model").unwrap_err();
    assert!(err.to_string().contains("no-such-model"), "{err}");
    assert!(ModelRegistry::load(&model_dir(), "baseline-linear@1.0.0").is_ok());
}

#[sqlx::test]
async fn the_server_refuses_to_start_on_a_corrupt_model(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    std::fs::write(dir.path().join("baseline-linear/1.0.0/model.postcard"), b"not a model").unwrap();
    let result = Application::build(AppConfig::with_model_dir(dir.path()), pool, "127.0.0.1:0".parse().unwrap()).await;
    let err = result.err().expect("refuses to start");
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
}

#[test]
fn training_reproduces_the_committed_model_byte_for_byte() {
    let committed = model_dir().join("baseline-linear/1.0.0");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(committed.join("card.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    train(&TrainOptions {
        data: "data/ames_housing.csv".into(),
        out_dir: out.path().to_owned(),
        seed: card["training"]["split_seed"].as_u64().unwrap(),
        holdout_fraction: card["training"]["holdout_fraction"].as_f64().unwrap(),
        trained_at: Some(card["trained_at"].as_str().unwrap().parse().unwrap()),
    })
    .unwrap();
    let fresh = out.path().join("baseline-linear/1.0.0");
    assert_eq!(
        std::fs::read(fresh.join("model.postcard")).unwrap(),
        std::fs::read(committed.join("model.postcard")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join("card.json")).unwrap(),
        std::fs::read_to_string(committed.join("card.json")).unwrap(),
        "run `make train` (with --trained-at of the committed card) after changing the training code"
    );
}

#[sqlx::test]
async fn the_model_query_reports_the_card(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app
        .graphql(
            "{ model { name version isDefault checksum trainedAt features { name min max } metrics { r2 rmsle mae rmse holdoutRows } }
               models { name version isDefault } }",
            json!({}),
        )
        .await;
    let model = &body["data"]["model"];
    let card = &app.model.card;
    assert_eq!(model["name"], card.name.as_str());
    assert_eq!(model["checksum"], card.artifact.sha256.as_str());
    assert_eq!(model["metrics"]["r2"].as_f64(), Some(card.metrics.r2));
    assert_eq!(
        model["features"][0],
        json!({ "name": "squareFeet", "min": card.features[0].min, "max": card.features[0].max })
    );
    assert_eq!(body["data"]["models"], json!([{ "name": "baseline-linear", "version": "1.0.0", "isDefault": true }]));
}
