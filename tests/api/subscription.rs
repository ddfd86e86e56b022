use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::TestApp;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, protocol: &str) -> Ws {
    let mut request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").expect("frame") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Keeps making predictions until the subscriber sees one of them; returns (event, ids made).
async fn predict_until_event(app: &TestApp, ws: &mut Ws, event_type: &str) -> (Value, Vec<String>) {
    let mut made = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = app.predict(1777.0, 3, 2.0).await;
        made.push(body["data"]["predictPrice"]["id"].as_str().unwrap().to_owned());
        match tokio::time::timeout(Duration::from_millis(200), next_json(ws)).await {
            Ok(msg) => {
                assert_eq!(msg["type"], event_type, "{msg}");
                return (msg, made);
            }
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("no subscription event"),
        }
    }
}

#[sqlx::test]
async fn a_graphql_transport_ws_subscriber_receives_committed_predictions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut ws = connect(&app, "graphql-transport-ws").await;
    ws.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    let subscribe = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "subscription { predictionLogged(status: OK) { id price status } }" } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();

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
    let mut ws = connect(&app, "graphql-ws").await;
    ws.send(Message::text(json!({ "type": "connection_init" }).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    let start = json!({ "id": "1", "type": "start",
        "payload": { "query": "subscription { predictionLogged { id requestId } }" } });
    ws.send(Message::text(start.to_string())).await.unwrap();

    let (event, made) = predict_until_event(&app, &mut ws, "data").await;

    let id = event["payload"]["data"]["predictionLogged"]["id"].as_str().unwrap().to_owned();
    assert!(made.contains(&id), "{event}");
}
