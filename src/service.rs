//! `AppState` and the prediction use case shared by GraphQL and the REST route: validate, price,
//! log (rejected inputs too), and answer only once the log accepted the rows.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::AppConfig;
use crate::error::{AppError, codes};
use crate::log::{LogRecord, LogWriter, PredictionStatus};
use crate::model::{Feature, HouseFeatures, LoadedModel, ModelRegistry};

/// Everything a request handler needs; cloned into every request.
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL pool (history reads, readiness).
    pub pool: PgPool,
    /// Loaded models.
    pub models: Arc<ModelRegistry>,
    /// The request-log writer.
    pub log: LogWriter,
    /// Service settings.
    pub config: Arc<AppConfig>,
    /// Cancelled when the server starts shutting down (ends subscriptions).
    pub shutdown: CancellationToken,
}

/// Where a request came in; stored in `prediction_log.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /graphql` or `/ws`.
    Graphql,
    /// The seed-compatible `POST /prever_precos/`.
    RestPreverPrecos,
}

impl Route {
    /// Stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Graphql => "graphql",
            Route::RestPreverPrecos => "rest:/prever_precos/",
        }
    }

    /// How this route names an input field in errors (e.g. `inputs[2].squareFeet`, `num_bedrooms`).
    pub fn field_path(self, item: &ItemPath, feature: Feature) -> String {
        match self {
            Route::Graphql => format!("{}.{}", item.graphql_prefix(), feature.graphql_name()),
            Route::RestPreverPrecos => feature.rest_name().to_owned(),
        }
    }
}

/// Which argument an item came from, for error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemPath {
    /// `predictPrice(input:)`.
    Single,
    /// `predictPrices(inputs:)[index]`.
    Batch(usize),
}

impl ItemPath {
    fn graphql_prefix(&self) -> String {
        match self {
            ItemPath::Single => "input".to_owned(),
            ItemPath::Batch(i) => format!("inputs[{i}]"),
        }
    }

    fn index(&self) -> Option<i32> {
        match self {
            ItemPath::Single => None,
            ItemPath::Batch(i) => i32::try_from(*i).ok(),
        }
    }
}

/// Per-request facts stored with every row.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// x-request-id.
    pub request_id: String,
    /// Entry point.
    pub route: Route,
    /// GraphQL operation name.
    pub operation: Option<String>,
    /// User-Agent.
    pub client: Option<String>,
    /// For latency.
    pub received: Instant,
    /// For `created_at`.
    pub received_at: DateTime<Utc>,
}

