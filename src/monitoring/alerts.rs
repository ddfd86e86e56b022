//! Drift alerts: raised by the evaluator (in one replica), stored in `drift_alerts` with the
//! report that raised them, and delivered to `driftAlert` subscribers on every replica by a feed
//! ([`crate::db::feed`]).

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::drift::DriftStatus;
use crate::db::feed::{Feed, Position, Source};

/// A feature whose drift status changed to WARN or DRIFT, or (pseudo-feature `_coverage`) the
/// realized coverage of the 90 % intervals falling below its alert threshold.
#[derive(Debug, Clone, PartialEq, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftAlert {
    /// Alert id (the same on every replica: deduplicate by it).
    pub id: ID,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The feature (`_price` for the prediction, `_coverage` for interval coverage).
    pub feature: String,
    /// New status.
    pub status: DriftStatus,
    /// Status at the previous evaluation (OK at the first).
    pub previous: DriftStatus,
    /// PSI over the window (0 for `_coverage` alerts).
    pub psi: f64,
    /// Live values in the window (for `_coverage`: labelled predictions with an interval).
    pub sample_size: i64,
    /// When the evaluation ran.
    pub evaluated_at: DateTime<Utc>,
    /// For `_coverage` alerts: the realized coverage of the 90 % intervals (null otherwise).
    pub coverage: Option<f64>,
}

/// Stores the alerts of report `report_id`, in its transaction.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, report_id: i64, alerts: &[DriftAlert]) -> sqlx::Result<()> {
    for alert in alerts {
        sqlx::query(
            "insert into drift_alerts (id, report_id, evaluated_at, model_name, model_version, feature, status, previous, psi,
                                       sample_size, coverage)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(alert.id.parse::<Uuid>().unwrap_or_else(|_| Uuid::now_v7()))
        .bind(report_id)
        .bind(alert.evaluated_at)
        .bind(&alert.model_name)
        .bind(&alert.model_version)
        .bind(&alert.feature)
        .bind(alert.status.as_str())
        .bind(alert.previous.as_str())
        .bind(alert.psi)
        .bind(alert.sample_size)
        .bind(alert.coverage)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `drift_alerts` as a feed source.
pub struct RaisedAlerts;

/// A `drift_alerts` row as the feed reads it.
#[derive(sqlx::FromRow)]
struct AlertRow {
    xid: i64,
    id: Uuid,
    model_name: String,
    model_version: String,
    feature: String,
    status: String,
    previous: String,
    psi: f64,
    sample_size: i64,
    evaluated_at: DateTime<Utc>,
    coverage: Option<f64>,
}

impl Source for RaisedAlerts {
    type Item = DriftAlert;

    async fn page(
        &self,
        conn: &mut PgConnection,
        after: Position,
        horizon: i64,
        limit: usize,
    ) -> sqlx::Result<Vec<(Position, DriftAlert)>> {
        let rows: Vec<AlertRow> = sqlx::query_as(
            "select logged_xid::text::int8 as xid, id, model_name, model_version, feature, status, previous, psi,
                    sample_size, evaluated_at, coverage
               from drift_alerts
              where (logged_xid, id) > ($1::int8::text::xid8, $2) and logged_xid < $3::int8::text::xid8
              order by logged_xid, id
              limit $4",
        )
        .bind(after.xid)
        .bind(after.id)
        .bind(horizon)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let alert = DriftAlert {
                    id: ID(r.id.to_string()),
                    model_name: r.model_name,
                    model_version: r.model_version,
                    feature: r.feature,
                    status: DriftStatus::parse(&r.status),
                    previous: DriftStatus::parse(&r.previous),
                    psi: r.psi,
                    sample_size: r.sample_size,
                    evaluated_at: r.evaluated_at,
                    coverage: r.coverage,
                };
                (Position { xid: r.xid, id: r.id }, alert)
            })
            .collect())
    }
}

/// The running `driftAlert` feed.
pub type AlertFeed = Feed<RaisedAlerts>;
