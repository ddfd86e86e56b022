//! The daily partitions of prediction_log: the migration converts an existing log with its rows,
//! retention drops whole days while the rollups keep their history, and outcomes stay linked.

use chrono::{TimeDelta, Utc};
use house_price_api::log::partitions;
use sqlx::PgPool;

use crate::rollups::assert_rollups_match_the_raw_rows;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap()
}

/// Rows over three days, a third of the accepted ones with an outcome.
const ROWS: &str = "insert into prediction_log (id, request_id, created_at, route, status, error_code, square_feet,
        bedrooms, bathrooms, raw_input, price, model_name, model_version, latency_us, imputed_features, warnings)
    select gen_random_uuid(), 'r' || i, now() - ((i % 3) || ' days')::interval - (i || ' seconds')::interval, 'graphql',
           case when i % 7 = 0 then 'rejected' else 'ok' end, case when i % 7 = 0 then 'BAD_USER_INPUT' end,
           1000 + i, 3, 2, '{}', case when i % 7 = 0 then null else 150000 + i end, 'baseline-linear', '2.0.0',
           30 + i, '{}', '[]'
      from generate_series(1, 210) i";
const OUTCOMES: &str = "insert into prediction_outcomes (prediction_id, actual_price)
    select id, price * 1.2 from prediction_log where status = 'ok' and latency_us % 3 = 0";

#[sqlx::test(migrations = false)]
async fn the_migration_partitions_an_existing_log_with_its_rows(pool: PgPool) {
    let migrator = &house_price_api::db::MIGRATOR;
    migrator.run_to(20261203010000, &pool).await.unwrap();
    sqlx::query(ROWS).execute(&pool).await.unwrap();
    sqlx::query(OUTCOMES).execute(&pool).await.unwrap();
    let before: Vec<(String, i64)> = sqlx::query_as(
        "select to_char(created_at at time zone 'UTC', 'YYYYMMDD'), count(*) from prediction_log group by 1 order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let outcomes = count(&pool, "select count(*) from prediction_outcomes").await;
    assert!(outcomes > 0);

    migrator.run(&pool).await.unwrap();

    let kind: String = sqlx::query_scalar("select relkind::text from pg_class where relname = 'prediction_log'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "p", "prediction_log is partitioned");
    // Every row is in the partition of its UTC day, none lost.
    let after: Vec<(String, i64)> = sqlx::query_as(
        "select substr(tableoid::regclass::text, 17), count(*) from prediction_log group by 1 order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(after, before);
    assert_eq!(
        count(&pool, "select count(*) from prediction_outcomes where prediction_created_at is not null").await,
        outcomes
    );
    assert_rollups_match_the_raw_rows(&pool).await;
    // The link from an outcome to its prediction is still enforced.
    let orphan =
        sqlx::query("insert into prediction_outcomes (prediction_id, actual_price) values (gen_random_uuid(), 1)")
            .execute(&pool)
            .await
            .unwrap_err();
    let code = orphan
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .map(std::borrow::Cow::into_owned)
        .unwrap_or_default();
    assert!(code.starts_with("23"), "an outcome for no prediction is refused: {orphan}");
}

#[sqlx::test]
async fn retention_drops_whole_old_days_and_the_rollups_keep_their_history(pool: PgPool) {
    sqlx::query("select ensure_prediction_log_partition(((now() - make_interval(days => d)) at time zone 'UTC')::date) from generate_series(0, 2) d")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(ROWS).execute(&pool).await.unwrap();
    sqlx::query(OUTCOMES).execute(&pool).await.unwrap();
    let rollups =
        "select (select sum(requests)::int8 from traffic_hourly) + (select sum(labelled)::int8 from accuracy_hourly)";
    let counted = count(&pool, rollups).await;
    let oldest = count(
        &pool,
        "select count(*) from prediction_log where created_at < date_trunc('day', now() - interval '1 day', 'UTC')",
    )
    .await;
    assert!(oldest > 0);

    // Keep two days: today and yesterday.
    let dropped = partitions::maintain(&pool, Utc::now(), 2).await.unwrap();
    let two_days_ago = (Utc::now() - TimeDelta::days(2)).date_naive();
    assert!(dropped.contains(&two_days_ago), "{dropped:?}");
    assert_eq!(
        count(
            &pool,
            "select count(*) from prediction_log where created_at < date_trunc('day', now() - interval '1 day', 'UTC')"
        )
        .await,
        0
    );
    assert_eq!(count(&pool, "select count(*) from prediction_log").await, 210 - oldest);
    assert_eq!(
        count(&pool, "select count(*) from prediction_outcomes o where not exists (select 1 from prediction_log l where l.id = o.prediction_id)").await,
        0
    );
    assert_eq!(count(&pool, rollups).await, counted, "the rollups keep the dropped day's counts and sums");
    // Partitions stand ready from yesterday to a week ahead.
    let days = partitions::days(&pool).await.unwrap();
    let today = Utc::now().date_naive();
    for offset in -1..=partitions::DAYS_AHEAD {
        assert!(days.contains(&(today + TimeDelta::days(offset))), "{offset} days from today: {days:?}");
    }
    assert!(!days.contains(&two_days_ago));
    // Running it again changes nothing.
    assert!(partitions::maintain(&pool, Utc::now(), 2).await.unwrap().is_empty());

    // A run that died between its DETACH and its DROP left a detached table: the next one drops it.
    let old_day = (Utc::now() - TimeDelta::days(5)).date_naive();
    sqlx::query("select ensure_prediction_log_partition($1)").bind(old_day).execute(&pool).await.unwrap();
    let name = format!("prediction_log_p{}", old_day.format("%Y%m%d"));
    sqlx::query(sqlx::AssertSqlSafe(format!("alter table prediction_log detach partition {name}")))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(partitions::maintain(&pool, Utc::now(), 2).await.unwrap(), [old_day]);
    assert_eq!(count(&pool, &format!("select count(*) from pg_class where relname = '{name}'")).await, 0);
}
