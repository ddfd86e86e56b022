//! GraphQL over HTTP (the GraphQL-over-HTTP spec, audited by `graphql-http` in the tests):
//!
//! - `POST /graphql` with `content-type: application/json` (anything else: 415), a JSON object
//!   `{query, operationName?, variables?, extensions?}` or an array of them (a batch);
//! - `GET /graphql?query=…&variables=…` for queries; a mutation over GET is refused with 405,
//!   because GET must be safe (caches, prefetching browsers). A GET without `query` from a browser
//!   (Accept: text/html) is GraphiQL;
//! - the answer's media type follows `Accept`: `application/graphql-response+json` when the
//!   client prefers it, with status 400 and no `data` entry when the request could not be
//!   executed (parse or validation failure); `application/json` (also for `*/*` or no Accept)
//!   always with status 200, as legacy clients expect; 406 when neither is acceptable.
//!
//! Bodies the handler refuses before GraphQL sees them answer 400 `BAD_REQUEST` (413
//! `PAYLOAD_TOO_LARGE` over `MAX_BODY_BYTES`), in the negotiated media type, with a request id.

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Response as GqlResponse, ServerError, Variables};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::assets;
use super::request::{Refusal, body_refusal, header_str, request_meta};
use super::state::HttpState;
use crate::auth::Caller;
use crate::error::{AppError, codes};
use crate::graphql::cost::CostMeter;
use crate::graphql::extensions::with_request_id;
use crate::service::{RequestMeta, Route};

/// Most operations in one batched (array) GraphQL request.
pub const MAX_OPERATIONS_PER_REQUEST: usize = 16;

/// The spec's media type for GraphQL responses.
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The media type of an answer, chosen from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: HTTP status tells request errors apart.
    GraphqlResponse,
    /// `application/json`: always 200 (legacy clients read only the body).
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

/// Media ranges of an `Accept` header with their quality, in order (`None` without a header).
fn accepted(headers: &HeaderMap) -> Option<Vec<(String, f32)>> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let ranges = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .unwrap_or(1.0);
            (!media.is_empty()).then_some((media, q))
        })
        .collect();
    Some(ranges)
}

/// Chooses the answer's media type; `None` when the client accepts neither JSON type (406).
/// Without an Accept header the spec says to assume `application/json`; among equally weighted
/// ranges the first listed wins, and `*/*` means `application/json`.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(ranges) = accepted(headers) else { return Some(MediaType::Json) };
    let mut best: Option<(MediaType, f32)> = None;
    for (media, q) in ranges {
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponse,
            "application/json" | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((candidate, q));
        }
    }
    best.map(|(media, _)| media)
}

/// Whether a browser is asking for a page (GraphiQL) rather than for data.
fn wants_html(headers: &HeaderMap) -> bool {
    accepted(headers).is_none_or(|ranges| {
        ranges.iter().any(|(media, q)| *q > 0.0 && matches!(media.as_str(), "text/html" | "text/*" | "*/*"))
    })
}

/// A `BAD_REQUEST` refusal before execution.
fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, codes::BAD_REQUEST, message.into())
}

/// The parameters of one GraphQL request, still as JSON text: each is decoded on its own, so a
/// parameter of the wrong type is refused with its name (instead of defaulted), and a well-formed
/// request is decoded straight into async-graphql's types without an intermediate `Value`.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    #[serde(borrow)]
    query: Option<&'a RawValue>,
    #[serde(borrow)]
    operation_name: Option<&'a RawValue>,
    #[serde(borrow)]
    variables: Option<&'a RawValue>,
    #[serde(borrow)]
    extensions: Option<&'a RawValue>,
}

/// One GraphQL request from its parameters, checking each one's type as the spec asks: `query` a
/// string, `operationName` a string or null, `variables` and `extensions` objects or null.
fn request_from_params(params: &Params<'_>) -> Result<async_graphql::Request, Refusal> {
    fn decode<'a, T: serde::Deserialize<'a>>(raw: Option<&'a RawValue>, what: &str) -> Result<Option<T>, Refusal> {
        match raw {
            None => Ok(None),
            Some(raw) => {
                serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| refuse(StatusCode::BAD_REQUEST, what))
            }
        }
    }
    let Some(query) = decode::<String>(params.query, "`query` must be a string")? else {
        return Err(refuse(StatusCode::BAD_REQUEST, "the request has no `query`"));
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = decode::<String>(params.operation_name, "`operationName` must be a string or null")? {
        request = request.operation_name(name);
    }
    if let Some(variables) = decode::<Variables>(params.variables, "`variables` must be an object or null")? {
        request = request.variables(variables);
    }
    if let Some(extensions) = decode::<std::collections::HashMap<String, async_graphql::Value>>(
        params.extensions,
        "`extensions` must be an object or null",
    )? {
        request.extensions.extend(extensions);
    }
    Ok(request)
}

