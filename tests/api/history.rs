use std::collections::HashSet;

use chrono::DateTime;
use house_price_api::log::Cursor;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestApp, config, error_code, error_field};

const PAGE: &str = "query($first: Int, $after: String, $filter: PredictionFilter) {
    predictions(first: $first, after: $after, filter: $filter) {
        edges { cursor node { id createdAt status price requestId itemIndex model { version }
                              features { squareFeet bedrooms bathrooms } error { code field } } }
        nodes { id }
        pageInfo { hasNextPage endCursor }
    } }";

/// Logs 25 batch items (same created_at: the id breaks ties), 5 singles and 3 rejected requests.
async fn seed(app: &TestApp) {
    let inputs: Vec<Value> = (0..25)
        .map(|i| json!({ "squareFeet": 800.0 + 40.0 * f64::from(i), "bedrooms": 3, "bathrooms": 2.0 }))
        .collect();
    let body =
        app.graphql("query($i: [HouseInput!]!) { predictPrices(inputs: $i) { index } }", json!({ "i": inputs })).await;
    assert!(body["errors"].is_null(), "{body}");
    for i in 0..5 {
        app.predict(1000.0 + f64::from(i), 2, 1.0).await;
    }
    for _ in 0..3 {
        app.predict(-1.0, 2, 1.0).await;
    }
}

