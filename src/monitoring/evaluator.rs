//! The background evaluator: every `MONITOR_INTERVAL_MS` it computes drift and accuracy for every
//! loaded model version over the last `MONITOR_WINDOW_HOURS`, stores the report in
//! `monitoring_reports`, exports gauges, and raises a drift alert (stored with the report, delivered
//! by every replica's `driftAlert` feed) when a feature's status changes to WARN or DRIFT.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::ID;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::alerts::DriftAlert;
use super::drift::{self, DriftStatus};
use super::performance::{self, Bucket, COVERAGE_FEATURE};
use super::reports;
use crate::model::{LoadedModel, ModelRegistry};

/// Predictions made this long ago or less count towards the coverage check: sale prices arrive
/// weeks after the prediction.
pub const COVERAGE_WINDOW_DAYS: i64 = 30;
/// Fewest labelled predictions with an interval before coverage is judged: with 100, the
/// sampling error of a 0.9 coverage is about ±0.03.
pub const COVERAGE_MIN_SAMPLE: i64 = 100;
/// Coverage below the intervals' level (0.9) minus this raises a `_coverage` alert.
pub const COVERAGE_TOLERANCE: f64 = 0.05;

/// The status of a realized coverage: DRIFT below `level - COVERAGE_TOLERANCE` over at least
/// `COVERAGE_MIN_SAMPLE` predictions, OK otherwise (too few outcomes judge nothing).
pub fn coverage_status(coverage: &performance::Coverage, level: f64) -> DriftStatus {
    match coverage.coverage {
        Some(c) if coverage.interval_labelled >= COVERAGE_MIN_SAMPLE && c < level - COVERAGE_TOLERANCE => {
            DriftStatus::Drift
        }
        _ => DriftStatus::Ok,
    }
}

/// What the evaluator works with: handed down by the application, so monitoring does not
/// depend on the layer above it.
#[derive(Clone)]
pub struct Evaluator {
    /// The log and the report table.
    pub pool: sqlx::PgPool,
    /// The models to evaluate (the set serving at each run).
    pub models: Arc<ModelRegistry>,
    /// Cancelled at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Runs the evaluator every `interval` over the last `window`, in one replica at a time (the
/// `evaluator` lease: another replica takes over within seconds when the holder dies). Reports
/// are keyed by their tick (`interval`-aligned time), so a moment of two holders writes each
/// report, and publishes each alert, once.
pub fn spawn(state: Evaluator, interval: Duration, window: TimeDelta) {
    if interval.is_zero() {
        tracing::info!("monitoring evaluator is off (MONITOR_INTERVAL_MS=0)");
        return;
    }
    let pool = state.pool.clone();
    let stop = state.shutdown.clone();
    crate::db::lease::run_exclusively(&pool, "evaluator", stop, move |running| {
        let state = state.clone();
        async move {
            let mut previous: HashMap<(String, String, String), DriftStatus> = HashMap::new();
            let mut ticks = tokio::time::interval(interval);
            // A run that overran must not be followed by a burst of runs in the same tick: the
            // second would find the tick reported and drop the alerts it raised.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        evaluate(&state, window, tick_of(Utc::now(), interval), &mut previous).await;
                    }
                    () = running.cancelled() => return,
                }
            }
        }
    });
}

/// `now` rounded down to a multiple of `interval` since the epoch: every replica computes the
/// same tick for the same evaluation period.
pub fn tick_of(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX).max(1);
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(step)).unwrap_or(now)
}

/// One evaluation of every loaded model version; returns the alerts it raised. A model whose
/// evaluation fails is logged and skipped: one model's failure must not hide the others.
pub async fn evaluate(
    state: &Evaluator,
    window: TimeDelta,
    tick: DateTime<Utc>,
    previous: &mut HashMap<(String, String, String), DriftStatus>,
) -> Vec<DriftAlert> {
    let to = Utc::now();
    let from = to - window;
    let mut alerts = Vec::new();
    for model in state.models.snapshot().models() {
        match evaluate_model(state, model, from, to, tick, previous).await {
            Ok(raised) => alerts.extend(raised),
            Err(err) => {
                tracing::warn!(model = %model.id(), error = %format!("{err:#}"), "monitoring evaluation failed");
            }
        }
    }
    alerts
}

