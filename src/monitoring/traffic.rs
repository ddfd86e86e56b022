//! Traffic over time: requests by outcome and error code, and latency percentiles, per bucket —
//! the numbers of the SQL functions `traffic_buckets` and `rejection_buckets` (which the
//! `v_predictions_hourly` and `v_rejections_daily` views read), for any bucket width and window.

use async_graphql::SimpleObject;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::histogram::{Histogram, histogram_value};
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
    /// Median handling time, µs (`latencyUs`, excluding the log commit), within 2.2 %.
    pub latency_p50_us: Option<f64>,
    /// 99th percentile handling time, µs, within 2.2 %.
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
/// `[from, to)` (whole hours), oldest bucket first: the numbers of `traffic_buckets` (and so of
/// `v_predictions_hourly`). Percentiles are nearest-rank over the hourly log-spaced histograms,
/// within 2.19 % of the exact value (migrations/20261203010000_rollups.sql); the service merges
/// the histograms itself, which reads about one row per hour instead of one per bin.
#[tracing::instrument(name = "traffic.buckets", skip(conn))]
pub async fn buckets(
    conn: &mut PgConnection,
    name: Option<&str>,
    version: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> sqlx::Result<Vec<TrafficBucket>> {
    let totals: Vec<TotalRow> = sqlx::query_as(
        "select date_trunc($1, hour, 'UTC') as start, sum(requests)::int8 as requests,
                coalesce(sum(requests) filter (where status = 'ok'), 0)::int8 as ok,
                coalesce(sum(requests) filter (where status = 'rejected'), 0)::int8 as rejected,
                coalesce(sum(requests) filter (where status = 'failed'), 0)::int8 as failed
           from traffic_hourly
          where ($4::text is null or model_name = $4) and ($5::text is null or model_version = $5)
            and hour >= date_trunc('hour', $2, 'UTC') and hour < $3
          group by 1
          order by 1",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let histograms: Vec<(DateTime<Utc>, i32, Vec<i64>)> = sqlx::query_as(
        "select date_trunc($1, hour, 'UTC'), first_bin, counts
           from histogram_hourly
          where metric = 'latency_us' and ($4::text is null or model_name = $4) and ($5::text is null or model_version = $5)
            and hour >= date_trunc('hour', $2, 'UTC') and hour < $3
          order by 1",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let errors: Vec<(DateTime<Utc>, String, i64)> = sqlx::query_as(
        "select start, error_code, sum(rejected)::int8 as count
           from rejection_buckets($1, $2, $3, $4, $5)
          where error_code is not null
          group by 1, 2
          order by 1, 3 desc, 2",
    )
    .bind(bucket.unit())
    .bind(from)
    .bind(to)
    .bind(name)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let mut latency: BTreeMap<DateTime<Utc>, Histogram> = BTreeMap::new();
    for (start, first_bin, counts) in histograms {
        latency.entry(start).or_default().add(first_bin, &counts);
    }
    let mut buckets: Vec<TrafficBucket> = totals
        .into_iter()
        .map(|t| {
            let histogram = latency.get(&t.start);
            TrafficBucket {
                start: t.start,
                requests: t.requests,
                ok: t.ok,
                rejected: t.rejected,
                failed: t.failed,
                errors: Vec::new(),
                latency_p50_us: histogram.and_then(|h| h.percentile_bin(0.5)).map(histogram_value),
                latency_p99_us: histogram.and_then(|h| h.percentile_bin(0.99)).map(histogram_value),
            }
        })
        .collect();
    // Both ordered by start: one pass puts each error count in its bucket.
    let mut at = 0;
    for (start, code, count) in errors {
        while buckets.get(at).is_some_and(|b| b.start < start) {
            at += 1;
        }
        if let Some(bucket) = buckets.get_mut(at).filter(|b| b.start == start) {
            bucket.errors.push(ErrorCount { code, count });
        }
    }
    Ok(buckets)
}

/// One bucket's totals from `traffic_hourly`.
#[derive(sqlx::FromRow)]
struct TotalRow {
    start: DateTime<Utc>,
    requests: i64,
    ok: i64,
    rejected: i64,
    failed: i64,
}