async fn all_pages(app: &TestApp, first: i64, filter: Value) -> Vec<Value> {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    for _ in 0..100 {
        let body = app.graphql(PAGE, json!({ "first": first, "after": after, "filter": filter })).await;
        let connection = &body["data"]["predictions"];
        let edges = connection["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
        assert!(edges.len() as i64 <= first);
        assert_eq!(connection["nodes"].as_array().unwrap().len(), edges.len());
        nodes.extend(edges.iter().map(|e| e["node"].clone()));
        if !connection["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return nodes;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    panic!("pagination did not end");
}

#[sqlx::test]
async fn pages_cover_every_row_once_newest_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    seed(&app).await;

    let nodes = all_pages(&app, 7, Value::Null).await;

    assert_eq!(nodes.len(), 33);
    let ids: HashSet<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 33, "no duplicates");
    let keys: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n["createdAt"].as_str().unwrap().to_owned(), n["id"].as_str().unwrap().to_owned()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first, id as tie-breaker");
    app.wait_durable().await;
    let db_ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from prediction_log").fetch_all(&app.pool).await.unwrap();
    let db_ids: HashSet<String> = db_ids.iter().map(uuid::Uuid::to_string).collect();
    assert_eq!(ids.into_iter().map(str::to_owned).collect::<HashSet<_>>(), db_ids, "exactly the logged rows");
}

#[sqlx::test]
async fn filters_select_by_status_price_model_time_and_request(pool: PgPool) {
    // The linear model: its price grows with square feet, so the price range below holds every step.
    let mut config = config();
    config.default_model = "baseline-linear".into();
    config.three_input_model = String::new();
    let app = TestApp::spawn_with(pool, config).await;
    seed(&app).await;

    let rejected = all_pages(&app, 100, json!({ "status": "REJECTED" })).await;
    assert_eq!(rejected.len(), 3);
    assert!(
        rejected.iter().all(|n| n["error"]["code"] == "BAD_USER_INPUT" && n["error"]["field"] == "input.squareFeet")
    );

    let (min, max) = (app.expected_price(1200.0, 3, 2.0), app.expected_price(1600.0, 3, 2.0));
    let hour = chrono::Utc::now();
    let window = json!({ "minPrice": min, "maxPrice": max,
        "from": hour - chrono::TimeDelta::minutes(30), "to": hour + chrono::TimeDelta::minutes(30) });
    let priced = all_pages(&app, 100, window).await;
    app.wait_durable().await;
    let expected: i64 = sqlx::query_scalar("select count(*) from prediction_log where price between $1 and $2")
        .bind(min)
        .bind(max)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(priced.len() as i64, expected);
    assert!(expected >= 11, "the 40 sq ft steps from 1200 to 1600 are all in range");
    assert!(priced.iter().all(|n| (min..=max).contains(&n["price"].as_f64().unwrap())));

    assert_eq!(
        all_pages(&app, 100, json!({ "modelName": "baseline-linear", "modelVersion": "2.0.0" })).await.len(),
        33
    );
    assert_eq!(all_pages(&app, 100, json!({ "modelVersion": "9.9.9" })).await.len(), 0);

    let future = all_pages(&app, 100, json!({ "from": "2999-01-01T00:00:00Z" })).await;
    assert!(future.is_empty());
    let past = all_pages(&app, 100, json!({ "from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z" })).await;
    assert_eq!(past.len(), 33);

    let one = &rejected[0];
    let by_request = all_pages(&app, 100, json!({ "requestId": one["requestId"] })).await;
    assert_eq!(by_request.len(), 1);
    assert_eq!(by_request[0]["id"], one["id"]);
}

#[sqlx::test]
async fn page_size_and_cursor_are_validated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for first in [0, -1, 101] {
        let body = app.graphql(PAGE, json!({ "first": first })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(error_field(&body), "first");
    }
    // Garbage, and a well-formed cursor whose time PostgreSQL could not hold (year -29700).
    let far_past =
        Cursor { created_at: DateTime::from_timestamp_micros(-999_999_999_999_999_999).unwrap(), id: Uuid::nil() };
    for after in ["bm90LWEtY3Vyc29y".to_owned(), far_past.encode()] {
        let body = app.graphql(PAGE, json!({ "after": after })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(error_field(&body), "after");
    }
    let body = app.graphql(PAGE, json!({ "filter": { "minPrice": 10.0, "maxPrice": 1.0 } })).await;
    assert_eq!(error_field(&body), "filter.maxPrice");
    // Prices are not indexed: a price filter needs a window of at most an hour.
    let (from, to) = ("2026-01-01T00:00:00Z", "2026-01-01T01:00:01Z");
    for (filter, field) in [
        (json!({ "minPrice": 1.0 }), "filter.minPrice"),
        (json!({ "maxPrice": 1.0, "from": from }), "filter.maxPrice"),
        (json!({ "minPrice": 1.0, "from": from, "to": to }), "filter.minPrice"),
    ] {
        let body = app.graphql(PAGE, json!({ "filter": filter })).await;
        assert_eq!((error_code(&body), error_field(&body)), ("BAD_USER_INPUT", field), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("at most 1 hour apart"), "{body}");
    }
    let body =
        app.graphql(PAGE, json!({ "filter": { "minPrice": 1.0, "from": from, "to": "2026-01-01T01:00:00Z" } })).await;
    assert!(body["errors"].is_null(), "{body}");
    // The default page size applies when `first` is omitted.
    seed(&app).await;
    let body = app.graphql(PAGE, json!({})).await;
    assert_eq!(body["data"]["predictions"]["edges"].as_array().unwrap().len(), 20);
}

#[sqlx::test]
async fn one_prediction_is_found_by_id_and_an_unknown_id_is_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let made = app.predict(1300.0, 3, 1.5).await;
    let id = made["data"]["predictPrice"]["id"].as_str().unwrap();
    let query = "query($id: ID!) { prediction(id: $id) { id status price route rawInput features { squareFeet } } }";

    let body = app.graphql(query, json!({ "id": id })).await;
    let row = &body["data"]["prediction"];
    assert_eq!(row["status"], "OK");
    assert_eq!(row["price"], made["data"]["predictPrice"]["price"]);
    assert_eq!(row["route"], "graphql");
    assert_eq!(row["rawInput"], json!({ "squareFeet": 1300.0, "bedrooms": 3, "bathrooms": 1.5 }));

    let body = app.graphql(query, json!({ "id": uuid::Uuid::now_v7().to_string() })).await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    let body = app.graphql(query, json!({ "id": "nope" })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_field(&body), "id");
}
