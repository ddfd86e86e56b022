//! The spool across upgrades: segments written by earlier builds (committed fixtures, never
//! edited) are drained into PostgreSQL by this one, and a segment nobody can read is kept and
//! reported while the service goes on.

use std::path::Path;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, config, fresh_spool_dir};

/// A fresh spool directory holding a copy of the fixture segments in `tests/fixtures/spool/<name>`.
fn spool_with_fixture(name: &str) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool").join(name);
    let dir = fresh_spool_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

type Row = (String, String, Option<f64>, Option<String>, Value, Vec<String>, Option<Value>);

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "select request_id, status, price, error_field, warnings, imputed_features, features
           from prediction_log order by created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn drift_counts(pool: &PgPool) -> Vec<(String, i32, i64)> {
    sqlx::query_as("select feature, bin, n from drift_counts order by 1, 2").fetch_all(pool).await.unwrap()
}

/// `tests/fixtures/spool/v1`: a segment as build 02af6bd wrote it (two batches: an accepted and a
/// rejected row, then an accepted one).
#[sqlx::test]
async fn a_version_1_segment_from_an_earlier_build_is_drained_into_postgresql(pool: PgPool) {
    let mut config = config();
    config.log.spool_dir = spool_with_fixture("v1");
    let app = TestApp::spawn_with(pool.clone(), config).await;
    app.wait_durable().await;

    let rows = rows(&pool).await;
    let summary: Vec<(&str, &str, Option<f64>)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2)).collect();
    assert_eq!(
        summary,
        [
            ("fixture-a-1", "ok", Some(150_001.0)),
            ("fixture-a-2", "rejected", None),
            ("fixture-b-3", "ok", Some(150_003.0))
        ]
    );
    assert_eq!(rows[1].3.as_deref(), Some("input.bedrooms"));
    assert_eq!(rows[0].6, Some(json!({ "squareFeet": 1100.0, "bedrooms": 3, "bathrooms": 2.0 })));
    // The spooled drift bins of the two accepted rows, counted with them.
    assert_eq!(
        drift_counts(&pool).await,
        [("_price".into(), 5, 2), ("bathrooms".into(), 4, 2), ("bedrooms".into(), 2, 2), ("squareFeet".into(), 3, 2)]
    );
}

/// How to add a column (src/log/spool/row.rs): a field with a default. `v1-first-release` holds rows
/// written before `features`, `imputed_features`, `warnings` and `drift_bins` existed; this build,
/// which has them all, drains it with their defaults.
#[sqlx::test]
async fn a_segment_written_before_later_columns_existed_is_drained_with_their_defaults(pool: PgPool) {
    let mut config = config();
    config.log.spool_dir = spool_with_fixture("v1-first-release");
    let app = TestApp::spawn_with(pool.clone(), config).await;
    app.wait_durable().await;

    let rows = rows(&pool).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.4, json!([]), "warnings: none");
        assert!(row.5.is_empty(), "imputed_features: none");
        assert_eq!(row.6, None, "features: not known");
    }
    assert_eq!((rows[0].0.as_str(), rows[0].2), ("fixture-c-4", Some(150_004.0)));
    assert!(drift_counts(&pool).await.is_empty(), "no bins were spooled, none are invented");
}

#[sqlx::test]
async fn an_unreadable_segment_is_kept_and_reported_and_the_service_goes_on(pool: PgPool) {
    let dir = spool_with_fixture("v1");
    // A segment of a format this build does not know (as a newer build, rolled back, leaves).
    let mut future = b"HPSPOOL\n".to_vec();
    future.extend_from_slice(&99u32.to_le_bytes());
    future.extend_from_slice(b"whatever a later format holds");
    let unreadable = dir.join(format!("{:020}.seg", 5));
    std::fs::write(&unreadable, &future).unwrap();
    let mut config = config();
    config.log.spool_dir = dir.clone();
    let app = TestApp::spawn_with(pool, config).await;

    // The readable segment still drains, and new predictions are answered and logged.
    let body = app.predict(1500.0, 3, 2.0).await;
    assert!(body["data"]["predictPrice"]["price"].is_number(), "{body}");
    assert_eq!(app.count_rows("true").await, 4);

    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "an unreadable segment does not take the replica out of service");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["log"]["unreadableSegments"], 1, "{ready}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "prediction_log_spool_unreadable_segments 1"), "the gauge says so: {metrics}");
    assert_eq!(std::fs::read(&unreadable).unwrap(), future, "kept on disk, untouched");
}