/// Whether a POST's Content-Type is JSON in UTF-8 (the only encoding JSON has).
fn is_json_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = header_str(headers, header::CONTENT_TYPE.as_str()) else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::BAD_REQUEST,
            "send `content-type: application/json`".into(),
        ));
    };
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    if media == "application/json" && charset_ok {
        Ok(())
    } else {
        Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::BAD_REQUEST,
            format!("unsupported content-type `{value}`: send `application/json` (UTF-8)"),
        ))
    }
}

/// Reads the body of `POST /graphql`. Done here rather than by async-graphql-axum's extractor so
/// that an unusable body gets a GraphQL-shaped error with a code (that extractor answers Rust
/// debug text) and a parameter of the wrong type is refused instead of defaulted.
fn parse_post(headers: &HeaderMap, body: Result<Bytes, BytesRejection>, limit: usize) -> Result<BatchRequest, Refusal> {
    let body = body.map_err(|rejection| body_refusal(&rejection, limit))?;
    is_json_content_type(headers)?;
    if body.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "the body is empty: send a JSON GraphQL request"));
    }
    let body = std::str::from_utf8(&body)
        .map_err(|err| refuse(StatusCode::BAD_REQUEST, format!("the body is not UTF-8: {err}")))?;
    // One pass over the body: it is decoded straight into its shape, and a failure is then told
    // apart as bad JSON (syntax) or JSON of the wrong shape (data).
    let not_an_object = || refuse(StatusCode::BAD_REQUEST, "the body must be a JSON object (or an array of them)");
    let refused = |err: &serde_json::Error| match err.classify() {
        serde_json::error::Category::Data => not_an_object(),
        _ => refuse(StatusCode::BAD_REQUEST, format!("the body is not JSON: {err}")),
    };
    match body.trim_start().as_bytes().first() {
        Some(b'{') => {
            let params: Params<'_> = serde_json::from_str(body).map_err(|err| refused(&err))?;
            Ok(BatchRequest::Single(request_from_params(&params)?))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|err| refused(&err))?;
            if items.len() > MAX_OPERATIONS_PER_REQUEST {
                // A limit on the request's shape, like depth and complexity.
                return Err((
                    StatusCode::BAD_REQUEST,
                    codes::GRAPHQL_VALIDATION_FAILED,
                    format!("at most {MAX_OPERATIONS_PER_REQUEST} operations per request, got {}", items.len()),
                ));
            }
            let requests = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match serde_json::from_str::<Params<'_>>(item.get()) {
                    Ok(params) => request_from_params(&params)
                        .map_err(|(status, code, message)| (status, code, format!("operation {i}: {message}"))),
                    Err(_) => Err(refuse(StatusCode::BAD_REQUEST, format!("operation {i} is not a JSON object"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if requests.is_empty() {
                return Err(refuse(StatusCode::BAD_REQUEST, "the batch holds no operation"));
            }
            Ok(BatchRequest::Batch(requests))
        }
        _ => Err(match serde_json::from_str::<serde::de::IgnoredAny>(body) {
            Ok(_) => not_an_object(),
            Err(err) => refused(&err),
        }),
    }
}

/// Reads `GET /graphql`'s URL parameters; `variables` and `extensions` are JSON in the URL.
fn parse_get(pairs: Vec<(String, String)>) -> Result<async_graphql::Request, Refusal> {
    // The same checks as a POST body's: the text parameters become JSON strings, the JSON ones
    // are taken as they are (and must be JSON).
    let mut owned: Vec<(String, Box<RawValue>)> = Vec::new();
    for (name, value) in pairs {
        let raw = match name.as_str() {
            "variables" | "extensions" => RawValue::from_string(value)
                .map_err(|err| refuse(StatusCode::BAD_REQUEST, format!("`{name}` is not JSON: {err}")))?,
            _ => serde_json::value::to_raw_value(&value)
                .map_err(|err| refuse(StatusCode::BAD_REQUEST, err.to_string()))?,
        };
        owned.push((name, raw));
    }
    let find = |name: &str| owned.iter().find(|(n, _)| n == name).map(|(_, raw)| raw.as_ref());
    let params = Params {
        query: find("query"),
        operation_name: find("operationName"),
        variables: find("variables"),
        extensions: find("extensions"),
    };
    let mut request = request_from_params(&params)?;
    // GET must not change anything: only queries run (the document is parsed once, here).
    let operation_name = request.operation_name.clone();
    if let Ok(doc) = request.parsed_query() {
        let selected = match &operation_name {
            Some(name) => doc.operations.iter().find(|(n, _)| n.is_some_and(|n| n.as_str() == name)).map(|(_, op)| op),
            None => doc.operations.iter().next().map(|(_, op)| op),
        };
        if selected.is_some_and(|op| op.node.ty != OperationType::Query) {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "only queries may be sent with GET; use POST"));
        }
    }
    Ok(request)
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// `GET /graphql`: GraphiQL for a browser, otherwise a query from the URL.
pub async fn get(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = form_urlencoded_pairs(raw.as_deref().unwrap_or_default());
    if !pairs.iter().any(|(k, _)| k == "query") && wants_html(&headers) {
        return assets::page("graphiql.html");
    }
    let caller = caller.map(|c| c.0).unwrap_or_default();
    let meta = request_meta(&headers, Route::Graphql, &caller);
    let Some(media) = negotiate(&headers) else { return not_acceptable(&meta) };
    match parse_get(pairs) {
        Ok(request) => execute(&s, caller, meta, media, BatchRequest::Single(request)).await,
        Err(refusal) => refused(refusal, &meta, media),
    }
}

