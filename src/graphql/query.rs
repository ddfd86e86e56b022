//! Query root: predictions, prediction history, model metadata.

use chrono::{DateTime, TimeDelta, Utc};

use async_graphql::{Context, ID, Object};
use uuid::Uuid;

use super::context::{authorize, resolve, state};
use super::types::{
    BatchPredictionItem, HouseInput, ModelInfo, PageInfo, PredictionConnection, PredictionEdge, PredictionFilter,
};
use crate::auth::Scope;
use crate::error::AppError;
use crate::log::{Cursor, PredictionRecord, store};
use crate::model::events::{self, ModelEvent};
use crate::model::registry;
use crate::monitoring::drift::{self, DriftPoint, DriftReport};
use crate::monitoring::performance::{self, Bucket, PerformanceBucket};
use crate::monitoring::reports::{self, MonitoringReport};
use crate::monitoring::shadow_comparison::{self, ShadowBucket};
use crate::monitoring::traffic::{self, TrafficBucket};
use crate::service::{AppState, ItemPath, Prediction, PredictionItem};

/// The query root (`Query` in the schema).
pub struct QueryRoot;

fn item(path: ItemPath, input: HouseInput) -> PredictionItem {
    let raw_input = serde_json::to_value(&input).unwrap_or(serde_json::Value::Null);
    PredictionItem { path, features: Ok(input.into()), raw_input }
}

/// Read operations. `predictPrice`/`predictPrices` are queries (they do not change the model), but
/// every call is recorded in the prediction log.
#[Object(name = "Query")]
impl QueryRoot {
    /// Prices one house. `model` picks a model (`name` for its highest version, or `name@version`)
    /// and always wins. Without it the input's shape routes: only `squareFeet`, `bedrooms` and
    /// `bathrooms` → the three-input model (`THREE_INPUT_MODEL`, default `three-input-boosting`,
    /// the REST route's too); any optional feature → the default model (`DEFAULT_MODEL`, default
    /// `price-blend`). `model { name version }` in the answer (and the log row) says which priced
    /// it. Invalid input fails with `BAD_USER_INPUT` (`extensions.field` names the field) and is
    /// logged as rejected. Scope `predict`; cost 5.
    async fn predict_price(
        &self,
        ctx: &Context<'_>,
        input: HouseInput,
        model: Option<String>,
    ) -> async_graphql::Result<Prediction> {
        resolve(async {
            authorize(ctx, Some(Scope::Predict))?;
            let (state, meta) = state(ctx)?;
            let mut outcomes = state.predict(meta, model.as_deref(), vec![item(ItemPath::Single, input)]).await?;
            outcomes.pop().ok_or_else(|| AppError::Internal(anyhow::anyhow!("no outcome for a single prediction")))?
        })
        .await
    }

    /// Prices up to `MAX_BATCH_SIZE` houses: with `model` if given, else each item routed by its
    /// shape as in `predictPrice`. Each item succeeds or fails on its own; all items share the
    /// request id and are logged together. Scope `predict`; cost 5 per input.
    async fn predict_prices(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<HouseInput>,
        model: Option<String>,
    ) -> async_graphql::Result<Vec<BatchPredictionItem>> {
        resolve(async {
            authorize(ctx, Some(Scope::Predict))?;
            let (state, meta) = state(ctx)?;
            let max = state.config.limits.max_batch_size;
            if inputs.is_empty() || inputs.len() > max {
                let error =
                    AppError::invalid("inputs", format!("must hold between 1 and {max} items, got {}", inputs.len()));
                let raw = serde_json::json!({ "batchSize": inputs.len() });
                return Err(state.reject(meta, error, vec![(None, raw)]).await);
            }
            let items = inputs.into_iter().enumerate().map(|(i, input)| item(ItemPath::Batch(i), input)).collect();
            let outcomes = state.predict(meta, model.as_deref(), items).await?;
            outcomes
                .into_iter()
                .enumerate()
                .map(|(index, outcome)| {
                    let index = i32::try_from(index).unwrap_or(i32::MAX);
                    Ok(match outcome {
                        Ok(priced) => BatchPredictionItem { index, prediction: Some(priced), error: None },
                        Err(err) => BatchPredictionItem { index, prediction: None, error: Some((&err).into()) },
                    })
                })
                .collect()
        })
        .await
    }

