//! Champion vs shadow model on the same requests, per time bucket, from the hourly shadow rollups:
//! the numbers of the SQL function `shadow_buckets`, which the `v_shadow_comparison` view reads.

use std::collections::HashMap;

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::histogram::{Histogram, signed_value};
use super::performance::Bucket;

/// The answering model and the shadow model compared over one time bucket.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
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
/// `[from, to)` (whole hours), oldest bucket first: the numbers of `shadow_buckets` (and so of
/// `v_shadow_comparison`), with the median merged here from the hourly difference histograms (one
/// row per hour rather than one per bin).
#[tracing::instrument(name = "shadow_comparison.buckets", skip(conn))]
pub async fn buckets(
    conn: &mut PgConnection,
    name: Option<&str>,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<ShadowBucket>> {
    let sums: Vec<Sums> = sqlx::query_as(
        "select date_trunc($1, hour, 'UTC') as start, model_name, model_version, shadow_model_name, shadow_model_version,
                sum(predictions)::float8 as n, sum(difference_sum) as d, sum(abs_difference_sum) as ad,
                sum(abs_relative_difference_sum) as ard, sum(price_sum) as x, sum(shadow_price_sum) as y,
                sum(price_sq_sum) as xx, sum(shadow_price_sq_sum) as yy, sum(product_sum) as xy
           from shadow_hourly
          where ($4::text is null or model_name = $4) and ($5::text is null or model_version = $5)
            and hour >= date_trunc('hour', $2, 'UTC') and hour < $3
          group by 1, 2, 3, 4, 5
         having sum(predictions) > 0
          order by 1, 2, 3, 4, 5",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<HistogramRow> = sqlx::query_as(
        "select date_trunc($1, hour, 'UTC') as start, model_name, model_version, shadow_model_name, shadow_model_version,
                first_bin, counts
           from shadow_difference_hourly
          where ($4::text is null or model_name = $4) and ($5::text is null or model_version = $5)
            and hour >= date_trunc('hour', $2, 'UTC') and hour < $3",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let mut differences: HashMap<Key, Histogram> = HashMap::new();
    for row in rows {
        let key = (row.start, row.model_name, row.model_version, row.shadow_model_name, row.shadow_model_version);
        differences.entry(key).or_default().add(row.first_bin, &row.counts);
    }
    Ok(sums
        .into_iter()
        .map(|s| {
            let key = (s.start, s.model_name, s.model_version, s.shadow_model_name, s.shadow_model_version);
            let median = differences.get(&key).and_then(|h| h.percentile_bin(0.5)).map(signed_value);
            let spread = (s.n * s.xx - s.x * s.x).max(0.0).sqrt() * (s.n * s.yy - s.y * s.y).max(0.0).sqrt();
            #[allow(clippy::cast_possible_truncation)] // a sum of row counts
            ShadowBucket {
                start: key.0,
                model_name: key.1,
                model_version: key.2,
                shadow_model_name: key.3,
                shadow_model_version: key.4,
                predictions: s.n as i64,
                mean_difference: s.d / s.n,
                mean_abs_difference: s.ad / s.n,
                mean_abs_relative_difference: s.ard / s.n,
                median_difference: median,
                correlation: (spread != 0.0).then(|| (s.n * s.xy - s.x * s.y) / spread),
            }
        })
        .collect())
}

/// A bucket's key: start, model and version, shadow model and version.
type Key = (DateTime<Utc>, String, String, String, String);

/// A bucket's sums from `shadow_hourly`.
#[derive(sqlx::FromRow)]
struct Sums {
    start: DateTime<Utc>,
    model_name: String,
    model_version: String,
    shadow_model_name: String,
    shadow_model_version: String,
    n: f64,
    d: f64,
    ad: f64,
    ard: f64,
    x: f64,
    y: f64,
    xx: f64,
    yy: f64,
    xy: f64,
}

/// One `shadow_difference_hourly` row, with its bucket start.
#[derive(sqlx::FromRow)]
struct HistogramRow {
    start: DateTime<Utc>,
    model_name: String,
    model_version: String,
    shadow_model_name: String,
    shadow_model_version: String,
    first_bin: i32,
    counts: Vec<i64>,
}
