//! `AppState` and the use cases shared by GraphQL and the REST route: price (validate, score,
//! log rejected inputs too, answer only once the log accepted the rows) and reload the models.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::KeyStore;
use crate::config::AppConfig;
use crate::error::{AppError, codes};
use crate::log::{LogWriter, PredictionRecord, PredictionStatus, without_nul, without_nul_str};
use crate::model::{
    Feature, HouseFeatures, LoadedModel, ModelRegistry, ModelSet, PredictionWarning, ScoreError, events, in_force,
};

/// Everything a request handler needs. It is cloned several times per request (axum's `State`,
/// the GraphQL request data), so a clone is one reference count, not one per part: it derefs to
/// [`AppParts`].
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// Shares `parts` between every request.
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppParts {
    /// PostgreSQL pool (history reads, readiness, model events).
    pub pool: PgPool,
    /// Loaded models (swapped atomically on reload).
    pub models: Arc<ModelRegistry>,
    /// The request-log writer.
    pub log: LogWriter,
    /// Service settings.
    pub config: Arc<AppConfig>,
    /// The API keys this replica accepts (`API_KEYS` and the `api_keys` table).
    pub keys: Arc<KeyStore>,
    /// The pool history and monitoring reads run on (bounded and cancellable).
    pub reads: crate::db::reads::ReadPool,
    /// Cancelled when the server starts shutting down (ends subscriptions).
    pub shutdown: CancellationToken,
    /// Committed log rows of every replica, read from PostgreSQL (`predictionLogged`).
    pub events: Arc<crate::log::events::PredictionFeed>,
    /// Drift alerts raised by the evaluator of any replica (`driftAlert`).
    pub alerts: Arc<crate::monitoring::alerts::AlertFeed>,
    /// Held for the whole of a model reload (see [`AppState::reload_models`]).
    pub reloads: Arc<tokio::sync::Mutex<()>>,
    /// This replica's name in `model_events` and `model_set_in_force` (`host:port`).
    pub replica: String,
    /// Whether this replica serves the model set in force ([`crate::convergence`]).
    pub model_sync: crate::convergence::SyncStatus,
}

/// Where a request came in; stored in `prediction_log.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /graphql` or `/ws`.
    Graphql,
    /// The seed-compatible `POST /prever_precos/`.
    RestPreverPrecos,
    /// The Open Inference Protocol's `POST /v2/models/{name}[/versions/{version}]/infer`.
    Inference,
}

