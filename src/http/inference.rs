//! The Open Inference Protocol (KServe V2) over REST, what KServe, MLServer, Triton and Seldon
//! clients speak: server health and metadata, model metadata and readiness per name and version,
//! and `infer` with one named tensor per feature and one row per house.
//!
//! Tensors are JSON (`data` arrays); the binary tensor extension is refused with a clear error.
//! Every inference goes through [`crate::service::AppState::predict`] like GraphQL and REST: the
//! same validation, the same models (the registry's names and versions), one log row per house
//! with route `v2:infer`. A request is priced whole or not at all: the protocol has no per-row
//! errors, so one invalid row refuses the request (every row is logged, rejected).

use async_graphql::ErrorExtensions;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[allow(unused_imports)] // the schemas the annotations name
use super::openapi::{
    InferenceRequest, InferenceResponse, ModelMetadata, ModelReady, ProtocolError, ServerLive, ServerMetadata,
    ServerReady,
};
use super::request::{body_refusal, request_meta};
use super::state::HttpState;
use crate::auth::{Caller, Scope};
use crate::error::AppError;
use crate::model::catalogue::ValueType;
use crate::model::{Feature, FeatureValue, HouseFeatures, LoadedModel};
use crate::service::{ItemPath, PredictionItem, Route};

/// The output tensors of `infer`.
const OUTPUTS: &[(&str, &str)] = &[("price", "FP64"), ("prediction_id", "BYTES")];

/// A protocol error: `{"error": "…"}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// An [`AppError`] as a protocol error (server faults logged with their cause, never sent).
fn app_error(err: AppError) -> Response {
    let status = match &err {
        AppError::InvalidInput { field, .. } if field == "model" => StatusCode::NOT_FOUND,
        AppError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        AppError::ModelLoad(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = err.to_string();
    let _ = err.extend();
    error(status, message)
}

/// The V2 datatype of a feature's tensor.
fn datatype(feature: Feature) -> &'static str {
    match feature.def().value {
        ValueType::Float => "FP64",
        ValueType::Int => "INT64",
        ValueType::Bool => "BOOL",
        ValueType::Label => "BYTES",
    }
}

/// `GET /v2`: server metadata.
#[utoipa::path(get, path = "/v2", tag = "inference", summary = "Server metadata",
    responses((status = 200, description = "Name and version", body = ServerMetadata), (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = ProtocolError),
        (status = 403, description = "The key lacks the scope", body = ProtocolError),
        (status = 429, description = "Rate limited (Retry-After)")))]
pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "house-price-api", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
}

/// `GET /v2/health/live`.
#[utoipa::path(get, path = "/v2/health/live", tag = "inference", summary = "Server liveness",
    responses((status = 200, description = "Live", body = ServerLive)))]
pub async fn server_live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: 200 when `/health/ready` would be, else 503.
#[utoipa::path(get, path = "/v2/health/ready", tag = "inference", summary = "Server readiness",
    responses((status = 200, description = "Ready", body = ServerReady), (status = 503, description = "Not ready", body = ServerReady)))]
