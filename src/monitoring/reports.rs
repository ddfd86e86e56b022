//! The `monitoring_reports` table: one row per evaluator run and model version, with the full
//! drift report and accuracy; the non-OK ones are the drift alert history.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::alerts::DriftAlert;
use super::drift::{DriftReport, DriftStatus};
use super::performance::PerformanceBucket;

/// A stored evaluator report whose status was WARN or DRIFT.
#[derive(Debug, Clone, SimpleObject)]
pub struct MonitoringReport {
    /// Report id (`monitoring_reports.id`).
    pub id: ID,
    /// When the evaluator ran.
    pub evaluated_at: DateTime<Utc>,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Worst status over the features and the prediction.
    pub status: DriftStatus,
    /// Start of the evaluated window.
    pub window_from: DateTime<Utc>,
    /// End of the evaluated window (exclusive).
    pub window_to: DateTime<Utc>,
    /// The features (and `_price`) at WARN or DRIFT.
    pub drifting: Vec<String>,
}

/// Stores one evaluation of `tick` (its interval-aligned time) and the alerts it raised, in one
/// transaction; `status` is the worst over the features and the prediction. False if that tick's
/// report was already stored (by another holder of the evaluator lease): the write is idempotent
/// per tick, so each alert is raised once.
#[tracing::instrument(name = "reports.insert", skip_all, fields(model = %report.model_name))]
pub async fn insert(
    pool: &PgPool,
    report: &DriftReport,
    status: DriftStatus,
    accuracy: &[PerformanceBucket],
    tick: DateTime<Utc>,
    raised: &[DriftAlert],
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "insert into monitoring_reports (model_name, model_version, window_from, window_to, status, report, tick)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (model_name, model_version, tick) do nothing
         returning id",
    )
    .bind(&report.model_name)
    .bind(&report.model_version)
    .bind(report.from)
    .bind(report.to)
    .bind(status.as_str())
    .bind(serde_json::json!({ "drift": report, "performance": accuracy }))
    .bind(tick)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else { return Ok(false) };
    super::alerts::insert(&mut tx, id, raised).await?;
    tx.commit().await?;
    Ok(true)
}

/// Each feature's status (and `_price`'s) in the latest report of a model version: where a new
/// evaluator (after a restart or a takeover) starts from, so it does not alert again.
#[tracing::instrument(name = "reports.latest_statuses", skip(pool))]
pub async fn latest_statuses(pool: &PgPool, name: &str, version: &str) -> sqlx::Result<Vec<(String, DriftStatus)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select f->>'feature', f->>'status'
           from (select report from monitoring_reports
                  where model_name = $1 and model_version = $2
                  order by tick desc nulls last, id desc limit 1) r,
                jsonb_array_elements(r.report->'drift'->'features' || jsonb_build_array(r.report->'drift'->'prediction')) f",
    )
    .bind(name)
    .bind(version)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(feature, status)| (feature, DriftStatus::parse(&status))).collect())
}

/// A `monitoring_reports` row as [`alerts`] selects it.
type ReportRow = (i64, DateTime<Utc>, String, String, String, DateTime<Utc>, DateTime<Utc>, Vec<String>);

/// Up to `limit` WARN/DRIFT reports of model `name` (one `version`, or all) evaluated in
/// `[from, to)`, newest first.
#[tracing::instrument(name = "reports.alerts", skip(conn))]
pub async fn alerts(
    conn: &mut PgConnection,
    name: &str,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<MonitoringReport>> {
    let rows: Vec<ReportRow> =
        sqlx::query_as(
            "select id, evaluated_at, model_name, model_version, status, window_from, window_to,
                    array(select f->>'feature'
                            from jsonb_array_elements(report->'drift'->'features' || jsonb_build_array(report->'drift'->'prediction')) f
                           where f->>'status' <> 'OK')
               from monitoring_reports
              where model_name = $1 and ($2::text is null or model_version = $2)
                and evaluated_at >= $3 and evaluated_at < $4 and status <> 'OK'
              order by evaluated_at desc, id desc
              limit $5",
        )
        .bind(name)
        .bind(version)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, evaluated_at, model_name, model_version, status, window_from, window_to, drifting)| {
            MonitoringReport {
                id: ID(id.to_string()),
                evaluated_at,
                model_name,
                model_version,
                status: DriftStatus::parse(&status),
                window_from,
                window_to,
                drifting,
            }
        })
        .collect())
}