impl Route {
    /// Stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Graphql => "graphql",
            Route::RestPreverPrecos => "rest:/prever_precos/",
            Route::Inference => "v2:infer",
        }
    }

    /// How this route names an input field in errors (e.g. `inputs[2].squareFeet`, `num_bedrooms`).
    pub fn field_path(self, item: &ItemPath, feature: Feature) -> String {
        match self {
            Route::Graphql => format!("{}.{}", item.graphql_prefix(), feature.name()),
            Route::RestPreverPrecos => feature.rest_name().to_owned(),
            // The input tensor and the row: `squareFeet[2]`.
            Route::Inference => format!("{}[{}]", feature.name(), item.index().unwrap_or_default()),
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
    /// The API key presented (`api_keys.id`), if it was valid.
    pub api_key_id: Option<String>,
    /// The request's trace id (32 hex digits), when it has one.
    pub trace_id: Option<String>,
    /// For latency.
    pub received: Instant,
    /// For `created_at`, at PostgreSQL's microsecond precision so the API and the row agree.
    pub received_at: DateTime<Utc>,
    /// Rows this request has logged so far, over every alias and batch item (shared by the
    /// clones each operation of the request gets), against `MAX_ROWS_PER_REQUEST`.
    logged_rows: Arc<AtomicUsize>,
}

impl RequestMeta {
    /// Metadata for a request received now.
    pub fn new(request_id: String, route: Route, client: Option<String>) -> Self {
        Self {
            request_id,
            route,
            operation: None,
            client,
            api_key_id: None,
            trace_id: None,
            received: Instant::now(),
            received_at: Utc::now().trunc_subsecs(6),
            logged_rows: Arc::default(),
        }
    }

    /// Counts `rows` more rows against `max` for this request; refuses (counting nothing) when
    /// they would exceed it. Memory and log volume per request stay bounded however many aliases
    /// of `predictPrices` a document holds.
    pub fn claim_rows(&self, rows: usize, max: usize) -> Result<(), AppError> {
        let claimed = self.logged_rows.fetch_add(rows, AtomicOrdering::Relaxed) + rows;
        if claimed > max {
            self.logged_rows.fetch_sub(rows, AtomicOrdering::Relaxed);
            return Err(AppError::invalid(
                "inputs",
                format!(
                    "this request would log more than {max} rows (MAX_ROWS_PER_REQUEST counts every alias and batch item); split it"
                ),
            ));
        }
        Ok(())
    }

    /// Microseconds since the request was received.
    pub fn latency_us(&self) -> i64 {
        i64::try_from(self.received.elapsed().as_micros()).unwrap_or(i64::MAX)
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

/// What an accepted item answers with, taken from its scoring (its log row is committed, or
/// spooled, by the time the caller sees it). GraphQL's `Prediction` is a view of it
/// (`graphql/types.rs`).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Id of the log row.
    pub id: Uuid,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// Predicted price, USD.
    pub price: f64,
    /// The model that priced it.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// When the request was handled.
    pub created_at: DateTime<Utc>,
    /// Handling time before logging, µs.
    pub latency_us: i64,
    /// Features the model imputed.
    pub imputed_features: Vec<String>,
    /// Out-of-range values and unseen labels, as stored with the row.
    pub warnings: Vec<PredictionWarning>,
    /// The error model's estimate of `|actual - price|`, USD.
    pub estimated_error: Option<f64>,
    /// The model that priced it: intervals at other levels and contributions are computed from it.
    pub model: Arc<LoadedModel>,
    /// The validated input, for contributions.
    pub house: HouseFeatures,
}

/// The result of one item: its answer, or the error the client gets for it.
pub type ItemOutcome = Result<Prediction, AppError>;

/// What a reload changed.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// The set now serving.
    pub set: Arc<ModelSet>,
    /// `name@version` newly loaded.
    pub added: Vec<String>,
    /// `name@version` no longer served.
    pub removed: Vec<String>,
}

/// Most characters of an unknown `model` argument quoted back (and logged) in its error.
const MAX_QUOTED_SPEC: usize = 100;

impl AppState {
    /// The model `spec` names (`name` or `name@version`), or the default one; an unknown `spec` is
    /// a `BAD_USER_INPUT` on `field` (the argument that carried it).
    pub fn choose_model(set: &ModelSet, spec: Option<&str>, field: &str) -> Result<Arc<LoadedModel>, AppError> {
        match spec {
            None => Ok(set.default_model().clone()),
            Some(spec) => set.find(spec).ok_or_else(|| {
                // The message is logged with every item of a batch: quote at most a name's worth of
                // what the client sent, not a megabyte.
                let quoted: String = spec.chars().take(MAX_QUOTED_SPEC).collect();
                let more = if spec.chars().count() > MAX_QUOTED_SPEC { "…" } else { "" };
                AppError::invalid(field, format!("unknown model {quoted:?}{more}; loaded: {}", set.ids().join(", ")))
            }),
        }
    }

    /// Prices `items` with the chosen model and logs one row per item (rejected ones too).
    ///
    /// The outer error is for the request as a whole (unknown model, or the log could not take the
    /// rows: nothing may be answered); the inner results are per item.
    #[tracing::instrument(name = "predict", skip_all, fields(items = items.len(), model = model.unwrap_or("default")))]
    pub async fn predict(
        &self,
        meta: &RequestMeta,
        model: Option<&str>,
        items: Vec<PredictionItem>,
    ) -> Result<Vec<ItemOutcome>, AppError> {
        // Refused before anything is scored or logged: the cap is what bounds a request's rows.
        meta.claim_rows(items.len(), self.config.limits.max_rows_per_request)?;
        // One snapshot for the whole request: a concurrent reload does not change its models.
        let set = self.models.snapshot();
        let explicit = match model.map(|spec| Self::choose_model(&set, Some(spec), "model")).transpose() {
            Ok(explicit) => explicit,
            Err(err) => {
                let rows = items.into_iter().map(|i| (i.path.index(), i.raw_input)).collect();
                // Already counted against MAX_ROWS_PER_REQUEST above.
                return Err(self.log_rejection(meta, err, rows).await);
            }
        };
        // Plausibility first, then score every valid item, one matrix call per model.
        let checked: Vec<Result<HouseFeatures, AppError>> = items
            .iter()
            .map(|item| {
                let features = item.features.as_ref().map_err(AppError::clone_input_error)?;
                features
                    .validate()
                    .map_err(|e| AppError::invalid(meta.route.field_path(&item.path, e.feature), e.message))?;
                Ok(features.clone())
            })
            .collect();
        // Each item's model: the one the request chose, else the one its shape routes to.
        let models: Vec<Arc<LoadedModel>> = items
            .iter()
            .map(|item| match (&explicit, &item.features) {
                (Some(model), _) => model.clone(),
                (None, Ok(house)) => set.route(house).clone(),
                (None, Err(_)) => set.default_model().clone(),
            })
            .collect();
        let mut scores = score_by_model(&models, &checked);

        let latency_us = meta.latency_us();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut records = Vec::with_capacity(items.len());
        for (((item, checked), model), score) in items.into_iter().zip(checked).zip(models).zip(scores.iter_mut()) {
            let mut record = new_record(meta, Some(&model), item.path.index(), item.raw_input, latency_us);
            if let Ok(house) = &item.features {
                record.square_feet = Some(house.square_feet);
                record.bedrooms = i32::try_from(house.bedrooms).ok();
                record.bathrooms = Some(house.bathrooms);
            }
            let outcome = checked.and_then(|house| match score.take() {
                Some(Ok(scored)) => {
                    // PostgreSQL cannot store U+0000, and the answer says what the row says.
                    let warnings: Vec<PredictionWarning> =
                        scored.warnings.into_iter().map(without_nul_warning).collect();
                    let imputed: Vec<String> = scored.imputed.iter().map(|f| f.name().to_owned()).collect();
                    record.price = Some(scored.price);
                    record.features = serde_json::to_value(&scored.values).ok();
                    record.warnings = serde_json::to_value(&warnings).unwrap_or_default();
                    record.imputed_features.clone_from(&imputed);
                    record.drift_bins = scored.drift_bins;
                    record.interval_low = scored.interval.map(|i| i.low);
                    record.interval_high = scored.interval.map(|i| i.high);
                    record.estimated_error = scored.estimated_error;
                    record.house = Some(house.clone());
                    Ok(Prediction {
                        id: record.id,
                        request_id: record.request_id.clone(),
                        price: scored.price,
                        model_name: model.card.name.clone(),
                        model_version: model.card.version.clone(),
                        created_at: record.created_at,
                        latency_us,
                        imputed_features: imputed,
                        warnings,
                        estimated_error: scored.estimated_error,
                        model: model.clone(),
                        house,
                    })
                }
                Some(Err(ScoreError::Invalid(e))) => {
                    Err(AppError::invalid(meta.route.field_path(&item.path, e.feature), e.message))
                }
                Some(Err(ScoreError::Model(e))) => {
                    Err(AppError::Internal(anyhow::Error::new(e).context(format!("model {}", model.id()))))
                }
                None => Err(AppError::Internal(anyhow::anyhow!("model {} returned too few prices", model.id()))),
            });
            if let Err(err) = &outcome {
                record_error(&mut record, err);
            }
            outcomes.push(outcome);
            records.push(record);
        }

        self.log.submit(records).await.map_err(|err| AppError::Unavailable(err.into()))?;
        Ok(outcomes)
    }

    /// Logs a request that was refused as a whole with `error`: one rejected row per
    /// `(item index, raw input)` (an unknown model: one per item; an oversized batch: one for the
    /// request, so a client cannot make the log write more rows than `MAX_BATCH_SIZE`). Returns
    /// the error to answer with, or `SERVICE_UNAVAILABLE` if the rows could not be logged.
    #[tracing::instrument(name = "reject", skip_all, fields(rows = rows.len()))]
    pub async fn reject(
        &self,
        meta: &RequestMeta,
        error: AppError,
        rows: Vec<(Option<i32>, serde_json::Value)>,
    ) -> AppError {
        if let Err(refused) = meta.claim_rows(rows.len(), self.config.limits.max_rows_per_request) {
            return refused;
        }
        self.log_rejection(meta, error, rows).await
    }

    async fn log_rejection(
        &self,
        meta: &RequestMeta,
        error: AppError,
        rows: Vec<(Option<i32>, serde_json::Value)>,
    ) -> AppError {
        let set = self.models.snapshot();
        let model = if error.field() == Some("model") { None } else { Some(set.default_model().as_ref()) };
        let latency_us = meta.latency_us();
        let records = rows
            .into_iter()
            .map(|(index, raw_input)| {
                let mut record = new_record(meta, model, index, raw_input, latency_us);
                record_error(&mut record, &error);
                record
            })
            .collect();
        match self.log.submit(records).await {
            Ok(()) => error,
            Err(err) => AppError::Unavailable(err.into()),
        }
    }

    /// Re-scans the model directory and swaps the set in atomically; a broken model fails the
    /// reload and the previous set keeps serving. Both outcomes are recorded in `model_events`; a
    /// new set is recorded as the set in force, which every other replica then follows
    /// ([`crate::convergence`]).
    ///
    /// Reloads are serialised, so events are recorded in the order the sets were installed, and
    /// a new version's reference distributions are stored before it serves its first request.
    #[tracing::instrument(name = "reload_models", skip(self))]
    pub async fn reload_models(&self, trigger: &str, actor: Option<&str>) -> Result<ReloadOutcome, AppError> {
        let _serialised = self.reloads.lock().await;
        match self.scan_and_install().await? {
            Ok(outcome) => {
                let revision = match in_force::record(&self.pool, &outcome.set, &self.replica, trigger).await {
                    Ok(revision) => Some(revision),
                    Err(err) => {
                        // The replicas converge when the next set is recorded (or this replica restarts).
                        tracing::error!(error = %err, "cannot record the model set in force; other replicas do not follow this reload");
                        None
                    }
                };
                self.model_sync.followed(revision, Vec::new());
                let change = events::Change {
                    event: "reloaded",
                    trigger,
                    actor,
                    added: &outcome.added,
                    removed: &outcome.removed,
                    replica: &self.replica,
                    revision,
                    ..Default::default()
                };
                events::record(&self.pool, &outcome.set, change).await;
                Ok(outcome)
            }
            Err(message) => {
                tracing::error!(trigger, error = %message, "model reload failed; previous models keep serving");
                let change = events::Change {
                    event: "reload_failed",
                    trigger,
                    actor,
                    error: Some(&message),
                    replica: &self.replica,
                    ..Default::default()
                };
                events::record(&self.pool, &self.models.snapshot(), change).await;
                Err(AppError::ModelLoad(message))
            }
        }
    }

    /// Scans `MODEL_DIR` and installs what it holds (storing new versions' reference
    /// distributions first); the inner error is why the scan failed (nothing changed). Callers
    /// hold [`AppParts::reloads`].
    pub(crate) async fn scan_and_install(&self) -> Result<Result<ReloadOutcome, String>, AppError> {
        let registry = self.models.clone();
        let result = tokio::task::spawn_blocking(move || registry.scan())
            .await
            .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("model reload task")))?;
        let set = match result {
            Ok(set) => Arc::new(set),
            Err(err) => return Ok(Err(format!("{:#}", anyhow::Error::new(err)))),
        };
        if let Err(err) = crate::monitoring::references::sync(&self.pool, &set).await {
            tracing::error!(error = %err, "cannot store the new models' reference distributions");
        }
        let previous = self.models.install(set.clone());
        let before = previous.ids();
        let after = set.ids();
        let added: Vec<String> = after.iter().filter(|id| !before.contains(id)).cloned().collect();
        let removed: Vec<String> = before.iter().filter(|id| !after.contains(id)).cloned().collect();
        tracing::info!(?added, ?removed, default = %set.default_model().id(), "models installed");
        Ok(Ok(ReloadOutcome { set, added, removed }))
    }
}

