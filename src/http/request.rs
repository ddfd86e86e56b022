//! Request context: the request id every request carries (generated or the client's), the
//! caller's identity from the headers, and the refusal of a body that could not be read.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::auth::Caller;
use crate::error::codes;
use crate::service::{RequestMeta, Route};

/// A request refused before GraphQL or the REST route sees it: status, `code`, message.
pub type Refusal = (StatusCode, &'static str, String);

/// Generates missing `x-request-id`s as UUIDv7: time-ordered, so the log's `request_id` index
/// grows at its right edge like the time indexes, instead of taking a random B-tree page per row.
#[derive(Clone, Copy)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
        Some(RequestId::new(HeaderValue::from_str(id).ok()?))
    }
}

/// Longest accepted client `x-request-id`.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client `x-request-id` that is too long or not printable ASCII is dropped, so a fresh UUID
/// replaces it everywhere (header, span, row) instead of the row and the echo disagreeing.
pub fn drop_unusable_request_id<B>(mut req: Request<B>) -> Request<B> {
    let unusable = req.headers().get("x-request-id").is_some_and(|v| {
        v.len() > MAX_REQUEST_ID_LEN || v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_graphic)
    });
    if unusable {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The header's value, if it is text.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's id, route, User-Agent and API key, as its log rows record them.
pub fn request_meta(headers: &HeaderMap, route: Route, caller: &Caller) -> RequestMeta {
    // SetRequestIdLayer guarantees the header; the fallback only guards a misconfigured router.
    let request_id =
        header_str(headers, "x-request-id").map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let client = header_str(headers, header::USER_AGENT.as_str()).map(str::to_owned);
    let mut meta = RequestMeta::new(request_id, route, client);
    meta.api_key_id = caller.key_id().map(str::to_owned);
    meta.trace_id = crate::telemetry::trace_id(headers);
    meta
}

/// Status, code and message for a body that could not be read: over `MAX_BODY_BYTES` (enforced by
/// `DefaultBodyLimit` whether or not the client sent a Content-Length) or broken off. Such requests
/// attempted no prediction and are not logged.
pub fn body_refusal(rejection: &BytesRejection, limit: usize) -> Refusal {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE, format!("the body exceeds {limit} bytes"))
        }
        status => (status, codes::BAD_REQUEST, rejection.body_text()),
    }
}
