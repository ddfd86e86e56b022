use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::TestApp;

#[sqlx::test]
async fn the_seed_route_answers_the_seed_shape(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app.post_rest(r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}"#).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "previsao": [app.expected_price(1500.0, 3, 2.0)] }));
    assert_eq!(app.count_rows("route = 'rest:/prever_precos/' and status = 'ok' and operation is null").await, 1);
}

#[sqlx::test]
async fn the_seed_route_also_answers_without_the_trailing_slash(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .post(app.url("/prever_precos"))
        .json(&json!({ "square_feet": 900.5, "num_bedrooms": 2, "num_bathrooms": 1.5 }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["previsao"][0].as_f64(), Some(app.expected_price(900.5, 2, 1.5)));
}

#[sqlx::test]
async fn the_seed_route_rejects_bad_input_with_422_naming_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cases = [
        (r#"{"square_feet": -3, "num_bedrooms": 3, "num_bathrooms": 2}"#, "square_feet"),
        (r#"{"square_feet": 1500, "num_bathrooms": 2}"#, "num_bedrooms"),
        (r#"{"square_feet": 1500, "num_bedrooms": 2.5, "num_bathrooms": 2}"#, "num_bedrooms"),
        (r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": "two"}"#, "num_bathrooms"),
        (r#"{"square_feet": 1500, "#, "body"),
        (r"[1500, 3, 2]", "body"),
    ];
    for (body, field) in cases {
        let response = app.post_rest(body).await;
        assert_eq!(response.status(), 422, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["detail"][0]["loc"], json!(["body", field]), "{json}");
        assert!(json["detail"][0]["msg"].is_string());
        assert_eq!(json["code"], "BAD_USER_INPUT");
    }
    assert_eq!(
        app.count_rows("route = 'rest:/prever_precos/' and status = 'rejected' and error_code = 'BAD_USER_INPUT'")
            .await,
        cases.len() as i64
    );
    // The unparseable body is still kept, as text.
    assert_eq!(app.count_rows("raw_input ? 'unparsed'").await, 1);
}

#[sqlx::test]
async fn a_nul_character_in_one_request_does_not_fail_its_neighbours(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // PostgreSQL jsonb refuses U+0000: the logged copy replaces it, and the request is still logged.
    let bad = app.post_rest(r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2, "note": "a\u0000b"}"#);
    let good = app.post_rest(r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}"#);
    let (bad, good) = tokio::join!(bad, good);
    assert_eq!(bad.status(), 200);
    assert_eq!(good.status(), 200);
    assert_eq!(app.count_rows("status = 'ok'").await, 2);
    assert_eq!(app.count_rows("raw_input->>'note' = 'a\u{FFFD}b'").await, 1);
}

#[sqlx::test]
async fn an_unusable_client_request_id_is_replaced_consistently(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .post(app.url("/prever_precos/"))
        .header("x-request-id", "x".repeat(500))
        .json(&json!({ "square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2 }))
        .send()
        .await
        .unwrap();
    let echoed = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "replaced by a UUID: {echoed}");
    assert_eq!(app.count_rows(&format!("request_id = '{echoed}'")).await, 1);
}
