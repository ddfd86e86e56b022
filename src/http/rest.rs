//! The seed service's REST route, byte-compatible: `POST /prever_precos/`.

use async_graphql::ErrorExtensions;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[allow(unused_imports)] // the schemas the annotations name
use super::openapi::{SeedError, SeedRequest, SeedResponse};
use super::request::{body_refusal, request_meta};
use super::state::HttpState;
use crate::auth::{Caller, Scope};
use crate::error::AppError;
use crate::model::{Feature, HouseFeatures};
use crate::service::{ItemPath, PredictionItem, Route};

/// `POST /prever_precos/`: the seed service's contract, `{"square_feet", "num_bedrooms",
/// "num_bathrooms"}` → `{"previsao": [price]}`, with FastAPI-shaped 422 errors.
#[utoipa::path(post, path = "/prever_precos/", tag = "seed",
    summary = "Price a house (the seed service's route)",
    description = "The three inputs of the seed service; the answer is the price in USD, alone in a list. Logged as route `rest:/prever_precos/`.",
    request_body = SeedRequest,
    responses(
        (status = 200, description = "The price", body = SeedResponse),
        (status = 422, description = "Invalid body: FastAPI's shape (`detail` lists the fields), code BAD_USER_INPUT", body = SeedError),
        (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = SeedError),
        (status = 403, description = "The key lacks the predict scope", body = SeedError),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = SeedError),
        (status = 429, description = "Rate limited (Retry-After)"),
        (status = 503, description = "The prediction log cannot take the row (SERVICE_UNAVAILABLE)", body = SeedError),
        (status = 504, description = "Over REQUEST_TIMEOUT_MS", body = SeedError)
    ))]
pub async fn prever_precos(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, code, detail) = body_refusal(&rejection, s.app.config.max_body_bytes);
            return (status, Json(json!({ "detail": detail, "code": code }))).into_response();
        }
    };
    let caller = caller.map(|c| c.0).unwrap_or_default();
    if let Err(err) = caller.require(s.app.config.access.access, Some(Scope::Predict), s.app.keys.is_empty()) {
        return rest_error(err);
    }
    let meta = request_meta(&headers, Route::RestPreverPrecos, &caller);
    let timeout = s.app.config.limits.request_timeout();
    let work = async {
        let (features, raw_input) = match serde_json::from_slice::<Value>(&body) {
            Ok(value) => (parse_seed_body(&value), value),
            Err(err) => (
                Err(AppError::invalid("body", format!("is not valid JSON: {err}"))),
                json!({ "unparsed": String::from_utf8_lossy(&body.slice(..body.len().min(4096))) }),
            ),
        };
        let item = PredictionItem { path: ItemPath::Single, features, raw_input };
        s.app.predict(&meta, None, vec![item]).await
    };
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(mut outcomes)) => {
            outcomes.pop().unwrap_or_else(|| Err(AppError::Internal(anyhow::anyhow!("no outcome"))))
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(AppError::Timeout(timeout.as_millis() as u64)),
    };
    match outcome {
        Ok(priced) => Json(json!({ "previsao": [priced.price] })).into_response(),
        Err(err) => rest_error(err),
    }
}

/// `POST /prever_precos`: the same route without the trailing slash (FastAPI redirected it).
#[utoipa::path(post, path = "/prever_precos", tag = "seed",
    summary = "Price a house (the seed's route, without the trailing slash)",
    request_body = SeedRequest,
    responses(
        (status = 200, description = "The price", body = SeedResponse),
        (status = 422, description = "Invalid body: FastAPI's shape (`detail` lists the fields), code BAD_USER_INPUT", body = SeedError),
        (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = SeedError),
        (status = 403, description = "The key lacks the predict scope", body = SeedError),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = SeedError),
        (status = 429, description = "Rate limited (Retry-After)"),
        (status = 503, description = "The prediction log cannot take the row (SERVICE_UNAVAILABLE)", body = SeedError),
        (status = 504, description = "Over REQUEST_TIMEOUT_MS", body = SeedError)
    ))]
pub async fn prever_precos_no_slash(
    state: State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    prever_precos(state, caller, headers, body).await
}

/// Reads the seed body like pydantic does: numbers for the floats, integral numbers for the int,
/// every field required. Errors name the field as the seed did.
fn parse_seed_body(body: &Value) -> Result<HouseFeatures, AppError> {
    let Some(obj) = body.as_object() else {
        return Err(AppError::invalid("body", "must be a JSON object"));
    };
    let number = |feature: Feature| -> Result<f64, AppError> {
        let name = feature.rest_name();
        match obj.get(name) {
            None | Some(Value::Null) => Err(AppError::invalid(name, "field required")),
            Some(v) => v.as_f64().ok_or_else(|| AppError::invalid(name, "must be a number")),
        }
    };
    let square_feet = number(Feature::SquareFeet)?;
    let bedrooms = number(Feature::Bedrooms)?;
    if bedrooms.fract() != 0.0 || bedrooms.abs() > 1e15 {
        return Err(AppError::invalid(Feature::Bedrooms.rest_name(), "must be a whole number"));
    }
    Ok(HouseFeatures::new(square_feet, bedrooms as i64, number(Feature::Bathrooms)?))
}

fn rest_error(err: AppError) -> Response {
    let code = err.code();
    let (status, detail) = match &err {
        AppError::InvalidInput { field, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{ "loc": ["body", field], "msg": message, "type": "value_error" }]),
        ),
        AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, json!(err.to_string())),
        AppError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, json!(err.to_string())),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, json!(err.to_string())),
        AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, json!(err.to_string())),
        AppError::Forbidden(_) => (StatusCode::FORBIDDEN, json!(err.to_string())),
        AppError::ModelLoad(_) | AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, json!(err.to_string())),
    };
    // Log server faults with their cause chain, exactly as for GraphQL.
    let _ = err.extend();
    (status, Json(json!({ "detail": detail, "code": code }))).into_response()
}