/// `POST /graphql`.
pub async fn post(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = caller.map(|c| c.0).unwrap_or_default();
    let meta = request_meta(&headers, Route::Graphql, &caller);
    let Some(media) = negotiate(&headers) else { return not_acceptable(&meta) };
    match parse_post(&headers, body, s.app.config.max_body_bytes) {
        Ok(batch) => execute(&s, caller, meta, media, batch).await,
        Err(refusal) => refused(refusal, &meta, media),
    }
}

async fn execute(s: &HttpState, caller: Caller, meta: RequestMeta, media: MediaType, batch: BatchRequest) -> Response {
    let timeout = s.app.config.limits.request_timeout();
    // One cost budget for the whole request, however many operations it batches.
    let meter = CostMeter::default();
    let attach = |req: async_graphql::Request| {
        let mut meta = meta.clone();
        meta.operation = req.operation_name.clone();
        req.data(s.app.clone()).data(meta).data(caller.clone()).data(meter.clone())
    };
    let (batch, is_array) = match batch {
        BatchRequest::Single(req) => (BatchRequest::Single(attach(req)), false),
        BatchRequest::Batch(reqs) => (BatchRequest::Batch(reqs.into_iter().map(attach).collect()), true),
    };
    let response = if let Ok(response) = tokio::time::timeout(timeout, s.schema.execute_batch(batch)).await {
        response
    } else {
        // Errors raised here, outside the schema, name the request id too (the schema's own
        // errors get it from `RequestContext`), so a client can always quote it.
        let timed_out = || {
            let err = AppError::Timeout(timeout.as_millis() as u64).into_server_error();
            with_request_id(GqlResponse::from_errors(vec![err]), Some(&meta.request_id))
        };
        // An array request gets an array back, even when it timed out as a whole.
        if is_array { BatchResponse::Batch(vec![timed_out()]) } else { BatchResponse::Single(timed_out()) }
    };
    respond(response, media)
}

/// Whether a response is a request error: nothing was executed because the document did not
/// parse or validate. (Errors raised while executing — bad input, timeouts — leave `data` set.)
fn is_request_error(response: &GqlResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|err| {
            let code = err.extensions.as_ref().and_then(|ext| ext.get("code"));
            matches!(code, Some(async_graphql::Value::String(code))
                if code == codes::GRAPHQL_PARSE_FAILED || code == codes::GRAPHQL_VALIDATION_FAILED
                    || code == codes::QUERY_TOO_COSTLY)
        })
}

/// Serialises one response: with `application/graphql-response+json`, a response of a request
/// where `nothing_ran` has no `data` entry (the spec's way to say so).
fn to_json(response: &GqlResponse, media: MediaType, nothing_ran: bool) -> Value {
    let mut value = serde_json::to_value(response).unwrap_or_else(|_| json!({ "data": null }));
    if media == MediaType::GraphqlResponse
        && nothing_ran
        && let Some(object) = value.as_object_mut()
    {
        object.remove("data");
    }
    value
}

