//! GraphQL input and output types. Doc comments here become the descriptions in `schema.graphql`.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};

pub use crate::log::PredictionFilter;
use chrono::{DateTime, Utc};

use crate::error::AppError;
use crate::log::{PredictionRecord, PredictionStatus};
use crate::model::card::FeatureInfo;
use crate::model::{
    Feature, FeatureValue, HouseFeatures, LoadedModel, MONITORED_LEVEL, ModelSet, PredictionWarning, ScoreError,
};
use crate::service::{AppState, Prediction};

use super::context::{data, resolve};

/// Declares `HouseInput` and its conversion from the feature catalogue (`model/catalogue.rs`):
/// one field per feature, typed by its value type, required or optional as the catalogue says,
/// described by its description, unit, range and Ames source.
macro_rules! house_input {
    ($( $variant:ident $field:ident $name:literal $rest:literal $required:ident $value:ident $unit:literal
        $range:tt $source:ident $source_args:tt $description:literal ),* $(,)?) => {
        /// The features of one house to price. The first three are required (the seed service's
        /// inputs); the others are optional: a model that needs one you did not send uses the
        /// imputation value from its card and lists the feature in `Prediction.imputedFeatures`. A
        /// category value the model never saw (not in its `features.categories`) is imputed too,
        /// with a warning in `Prediction.warnings`.
        #[derive(Debug, Clone, InputObject, serde::Serialize)]
        pub struct HouseInput {
            $(
                #[doc = concat!($description, " (", $unit, house_input!(@range $range), ").",
                                house_input!(@hint $value), " Ames: ", house_input!(@source $source $source_args), ".")]
                #[graphql(name = $name)]
                #[serde(rename = $name)]
                #[serde(skip_serializing_if = "house_input_is_none")]
                pub $field: house_input!(@type $required $value),
            )*
        }

        impl From<HouseInput> for HouseFeatures {
            fn from(input: HouseInput) -> Self {
                let mut house = HouseFeatures::default();
                $( house_input!(@set house, input.$field, $variant, $required $value); )*
                house
            }
        }
    };
    (@range []) => { "" };
    (@range [$min:literal, $max:literal]) => { concat!("; ", stringify!($min), " to ", stringify!($max)) };
    (@hint label) => { " One of the labels in the answering model's `features.categories`; another is imputed, with a warning." };
    (@hint $value:ident) => { "" };
    (@source column($c:literal)) => { concat!("`", $c, "`") };
    (@source baths($full:literal, $half:literal)) => { concat!("`", $full, "` + 0.5 × `", $half, "`") };
    (@source yes($c:literal)) => { concat!("`", $c, "` = Y") };
    (@type required float) => { f64 };
    (@type required int) => { i32 };
    (@type optional float) => { Option<f64> };
    (@type optional int) => { Option<i32> };
    (@type optional bool) => { Option<bool> };
    (@type optional label) => { Option<String> };
    // The seed's three inputs are typed fields of `HouseFeatures`; the others go in its map.
    (@set $house:ident, $v:expr, SquareFeet, required float) => { $house.square_feet = $v; };
    (@set $house:ident, $v:expr, Bedrooms, required int) => { $house.bedrooms = i64::from($v); };
    (@set $house:ident, $v:expr, Bathrooms, required float) => { $house.bathrooms = $v; };
    (@set $house:ident, $v:expr, $variant:ident, optional $value:ident) => {
        if let Some(v) = $v {
            $house.optional.insert(Feature::$variant, house_input!(@value $value v));
        }
    };
    (@value float $v:ident) => { FeatureValue::Number($v) };
    (@value int $v:ident) => { FeatureValue::Number(f64::from($v)) };
    (@value bool $v:ident) => { FeatureValue::Number(if $v { 1.0 } else { 0.0 }) };
    (@value label $v:ident) => { FeatureValue::Category($v) };
}
crate::model::catalogue::feature_catalogue!(house_input);

