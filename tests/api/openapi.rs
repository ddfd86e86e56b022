//! The OpenAPI document at `/openapi.json`: valid OpenAPI 3.1 (openapi-spec-validator), exactly
//! the REST routes the router serves, the catalogue's limits, and a property-based run of
//! schemathesis over it against the real server (no 5xx, every response as documented).

use std::collections::BTreeSet;
use std::path::Path;

use house_price_api::model::Feature;
use serde_json::Value;
use sqlx::PgPool;

use crate::common::TestApp;

fn venv(tool: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin").join(tool);
    assert!(path.exists(), "{} is missing: run scripts/test-tools.sh (make test does)", path.display());
    path
}

async fn document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[sqlx::test]
async fn the_document_is_valid_openapi_3_1_and_lists_exactly_the_rest_routes_served(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = std::process::Command::new(venv("openapi-spec-validator")).arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (path.clone(), m.clone())))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("/prever_precos/", "post"),
        ("/prever_precos", "post"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/ready", "get"),
        ("/v2/models/{name}/versions/{version}", "get"),
        ("/v2/models/{name}/versions/{version}/ready", "get"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(documented, expected);
    // Each documented operation is served (not a 404 or 405 of the router), and another method
    // on its path is not.
    let version = crate::common::committed_model("price-blend").card.version.clone();
    for (path, method) in &documented {
        let url = app.url(&path.replace("{name}", "price-blend").replace("{version}", &version));
        let (served, other) = if method == "get" {
            (app.client.get(&url).send().await.unwrap(), app.client.delete(&url).send().await.unwrap())
        } else {
            (
                app.client.post(&url).json(&serde_json::json!({})).send().await.unwrap(),
                app.client.get(&url).send().await.unwrap(),
            )
        };
        let status = served.status().as_u16();
        let body = served.text().await.unwrap_or_default();
        assert!(status != 405 && !(status == 404 && body.is_empty()), "{method} {path}: {status} {body}");
        assert_eq!(other.status(), 405, "{path}");
    }
    // The routes that are not REST are not in it.
    for page in ["/graphql", "/ws", "/", "/dashboard", "/docs", "/redoc", "/openapi.json"] {
        assert!(doc["paths"].get(page).is_none(), "{page}");
    }
    // The seed body's limits are the catalogue's.
    let seed = &doc["components"]["schemas"]["SeedRequest"]["properties"];
    for feature in [Feature::SquareFeet, Feature::Bedrooms, Feature::Bathrooms] {
        let range = feature.plausible_range().unwrap();
        let property = &seed[feature.rest_name()];
        assert_eq!(property["minimum"].as_f64(), Some(*range.start()), "{}", feature.rest_name());
        assert_eq!(property["maximum"].as_f64(), Some(*range.end()), "{}", feature.rest_name());
    }
}

/// schemathesis over the document, against `app`: its exit status and output.
async fn schemathesis(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(venv("schemathesis"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all", "--max-examples", "30", "--seed", "42", "--no-color"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[sqlx::test]
async fn schemathesis_finds_no_server_error_and_every_response_as_documented(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Every check on the seed route, health and metadata: a schema-valid request must be
    // accepted, an invalid one refused, no 5xx, every response matching its schema.
    let (ok, out) = schemathesis(&app, &["--exclude-path-regex", "/infer$"]).await;
    assert!(ok, "{out}");
    // `infer`: a request can be schema-valid and still name no feature or disagree on rows, which
    // JSON Schema cannot say; it must be refused with a documented 400, never a 5xx.
    let (ok, out) =
        schemathesis(&app, &["--include-path-regex", "/infer$", "--exclude-checks", "positive_data_acceptance"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("passed"), "{out}");
}
