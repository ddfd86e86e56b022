//! Champion vs shadow model on the same requests, per time bucket, from the SQL function
//! `shadow_buckets` over the hourly shadow rollups (the `v_shadow_comparison` view reads it too).

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::performance::Bucket;

/// The answering model and the shadow model compared over one time bucket.
#[derive(Debug, Clone, PartialEq, SimpleObject, sqlx::FromRow)]
pub struct ShadowBucket {
    /// Bucket start (UTC).
    pub start: DateTime<Utc>,
    /// Answering model name.
    pub model_name: String,
    /// Answering model version.
    pub model_version: String,
    /// Shadow model name.
    pub shadow_model_name: String,
    /// Shadow model version.
    pub shadow_model_version: String,
    /// Predictions priced by both.
    pub predictions: i64,
    /// Mean of shadow price − price, USD.
    pub mean_difference: f64,
    /// Mean of |shadow price − price|, USD.
    pub mean_abs_difference: f64,
    /// Mean of |shadow price − price| / price.
    pub mean_abs_relative_difference: f64,
    /// Median of shadow price − price, USD, within 2.2 % (from a log-spaced histogram).
    pub median_difference: Option<f64>,
    /// Pearson correlation of the two prices (null with fewer than two distinct prices).
    pub correlation: Option<f64>,
}

/// The comparison for model `name` (one `version`, or all; every model without a `name`) over
/// `[from, to)` (whole hours), oldest bucket first.
#[tracing::instrument(name = "shadow_comparison.buckets", skip(pool))]
pub async fn buckets(
    pool: &PgPool,
    name: Option<&str>,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<ShadowBucket>> {
    sqlx::query_as(
        "select start, model_name, model_version, shadow_model_name, shadow_model_version, predictions,
                mean_difference, mean_abs_difference, mean_abs_relative_difference, median_difference, correlation
           from shadow_buckets($1, $2, $3, $4, $5)
          order by start, model_name, model_version, shadow_model_name, shadow_model_version",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(pool)
    .await
}
