//! The OpenAPI 3.1 document of the REST routes, served at `/openapi.json` (Swagger UI at `/docs`,
//! ReDoc at `/redoc`). Each route's entry comes from the `#[utoipa::path]` annotation on its
//! handler, and `http::app` registers the route from that same annotation (utoipa-axum): the
//! document lists exactly the routes the router serves. GraphQL is described by its own schema
//! (`schema.graphql`), not here.
//!
//! The types below describe the JSON the handlers write: the handlers build it with `json!`, and
//! the schemathesis run of `make test` checks every response against these schemas.

use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// Title, description and tags of the document; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "house-price-api (REST)",
        description = "House prices from models trained on the Ames, Iowa sales. Every prediction is logged to PostgreSQL. \
                       GraphQL (the full API: history, monitoring, subscriptions) is at /graphql; this document covers the \
                       REST routes: the seed-compatible route, health and metrics, and the Open Inference Protocol (KServe V2)."
    ),
    tags(
        (name = "seed", description = "The route of the FastAPI service this one replaces, byte-compatible."),
        (name = "health", description = "Probes and metrics."),
        (name = "inference", description = "The Open Inference Protocol (KServe V2) over REST: what KServe, MLServer, Triton and Seldon clients speak.")
    )
)]
pub struct ApiDoc;

/// The seed's request body.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2 }))]
pub struct SeedRequest {
    /// Above-ground living area, square feet. (The limits are the feature catalogue's; a test
    /// holds them equal.)
    #[schema(minimum = 100, maximum = 100000)]
    pub square_feet: f64,
    /// Bedrooms above grade, a whole number.
    #[schema(minimum = 0, maximum = 50)]
    pub num_bedrooms: i64,
    /// Bathrooms above grade, a half bath counting 0.5.
    #[schema(minimum = 0, maximum = 50)]
    pub num_bathrooms: f64,
}

/// The seed's answer: one price, in USD.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "previsao": [181234.5] }))]
pub struct SeedResponse {
    /// The predicted price, alone in a list as the seed answered.
    pub previsao: Vec<f64>,
}

/// One invalid field, as FastAPI reports it.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    /// Where: `["body", field]`.
    pub loc: Vec<String>,
    /// What is wrong.
    pub msg: String,
    /// Always `value_error`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// An error of the seed route: FastAPI's shape, plus the service's stable error `code`.
#[derive(Serialize, ToSchema)]
pub struct SeedError {
    /// The invalid fields (422), or a message (other statuses).
    pub detail: Detail,
    /// The stable error code (README "Errors"), e.g. `BAD_USER_INPUT`.
    pub code: String,
}

/// `detail` of a [`SeedError`].
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Detail {
    /// 422: one entry per invalid field.
    Fields(Vec<FieldError>),
    /// Any other error.
    Message(String),
}

/// `/health/live`.
#[derive(Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: String,
}

/// The Open Inference Protocol's error body.
#[derive(Serialize, ToSchema)]
pub struct ProtocolError {
    /// What went wrong; for an invalid row, `input[row]: reason`.
    pub error: String,
}

/// `GET /v2`.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    /// `house-price-api`.
    pub name: String,
    /// The service's version.
    pub version: String,
    /// Protocol extensions supported (none).
    pub extensions: Vec<String>,
}

/// `GET /v2/health/live`.
#[derive(Serialize, ToSchema)]
pub struct ServerLive {
    /// Always true while the process answers.
    pub live: bool,
}

/// `GET /v2/health/ready`.
#[derive(Serialize, ToSchema)]
pub struct ServerReady {
    /// Whether the service can answer durably (as `/health/ready`).
    pub ready: bool,
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`.
#[derive(Serialize, ToSchema)]
pub struct ModelReady {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Always true: only loaded models are found.
    pub ready: bool,
}

/// An input or output tensor's metadata.
#[derive(Serialize, ToSchema)]
pub struct TensorMetadata {
    /// The feature's API name (inputs), `price` or `prediction_id` (outputs).
    pub name: String,
    /// FP64, INT64, BOOL or BYTES.
    pub datatype: String,
    /// `[-1]`: one value per row.
    pub shape: Vec<i64>,
    /// Inputs: whether it is required, its unit and meaning.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Serialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name (the registry's).
    pub name: String,
    /// Every loaded version of it.
    pub versions: Vec<String>,
    /// `smartcore`.
    pub platform: String,
    /// One tensor per feature of the model's card.
    pub inputs: Vec<TensorMetadata>,
    /// `price` (FP64) and `prediction_id` (BYTES, the log row's id).
    pub outputs: Vec<TensorMetadata>,
    /// The version described and the algorithm.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

/// One input tensor: a feature, one value per house.
#[derive(Serialize, ToSchema)]
pub struct RequestInput {
    /// The feature's API name (see the model's metadata).
    pub name: String,
    /// `[rows]` or `[rows, 1]`.
    pub shape: Vec<i64>,
    /// A number type for numbers, BOOL or a number for yes/no features, BYTES for categories.
    pub datatype: String,
    /// Ignored.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// The values, row-major, flat or nested.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// An output the client asks for.
#[derive(Serialize, ToSchema)]
pub struct RequestedOutput {
    /// `price` or `prediction_id`.
    pub name: String,
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({ "id": "r1", "inputs": [
    { "name": "squareFeet", "datatype": "FP64", "shape": [1], "data": [1500] },
    { "name": "bedrooms", "datatype": "INT64", "shape": [1], "data": [3] },
    { "name": "bathrooms", "datatype": "FP64", "shape": [1], "data": [2] } ] }))]
pub struct InferenceRequest {
    /// The request's id: echoed, and stored as the log rows' `request_id`.
    pub id: Option<String>,
    /// Ignored.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// One tensor per feature; the required ones must be there.
    #[schema(min_items = 1)]
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted (default: all).
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One output tensor.
#[derive(Serialize, ToSchema)]
pub struct ResponseOutput {
    /// `price` or `prediction_id`.
    pub name: String,
    /// `[rows]`.
    pub shape: Vec<i64>,
    /// FP64 or BYTES.
    pub datatype: String,
    /// One value per row.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// The answer to `infer`.
#[derive(Serialize, ToSchema)]
pub struct InferenceResponse {
    /// The model that priced the rows.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// The request's `id`, if it had one.
    pub id: Option<String>,
    /// `request_id`: the log rows' request id.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The requested outputs.
    pub outputs: Vec<ResponseOutput>,
}