pub async fn server_ready(State(s): State<HttpState>) -> Response {
    let ready = super::health::check(&s).await.serving;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

/// The model `name` (highest version) or `name@version`, or why there is none (a 404).
fn model(s: &HttpState, name: &str, version: Option<&str>) -> Result<std::sync::Arc<LoadedModel>, String> {
    let spec = version.map_or_else(|| name.to_owned(), |v| format!("{name}@{v}"));
    let set = s.app.models.snapshot();
    set.find(&spec).ok_or_else(|| format!("model {spec:?} not found; loaded: {}", set.ids().join(", ")))
}

fn metadata(s: &HttpState, caller: Option<Extension<Caller>>, name: &str, version: Option<&str>) -> Response {
    if let Err(err) = allowed(s, caller, None) {
        return app_error(err);
    }
    let model = match model(s, name, version) {
        Ok(model) => model,
        Err(missing) => return error(StatusCode::NOT_FOUND, missing),
    };
    let set = s.app.models.snapshot();
    let versions: Vec<&str> =
        set.models().iter().filter(|m| m.card.name == name).map(|m| m.card.version.as_str()).collect();
    let inputs: Vec<Value> = model
        .card
        .features
        .iter()
        .filter_map(|f| Feature::from_name(&f.name))
        .map(|f| {
            json!({ "name": f.name(), "datatype": datatype(f), "shape": [-1],
                    "parameters": { "required": f.def().required, "unit": f.unit(), "description": f.description() } })
        })
        .collect();
    let outputs: Vec<Value> =
        OUTPUTS.iter().map(|(name, datatype)| json!({ "name": name, "datatype": datatype, "shape": [-1] })).collect();
    Json(json!({
        "name": model.card.name,
        "versions": versions,
        "platform": "smartcore",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": { "version": model.card.version, "algorithm": model.card.algorithm },
    }))
    .into_response()
}

/// `GET /v2/models/{name}`: the highest version's inputs (one per feature of its card) and outputs.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "inference", summary = "Model metadata (highest version)",
    params(("name" = String, Path, description = "Model name", example = "price-blend")),
    responses((status = 200, description = "Inputs and outputs", body = ModelMetadata), (status = 404, description = "No such model or version", body = ProtocolError), (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = ProtocolError),
        (status = 403, description = "The key lacks the scope", body = ProtocolError),
        (status = 429, description = "Rate limited (Retry-After)")))]