    /// The prediction log, newest first, as a Relay connection (keyset-paginated on
    /// `(createdAt, id)`). `first` defaults to `DEFAULT_PAGE_SIZE` and may not exceed `MAX_PAGE_SIZE`.
    /// Scope `history`; cost 10 + 2 per row.
    async fn predictions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PredictionFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PredictionConnection> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::History))?;
            let limits = &state.config.limits;
            let first = match first {
                None => limits.default_page_size,
                Some(n) if n >= 1 && (n as usize) <= limits.max_page_size => n as usize,
                Some(n) => {
                    return Err(AppError::invalid(
                        "first",
                        format!("must be between 1 and {}, got {n}", limits.max_page_size),
                    ));
                }
            };
            let after = match after {
                None => None,
                Some(s) => Some(
                    Cursor::decode(&s).ok_or_else(|| AppError::invalid("after", "is not a cursor from this API"))?,
                ),
            };
            let filter = history_filter(filter.unwrap_or_default())?;
            let mut rows = state.reads.run(async |conn| store::list(conn, &filter, after, first + 1).await).await?;
            let has_next_page = rows.len() > first;
            rows.truncate(first);
            let edges: Vec<PredictionEdge> = rows
                .into_iter()
                .map(|row| PredictionEdge { cursor: Cursor::after(&row).encode(), node: row })
                .collect();
            Ok(PredictionConnection {
                page_info: PageInfo {
                    has_next_page,
                    has_previous_page: false,
                    start_cursor: edges.first().map(|e| e.cursor.clone()),
                    end_cursor: edges.last().map(|e| e.cursor.clone()),
                },
                nodes: edges.iter().map(|e| e.node.clone()).collect(),
                edges,
            })
        })
        .await
    }

    /// One log row by id; `NOT_FOUND` if there is none. Scope `history`; cost 2.
    async fn prediction(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<PredictionRecord> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::History))?;
            let uuid = Uuid::parse_str(&id).map_err(|_| AppError::invalid("id", "is not a prediction id (UUID)"))?;
            let row = state.reads.run(async |conn| store::find(conn, uuid).await).await?;
            row.ok_or_else(|| AppError::NotFound(format!("no prediction with id {uuid}")))
        })
        .await
    }

    /// A loaded model by `name` (highest version) or `name@version`; without `name`, the default
    /// model. `BAD_USER_INPUT` if there is no such model. Any key under `ACCESS=keys`; cost 1.
    async fn model(&self, ctx: &Context<'_>, name: Option<String>) -> async_graphql::Result<ModelInfo> {
        resolve(async {
            let set = authorize(ctx, None)?.0.models.snapshot();
            let model = AppState::choose_model(&set, name.as_deref(), "name")?;
            Ok(ModelInfo::new(&model, &set))
        })
        .await
    }

    /// Accuracy of `model` (`name`, or `name@version` for one version) per time bucket over
    /// `[from, to)` (default: the last 7 days; hourly rollups, so `from` is rounded down to the
    /// hour), from predictions joined with recorded outcomes. Scope `monitoring`; cost 10 + 1 per
    /// 2 hours of the window.
    async fn performance(
        &self,
        ctx: &Context<'_>,
        model: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default_with = "Bucket::Day")] bucket: Bucket,
    ) -> async_graphql::Result<Vec<PerformanceBucket>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::days(7))?;
            check_text("model", Some(&model))?;
            let (name, version) = registry::parse_spec(&model);
            Ok(state.reads.run(async |conn| performance::buckets(conn, name, version, from, to, bucket).await).await?)
        })
        .await
    }

    /// Drift of the traffic a loaded model version answered over `[from, to)` (default: the last
    /// 24 hours; counters are hourly, so `from` is rounded down to the hour) against its training
    /// reference: PSI, KS, Jensen-Shannon, Wasserstein (numeric) or chi-square (categorical), and
    /// a status per feature and for the predicted price. Scope `monitoring`; cost 10 + 1 per hour of
    /// the window.
    async fn drift(
        &self,
        ctx: &Context<'_>,
        model: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<DriftReport> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::hours(24))?;
            let set = state.models.snapshot();
            let model = AppState::choose_model(&set, Some(&model), "model")?;
            Ok(state.reads.run(async |conn| drift::report(conn, &model, from, to).await).await?)
        })
        .await
    }

    /// Traffic per time bucket over `[from, to)` (default: the last 24 hours; hourly rollups, so
    /// `from` is rounded down to the hour): requests by outcome and error code, and latency
    /// percentiles (from log-spaced histograms, within 2.2 %) — the numbers of `v_predictions_hourly`.
    /// `model` is `name` or `name@version`; without it, every model. Scope `monitoring`; cost 10 + 1
    /// per 2 hours of the window.
    async fn traffic(
        &self,
        ctx: &Context<'_>,
        model: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default_with = "Bucket::Hour")] bucket: Bucket,
    ) -> async_graphql::Result<Vec<TrafficBucket>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::hours(24))?;
            check_text("model", model.as_ref())?;
            let (name, version) = optional_model(model.as_deref());
            Ok(state.reads.run(async |conn| traffic::buckets(conn, name, version, from, to, bucket).await).await?)
        })
        .await
    }

    /// The answering model against the shadow model on the same requests, per time bucket over
    /// `[from, to)` (default: the last 7 days; hourly rollups, so `from` is rounded down to the
    /// hour) — the numbers of `v_shadow_comparison`. `model` is `name` or `name@version` of the
    /// answering model; without it, every model. Scope `monitoring`; cost 10 + 1 per 2 hours of the
    /// window.
    async fn shadow_comparison(
        &self,
        ctx: &Context<'_>,
        model: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default_with = "Bucket::Day")] bucket: Bucket,
    ) -> async_graphql::Result<Vec<ShadowBucket>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::days(7))?;
            check_text("model", model.as_ref())?;
            let (name, version) = optional_model(model.as_deref());
            Ok(state
                .reads
                .run(async |conn| shadow_comparison::buckets(conn, name, version, from, to, bucket).await)
                .await?)
        })
        .await
    }

    /// PSI of every feature (and `_price`) of a loaded model version per UTC day over the days
    /// `[from, to)` touches (default: the last 30 days), as in `v_drift_psi_daily`, with a status
    /// from the PSI thresholds of `drift`. Scope `monitoring`; cost 10 + 1 per 3 hours of the window.
    async fn drift_history(
        &self,
        ctx: &Context<'_>,
        model: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Vec<DriftPoint>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::days(30))?;
            let set = state.models.snapshot();
            let model = AppState::choose_model(&set, Some(&model), "model")?;
            Ok(state.reads.run(async |conn| drift::history(conn, &model, from, to).await).await?)
        })
        .await
    }

    /// Drift alerts: the evaluator's reports at WARN or DRIFT for `model` (`name` for every
    /// version, or `name@version`) over `[from, to)` (default: the last 7 days), newest first.
    /// Scope `monitoring`; cost 10 + 1 per row (`first`).
    async fn drift_reports(
        &self,
        ctx: &Context<'_>,
        model: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 1000))] first: i32,
    ) -> async_graphql::Result<Vec<MonitoringReport>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            let (from, to) = window(from, to, TimeDelta::days(7))?;
            check_text("model", Some(&model))?;
            let (name, version) = registry::parse_spec(&model);
            Ok(state
                .reads
                .run(async |conn| reports::alerts(conn, name, version, from, to, i64::from(first)).await)
                .await?)
        })
        .await
    }

    /// The newest model-set loads and reloads (`model_events`), newest first. Scope `monitoring`;
    /// cost 10 + 1 per row (`first`).
    async fn model_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 1000))] first: i32,
    ) -> async_graphql::Result<Vec<ModelEvent>> {
        resolve(async {
            let (state, _) = authorize(ctx, Some(Scope::Monitoring))?;
            Ok(state.reads.run(async |conn| events::recent(conn, i64::from(first)).await).await?)
        })
        .await
    }

    /// Every loaded model version, with its card metadata and holdout metrics. Any key under
    /// `ACCESS=keys`; cost 1.
    async fn models(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ModelInfo>> {
        resolve(async {
            let set = authorize(ctx, None)?.0.models.snapshot();
            Ok(set.models().iter().map(|m| ModelInfo::new(m, &set)).collect())
        })
        .await
    }
}

