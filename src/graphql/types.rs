//! GraphQL input and output types. Doc comments here become the descriptions in `schema.graphql`.

use async_graphql::{ID, InputObject, Json, SimpleObject};

pub use crate::log::HistoryFilter as PredictionFilter;
use chrono::{DateTime, Utc};

use crate::error::AppError;
use crate::log::{LogRecord, PredictionStatus};
use crate::model::{HouseFeatures, LoadedModel};

/// The features of one house to price.
#[derive(Debug, Clone, Copy, InputObject, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HouseInput {
    /// Above-ground living area in square feet (Ames `Gr_Liv_Area`); 100 to 100,000.
    pub square_feet: f64,
    /// Bedrooms above grade (Ames `Bedroom_AbvGr`); 0 to 50.
    pub bedrooms: i32,
    /// Full bathrooms plus 0.5 per half bathroom, above grade; 0 to 50.
    pub bathrooms: f64,
}

impl From<HouseInput> for HouseFeatures {
    fn from(input: HouseInput) -> Self {
        Self { square_feet: input.square_feet, bedrooms: i64::from(input.bedrooms), bathrooms: input.bathrooms }
    }
}

/// A model version, as recorded with a prediction.
#[derive(Debug, Clone, SimpleObject)]
pub struct ModelRef {
    /// Model name, e.g. `baseline-linear`.
    pub name: String,
    /// Model version, e.g. `1.0.0`.
    pub version: String,
}

/// A priced house; its log row is committed (in the default durable mode) before this is returned.
#[derive(Debug, Clone, SimpleObject)]
pub struct Prediction {
    /// Id of the log row (`prediction_log.id`); use it with `prediction(id:)`.
    pub id: ID,
    /// The HTTP request's `x-request-id` (shared by all items of a batch).
    pub request_id: String,
    /// Predicted sale price in US dollars.
    pub price: f64,
    /// The model that priced it.
    pub model: ModelRef,
    /// When the request was handled.
    pub created_at: DateTime<Utc>,
    /// Microseconds spent handling the request before logging.
    pub latency_us: i64,
}

impl Prediction {
    /// From an `ok` log row.
    pub fn from_record(record: &LogRecord) -> Result<Self, AppError> {
        let price =
            record.price.ok_or_else(|| AppError::Internal(anyhow::anyhow!("ok row {} has no price", record.id)))?;
        Ok(Self {
            id: ID(record.id.to_string()),
            request_id: record.request_id.clone(),
            price,
            model: model_ref(record)
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("row {} has no model", record.id)))?,
            created_at: record.created_at,
            latency_us: record.latency_us,
        })
    }
}

fn model_ref(record: &LogRecord) -> Option<ModelRef> {
    Some(ModelRef { name: record.model_name.clone()?, version: record.model_version.clone()? })
}

/// Why an item (or a logged request) was not priced.
#[derive(Debug, Clone, SimpleObject)]
pub struct PredictionError {
    /// Error code, as in `extensions.code` (e.g. `BAD_USER_INPUT`).
    pub code: String,
    /// The offending input field, e.g. `inputs[2].squareFeet`.
    pub field: Option<String>,
    /// Human-readable reason.
    pub message: String,
}

impl From<&AppError> for PredictionError {
    fn from(err: &AppError) -> Self {
        Self { code: err.code().to_owned(), field: err.field().map(str::to_owned), message: err.to_string() }
    }
}

/// One item of a `predictPrices` batch: exactly one of `prediction` and `error` is set.
#[derive(Debug, Clone, SimpleObject)]
pub struct BatchPredictionItem {
    /// Position of the item in `inputs` (0-based).
    pub index: i32,
    /// The price, if the item was valid.
    pub prediction: Option<Prediction>,
    /// Why the item was not priced.
    pub error: Option<PredictionError>,
}

/// The typed features of a logged request (null where the client sent no usable value).
#[derive(Debug, Clone, SimpleObject)]
pub struct LoggedFeatures {
    /// Living area, square feet.
    pub square_feet: Option<f64>,
    /// Bedrooms.
    pub bedrooms: Option<i32>,
    /// Bathrooms.
    pub bathrooms: Option<f64>,
}

/// One row of the prediction log: an accepted or rejected prediction request.
#[derive(Debug, Clone, SimpleObject)]
pub struct PredictionRecord {
    /// Row id (UUIDv7).
    pub id: ID,
    /// The HTTP request's `x-request-id`.
    pub request_id: String,
    /// Position in a `predictPrices` batch; null for single predictions.
    pub item_index: Option<i32>,
    /// When the request was handled.
    pub created_at: DateTime<Utc>,
    /// Entry point: `graphql` or `rest:/prever_precos/`.
    pub route: String,
    /// GraphQL operation name, if any.
    pub operation: Option<String>,
    /// The client's User-Agent.
    pub client: Option<String>,
    /// Outcome.
    pub status: PredictionStatus,
    /// Typed input features.
    pub features: LoggedFeatures,
    /// The input exactly as received.
    pub raw_input: Json<serde_json::Value>,
    /// Predicted price in USD (null unless `status` is `OK`).
    pub price: Option<f64>,
    /// The model that answered (or would have).
    pub model: Option<ModelRef>,
    /// Microseconds spent handling the request before logging.
    pub latency_us: i64,
    /// Why it was not priced (null when `status` is `OK`).
    pub error: Option<PredictionError>,
}