pub async fn model_metadata(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> Response {
    metadata(&s, caller, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}`.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "inference", summary = "Model metadata of one version",
    params(("name" = String, Path, description = "Model name", example = "price-blend"), ("version" = String, Path, description = "Model version", example = "1.0.0")),
    responses((status = 200, description = "Inputs and outputs", body = ModelMetadata), (status = 404, description = "No such model or version", body = ProtocolError), (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = ProtocolError),
        (status = 403, description = "The key lacks the scope", body = ProtocolError),
        (status = 429, description = "Rate limited (Retry-After)")))]
pub async fn model_version_metadata(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&s, caller, &name, Some(&version))
}

fn readiness(s: &HttpState, name: &str, version: Option<&str>) -> Response {
    match model(s, name, version) {
        Ok(model) => {
            Json(json!({ "name": model.card.name, "version": model.card.version, "ready": true })).into_response()
        }
        Err(missing) => error(StatusCode::NOT_FOUND, missing),
    }
}

/// `GET /v2/models/{name}/ready`: 200 when the model is loaded, else 404.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "inference", summary = "Model readiness",
    params(("name" = String, Path, description = "Model name", example = "price-blend")),
    responses((status = 200, description = "Loaded", body = ModelReady), (status = 404, description = "No such model or version", body = ProtocolError)))]
pub async fn model_ready(State(s): State<HttpState>, Path(name): Path<String>) -> Response {
    readiness(&s, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "inference", summary = "Model version readiness",
    params(("name" = String, Path, description = "Model name", example = "price-blend"), ("version" = String, Path, description = "Model version", example = "1.0.0")),
    responses((status = 200, description = "Loaded", body = ModelReady), (status = 404, description = "No such model or version", body = ProtocolError)))]
pub async fn model_version_ready(
    State(s): State<HttpState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&s, &name, Some(&version))
}

fn allowed(s: &HttpState, caller: Option<Extension<Caller>>, scope: Option<Scope>) -> Result<Caller, AppError> {
    let caller = caller.map(|c| c.0).unwrap_or_default();
    caller.require(s.app.config.access.access, scope, s.app.keys.is_empty())?;
    Ok(caller)
}

/// `POST /v2/models/{name}/infer`.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "inference", summary = "Price houses (highest version)",
    description = "One tensor per feature, one row per house (at most MAX_BATCH_SIZE). JSON tensors only. Every row is logged (route `v2:infer`); one invalid row refuses the request.",
    params(("name" = String, Path, description = "Model name", example = "price-blend")),
    request_body = InferenceRequest,
    responses((status = 200, description = "One value per row in each output", body = InferenceResponse),
        (status = 400, description = "Malformed request or an invalid row (the whole request is refused)", body = ProtocolError),
        (status = 404, description = "No such model or version", body = ProtocolError),
        (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = ProtocolError),
        (status = 403, description = "The key lacks the scope", body = ProtocolError),
        (status = 429, description = "Rate limited (Retry-After)"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProtocolError),
        (status = 503, description = "The prediction log cannot take the rows", body = ProtocolError),
        (status = 504, description = "Over REQUEST_TIMEOUT_MS", body = ProtocolError)))]
pub async fn infer(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(s, caller, headers, name, None, body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "inference", summary = "Price houses with one version",
    params(("name" = String, Path, description = "Model name", example = "price-blend"), ("version" = String, Path, description = "Model version", example = "1.0.0")),
    request_body = InferenceRequest,
    responses((status = 200, description = "One value per row in each output", body = InferenceResponse),
        (status = 400, description = "Malformed request or an invalid row (the whole request is refused)", body = ProtocolError),
        (status = 404, description = "No such model or version", body = ProtocolError),
        (status = 401, description = "A key is required (ACCESS=keys) or the one sent is not valid", body = ProtocolError),
        (status = 403, description = "The key lacks the scope", body = ProtocolError),
        (status = 429, description = "Rate limited (Retry-After)"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ProtocolError),
        (status = 503, description = "The prediction log cannot take the rows", body = ProtocolError),
        (status = 504, description = "Over REQUEST_TIMEOUT_MS", body = ProtocolError)))]
pub async fn infer_version(
    State(s): State<HttpState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(s, caller, headers, name, Some(version), body).await
}

async fn run_infer(
    s: HttpState,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    name: String,
    version: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, _, message) = body_refusal(&rejection, s.app.config.max_body_bytes);
            return error(status, message);
        }
    };
    let caller = match allowed(&s, caller, Some(Scope::Predict)) {
        Ok(caller) => caller,
        Err(err) => return app_error(err),
    };
    if headers.contains_key("inference-header-content-length") {
        return error(
            StatusCode::BAD_REQUEST,
            "binary tensor data is not supported: send JSON tensors (tritonclient: binary_data=False)",
        );
    }
    let mut meta = request_meta(&headers, Route::Inference, &caller);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request.get("id").and_then(Value::as_str).map(str::to_owned);
    if let Some(id) = id.as_deref().filter(|id| usable_id(id)) {
        // The protocol's request id is the request's id, in the log too.
        id.clone_into(&mut meta.request_id);
    }
    let spec = version.as_ref().map_or_else(|| name.clone(), |v| format!("{name}@{v}"));
    let timeout = s.app.config.limits.request_timeout();
    let work = async {
        let rows = match parse_rows(&body, &request, s.app.config.limits.max_batch_size) {
            Ok(rows) => rows,
            Err(err) => {
                let raw = if request.is_null() {
                    json!({ "unparsed": String::from_utf8_lossy(&body.slice(..body.len().min(4096))) })
                } else {
                    request.clone()
                };
                return Err(s.app.reject(&meta, err, vec![(None, raw)]).await);
            }
        };
        s.app.predict(&meta, Some(&spec), all_or_nothing(rows)).await
    };
    let outcomes = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(err)) => return app_error(err),
        Err(_) => return app_error(AppError::Timeout(timeout.as_millis() as u64)),
    };
    let mut priced = Vec::with_capacity(outcomes.len());
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(prediction) => priced.push(prediction),
            Err(err) => errors.push(err),
        }
    }
    if !errors.is_empty() {
        // The row that stopped the request, not one of the rows it stopped.
        let stopper = errors.iter().position(|e| e.field() != Some("inputs")).unwrap_or_default();
        return app_error(errors.swap_remove(stopper));
    }
    let requested = requested_outputs(&request);
    let (model_name, model_version) = priced
        .first()
        .map(|p| (p.model_name.clone(), p.model_version.clone()))
        .unwrap_or((name, version.unwrap_or_default()));
    let n = priced.len();
    let mut outputs = Vec::new();
    for (output, datatype) in OUTPUTS {
        if requested.as_ref().is_some_and(|r| !r.iter().any(|o| o == output)) {
            continue;
        }
        let data: Vec<Value> = match *output {
            "price" => priced.iter().map(|p| json!(p.price)).collect(),
            _ => priced.iter().map(|p| json!(p.id.to_string())).collect(),
        };
        outputs.push(json!({ "name": output, "datatype": datatype, "shape": [n], "data": data }));
    }
    let mut response = json!({ "model_name": model_name, "model_version": model_version, "outputs": outputs });
    if let Some(id) = id {
        response["id"] = json!(id);
    }
    response["parameters"] = json!({ "request_id": meta.request_id });
    Json(response).into_response()
}

/// A request id the log can store (as for `x-request-id`).
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The output names the request asked for (`outputs: [{"name": …}]`), or `None` for all.
fn requested_outputs(request: &Value) -> Option<Vec<String>> {
    let outputs = request.get("outputs")?.as_array()?;
    Some(outputs.iter().filter_map(|o| o.get("name")?.as_str().map(str::to_owned)).collect())
}

/// One house per row: its features, or why they are not usable; and the row as received.
type Row = (Result<HouseFeatures, AppError>, Value);

/// Reads the request's tensors into rows. An error here refuses the request as a whole: not
/// JSON, no `inputs`, an unknown, repeated or mistyped tensor, shapes that disagree, a missing
/// required feature, more rows than `MAX_BATCH_SIZE`, an unknown requested output.
fn parse_rows(body: &[u8], request: &Value, max_rows: usize) -> Result<Vec<Row>, AppError> {
    if request.is_null() {
        let err = serde_json::from_slice::<Value>(body).err().map_or_else(|| "null".to_owned(), |e| e.to_string());
        return Err(AppError::invalid("body", format!("is not a JSON inference request: {err}")));
    }
    if let Some(requested) = requested_outputs(request) {
        for name in requested {
            if !OUTPUTS.iter().any(|(o, _)| *o == name) {
                let known: Vec<&str> = OUTPUTS.iter().map(|(o, _)| *o).collect();
                return Err(AppError::invalid("outputs", format!("unknown output {name:?}; outputs: {known:?}")));
            }
        }
    }
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| AppError::invalid("inputs", "must be a non-empty array of tensors"))?;
    let mut columns: Vec<(Feature, Vec<Value>)> = Vec::with_capacity(inputs.len());
    let mut rows = None;
    for tensor in inputs {
        let (feature, data) = tensor_column(tensor)?;
        if columns.iter().any(|(f, _)| *f == feature) {
            return Err(AppError::invalid("inputs", format!("input {:?} is given twice", feature.name())));
        }
        match rows {
            None => rows = Some(data.len()),
            Some(n) if n != data.len() => {
                return Err(AppError::invalid(
                    "inputs",
                    format!(
                        "input {:?} has {} rows, the first input {n}: every input needs one value per row",
                        feature.name(),
                        data.len()
                    ),
                ));
            }
            Some(_) => {}
        }
        columns.push((feature, data));
    }
    let n = rows.unwrap_or_default();
    if n == 0 || n > max_rows {
        return Err(AppError::invalid(
            "inputs",
            format!("must have between 1 and {max_rows} rows (MAX_BATCH_SIZE), got {n}"),
        ));
    }
    for required in Feature::ALL.into_iter().filter(|f| f.def().required) {
        if !columns.iter().any(|(f, _)| *f == required) {
            return Err(AppError::invalid("inputs", format!("input {:?} is required", required.name())));
        }
    }
    Ok((0..n)
        .map(|row| {
            let mut house = HouseFeatures::default();
            let mut raw = Map::new();
            let mut problem = None;
            for (feature, data) in &columns {
                let value = &data[row];
                raw.insert(feature.name().to_owned(), value.clone());
                let field = || format!("{}[{row}]", feature.name());
                let parsed = feature_value(*feature, value).map_err(|message| AppError::invalid(field(), message));
                let set =
                    parsed.and_then(|v| house.set(*feature, v).map_err(|e| AppError::invalid(field(), e.message)));
                if let (Err(err), None) = (set, &problem) {
                    problem = Some(err);
                }
            }
            let features = match problem {
                Some(err) => Err(err),
                None => house
                    .validate()
                    .map(|()| house)
                    .map_err(|e| AppError::invalid(format!("{}[{row}]", e.feature.name()), e.message)),
            };
            (features, Value::Object(raw))
        })
        .collect())
}

/// A tensor's feature and its values, one per row (`shape` `[n]` or `[n, 1]`).
fn tensor_column(tensor: &Value) -> Result<(Feature, Vec<Value>), AppError> {
    let name = tensor
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::invalid("inputs", "every input needs a \"name\""))?;
    let feature = Feature::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
        AppError::invalid("inputs", format!("unknown input {name:?}; inputs: {}", known.join(", ")))
    })?;
    let field = |what: &str| AppError::invalid(name, what.to_owned());
    let datatype = tensor.get("datatype").and_then(Value::as_str).ok_or_else(|| field("needs a \"datatype\""))?;
    let expected = datatype_fits(feature, datatype);
    if !expected {
        return Err(field(&format!("has datatype {datatype}, expected {}", datatype_of(feature))));
    }
    let shape: Vec<i64> = tensor
        .get("shape")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_i64).collect())
        .ok_or_else(|| field("needs a \"shape\""))?;
    let rows = match shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => *n as usize,
        _ => return Err(field(&format!("has shape {shape:?}; expected [rows] or [rows, 1]"))),
    };
    let mut data = Vec::new();
    flatten(tensor.get("data").ok_or_else(|| field("needs \"data\""))?, &mut data);
    if data.len() != rows {
        return Err(field(&format!("has {} values for shape {shape:?}", data.len())));
    }
    Ok((feature, data))
}

fn datatype_of(feature: Feature) -> &'static str {
    datatype(feature)
}

/// Whether a tensor of `datatype` can carry `feature`: any number type for numbers, BOOL (or a
/// number) for yes/no features, BYTES for categories.
fn datatype_fits(feature: Feature, datatype: &str) -> bool {
    let numeric = matches!(
        datatype,
        "FP16" | "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64"
    );
    match feature.def().value {
        ValueType::Float | ValueType::Int => numeric,
        ValueType::Bool => numeric || datatype == "BOOL",
        ValueType::Label => datatype == "BYTES",
    }
}

/// Row-major `data`, nested or flat, as one list.
fn flatten(data: &Value, out: &mut Vec<Value>) {
    match data {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other.clone()),
    }
}

/// One tensor element as the feature's value.
fn feature_value(feature: Feature, value: &Value) -> Result<FeatureValue, String> {
    match (feature.def().value, value) {
        (ValueType::Label, Value::String(label)) => Ok(FeatureValue::Category(label.clone())),
        (ValueType::Label, _) => Err("must be a string (BYTES)".to_owned()),
        (ValueType::Bool, Value::Bool(b)) => Ok(FeatureValue::Number(f64::from(u8::from(*b)))),
        (_, Value::Number(n)) => n.as_f64().map(FeatureValue::Number).ok_or_else(|| "must be a number".to_owned()),
        _ => Err("must be a number".to_owned()),
    }
}

/// The rows as prediction items, all or nothing: when any row is invalid, every row is refused
/// (each logged as rejected, the valid ones saying which row stopped them).
fn all_or_nothing(rows: Vec<Row>) -> Vec<PredictionItem> {
    let first_bad = rows.iter().position(|(features, _)| features.is_err());
    rows.into_iter()
        .enumerate()
        .map(|(i, (features, raw_input))| {
            let features = match (features, first_bad) {
                (Ok(_), Some(bad)) => {
                    Err(AppError::invalid("inputs", format!("not priced: row {bad} of the request is invalid")))
                }
                (features, _) => features,
            };
            PredictionItem { path: ItemPath::Batch(i), features, raw_input }
        })
        .collect()
}
