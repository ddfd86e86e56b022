//! Traffic over time: requests by outcome and error code, and latency percentiles, per bucket —
//! the numbers of the `v_predictions_hourly` view, for any bucket width and window.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::performance::Bucket;

/// Requests in one time bucket.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct TrafficBucket {
    /// Bucket start (UTC).
    pub start: DateTime<Utc>,
    /// Logged requests (per item for batches).
    pub requests: i64,
    /// Priced.
    pub ok: i64,
    /// Refused for their input.
    pub rejected: i64,
    /// Failed on a server fault.
    pub failed: i64,
    /// Rejected and failed requests by error code, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// Median handling time, µs (`latencyUs`, excluding the log commit).
    pub latency_p50_us: Option<f64>,
    /// 99th percentile handling time, µs.
    pub latency_p99_us: Option<f64>,
}

/// How many requests failed with one error code.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct ErrorCount {
    /// `extensions.code`, e.g. `BAD_USER_INPUT`.
    pub code: String,
    /// Requests.
    pub count: i64,
}

/// Traffic of model `name` (one `version`, or all; every model without a `name`) over
/// `[from, to)`, oldest bucket first. Percentiles are `percentile_cont`, as in the view. One scan:
/// the grouping sets give each bucket's totals and its per-error-code counts together.
#[tracing::instrument(name = "traffic.buckets", skip(pool))]
pub async fn buckets(
    pool: &PgPool,
    name: Option<&str>,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<TrafficBucket>> {
    let rows: Vec<GroupRow> = sqlx::query_as(
        "select date_trunc($1, created_at, 'UTC')                         as start,
                error_code,
                grouping(error_code) = 1                                  as is_total,
                count(*)                                                  as requests,
                count(*) filter (where status = 'ok')                     as ok,
                count(*) filter (where status = 'rejected')               as rejected,
                count(*) filter (where status = 'failed')                 as failed,
                percentile_cont(0.5) within group (order by latency_us)  as latency_p50_us,
                percentile_cont(0.99) within group (order by latency_us) as latency_p99_us
           from prediction_log
          where created_at >= $4 and created_at < $5
            and ($2::text is null or model_name = $2) and ($3::text is null or model_version = $3)
          group by grouping sets ((1), (1, 2))
          order by 1, 3 desc, 4 desc, 2",
    )
    .bind(bucket.unit())
    .bind(name)
    .bind(version)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut buckets: Vec<TrafficBucket> = Vec::new();
    for row in rows {
        if row.is_total {
            buckets.push(TrafficBucket {
                start: row.start,
                requests: row.requests,
                ok: row.ok,
                rejected: row.rejected,
                failed: row.failed,
                errors: Vec::new(),
                latency_p50_us: row.latency_p50_us,
                latency_p99_us: row.latency_p99_us,
            });
        } else if let (Some(code), Some(bucket)) = (row.error_code, buckets.last_mut()) {
            // Ordered by start with the total first, so the last bucket is this row's.
            bucket.errors.push(ErrorCount { code, count: row.requests });
        }
    }
    Ok(buckets)
}

/// One row of the grouping-sets query: a bucket's total, or one error code's count in it.
#[derive(sqlx::FromRow)]
struct GroupRow {
    start: DateTime<Utc>,
    error_code: Option<String>,
    is_total: bool,
    requests: i64,
    ok: i64,
    rejected: i64,
    failed: i64,
    latency_p50_us: Option<f64>,
    latency_p99_us: Option<f64>,
}