impl From<&LogRecord> for PredictionRecord {
    fn from(r: &LogRecord) -> Self {
        Self {
            id: ID(r.id.to_string()),
            request_id: r.request_id.clone(),
            item_index: r.item_index,
            created_at: r.created_at,
            route: r.route.clone(),
            operation: r.operation.clone(),
            client: r.client.clone(),
            status: r.status,
            features: LoggedFeatures { square_feet: r.square_feet, bedrooms: r.bedrooms, bathrooms: r.bathrooms },
            raw_input: Json(r.raw_input.clone()),
            price: r.price,
            model: model_ref(r),
            latency_us: r.latency_us,
            error: r.error_code.as_ref().map(|code| PredictionError {
                code: code.clone(),
                field: r.error_field.clone(),
                message: r.error_message.clone().unwrap_or_default(),
            }),
        }
    }
}

/// Relay page information.
#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    /// Whether more rows follow `endCursor`.
    pub has_next_page: bool,
    /// Always false: pagination is forward only (`first`/`after`).
    pub has_previous_page: bool,
    /// Cursor of the first edge.
    pub start_cursor: Option<String>,
    /// Cursor of the last edge; pass it as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// A log row with its cursor.
#[derive(Debug, Clone, SimpleObject)]
pub struct PredictionEdge {
    /// Opaque position of this row.
    pub cursor: String,
    /// The row.
    pub node: PredictionRecord,
}

/// A page of the prediction log, newest first.
#[derive(Debug, Clone, SimpleObject)]
pub struct PredictionConnection {
    /// Rows with cursors.
    pub edges: Vec<PredictionEdge>,
    /// The same rows without cursors.
    pub nodes: Vec<PredictionRecord>,
    /// Pagination state.
    pub page_info: PageInfo,
}

/// A feature a model takes, with the range it was trained on.
#[derive(Debug, Clone, SimpleObject)]
pub struct FeatureInfo {
    /// `HouseInput` field name.
    pub name: String,
    /// How it is derived from the Ames columns.
    pub source: String,
    /// Unit.
    pub unit: String,
    /// Meaning.
    pub description: String,
    /// Smallest training value.
    pub min: f64,
    /// Largest training value.
    pub max: f64,
    /// Mean training value.
    pub mean: f64,
}

/// Holdout metrics of a model.
#[derive(Debug, Clone, SimpleObject)]
pub struct ModelMetrics {
    /// Mean absolute error, USD.
    pub mae: f64,
    /// Root mean squared error, USD.
    pub rmse: f64,
    /// Root mean squared log error.
    pub rmsle: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Rows the model was fitted on.
    pub train_rows: i32,
    /// Rows the metrics were computed on.
    pub holdout_rows: i32,
}

/// A loaded model version and its card.
#[derive(Debug, Clone, SimpleObject)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// What the model is.
    pub description: String,
    /// Estimator.
    pub algorithm: String,
    /// Whether it answers requests by default.
    pub is_default: bool,
    /// Input features with training ranges.
    pub features: Vec<FeatureInfo>,
    /// Holdout metrics.
    pub metrics: ModelMetrics,
    /// sha256 of the artifact, verified when loaded.
    pub checksum: String,
    /// sha256 of the training data.
    pub training_data_sha256: String,
    /// When it was trained.
    pub trained_at: DateTime<Utc>,
}

impl ModelInfo {
    /// From a loaded model.
    pub fn new(model: &LoadedModel, is_default: bool) -> Self {
        let card = &model.card;
        Self {
            name: card.name.clone(),
            version: card.version.clone(),
            description: card.description.clone(),
            algorithm: card.algorithm.clone(),
            is_default,
            features: card
                .features
                .iter()
                .map(|f| FeatureInfo {
                    name: f.name.clone(),
                    source: f.source.clone(),
                    unit: f.unit.clone(),
                    description: f.description.clone(),
                    min: f.min,
                    max: f.max,
                    mean: f.mean,
                })
                .collect(),
            metrics: ModelMetrics {
                mae: card.metrics.mae,
                rmse: card.metrics.rmse,
                rmsle: card.metrics.rmsle,
                r2: card.metrics.r2,
                train_rows: i32::try_from(card.training.rows_train).unwrap_or(i32::MAX),
                holdout_rows: i32::try_from(card.training.rows_holdout).unwrap_or(i32::MAX),
            },
            checksum: card.artifact.sha256.clone(),
            training_data_sha256: card.training.data_sha256.clone(),
            trained_at: card.trained_at,
        }
    }
}
