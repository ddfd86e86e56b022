//! The Open Inference Protocol (KServe V2) over REST: health, metadata, infer, its errors, the
//! log rows it leaves, and the real clients (tritonclient[http], the KServe SDK) against the
//! real server.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{TestApp, committed_model};

fn houses(square_feet: &[f64]) -> Value {
    let n = square_feet.len();
    json!({ "inputs": [
        { "name": "squareFeet", "datatype": "FP64", "shape": [n], "data": square_feet },
        { "name": "bedrooms", "datatype": "INT64", "shape": [n, 1], "data": vec![[3]; n] },
        { "name": "bathrooms", "datatype": "FP64", "shape": [n], "data": vec![2.0; n] },
    ] })
}

async fn infer(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = app.client.post(app.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[sqlx::test]
async fn health_metadata_and_readiness_follow_the_protocol(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    let live = get("/v2/health/live").await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap(), json!({ "live": true }));
    assert_eq!(get("/v2/health/ready").await.unwrap().json::<Value>().await.unwrap(), json!({ "ready": true }));
    let server: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(server["name"], "house-price-api");

    let model = committed_model("price-blend");
    let metadata: Value = get("/v2/models/price-blend").await.unwrap().json().await.unwrap();
    assert_eq!(metadata["name"], "price-blend");
    assert_eq!(metadata["versions"], json!([model.card.version]));
    let inputs = metadata["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), model.card.features.len(), "one input per feature of the card");
    let datatype = |name: &str| inputs.iter().find(|i| i["name"] == name).unwrap()["datatype"].clone();
    assert_eq!(datatype("squareFeet"), "FP64");
    assert_eq!(datatype("bedrooms"), "INT64");
    assert_eq!(datatype("neighborhood"), "BYTES");
    assert!(inputs.iter().all(|i| i["shape"] == json!([-1])));
    assert_eq!(metadata["outputs"][0], json!({ "name": "price", "datatype": "FP64", "shape": [-1] }));
    let versioned = get(&format!("/v2/models/price-blend/versions/{}", model.card.version)).await.unwrap();
    assert_eq!(versioned.status(), 200);

    let ready = get("/v2/models/ridge-log/ready").await.unwrap();
    assert_eq!(ready.status(), 200);
    for missing in ["/v2/models/nope", "/v2/models/nope/ready", "/v2/models/price-blend/versions/9.9.9/ready"] {
        let response = get(missing).await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("not found"), "{body}");
    }
}

#[sqlx::test]
async fn infer_prices_a_batch_as_graphql_does_and_logs_each_row(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut body = houses(&[1500.0, 2400.0]);
    body["id"] = json!("v2-request-1");
    let (status, answer) = infer(&app, "/v2/models/three-input-boosting/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "v2-request-1");
    assert_eq!(answer["model_name"], "three-input-boosting");
    let prices = answer["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(answer["outputs"][0]["shape"], json!([2]));
    let model = committed_model("three-input-boosting");
    for (price, sqft) in prices.iter().zip([1500.0, 2400.0]) {
        let expected = crate::common::price_of(&model, &house_price_api::model::HouseFeatures::new(sqft, 3, 2.0));
        assert!((price.as_f64().unwrap() - expected).abs() < 1e-6, "{price} vs {expected}");
    }
    let ids: Vec<String> =
        answer["outputs"][1]["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    app.wait_durable().await;
    let rows: Vec<(String, String, Option<i32>, Option<f64>)> = sqlx::query_as(
        "select route, request_id, item_index, price from prediction_log where id = any($1::uuid[]) order by item_index",
    )
    .bind(&ids)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|(route, request, _, _)| route == "v2:infer" && request == "v2-request-1"), "{rows:?}");
    assert_eq!(rows[1].2, Some(1));
    assert_eq!(rows[1].3, prices[1].as_f64());

    // A version, and the outputs the client asks for.
    let mut body = houses(&[1800.0]);
    body["outputs"] = json!([{ "name": "price" }]);
    let path = format!("/v2/models/three-input-boosting/versions/{}/infer", model.card.version);
    let (status, answer) = infer(&app, &path, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(answer["model_version"], model.card.version.as_str());
}

#[sqlx::test]
async fn invalid_requests_get_the_protocols_errors_and_are_logged_rejected(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // One implausible row refuses the request; every row is logged, rejected, naming the culprit.
    let (status, answer) = infer(&app, "/v2/models/price-blend/infer", &houses(&[1500.0, -5.0, 1600.0])).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("squareFeet[1]: must be between"), "{answer}");
    app.wait_durable().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("select status, error_field from prediction_log where route = 'v2:infer' order by item_index")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [("rejected", "inputs"), ("rejected", "squareFeet[1]"), ("rejected", "inputs")]
            .map(|(s, f)| (s.to_owned(), f.to_owned()))
    );

    let mismatched = json!({ "inputs": [
        { "name": "squareFeet", "datatype": "FP64", "shape": [2], "data": [1500, 1600] },
        { "name": "bedrooms", "datatype": "INT64", "shape": [1], "data": [3] },
        { "name": "bathrooms", "datatype": "FP64", "shape": [2], "data": [2, 2] } ] });
    let wrong_type = json!({ "inputs": [
        { "name": "squareFeet", "datatype": "BYTES", "shape": [1], "data": ["big"] },
        { "name": "bedrooms", "datatype": "INT64", "shape": [1], "data": [3] },
        { "name": "bathrooms", "datatype": "FP64", "shape": [1], "data": [2] } ] });
    let missing = json!({ "inputs": [{ "name": "squareFeet", "datatype": "FP64", "shape": [1], "data": [1500] }] });
    let unknown = json!({ "inputs": [{ "name": "pool", "datatype": "FP64", "shape": [1], "data": [1] }] });
    let bad_shape = json!({ "inputs": [{ "name": "squareFeet", "datatype": "FP64", "shape": [2], "data": [1] }] });
    let too_many = houses(&vec![1500.0; 101]);
    for (body, says) in [
        (&mismatched, "every input needs one value per row"),
        (&wrong_type, "has datatype BYTES, expected FP64"),
        (&missing, "input \"bedrooms\" is required"),
        (&unknown, "unknown input \"pool\""),
        (&bad_shape, "has 1 values for shape [2]"),
        (&too_many, "between 1 and 100 rows"),
        (&json!({ "inputs": [] }), "non-empty array"),
        (&json!({ "outputs": [{ "name": "nope" }], "inputs": [] }), "unknown output"),
    ] {
        let (status, answer) = infer(&app, "/v2/models/price-blend/infer", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{says}: {answer}");
    }
    let not_json = app
        .client
        .post(app.url("/v2/models/price-blend/infer"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let (status, answer) = infer(&app, "/v2/models/no-such-model/infer", &houses(&[1500.0])).await;
    assert_eq!(status, 404, "{answer}");
    let binary = app
        .client
        .post(app.url("/v2/models/price-blend/infer"))
        .header("inference-header-content-length", "10")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), 400);
    assert!(binary.text().await.unwrap().contains("binary_data=False"));
    app.wait_durable().await;
    // Each refused request left rows, none priced.
    let (rejected, priced): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'rejected'), count(*) filter (where status = 'ok') from prediction_log where route = 'v2:infer'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(priced, 0);
    // The batch's 3 rows, one row per malformed request (8 and the one that is not JSON), the
    // unknown model's row; the binary request was refused before it was read.
    assert_eq!(rejected, 3 + 8 + 1 + 1);
}

#[sqlx::test]
async fn tritonclient_and_the_kserve_sdk_price_houses_against_the_server(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = tokio::process::Command::new(root.join("target/py-venv/bin/python"));
    command.current_dir(root).arg("examples/python/inference_clients.py").arg(format!("http://{}", app.addr));
    let result = crate::web::run_json(command).await;
    let model = committed_model("three-input-boosting");
    let expected: Vec<f64> = [(1500.0, 3, 2.0), (2400.0, 4, 2.5)]
        .iter()
        .map(|&(s, b, ba)| crate::common::price_of(&model, &house_price_api::model::HouseFeatures::new(s, b, ba)))
        .collect();
    for client in ["triton", "kserve"] {
        let prices: Vec<f64> =
            result[client]["prices"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        assert_eq!(prices.len(), 2, "{result:#}");
        for (p, e) in prices.iter().zip(&expected) {
            assert!((p - e).abs() < 1e-6, "{client}: {p} vs {e}");
        }
        assert_eq!(result[client]["request_id"], format!("{client}-1"));
        let ids: Vec<String> =
            result[client]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        app.wait_durable().await;
        let logged: i64 = sqlx::query_scalar(
            "select count(*) from prediction_log where id = any($1::uuid[]) and route = 'v2:infer' and request_id = $2 and status = 'ok'",
        )
        .bind(&ids)
        .bind(format!("{client}-1"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(logged, 2, "{client}: {result:#}");
    }
    assert_eq!(result["triton"]["inputs"], json!(["squareFeet", "bedrooms", "bathrooms"]));
}