impl RequestMeta {
    /// Microseconds since the request was received.
    pub fn latency_us(&self) -> i64 {
        i64::try_from(self.received.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    /// Metadata for a request received now.
    pub fn new(request_id: String, route: Route, client: Option<String>) -> Self {
        Self { request_id, route, operation: None, client, received: Instant::now(), received_at: Utc::now() }
    }
}

/// One item to price: the parsed features (or why they could not be parsed) and the raw input.
#[derive(Debug)]
pub struct PredictionItem {
    /// Where the item came from.
    pub path: ItemPath,
    /// Parsed features, or a `BAD_USER_INPUT` error if the raw input was not even well-typed.
    pub features: Result<HouseFeatures, AppError>,
    /// The input as received, stored as JSONB.
    pub raw_input: serde_json::Value,
}

/// The result of one item: the committed `ok` row, or the error the client gets for it.
pub type ItemOutcome = Result<LogRecord, AppError>;

impl AppState {
    /// Prices `items` with the default model and logs one row per item (rejected ones too).
    ///
    /// The outer error is for the request as a whole (the log could not take the rows: nothing may
    /// be answered); the inner results are per item.
    pub async fn predict(&self, meta: &RequestMeta, items: Vec<PredictionItem>) -> Result<Vec<ItemOutcome>, AppError> {
        let model = self.models.default_model().clone();
        // Validate, then price every valid item in one matrix call.
        let parsed: Vec<Option<HouseFeatures>> =
            items.iter().map(|item| item.features.as_ref().ok().copied()).collect();
        let (heads, features): (Vec<(ItemPath, serde_json::Value)>, Vec<_>) =
            items.into_iter().map(|item| ((item.path, item.raw_input), item.features)).unzip();
        let checked: Vec<Result<HouseFeatures, AppError>> = features
            .into_iter()
            .zip(&heads)
            .map(|(features, (path, _))| {
                let features = features?;
                features
                    .validate()
                    .map_err(|e| AppError::invalid(meta.route.field_path(path, e.feature), e.message))?;
                Ok(features)
            })
            .collect();
        let valid: Vec<HouseFeatures> = checked.iter().filter_map(|c| c.as_ref().ok().copied()).collect();
        let mut prices = match model.predict(&valid) {
            Ok(prices) => prices.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(err) => {
                let err = Arc::new(err);
                valid.iter().map(|_| Err(err.clone())).collect()
            }
        }
        .into_iter();

        let latency_us = meta.latency_us();
        let mut outcomes = Vec::with_capacity(heads.len());
        let mut records = Vec::with_capacity(heads.len());
        for (((path, raw_input), checked), parsed) in heads.into_iter().zip(checked).zip(parsed) {
            let mut record = new_record(meta, &model, path.index(), raw_input, latency_us);
            if let Some(features) = parsed {
                record.square_feet = Some(features.square_feet);
                record.bedrooms = i32::try_from(features.bedrooms).ok();
                record.bathrooms = Some(features.bathrooms);
            }
            let outcome = match checked {
                Ok(_) => match prices.next() {
                    Some(Ok(price)) if price.is_finite() => {
                        record.price = Some(price);
                        Ok(())
                    }
                    Some(Ok(price)) => {
                        Err(AppError::Internal(anyhow::anyhow!("model {} returned {price}", model.id())))
                    }
                    Some(Err(err)) => {
                        Err(AppError::Internal(anyhow::anyhow!("{err}").context(format!("model {}", model.id()))))
                    }
                    None => Err(AppError::Internal(anyhow::anyhow!("model {} returned too few prices", model.id()))),
                },
                Err(err) => Err(err),
            };
            if let Err(err) = &outcome {
                record_error(&mut record, err);
            }
            outcomes.push(outcome.map(|()| record.clone()));
            records.push(record);
        }

        self.log.submit(records).await.map_err(|err| AppError::Unavailable(err.into()))?;
        Ok(outcomes)
    }

    /// Logs a request that was refused as a whole (e.g. an oversized batch) as one rejected row.
    pub async fn reject(&self, meta: &RequestMeta, error: AppError, raw_input: serde_json::Value) -> AppError {
        let latency_us = meta.latency_us();
        let mut record = new_record(meta, self.models.default_model(), None, raw_input, latency_us);
        record_error(&mut record, &error);
        match self.log.submit(vec![record]).await {
            Ok(()) => error,
            Err(err) => AppError::Unavailable(err.into()),
        }
    }
}

/// A row for `model` answering (or refusing) an item of `meta`'s request; status `ok` until
/// [`record_error`] says otherwise.
fn new_record(
    meta: &RequestMeta,
    model: &LoadedModel,
    item_index: Option<i32>,
    raw_input: serde_json::Value,
    latency_us: i64,
) -> LogRecord {
    LogRecord {
        id: Uuid::now_v7(),
        request_id: meta.request_id.clone(),
        item_index,
        created_at: meta.received_at,
        route: meta.route.as_str().to_owned(),
        operation: meta.operation.clone(),
        client: meta.client.clone(),
        status: PredictionStatus::Ok,
        error_code: None,
        error_field: None,
        error_message: None,
        square_feet: None,
        bedrooms: None,
        bathrooms: None,
        raw_input,
        price: None,
        model_name: Some(model.card.name.clone()),
        model_version: Some(model.card.version.clone()),
        latency_us,
    }
}

/// Marks `record` as refused with `err` (rejected for input errors, failed for server faults).
fn record_error(record: &mut LogRecord, err: &AppError) {
    record.status = match err.code() {
        codes::BAD_USER_INPUT => PredictionStatus::Rejected,
        _ => PredictionStatus::Failed,
    };
    record.price = None;
    record.error_code = Some(err.code().to_owned());
    record.error_field = err.field().map(str::to_owned);
    record.error_message = Some(err.to_string());
}
