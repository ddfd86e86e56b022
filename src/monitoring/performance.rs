//! Accuracy over time: predictions joined with their outcomes, per time bucket.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

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
}

/// Accuracy of model `name` (optionally one `version`; all its versions added up otherwise) over
/// `[from, to)` per bucket, oldest first: the SQL function `performance_buckets`, which the
/// `v_performance_daily` view reads too (migrations/20261203000000_metric_functions.sql).
#[tracing::instrument(name = "performance.buckets", skip(pool))]
pub async fn buckets(
    pool: &PgPool,
    name: &str,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<PerformanceBucket>> {
    sqlx::query_as(
        "select start, predictions, labelled, mae, rmse, mape, mean_error
           from performance_buckets($1, $2, $3, $4, $5, false)
          order by start",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(pool)
    .await
}
