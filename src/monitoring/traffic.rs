//! Traffic over time: requests by outcome and error code, and latency percentiles, per bucket —
//! the numbers of the SQL functions `traffic_buckets` and `rejection_buckets` (which the
//! `v_predictions_hourly` and `v_rejections_daily` views read), for any bucket width and window.

use async_graphql::SimpleObject;
use std::collections::BTreeMap;

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
#[tracing::instrument(name = "traffic.buckets", skip(pool))]
pub async fn buckets(
    pool: &PgPool,
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
    .fetch_all(pool)
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
    .fetch_all(pool)
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
    .fetch_all(pool)
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
                latency_p50_us: histogram.and_then(|h| h.percentile(0.5)),
                latency_p99_us: histogram.and_then(|h| h.percentile(0.99)),
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

/// Merged `histogram_hourly` rows: the count of each bin (`histogram_bin` in SQL).
#[derive(Debug, Default)]
struct Histogram {
    bins: BTreeMap<i32, i64>,
}

impl Histogram {
    /// Adds a row: `counts[i]` is the count of bin `first_bin + i`.
    fn add(&mut self, first_bin: i32, counts: &[i64]) {
        for (bin, &n) in (first_bin..).zip(counts) {
            if n != 0 {
                *self.bins.entry(bin).or_default() += n;
            }
        }
    }

    /// The nearest-rank percentile `q`, as the value its bin stands for; `None` when empty.
    /// The same rule as `traffic_buckets` in SQL (the views), so both give the same numbers.
    fn percentile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.bins.values().sum();
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
        let rank = (q * total as f64).ceil();
        let mut cumulative = 0;
        for (&bin, &n) in &self.bins {
            cumulative += n;
            #[allow(clippy::cast_precision_loss)]
            if cumulative as f64 >= rank && total > 0 {
                return Some(histogram_value(bin));
            }
        }
        None
    }
}

/// The value a histogram bin stands for (its geometric midpoint): SQL's `histogram_value`.
fn histogram_value(bin: i32) -> f64 {
    if bin <= 0 { 1.0 } else { 2f64.powf((f64::from(bin) - 0.5) / 16.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_merged_bins() {
        let mut h = Histogram::default();
        h.add(10, &[1, 0, 2]); // bins 10, 12
        h.add(11, &[1, 0, 0, 6]); // bins 11, 14
        // 10 values: ranks 1 (bin 10), 2 (11), 3-4 (12), 5-10 (14).
        assert_eq!(h.percentile(0.1), Some(histogram_value(10)));
        assert_eq!(h.percentile(0.3), Some(histogram_value(12)));
        assert_eq!(h.percentile(0.5), Some(histogram_value(14)));
        assert_eq!(h.percentile(0.99), Some(histogram_value(14)));
        assert_eq!(Histogram::default().percentile(0.5), None);
        assert_eq!(histogram_value(0), 1.0);
        assert!((histogram_value(16) / 2f64.powf(15.5 / 16.0) - 1.0).abs() < 1e-15);
    }
}
