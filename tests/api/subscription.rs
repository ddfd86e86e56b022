use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{Subscriber, TestApp};

/// Keeps making predictions until the subscriber sees one of them; returns (event, ids made).
async fn predict_until_event(app: &TestApp, ws: &mut Subscriber, event_type: &str) -> (Value, Vec<String>) {
    let mut made = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = app.predict(1777.0, 3, 2.0).await;
        made.push(body["data"]["predictPrice"]["id"].as_str().unwrap().to_owned());
        match tokio::time::timeout(Duration::from_millis(200), ws.next_event()).await {
            Ok(msg) => {
                assert_eq!(msg["type"], event_type, "{msg}");
                return (msg, made);
            }
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(_) => panic!("no subscription event"),
        }
    }
}

#[sqlx::test]
async fn a_graphql_transport_ws_subscriber_receives_committed_predictions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut ws = Subscriber::connect(&app, "graphql-transport-ws").await;
    ws.send(json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "subscription { predictionLogged(status: OK) { id price status } }" } }))
        .await;

    let (event, made) = predict_until_event(&app, &mut ws, "next").await;

    let row = &event["payload"]["data"]["predictionLogged"];
    assert!(made.contains(&row["id"].as_str().unwrap().to_owned()), "{event}");
    assert_eq!(row["status"], "OK");
    assert_eq!(row["price"].as_f64(), Some(app.expected_price(1777.0, 3, 2.0)));
    // Pushed after commit: the row is in the table.
    assert_eq!(app.count_rows(&format!("id = '{}'", row["id"].as_str().unwrap())).await, 1);
}

#[sqlx::test]
async fn a_legacy_graphql_ws_subscriber_receives_committed_predictions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut ws = Subscriber::connect(&app, "graphql-ws").await;
    ws.send(json!({ "id": "1", "type": "start",
        "payload": { "query": "subscription { predictionLogged { id requestId } }" } }))
        .await;

    let (event, made) = predict_until_event(&app, &mut ws, "data").await;

    let id = event["payload"]["data"]["predictionLogged"]["id"].as_str().unwrap().to_owned();
    assert!(made.contains(&id), "{event}");
}

#[sqlx::test]
async fn predictions_sent_over_the_websocket_get_their_own_request_ids(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut ws = Subscriber::connect(&app, "graphql-transport-ws").await;
    for id in ["a", "b"] {
        ws.send(json!({ "id": id, "type": "subscribe",
            "payload": { "query": "{ predictPrice(input: {squareFeet: 1500, bedrooms: 3, bathrooms: 2}) { requestId createdAt } }" } }))
            .await;
    }
    let mut request_ids = Vec::new();
    while request_ids.len() < 2 {
        let event = ws.next_event().await;
        if event["type"] == "next" {
            request_ids.push(event["payload"]["data"]["predictPrice"]["requestId"].as_str().unwrap().to_owned());
        }
    }
    assert_ne!(request_ids[0], request_ids[1]);
    assert_eq!(app.count_rows("true").await, 2);

    // An error over the socket names its operation's request id, the one stored in its row.
    ws.send(json!({ "id": "c", "type": "subscribe",
        "payload": { "query": "{ predictPrice(input: {squareFeet: 1500, bedrooms: 99, bathrooms: 2}) { price } }" } }))
        .await;
    let event = ws.next_result("c").await;
    let error = &event["payload"]["errors"][0]["extensions"];
    assert_eq!((error["code"].as_str(), error["field"].as_str()), (Some("BAD_USER_INPUT"), Some("input.bedrooms")));
    let request_id = error["requestId"].as_str().unwrap_or_else(|| panic!("no requestId: {event}"));
    assert!(!request_ids.iter().any(|id| id == request_id));
    assert_eq!(app.count_rows(&format!("status = 'rejected' and request_id = '{request_id}'")).await, 1);
}
