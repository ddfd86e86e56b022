use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use crate::common::{TestApp, config, error_code, error_field};

#[sqlx::test]
async fn predict_price_answers_the_models_own_output_and_its_row_is_already_committed(pool: PgPool) {
    // Without a spool to fail over to, an OK answer means the row is committed in PostgreSQL.
    let mut config = config();
    config.log.log_fallback = house_price_api::config::LogFallback::Fail;
    let app = TestApp::spawn_with(pool, config).await;

    let body = app.predict(1500.0, 3, 2.0).await;

    let prediction = &body["data"]["predictPrice"];
    let price = prediction["price"].as_f64().expect("a price");
    assert_eq!(price, app.expected_price(1500.0, 3, 2.0));
    assert!((100_000.0..300_000.0).contains(&price), "plausible Ames price, got {price}");
    assert_eq!(prediction["model"], json!({ "name": "three-input-boosting", "version": "1.0.0" }));
    // Durable mode: the row exists the moment the answer arrives.
    let id: uuid::Uuid = prediction["id"].as_str().unwrap().parse().unwrap();
    let (status, request_id, logged_price, sq, bed, bath): (String, String, f64, f64, i32, f64) = sqlx::query_as(
        "select status, request_id, price, square_feet, bedrooms, bathrooms from prediction_log where id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("the row is committed");
    assert_eq!(status, "ok");
    assert_eq!(request_id, prediction["requestId"].as_str().unwrap());
    assert_eq!((logged_price, sq, bed, bath), (price, 1500.0, 3, 2.0));
}

#[sqlx::test]
async fn each_invalid_field_is_rejected_with_bad_user_input_naming_it_and_logged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cases = [
        (0.0, 3, 2.0, "input.squareFeet"),
        (-1500.0, 3, 2.0, "input.squareFeet"),
        (1.0e7, 3, 2.0, "input.squareFeet"),
        (1500.0, -1, 2.0, "input.bedrooms"),
        (1500.0, 51, 2.0, "input.bedrooms"),
        (1500.0, 3, -0.5, "input.bathrooms"),
        (1500.0, 3, 51.0, "input.bathrooms"),
    ];
    for (sq, bed, bath, field) in cases {
        let body = app.predict(sq, bed, bath).await;
        assert_eq!(body["data"], serde_json::Value::Null, "{body}");
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(error_field(&body), field, "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("got"), "{body}");
        let logged = app
            .count_rows(&format!(
                "status = 'rejected' and error_code = 'BAD_USER_INPUT' and error_field = '{field}' and price is null \
                 and raw_input = '{}'::jsonb",
                json!({ "squareFeet": sq, "bedrooms": bed, "bathrooms": bath })
            ))
            .await;
        assert_eq!(logged, 1, "rejected input {field} logged once");
    }
    assert_eq!(app.count_rows("true").await, cases.len() as i64);
}

#[sqlx::test]
async fn a_wrongly_typed_argument_is_a_validation_error(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app
        .graphql(r#"{ predictPrice(input: {squareFeet: "big", bedrooms: 3, bathrooms: 2}) { price } }"#, json!({}))
        .await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

#[sqlx::test]
async fn a_batch_with_one_bad_item_prices_the_others(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = app
        .graphql(
            "query($inputs: [HouseInput!]!) { predictPrices(inputs: $inputs) {
                index prediction { id requestId price } error { code field message } } }",
            json!({ "inputs": [
                { "squareFeet": 1200.0, "bedrooms": 2, "bathrooms": 1.0 },
                { "squareFeet": 1500.0, "bedrooms": 99, "bathrooms": 2.0 },
                { "squareFeet": 2400.0, "bedrooms": 4, "bathrooms": 2.5 },
            ] }),
        )
        .await;
    let items = body["data"]["predictPrices"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["prediction"]["price"].as_f64(), Some(app.expected_price(1200.0, 2, 1.0)));
    assert_eq!(items[2]["prediction"]["price"].as_f64(), Some(app.expected_price(2400.0, 4, 2.5)));
    assert_eq!(items[1]["prediction"], serde_json::Value::Null);
    assert_eq!(items[1]["error"]["code"], "BAD_USER_INPUT");
    assert_eq!(items[1]["error"]["field"], "inputs[1].bedrooms");
    assert_eq!(items[1]["index"], 1);

    let request_id = items[0]["prediction"]["requestId"].as_str().unwrap();
    assert_eq!(items[2]["prediction"]["requestId"], request_id);
    app.wait_durable().await;
    let rows: Vec<(i32, String)> =
        sqlx::query_as("select item_index, status from prediction_log where request_id = $1 order by item_index")
            .bind(request_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, [(0, "ok".into()), (1, "rejected".into()), (2, "ok".into())]);
}

#[sqlx::test]
async fn a_batch_over_the_limit_or_empty_is_rejected_whole_and_logged(pool: PgPool) {
    let mut config = crate::common::config();
    config.limits.max_batch_size = 2;
    let app = TestApp::spawn_with(pool, config).await;
    let house = json!({ "squareFeet": 1200.0, "bedrooms": 2, "bathrooms": 1.0 });
    for inputs in [json!([house, house, house]), json!([])] {
        let body = app
            .graphql(
                "query($inputs: [HouseInput!]!) { predictPrices(inputs: $inputs) { index } }",
                json!({ "inputs": inputs }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(error_field(&body), "inputs");
    }
    assert_eq!(app.count_rows("status = 'rejected' and error_field = 'inputs' and item_index is null").await, 2);
    assert_eq!(app.count_rows("true").await, 2);
}

#[sqlx::test]
async fn the_request_id_is_taken_from_the_client_echoed_and_stored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-request-id", "client-chosen-42")
        .header("user-agent", "id-test/1.0")
        .json(
            &json!({ "query": "{ predictPrice(input: {squareFeet: 1000, bedrooms: 2, bathrooms: 1}) { requestId } }" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["predictPrice"]["requestId"], "client-chosen-42");
    assert_eq!(app.count_rows("request_id = 'client-chosen-42' and client = 'id-test/1.0'").await, 1);
}

#[sqlx::test]
async fn a_request_without_an_id_gets_a_generated_one_in_header_and_row(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .post_graphql("{ predictPrice(input: {squareFeet: 1000, bedrooms: 2, bathrooms: 1}) { requestId } }", json!({}))
        .await;
    let header = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    // Version 7 (time-ordered), so the log's request_id index grows at its right edge.
    let generated = uuid::Uuid::parse_str(&header).unwrap_or_else(|_| panic!("generated id is a UUID: {header}"));
    assert_eq!(generated.get_version_num(), 7, "{header}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["predictPrice"]["requestId"], header.as_str());
    assert_eq!(app.count_rows(&format!("request_id = '{header}'")).await, 1);
}

#[sqlx::test]
async fn errors_carry_the_request_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-request-id", "req-for-error")
        .json(&json!({ "query": "{ predictPrice(input: {squareFeet: -1, bedrooms: 2, bathrooms: 1}) { price } }" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["requestId"], "req-for-error");
}

#[sqlx::test]
async fn a_thousand_concurrent_requests_leave_exactly_a_thousand_rows(pool: PgPool) {
    const N: usize = 1000;
    let app = TestApp::spawn(pool).await;
    // Every third request is invalid (bedrooms out of range).
    let requests = (0..N).map(|i| {
        let bedrooms = if i % 3 == 0 { 99 } else { 3 };
        let app = &app;
        async move {
            let body = app.predict(1000.0 + i as f64, bedrooms, 2.0).await;
            (i, body)
        }
    });
    let results = join_all(requests).await;
    let mut ok = 0;
    for (i, body) in &results {
        if i % 3 == 0 {
            assert_eq!(error_code(body), "BAD_USER_INPUT", "{body}");
        } else {
            assert!(body["data"]["predictPrice"]["price"].is_number(), "{body}");
            ok += 1;
        }
    }
    assert_eq!(app.count_rows("true").await, N as i64);
    assert_eq!(app.count_rows("status = 'ok'").await, ok);
    assert_eq!(app.count_rows("status = 'rejected' and bedrooms = 99").await, N as i64 - ok);
    // Every request id is distinct: one row per request.
    app.wait_durable().await;
    let distinct: i64 =
        sqlx::query_scalar("select count(distinct request_id) from prediction_log").fetch_one(&app.pool).await.unwrap();
    assert_eq!(distinct, N as i64);
}
