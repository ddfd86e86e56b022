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

/// A feature whose drift status changed to WARN or DRIFT.
#[derive(Debug, Clone, PartialEq, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct DriftAlert {
    /// Alert id (the same on every replica: deduplicate by it).
    pub id: ID,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The feature (`_price` for the prediction).
    pub feature: String,
    /// New status.
    pub status: DriftStatus,
    /// Status at the previous evaluation (OK at the first).
    pub previous: DriftStatus,
    /// PSI over the window.
    pub psi: f64,
    /// Live values in the window.
    pub sample_size: i64,
    /// When the evaluation ran.
    pub evaluated_at: DateTime<Utc>,
}

/// Stores the alerts of report `report_id`, in its transaction.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, report_id: i64, alerts: &[DriftAlert]) -> sqlx::Result<()> {
    for alert in alerts {
        sqlx::query(
            "insert into drift_alerts (id, report_id, evaluated_at, model_name, model_version, feature, status, previous, psi, sample_size)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `drift_alerts` as a feed source.
pub struct RaisedAlerts;

/// A `drift_alerts` row as the feed reads it.
type AlertRow = (i64, Uuid, String, String, String, String, String, f64, i64, DateTime<Utc>);

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
            "select logged_xid::text::int8, id, model_name, model_version, feature, status, previous, psi, sample_size, evaluated_at
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
            .map(|(xid, id, model_name, model_version, feature, status, previous, psi, sample_size, evaluated_at)| {
                let alert = DriftAlert {
                    id: ID(id.to_string()),
                    model_name,
                    model_version,
                    feature,
                    status: DriftStatus::parse(&status),
                    previous: DriftStatus::parse(&previous),
                    psi,
                    sample_size,
                    evaluated_at,
                };
                (Position { xid, id }, alert)
            })
            .collect())
    }
}

/// The running `driftAlert` feed.
pub type AlertFeed = Feed<RaisedAlerts>;