/// `skip_serializing_if` for every `HouseInput` field: optional ones are left out when absent.
fn house_input_is_none<T: HouseInputField>(value: &T) -> bool {
    value.is_absent()
}

/// Whether a `HouseInput` field was left out (never, for the required ones).
trait HouseInputField {
    fn is_absent(&self) -> bool;
}

impl<T> HouseInputField for Option<T> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

impl HouseInputField for f64 {
    fn is_absent(&self) -> bool {
        false
    }
}

impl HouseInputField for i32 {
    fn is_absent(&self) -> bool {
        false
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

// The GraphQL view of `service::Prediction` (no copy of it: each field reads the scoring result).
/// A priced house; its log row is committed (in the default durable mode) before this is returned.
#[Object]
impl Prediction {
    /// Id of the log row (`prediction_log.id`); use it with `prediction(id:)`.
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    /// The HTTP request's `x-request-id` (shared by all items of a batch).
    async fn request_id(&self) -> &str {
        &self.request_id
    }
    /// Predicted sale price in US dollars.
    async fn price(&self) -> f64 {
        self.price
    }
    /// The model that priced it.
    async fn model(&self) -> ModelRef {
        ModelRef { name: self.model_name.clone(), version: self.model_version.clone() }
    }
    /// When the request was handled.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Microseconds spent handling the request before logging.
    async fn latency_us(&self) -> i64 {
        self.latency_us
    }
    /// Features the model needed but the input did not give, filled with the card's imputation
    /// values (empty when the input was complete for this model).
    async fn imputed_features(&self) -> &[String] {
        &self.imputed_features
    }
    /// Inputs outside the model's training range, or labels it never saw (imputed): the price is
    /// an extrapolation for these.
    async fn warnings(&self) -> &[PredictionWarning] {
        &self.warnings
    }
    /// The range the sale price should fall in with probability `level` (split-conformal, on
    /// the log scale: `[price·e^-q, price·e^q]`, `q` calibrated on sales the model was not
    /// fitted on). Levels: 0.5, 0.8, 0.9, 0.95 (the model card's `intervals`); another level is
    /// `BAD_USER_INPUT` on `level`. Null when the price is not positive. The 0.9 interval is
    /// stored with the log row and its coverage monitored (`performance.coverage`).
    async fn interval(&self, #[graphql(default = 0.9)] level: f64) -> async_graphql::Result<Option<PriceInterval>> {
        resolve(async { interval_of(&self.model, self.price, level) }).await
    }
    /// The error model's estimate of `|sale price - price|` in USD, made before the sale is
    /// known: an estimate from the features the model sees, not a measurement.
    async fn estimated_error(&self) -> Option<f64> {
        self.estimated_error
    }
    /// How each feature moved the price away from the model's typical house (its card's
    /// imputation values): exact Shapley values, `baseValue + Σ contribution` = the model's
    /// output. For models of ln(price) (`scale: LN_USD`), `price = exp(baseValue + Σ
    /// contribution)`; for the others (`scale: USD`), `price = baseValue + Σ contribution`.
    /// Computed only when selected (tens of microseconds for 20 features).
    async fn contributions(&self) -> async_graphql::Result<Contributions> {
        resolve(async {
            let c = self.model.contributions(&self.house).map_err(|e| match e {
                ScoreError::Invalid(e) => AppError::invalid(format!("input.{}", e.feature), e.message),
                ScoreError::Model(e) => {
                    AppError::Internal(anyhow::Error::new(e).context(format!("contributions of {}", self.model.id())))
                }
            })?;
            Ok(Contributions {
                scale: if c.log_scale { ContributionScale::LnUsd } else { ContributionScale::Usd },
                base_value: c.base_value,
                features: c
                    .values
                    .into_iter()
                    .map(|(feature, value, contribution)| FeatureContribution {
                        feature: feature.name().to_owned(),
                        value: value.map(Json),
                        contribution,
                    })
                    .collect(),
            })
        })
        .await
    }
}

/// `model`'s interval of `price` at `level`, or `BAD_USER_INPUT` on `level`.
fn interval_of(model: &LoadedModel, price: f64, level: f64) -> Result<Option<PriceInterval>, AppError> {
    let interval = model.interval(price, level).map_err(|e| AppError::invalid("level", e.to_string()))?;
    Ok(interval.map(|i| PriceInterval { low: i.low, high: i.high, level: i.level }))
}

/// A prediction interval, USD.
#[derive(Debug, Clone, Copy, SimpleObject)]
pub struct PriceInterval {
    /// Lower bound, USD.
    pub low: f64,
    /// Upper bound, USD.
    pub high: f64,
    /// The share of sale prices the interval is calibrated to hold (e.g. 0.9).
    pub level: f64,
}

/// The scale of contributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ContributionScale {
    /// US dollars: `price = baseValue + Σ contribution`.
    Usd,
    /// Natural log of US dollars: `price = exp(baseValue + Σ contribution)`; a contribution `c`
    /// multiplies the price by `e^c`.
    LnUsd,
}

/// A price explained feature by feature.
#[derive(Debug, Clone, SimpleObject)]
pub struct Contributions {
    /// The unit of `baseValue` and of each contribution.
    pub scale: ContributionScale,
    /// The model's output for its typical house (every feature at its card imputation value).
    pub base_value: f64,
    /// One entry per model feature, in the card's order; a feature at its typical value
    /// (including one the client did not send) contributes 0.
    pub features: Vec<FeatureContribution>,
}

/// One feature's share of a price.
#[derive(Debug, Clone, SimpleObject)]
pub struct FeatureContribution {
    /// The input feature (API name).
    pub feature: String,
    /// The value the model used: the client's, or the imputation value.
    pub value: Option<Json<FeatureValue>>,
    /// Its contribution, in `Contributions.scale` units.
    pub contribution: f64,
}

fn warnings_of(record: &PredictionRecord) -> Vec<PredictionWarning> {
    serde_json::from_value(record.warnings.clone()).unwrap_or_default()
}

fn model_ref(record: &PredictionRecord) -> Option<ModelRef> {
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

/// A shadow (challenger) model's price for a logged prediction.
#[derive(Debug, Clone, SimpleObject)]
pub struct ShadowPrice {
    /// The shadow model's price, USD.
    pub price: f64,
    /// The shadow model.
    pub model: ModelRef,
}

// The GraphQL view of `PredictionRecord` (no copy of it: each field reads the row).
/// One row of the prediction log: an accepted or rejected prediction request.
#[Object]
impl PredictionRecord {
    /// Row id (UUIDv7).
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    /// The HTTP request's `x-request-id`.
    async fn request_id(&self) -> &str {
        &self.request_id
    }
    /// Position in a `predictPrices` batch; null for single predictions.
    async fn item_index(&self) -> Option<i32> {
        self.item_index
    }
    /// When the request was handled.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Entry point: `graphql` or `rest:/prever_precos/`.
    async fn route(&self) -> &str {
        &self.route
    }
    /// GraphQL operation name, if any.
    async fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }
    /// The client's User-Agent.
    async fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }
    /// The id of the API key the request presented (`api_keys.id`, or `env:…` for a key from
    /// `API_KEYS`); null without a valid key.
    async fn api_key_id(&self) -> Option<&str> {
        self.api_key_id.as_deref()
    }
    /// The W3C trace id of the request (32 hex digits): its exported trace, or the caller's
    /// `traceparent` when traces are not exported; null without either.
    async fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }
    /// Outcome.
    async fn status(&self) -> PredictionStatus {
        self.status
    }
    /// Typed input features.
    async fn features(&self) -> LoggedFeatures {
        LoggedFeatures { square_feet: self.square_feet, bedrooms: self.bedrooms, bathrooms: self.bathrooms }
    }
    /// The input exactly as received.
    async fn raw_input(&self) -> Json<&serde_json::Value> {
        Json(&self.raw_input)
    }
    /// Predicted price in USD (null unless `status` is `OK`).
    async fn price(&self) -> Option<f64> {
        self.price
    }
    /// The model that answered (or would have).
    async fn model(&self) -> Option<ModelRef> {
        model_ref(self)
    }
    /// Microseconds spent handling the request before logging.
    async fn latency_us(&self) -> i64 {
        self.latency_us
    }
    /// Why it was not priced (null when `status` is `OK`).
    async fn error(&self) -> Option<PredictionError> {
        self.error_code.as_ref().map(|code| PredictionError {
            code: code.clone(),
            field: self.error_field.clone(),
            message: self.error_message.clone().unwrap_or_default(),
        })
    }
    /// Features the model imputed.
    async fn imputed_features(&self) -> &[String] {
        &self.imputed_features
    }
    /// Every feature value the model used, after imputation (null unless `OK`).
    async fn model_features(&self) -> Option<Json<&serde_json::Value>> {
        self.features.as_ref().map(Json)
    }
    /// The shadow model's price for the same input, once scored (null without a shadow model).
    async fn shadow(&self) -> Option<ShadowPrice> {
        match (self.shadow_price, &self.shadow_model_name, &self.shadow_model_version) {
            (Some(price), Some(name), Some(version)) => {
                Some(ShadowPrice { price, model: ModelRef { name: name.clone(), version: version.clone() } })
            }
            _ => None,
        }
    }
    /// Out-of-range inputs and unseen labels of this request.
    async fn warnings(&self) -> Vec<PredictionWarning> {
        warnings_of(self)
    }
    /// The prediction interval at `level` (as `Prediction.interval`; null unless `OK`): the 0.9
    /// interval stored with the row, or, for another level, computed from the answering model
    /// if it is still loaded (else `BAD_USER_INPUT` on `level`).
    async fn interval(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0.9)] level: f64,
    ) -> async_graphql::Result<Option<PriceInterval>> {
        resolve(async {
            let Some(price) = self.price else { return Ok(None) };
            if (level - MONITORED_LEVEL).abs() < 1e-9 {
                return Ok(match (self.interval_low, self.interval_high) {
                    (Some(low), Some(high)) => Some(PriceInterval { low, high, level: MONITORED_LEVEL }),
                    _ => None,
                });
            }
            let set = data::<AppState>(ctx)?.models.snapshot();
            let id = format!(
                "{}@{}",
                self.model_name.as_deref().unwrap_or_default(),
                self.model_version.as_deref().unwrap_or_default()
            );
            match set.find(&id) {
                Some(model) => interval_of(&model, price, level),
                None => Err(AppError::invalid(
                    "level",
                    format!("{id} is no longer loaded: only its stored {MONITORED_LEVEL} interval is available"),
                )),
            }
        })
        .await
    }
    /// The error model's estimate of `|sale price - price|` in USD made when it was priced
    /// (null unless `OK`, and for rows logged before estimates existed).
    async fn estimated_error(&self) -> Option<f64> {
        self.estimated_error
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

// The GraphQL view of the card's `FeatureInfo` (no copy of it: each field reads the spec).
/// A feature a model takes, with what it saw in training.
#[Object]
impl FeatureInfo {
    /// `HouseInput` field name.
    async fn name(&self) -> &str {
        &self.name
    }
    /// `numeric`, `boolean` or `categorical`.
    async fn kind(&self) -> String {
        serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
    /// Whether clients must send it.
    async fn required(&self) -> bool {
        self.required
    }
    /// How it is derived from the Ames columns.
    async fn source(&self) -> &str {
        &self.source
    }
    /// Unit.
    async fn unit(&self) -> &str {
        &self.unit
    }
    /// Meaning.
    async fn description(&self) -> &str {
        &self.description
    }
    /// Smallest training value (numeric features).
    async fn min(&self) -> Option<f64> {
        self.min
    }
    /// Largest training value (numeric features).
    async fn max(&self) -> Option<f64> {
        self.max
    }
    /// Mean training value (numeric features).
    async fn mean(&self) -> Option<f64> {
        self.mean
    }
    /// Accepted labels (categorical features).
    async fn categories(&self) -> Option<&[String]> {
        self.categories.as_deref()
    }
    /// Value used when the client does not send the feature.
    async fn imputation(&self) -> Json<serde_json::Value> {
        Json(serde_json::to_value(&self.imputation).unwrap_or_default())
    }
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

impl ModelMetrics {
    fn new(m: &crate::model::card::Metrics, card: &crate::model::ModelCard) -> Self {
        Self {
            mae: m.mae,
            rmse: m.rmse,
            rmsle: m.rmsle,
            r2: m.r2,
            train_rows: i32::try_from(card.training.rows_train).unwrap_or(i32::MAX),
            holdout_rows: i32::try_from(card.training.rows_holdout).unwrap_or(i32::MAX),
        }
    }
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
    /// Whether it is the shadow model scoring every prediction.
    pub is_shadow: bool,
    /// Input features with training ranges.
    pub features: Vec<FeatureInfo>,
    /// Holdout metrics.
    pub metrics: ModelMetrics,
    /// Holdout metrics when only the three required inputs are sent (the rest imputed): what
    /// seed-compatible clients get from this model.
    pub required_inputs_metrics: ModelMetrics,
    /// sha256 of the artifact, verified when loaded.
    pub checksum: String,
    /// sha256 of the training data.
    pub training_data_sha256: String,
    /// When it was trained.
    pub trained_at: DateTime<Utc>,
}

impl ModelInfo {
    /// From a loaded model.
    pub fn new(model: &LoadedModel, set: &ModelSet) -> Self {
        let is_default = std::ptr::eq(model, set.default_model().as_ref());
        let is_shadow = set.shadow_model().is_some_and(|s| std::ptr::eq(model, s.as_ref()));
        let card = &model.card;
        Self {
            name: card.name.clone(),
            version: card.version.clone(),
            description: card.description.clone(),
            algorithm: card.algorithm.clone(),
            is_default,
            is_shadow,
            features: card.features.clone(),
            metrics: ModelMetrics::new(&card.metrics, card),
            required_inputs_metrics: ModelMetrics::new(&card.required_inputs_metrics, card),
            checksum: card.artifact.sha256.clone(),
            training_data_sha256: card.training.data_sha256.clone(),
            trained_at: card.trained_at,
        }
    }
}

/// What `reloadModels` did.
#[derive(Debug, Clone, SimpleObject)]
pub struct ReloadResult {
    /// Every model now serving.
    pub models: Vec<ModelInfo>,
    /// `name@version` newly loaded.
    pub added: Vec<String>,
    /// `name@version` no longer served.
    pub removed: Vec<String>,
    /// `name@version` answering by default now.
    pub default_model: String,
    /// `name@version` of the shadow model, if any.
    pub shadow_model: Option<String>,
}

/// One ground-truth outcome to record.
#[derive(Debug, Clone, InputObject)]
pub struct OutcomeInput {
    /// The prediction (`Prediction.id`).
    pub prediction_id: ID,
    /// The true sale price, USD.
    pub actual_price: f64,
    /// When the price was observed (default: now for a new outcome; unchanged for an existing one).
    pub observed_at: Option<DateTime<Utc>>,
}

/// One item of `recordOutcomes`: exactly one of `outcome` and `error` is set.
#[derive(Debug, Clone, SimpleObject)]
pub struct OutcomeItem {
    /// Position in `outcomes` (0-based).
    pub index: i32,
    /// The recorded outcome.
    pub outcome: Option<crate::monitoring::outcomes::Outcome>,
    /// Why it was not recorded (`NOT_FOUND`, `BAD_USER_INPUT`).
    pub error: Option<PredictionError>,
}