/// Scores each valid item with its model: one matrix call per distinct model. `None` for the
/// invalid items.
fn score_by_model(
    models: &[Arc<LoadedModel>],
    checked: &[Result<HouseFeatures, AppError>],
) -> Vec<Option<Result<crate::model::Scored, ScoreError>>> {
    let mut scores: Vec<Option<Result<crate::model::Scored, ScoreError>>> = checked.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..checked.len()).filter(|&i| checked[i].is_ok()).collect();
    while let Some(&first) = pending.first() {
        let model = &models[first];
        let (group, rest): (Vec<usize>, Vec<usize>) =
            pending.into_iter().partition(|&i| Arc::ptr_eq(&models[i], model));
        let houses: Vec<&HouseFeatures> = group.iter().filter_map(|&i| checked[i].as_ref().ok()).collect();
        for (&i, score) in group.iter().zip(model.score(&houses)) {
            scores[i] = Some(score);
        }
        pending = rest;
    }
    scores
}

/// A row for `model` answering (or refusing) an item of `meta`'s request; status `ok` until
/// [`record_error`] says otherwise.
fn new_record(
    meta: &RequestMeta,
    model: Option<&LoadedModel>,
    item_index: Option<i32>,
    raw_input: serde_json::Value,
    latency_us: i64,
) -> PredictionRecord {
    PredictionRecord {
        id: Uuid::now_v7(),
        request_id: meta.request_id.clone(),
        item_index,
        created_at: meta.received_at,
        route: meta.route.as_str().to_owned(),
        operation: meta.operation.clone(),
        client: meta.client.clone(),
        api_key_id: meta.api_key_id.clone(),
        trace_id: meta.trace_id.clone(),
        status: PredictionStatus::Ok,
        error_code: None,
        error_field: None,
        error_message: None,
        square_feet: None,
        bedrooms: None,
        bathrooms: None,
        // PostgreSQL text and jsonb cannot hold U+0000; one such client string must not fail the
        // whole group-commit batch.
        raw_input: without_nul(raw_input),
        price: None,
        model_name: model.map(|m| m.card.name.clone()),
        model_version: model.map(|m| m.card.version.clone()),
        latency_us,
        imputed_features: Vec::new(),
        features: None,
        shadow_price: None,
        shadow_model_name: None,
        shadow_model_version: None,
        warnings: serde_json::json!([]),
        interval_low: None,
        interval_high: None,
        estimated_error: None,
        house: None,
        drift_bins: Vec::new(),
    }
}

/// [`without_nul_str`] on a warning's texts.
fn without_nul_warning(w: PredictionWarning) -> PredictionWarning {
    PredictionWarning { feature: without_nul_str(w.feature), message: without_nul_str(w.message), ..w }
}

/// Marks `record` as refused with `err` (rejected for input errors, failed for server faults).
fn record_error(record: &mut PredictionRecord, err: &AppError) {
    record.status = match err.code() {
        codes::BAD_USER_INPUT => PredictionStatus::Rejected,
        _ => PredictionStatus::Failed,
    };
    record.price = None;
    record.features = None;
    record.house = None;
    record.drift_bins.clear();
    record.warnings = serde_json::json!([]);
    record.imputed_features.clear();
    record.interval_low = None;
    record.interval_high = None;
    record.estimated_error = None;
    record.error_code = Some(err.code().to_owned());
    record.error_field = err.field().map(|f| without_nul_str(f.to_owned()));
    record.error_message = Some(without_nul_str(err.to_string()));
}