async fn evaluate_model(
    state: &Evaluator,
    model: &LoadedModel,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tick: DateTime<Utc>,
    previous: &mut HashMap<(String, String, String), DriftStatus>,
) -> anyhow::Result<Vec<DriftAlert>> {
    let mut conn = state.pool.acquire().await?;
    let report = drift::report(&mut conn, model, from, to).await?;
    if report.predictions == 0 {
        return Ok(Vec::new());
    }
    let accuracy =
        performance::buckets(&mut conn, &model.card.name, Some(&model.card.version), from, to, Bucket::Day).await?;
    drop(conn);
    let worst = report.status.max(report.prediction.status);
    let (name, version) = (&report.model_name, &report.model_version);
    if !previous.keys().any(|(n, v, _)| n == name && v == version) {
        // A fresh evaluator (restart, takeover) goes on from the last stored report.
        for (feature, status) in reports::latest_statuses(&state.pool, name, version).await? {
            previous.insert((name.clone(), version.clone(), feature), status);
        }
    }
    let mut alerts = Vec::new();
    let coverage =
        performance::coverage(&state.pool, name, version, to - TimeDelta::days(COVERAGE_WINDOW_DAYS), to).await?;
    if let Some(c) = coverage.coverage {
        metrics::gauge!("interval_coverage", "model" => name.clone(), "version" => version.clone()).set(c);
    }
    let status = coverage_status(&coverage, crate::model::MONITORED_LEVEL);
    let before = previous.insert((name.clone(), version.clone(), COVERAGE_FEATURE.to_owned()), status);
    let before = before.unwrap_or(DriftStatus::Ok);
    if status != before && status != DriftStatus::Ok {
        alerts.push(DriftAlert {
            id: ID(Uuid::now_v7().to_string()),
            model_name: name.clone(),
            model_version: version.clone(),
            feature: COVERAGE_FEATURE.to_owned(),
            status,
            previous: before,
            psi: 0.0,
            sample_size: coverage.interval_labelled,
            evaluated_at: to,
            coverage: coverage.coverage,
        });
    }
    for f in report.features.iter().chain(std::iter::once(&report.prediction)) {
        let labels = [("model", name.clone()), ("version", version.clone()), ("feature", f.feature.clone())];
        metrics::gauge!("drift_status", &labels).set(match f.status {
            DriftStatus::Ok => 0.0,
            DriftStatus::Warn => 1.0,
            DriftStatus::Drift => 2.0,
        });
        if let Some(psi) = f.psi {
            metrics::gauge!("drift_psi", &labels).set(psi);
        }
        let key = (name.clone(), version.clone(), f.feature.clone());
        let before = previous.insert(key, f.status).unwrap_or(DriftStatus::Ok);
        if f.status != before && f.status != DriftStatus::Ok {
            alerts.push(DriftAlert {
                id: ID(Uuid::now_v7().to_string()),
                model_name: name.clone(),
                model_version: version.clone(),
                feature: f.feature.clone(),
                status: f.status,
                previous: before,
                psi: f.psi.unwrap_or(0.0),
                sample_size: f.sample_size,
                evaluated_at: to,
                coverage: None,
            });
        }
    }
    if !reports::insert(&state.pool, &report, worst, &accuracy, tick, &alerts).await? {
        // Another holder of the lease already reported this tick (and raised its alerts).
        return Ok(Vec::new());
    }
    for alert in &alerts {
        tracing::warn!(model = %alert.model_name, version = %alert.model_version, feature = %alert.feature,
                       status = ?alert.status, psi = alert.psi, coverage = ?alert.coverage, "drift alert");
    }
    Ok(alerts)
}
