//! GraphQL over WebSocket on `/ws` (subscriptions, and queries for clients that use one socket).

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;

use super::guard::caller_of;
use super::request::header_str;
use super::state::HttpState;
use crate::auth::Caller;
use crate::graphql::extensions::WsConnection;

/// `GET /ws`: GraphQL over WebSocket (`graphql-transport-ws` and the legacy `graphql-ws`).
pub async fn websocket(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut data = async_graphql::Data::default();
    data.insert(s.app.clone());
    data.insert(WsConnection { client: header_str(&headers, header::USER_AGENT.as_str()).map(str::to_owned) });
    data.insert(caller.map(|c| c.0).unwrap_or_default());
    let keys = s.app.keys.clone();
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |stream| {
        GraphQLWebSocket::new(stream, s.schema, protocol)
            .with_data(data)
            .on_connection_init(move |payload| async move {
                // Browsers cannot set headers on a WebSocket: the key may come in the init payload
                // instead, and then wins over the upgrade request's header.
                let mut init = async_graphql::Data::default();
                if let Some(key) = payload.get("x-api-key").or_else(|| payload.get("apiKey")).and_then(|k| k.as_str()) {
                    init.insert(caller_of(&keys, Some(key)));
                }
                Ok(init)
            })
            .serve()
    })
}
