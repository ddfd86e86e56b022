//! GraphQL over WebSocket on `/ws` (subscriptions, and queries for clients that use one socket).

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;

use super::request::header_str;
use super::state::HttpState;
use crate::auth::PresentedKey;
use crate::graphql::extensions::WsConnection;

/// `GET /ws`: GraphQL over WebSocket (`graphql-transport-ws` and the legacy `graphql-ws`).
pub async fn websocket(
    State(s): State<HttpState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut data = async_graphql::Data::default();
    data.insert(s.app.clone());
    data.insert(WsConnection { client: header_str(&headers, header::USER_AGENT.as_str()).map(str::to_owned) });
    data.insert(PresentedKey(header_str(&headers, "x-api-key").map(str::to_owned)));
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| GraphQLWebSocket::new(stream, s.schema, protocol).with_data(data).serve())
}