fn check_text(field: &str, s: Option<&String>) -> Result<(), AppError> {
    match s {
        Some(s) if s.contains('\0') => Err(AppError::invalid(field, "must not contain NUL characters")),
        _ => Ok(()),
    }
}

/// `[from, to)` with defaults (`to` = now, `from` = `to - default_span`), validated.
fn window(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    default_span: TimeDelta,
) -> Result<(DateTime<Utc>, DateTime<Utc>), AppError> {
    store::check_time("from", from)?;
    store::check_time("to", to)?;
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - default_span);
    if from >= to {
        return Err(AppError::invalid("to", "must be after from"));
    }
    Ok((from, to))
}

/// An optional `model` argument (`name` or `name@version`) as (name, version) filters.
fn optional_model(model: Option<&str>) -> (Option<&str>, Option<&str>) {
    match model.map(registry::parse_spec) {
        Some((name, version)) => (Some(name), version),
        None => (None, None),
    }
}

fn history_filter(f: PredictionFilter) -> Result<PredictionFilter, AppError> {
    store::check_time("filter.from", f.from)?;
    store::check_time("filter.to", f.to)?;
    check_text("filter.modelName", f.model_name.as_ref())?;
    check_text("filter.modelVersion", f.model_version.as_ref())?;
    check_text("filter.requestId", f.request_id.as_ref())?;
    if let (Some(from), Some(to)) = (f.from, f.to)
        && from > to
    {
        return Err(AppError::invalid("filter.to", "must not be before filter.from"));
    }
    if let (Some(min), Some(max)) = (f.min_price, f.max_price)
        && min > max
    {
        return Err(AppError::invalid("filter.maxPrice", "must not be below filter.minPrice"));
    }
    f.check_bounds()?;
    Ok(f)
}
