//! The hourly rollups the monitoring reads come from (migrations/20261203010000_rollups.sql) agree
//! with a recomputation from the raw rows: counts and bins exactly, sums to float rounding, and
//! percentiles within the histogram's documented bound.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::TestApp;
use crate::monitoring::monitored_config;

/// The histograms' documented bound: a bin's midpoint is within 2^(1/32) - 1 of any value in it.
const HISTOGRAM_BOUND: f64 = 0.0219;

type Traffic = (
    chrono::DateTime<chrono::Utc>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<f64>,
);
type Bin = (chrono::DateTime<chrono::Utc>, Option<String>, Option<String>, String, i32, i64);
type Accuracy = (chrono::DateTime<chrono::Utc>, String, String, i64, f64, f64, f64, f64);
type Shadow = (chrono::DateTime<chrono::Utc>, String, String, String, String, i64, Vec<f64>);
type Hourly = (chrono::DateTime<chrono::Utc>, String, String, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(1.0)
}

/// Compares every rollup table with the same figures computed from prediction_log and
/// prediction_outcomes.
pub(crate) async fn assert_rollups_match_the_raw_rows(pool: &PgPool) {
    let key = "hour, model_name, model_version, status, error_code, error_field";
    let rolled: Vec<Traffic> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {key}, requests, price_sum from traffic_hourly order by {key}"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let raw: Vec<Traffic> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, status, error_code,
                error_field, count(*), sum(price)
           from prediction_log group by 1, 2, 3, 4, 5, 6 order by {key}"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!raw.is_empty());
    assert_eq!(rolled.len(), raw.len(), "one rollup row per group of raw rows");
    for (r, w) in rolled.iter().zip(&raw) {
        assert_eq!((&r.0, &r.1, &r.2, &r.3, &r.4, &r.5, r.6), (&w.0, &w.1, &w.2, &w.3, &w.4, &w.5, w.6));
        match (r.7, w.7) {
            (Some(a), Some(b)) => assert!(close(a, b, 1e-12), "price sum {a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }

    let bins = "select hour, model_name, model_version, metric, first_bin + ord::int - 1, n
           from histogram_hourly, unnest(counts) with ordinality e(n, ord) where n <> 0 order by 1, 2, 3, 4, 5";
    let raw_bins = "select hour, model_name, model_version, metric, bin, count(*) from (
            select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, 'latency_us' as metric,
                   histogram_bin(latency_us) as bin from prediction_log
            union all
            select date_trunc('hour', created_at, 'UTC'), model_name, model_version, 'price', histogram_bin(price)
              from prediction_log where price is not null) v
        group by 1, 2, 3, 4, 5 order by 1, 2, 3, 4, 5";

    let rolled: Vec<Bin> = sqlx::query_as(bins).fetch_all(pool).await.unwrap();
    let raw: Vec<Bin> = sqlx::query_as(raw_bins).fetch_all(pool).await.unwrap();
    assert_eq!(rolled, raw, "histogram bins");

    let rolled: Vec<Accuracy> = sqlx::query_as(
        "select hour, model_name, model_version, labelled, abs_error_sum, sq_error_sum, abs_pct_error_sum, error_sum
           from accuracy_hourly where labelled > 0 order by 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let raw: Vec<Accuracy> = sqlx::query_as(
        "select date_trunc('hour', l.created_at, 'UTC'), l.model_name, l.model_version, count(*),
                sum(abs(l.price - o.actual_price)), sum((l.price - o.actual_price) ^ 2),
                sum(abs(l.price - o.actual_price) / o.actual_price), sum(l.price - o.actual_price)
           from prediction_outcomes o join prediction_log l on l.id = o.prediction_id
          where l.status = 'ok' group by 1, 2, 3 order by 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rolled.len(), raw.len(), "{rolled:?} vs {raw:?}");
    for (r, w) in rolled.iter().zip(&raw) {
        assert_eq!((&r.0, &r.1, &r.2, r.3), (&w.0, &w.1, &w.2, w.3));
        for (a, b) in [(r.4, w.4), (r.5, w.5), (r.6, w.6), (r.7, w.7)] {
            // Corrections subtract the old value and add the new one: float rounding only.
            assert!(close(a, b, 1e-9), "{a} vs {b} in {r:?}");
        }
    }

    let key = "hour, model_name, model_version, shadow_model_name, shadow_model_version";
    let rolled: Vec<Shadow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {key}, predictions, array[difference_sum, abs_difference_sum, abs_relative_difference_sum, price_sum,
                shadow_price_sum, price_sq_sum, shadow_price_sq_sum, product_sum]
           from shadow_hourly where predictions > 0 order by {key}"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let shadowed = "from prediction_log where status = 'ok' and price is not null and shadow_price is not null";
    let raw: Vec<Shadow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select date_trunc('hour', created_at, 'UTC') as hour, model_name, model_version, shadow_model_name,
                shadow_model_version, count(*), array[sum(shadow_price - price), sum(abs(shadow_price - price)),
                sum(abs(shadow_price - price) / price), sum(price), sum(shadow_price), sum(price * price),
                sum(shadow_price * shadow_price), sum(price * shadow_price)]
           {shadowed} group by 1, 2, 3, 4, 5 order by {key}"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rolled.len(), raw.len(), "{rolled:?} vs {raw:?}");
    for (r, w) in rolled.iter().zip(&raw) {
        assert_eq!((&r.0, &r.1, &r.2, &r.3, &r.4, r.5), (&w.0, &w.1, &w.2, &w.3, &w.4, w.5));
        for (a, b) in r.6.iter().zip(&w.6) {
            assert!(close(*a, *b, 1e-9), "{a} vs {b} in {r:?}");
        }
    }
    let rolled: Vec<(chrono::DateTime<chrono::Utc>, String, i32, i64)> = sqlx::query_as(
        "select hour, model_name, first_bin + ord::int - 1, sum(n)::int8
           from shadow_difference_hourly, unnest(counts) with ordinality e(n, ord)
          group by 1, 2, 3 having sum(n) <> 0 order by 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let raw: Vec<(chrono::DateTime<chrono::Utc>, String, i32, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select date_trunc('hour', created_at, 'UTC'), model_name, shadow_difference_bin(shadow_price - price), count(*)
           {shadowed} group by 1, 2, 3 order by 1, 2, 3"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rolled, raw, "shadow difference bins");
}

/// The exact nearest-rank percentile of `values`.
fn nearest_rank(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).max(1);
    values[rank - 1]
}

#[sqlx::test]
async fn every_rollup_equals_a_recomputation_from_the_raw_rows(pool: PgPool) {
    let app = TestApp::spawn_with(pool, monitored_config()).await;
    let batch = "query($items: [HouseInput!]!, $model: String) { predictPrices(inputs: $items, model: $model) {
        prediction { id } error { code } } }";
    for (model, n) in [("baseline-linear", 40), ("gradient-boosting", 25)] {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({ "squareFeet": 700.0 + 61.0 * f64::from(i), "bedrooms": if i % 9 == 4 { 99 } else { 2 + i % 3 }, "bathrooms": 1 + i % 2 }))
            .collect();
        let body = app.graphql(batch, json!({ "items": items, "model": model })).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    for i in 0..15 {
        app.predict(1000.0 + 37.0 * f64::from(i), 3, 2.0).await;
    }
    // Refused before a model was chosen: no model on the row.
    let body = app
        .graphql(batch, json!({ "items": [{ "squareFeet": 1000, "bedrooms": 2, "bathrooms": 1 }], "model": "nope" }))
        .await;
    assert!(body["errors"].is_array() || body["data"]["predictPrices"][0]["error"].is_object(), "{body}");
    app.wait_durable().await;

    // Outcomes: recorded, some corrected, one deleted.
    sqlx::query(
        "insert into prediction_outcomes (prediction_id, actual_price)
         select id, price * (0.8 + (extract(microseconds from created_at)::int % 40) / 100.0)
           from prediction_log where status = 'ok' and coalesce(item_index, 0) % 3 <> 1",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("update prediction_outcomes set actual_price = actual_price * 1.05 where prediction_id in (select prediction_id from prediction_outcomes order by 1 limit 7)")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("delete from prediction_outcomes where prediction_id = (select prediction_id from prediction_outcomes order by 1 limit 1)")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_rollups_match_the_raw_rows(&app.pool).await;

    // Percentiles and the mean, as the view (and the API, which reads the same function) gives them.

    let view: Vec<Hourly> = sqlx::query_as(
        "select hour, model_name, model_version, ok, mean_price, median_price, p50_latency_us, p99_latency_us
           from v_predictions_hourly where model_name is not null order by 1, 2, 3",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!view.is_empty());
    for (hour, name, version, ok, mean, median, p50, p99) in view {
        let rows: Vec<(i64, Option<f64>)> = sqlx::query_as(
            "select latency_us, price from prediction_log
              where date_trunc('hour', created_at, 'UTC') = $1 and model_name = $2 and model_version = $3",
        )
        .bind(hour)
        .bind(&name)
        .bind(&version)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let latencies: Vec<f64> = rows.iter().map(|r| r.0 as f64).collect();
        let prices: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
        assert_eq!(ok, prices.len() as i64);
        let exact_mean = prices.iter().sum::<f64>() / prices.len() as f64;
        assert!(close(mean.unwrap(), exact_mean, 1e-12), "{name}: mean {mean:?} vs {exact_mean}");
        for (approx, exact, what) in [
            (median, nearest_rank(prices.clone(), 0.5), "median price"),
            (p50, nearest_rank(latencies.clone(), 0.5).max(1.0), "p50 latency"),
            (p99, nearest_rank(latencies.clone(), 0.99).max(1.0), "p99 latency"),
        ] {
            let approx = approx.unwrap();
            assert!(close(approx, exact, HISTOGRAM_BOUND), "{name}@{version} {what}: {approx} vs exact {exact}");
        }
    }
}

/// Champion vs shadow from the rollups: the view and the API give the raw rows' figures, also after
/// an analyst corrects a shadow price.
#[sqlx::test]
async fn the_shadow_comparison_equals_a_recomputation_from_the_raw_rows(pool: PgPool) {
    let mut config = monitored_config();
    config.shadow_model = Some("gradient-boosting".into());
    let app = TestApp::spawn_with(pool, config).await;
    for i in 0..30 {
        app.predict(700.0 + 83.0 * f64::from(i), 2 + i64::from(i % 3), 1.0 + f64::from(i % 2)).await;
    }
    app.wait_durable().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.count_rows_now("shadow_price is null").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the shadow scorer priced every row");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query("update prediction_log set shadow_price = shadow_price * 1.1 where id in (select id from prediction_log order by id limit 4)")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_rollups_match_the_raw_rows(&app.pool).await;

    let (n, mean, mean_abs, mean_rel, median, corr): (i64, f64, f64, f64, f64, f64) = sqlx::query_as(
        "select predictions, mean_difference, mean_abs_difference, mean_abs_relative_difference, median_difference, correlation
           from v_shadow_comparison",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let rows: Vec<(f64, f64)> =
        sqlx::query_as("select price, shadow_price from prediction_log").fetch_all(&app.pool).await.unwrap();
    assert_eq!(n, 30);
    let count = rows.len() as f64;
    let differences: Vec<f64> = rows.iter().map(|(p, s)| s - p).collect();
    assert!(close(mean, differences.iter().sum::<f64>() / count, 1e-9));
    assert!(close(mean_abs, differences.iter().map(|d| d.abs()).sum::<f64>() / count, 1e-9));
    assert!(close(mean_rel, rows.iter().map(|(p, s)| (s - p).abs() / p).sum::<f64>() / count, 1e-9));
    let exact_median = nearest_rank(differences, 0.5);
    assert!(close(median, exact_median, HISTOGRAM_BOUND), "median {median} vs exact {exact_median}");
    let exact_corr: f64 =
        sqlx::query_scalar("select corr(price, shadow_price) from prediction_log").fetch_one(&app.pool).await.unwrap();
    assert!(close(corr, exact_corr, 1e-9), "correlation {corr} vs {exact_corr}");

    let body = app
        .graphql(
            "{ shadowComparison(bucket: HOUR) { start predictions meanDifference meanAbsDifference
                    meanAbsRelativeDifference medianDifference correlation shadowModelName } }",
            json!({}),
        )
        .await;
    let buckets = body["data"]["shadowComparison"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(buckets.iter().map(|b| b["predictions"].as_i64().unwrap()).sum::<i64>(), 30, "{body}");
    assert!(buckets.iter().all(|b| b["shadowModelName"] == "gradient-boosting"), "{body}");
    // The API merges the histograms itself: the same numbers as the SQL function behind the view.
    for b in buckets {
        let start: chrono::DateTime<chrono::Utc> = b["start"].as_str().unwrap().parse().unwrap();
        let sql: (i64, f64, f64, f64, f64, f64) = sqlx::query_as(
            "select predictions, mean_difference, mean_abs_difference, mean_abs_relative_difference, median_difference, correlation
               from shadow_buckets('hour', $1, $1 + interval '1 hour')",
        )
        .bind(start)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!((b["predictions"].as_i64(), b["medianDifference"].as_f64()), (Some(sql.0), Some(sql.4)), "{b}");
        for (api, sql) in [
            ("meanDifference", sql.1),
            ("meanAbsDifference", sql.2),
            ("meanAbsRelativeDifference", sql.3),
            ("correlation", sql.5),
        ] {
            assert!(close(b[api].as_f64().unwrap(), sql, 1e-12), "{api}: {b} vs {sql}");
        }
    }
}

/// Rows logged before the rollups existed are rolled up by the migration that adds them.
#[sqlx::test(migrations = false)]
async fn the_migration_rolls_up_the_rows_already_logged(pool: PgPool) {
    let migrator = &house_price_api::db::MIGRATOR;
    migrator.run_to(20261203000000, &pool).await.unwrap();
    sqlx::query(
        "insert into prediction_log (id, request_id, created_at, route, status, error_code, error_field, square_feet,
                                     bedrooms, bathrooms, raw_input, price, model_name, model_version, latency_us,
                                     imputed_features, warnings)
         select gen_random_uuid(), 'r' || i, now() - (i || ' minutes')::interval, 'graphql',
                case when i % 5 = 0 then 'rejected' else 'ok' end,
                case when i % 5 = 0 then 'BAD_USER_INPUT' end, case when i % 5 = 0 then 'input.bedrooms' end,
                1000 + i, 3, 2, '{}', case when i % 5 = 0 then null else 150000 + 100 * i end,
                case when i % 5 = 0 and i % 2 = 0 then null else 'baseline-linear' end,
                case when i % 5 = 0 and i % 2 = 0 then null else '2.0.0' end, 20 + i * 7, '{}', '[]'
           from generate_series(1, 300) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "update prediction_log set shadow_price = price * (0.9 + (latency_us % 20) / 100.0),
                                   shadow_model_name = 'gradient-boosting', shadow_model_version = '2.0.0'
          where status = 'ok' and latency_us % 3 = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into prediction_outcomes (prediction_id, actual_price)
         select id, price * 1.1 from prediction_log where status = 'ok' and request_id like '%3'",
    )
    .execute(&pool)
    .await
    .unwrap();
    migrator.run(&pool).await.unwrap();
    assert_rollups_match_the_raw_rows(&pool).await;
    let labelled: i64 =
        sqlx::query_scalar("select sum(labelled)::int8 from accuracy_hourly").fetch_one(&pool).await.unwrap();
    assert_eq!(labelled, 30, "the outcomes recorded before the migration are in the accuracy sums");
}