fn respond(response: BatchResponse, media: MediaType) -> Response {
    let (status, body) = match &response {
        BatchResponse::Single(single) => {
            let status = if media == MediaType::GraphqlResponse && is_request_error(single) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            // The common case serialises straight to bytes, without a `Value` in between.
            let body = if status == StatusCode::OK {
                serde_json::to_vec(single)
            } else {
                serde_json::to_vec(&to_json(single, media, true))
            };
            (status, body)
        }
        // A batch mixes outcomes, so it is 200 and each item says what happened to it.
        BatchResponse::Batch(items) => (
            StatusCode::OK,
            serde_json::to_vec(&items.iter().map(|r| to_json(r, media, is_request_error(r))).collect::<Vec<_>>()),
        ),
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "cannot serialise a GraphQL response");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut http = Response::new(Body::from(body));
    *http.status_mut() = status;
    http.headers_mut().insert(header::CONTENT_TYPE, media.content_type());
    if let BatchResponse::Single(single) = &response {
        for (name, value) in &single.http_headers {
            http.headers_mut().append(name, value.clone());
        }
    }
    http
}

/// A refusal as a GraphQL error body in the negotiated media type (no `data` entry with
/// `application/graphql-response+json`: nothing ran).
fn refused((status, code, message): Refusal, meta: &RequestMeta, media: MediaType) -> Response {
    let mut err = ServerError::new(message, None);
    err.extensions.get_or_insert_with(Default::default).set("code", code);
    let response = with_request_id(GqlResponse::from_errors(vec![err]), Some(&meta.request_id));
    let body = to_json(&response, media, true);
    let mut http = (status, axum::Json(body)).into_response();
    http.headers_mut().insert(header::CONTENT_TYPE, media.content_type());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        http.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    http
}

fn not_acceptable(meta: &RequestMeta) -> Response {
    let refusal = (
        StatusCode::NOT_ACCEPTABLE,
        codes::BAD_REQUEST,
        format!("this endpoint answers `{GRAPHQL_RESPONSE_JSON}` or `application/json`: accept one of them"),
    );
    refused(refusal, meta, MediaType::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(accept: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept.parse().unwrap());
        headers
    }

    #[test]
    fn negotiation_follows_the_spec() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json), "no Accept: application/json");
        assert_eq!(negotiate(&with_accept("*/*")), Some(MediaType::Json));
        assert_eq!(negotiate(&with_accept("application/json")), Some(MediaType::Json));
        assert_eq!(negotiate(&with_accept(GRAPHQL_RESPONSE_JSON)), Some(MediaType::GraphqlResponse));
        assert_eq!(
            negotiate(&with_accept("application/graphql-response+json, application/json;q=0.9")),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(
            negotiate(&with_accept("application/json, application/graphql-response+json")),
            Some(MediaType::Json),
            "equal weights: the first listed"
        );
        assert_eq!(
            negotiate(&with_accept("application/json;q=0.5, application/graphql-response+json")),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(negotiate(&with_accept("text/plain")), None);
        assert_eq!(negotiate(&with_accept("application/json;q=0")), None);
    }

    #[test]
    fn parameters_of_the_wrong_type_are_refused_not_defaulted() {
        let parse = |v: &serde_json::Value| {
            let text = v.to_string();
            let params: Params<'_> = serde_json::from_str(&text).unwrap();
            request_from_params(&params).map(|_| ())
        };
        assert!(parse(&json!({ "query": "{ a }", "variables": null, "operationName": null })).is_ok());
        let request = {
            let text =
                json!({ "query": "{ a }", "variables": { "x": [1, "two"] }, "extensions": { "e": true } }).to_string();
            request_from_params(&serde_json::from_str(&text).unwrap()).unwrap()
        };
        assert_eq!(serde_json::to_value(&request.variables).unwrap(), json!({ "x": [1, "two"] }));
        assert!(request.extensions.contains_key("e"));
        for bad in [
            json!({ "foo": 1 }),
            json!({ "query": 1 }),
            json!({ "query": "{ a }", "operationName": 1 }),
            json!({ "query": "{ a }", "variables": "x" }),
            json!({ "query": "{ a }", "extensions": [1] }),
        ] {
            let (status, code, _) = parse(&bad).unwrap_err();
            assert_eq!((status, code), (StatusCode::BAD_REQUEST, codes::BAD_REQUEST), "{bad}");
        }
    }

    #[test]
    fn get_refuses_mutations_with_405() {
        let (status, ..) = parse_get(form_urlencoded_pairs("query=mutation%20%7B%20__typename%20%7D")).unwrap_err();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(parse_get(form_urlencoded_pairs("query=%7B%20__typename%20%7D&variables=%7B%7D")).is_ok());
        let (status, ..) = parse_get(form_urlencoded_pairs("query=%7B%20a%20%7D&variables=nope")).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
