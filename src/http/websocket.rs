//! GraphQL over WebSocket on `/ws` (subscriptions, and queries for clients that use one socket).

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{ConnectInfo, Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;

use super::guard::{caller_of, rate_limited_message, retry_after_seconds};
use super::request::header_str;
use super::state::HttpState;
use crate::auth::Caller;
use crate::graphql::extensions::{WsConnection, WsRateGate};
use std::net::SocketAddr;
use std::sync::Arc;

/// `GET /ws`: GraphQL over WebSocket (`graphql-transport-ws` and the legacy `graphql-ws`).
pub async fn websocket(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut data = async_graphql::Data::default();
    data.insert(s.app.clone());
    // Every operation on the socket passes the rate limit too, not only the upgrade request.
    let (limits, address) =
        (s.limits.clone(), s.limits.client_address(&headers, peer.map(|Extension(ConnectInfo(address))| address)));
    data.insert(WsRateGate(Arc::new(move |caller: &Caller| {
        limits.admit(caller, address).map_err(|(limit, wait)| {
            let seconds = retry_after_seconds(wait);
            (rate_limited_message(limit, seconds), seconds)
        })
    })));
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
