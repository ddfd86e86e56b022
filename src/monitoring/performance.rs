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

/// Accuracy of model `name` (optionally one `version`) over `[from, to)` per bucket, oldest first.
/// The same formulas as the `v_performance_daily` view.
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
        "select date_trunc($1, l.created_at, 'UTC')               as start,
                count(*)                                          as predictions,
                count(o.actual_price)                             as labelled,
                avg(abs(l.price - o.actual_price))                as mae,
                sqrt(avg((l.price - o.actual_price) ^ 2))         as rmse,
                avg(abs(l.price - o.actual_price) / o.actual_price) as mape,
                avg(l.price - o.actual_price)                     as mean_error
           from prediction_log l
           left join prediction_outcomes o on o.prediction_id = l.id
          where l.status = 'ok' and l.model_name = $2 and ($3::text is null or l.model_version = $3)
            and l.created_at >= $4 and l.created_at < $5
          group by 1
          order by 1",
    )
    .bind(bucket.unit())
    .bind(name)
    .bind(version)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}
