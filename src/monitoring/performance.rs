//! Accuracy over time: predictions joined with their outcomes, per time bucket.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Bucket {
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
    /// One ISO week (Monday, UTC).
    Week,
}

impl Bucket {
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
        }
    }
}

/// Accuracy in one time bucket.
#[derive(Debug, Clone, Serialize, SimpleObject, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceBucket {
    /// Bucket start.
    pub start: DateTime<Utc>,
    /// Accepted predictions in the bucket.
    pub predictions: i64,
    /// Those with a recorded outcome.
    pub labelled: i64,
    /// Mean absolute error over labelled predictions, USD.
    pub mae: Option<f64>,
    /// Root mean squared error, USD.
    pub rmse: Option<f64>,
    /// Mean absolute percentage error, as a fraction (0.1 = 10 %).
    pub mape: Option<f64>,
    /// Mean error (prediction − actual), USD: positive means the model over-prices.
    pub mean_error: Option<f64>,
    /// Labelled predictions that were served with a 90 % interval.
    pub interval_labelled: i64,
    /// Realized coverage: the share of those whose sale price fell inside the 90 % interval
    /// (calibrated to 0.9; the evaluator alerts below `COVERAGE_ALERT_BELOW`).
    pub coverage: Option<f64>,
    /// Mean width (high − low) of those 90 % intervals, USD.
    pub mean_interval_width: Option<f64>,
    /// ESTIMATE, not a measurement: the mean of the error model's estimates of
    /// `|price − sale price|` over every prediction in the bucket, USD. Known before any sale,
    /// so it stands in for `mae` until outcomes arrive. It sees only what the model sees: a
    /// shift in something the model has no input for goes unnoticed.
    pub estimated_mae: Option<f64>,
}

/// Accuracy of model `name` (optionally one `version`; all its versions added up otherwise) over
/// `[from, to)` per bucket, oldest first: the SQL function `performance_buckets`, which the
/// `v_performance_daily` view reads too (migrations/20261203000000_metric_functions.sql).
#[tracing::instrument(name = "performance.buckets", skip(conn))]
pub async fn buckets(
    conn: &mut PgConnection,
    name: &str,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<PerformanceBucket>> {
    sqlx::query_as(
        "select start, predictions, labelled, mae, rmse, mape, mean_error, interval_labelled, coverage,
                mean_interval_width, estimated_mae
           from performance_buckets($1, $2, $3, $4, $5, false)
          order by start",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await
}

/// The pseudo-feature of coverage alerts (next to `_price` for the prediction's drift).
pub const COVERAGE_FEATURE: &str = "_coverage";

/// Realized coverage of the 90 % intervals over a window.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct Coverage {
    /// Labelled predictions served with an interval.
    pub interval_labelled: i64,
    /// Share of them whose sale price fell inside (null without any).
    pub coverage: Option<f64>,
}

/// Realized coverage of model `name@version` over predictions made in `[from, to)` that have an
/// outcome (from the accuracy rollup: outcomes count for the hour of their prediction).
#[tracing::instrument(name = "performance.coverage", skip(pool))]
pub async fn coverage(
    pool: &PgPool,
    name: &str,
    version: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Coverage> {
    sqlx::query_as(
        "select coalesce(sum(interval_labelled), 0)::int8 as interval_labelled,
                sum(covered)::float8 / nullif(sum(interval_labelled), 0) as coverage
           from accuracy_hourly
          where model_name = $1 and model_version = $2
            and hour >= date_trunc('hour', $3::timestamptz, 'UTC') and hour < $4",
    )
    .bind(name)
    .bind(version)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}
