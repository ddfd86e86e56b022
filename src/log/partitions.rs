//! The daily partitions of `prediction_log`: created ahead of time, created on demand for a
//! row whose day has none (an old row drained from the spool, a clock far ahead), and dropped
//! whole past `LOG_RETENTION_DAYS`. The SQL functions are in
//! `migrations/20261203020000_partitioned_log.sql`.
//!
//! One replica at a time runs the maintenance (a lease), and every step is idempotent (create if
//! missing, drop if present), so a moment of two holders only repeats itself.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::record::PredictionRecord;

/// Days created ahead of today: a week of margin if maintenance stops running.
pub const DAYS_AHEAD: i64 = 7;
/// How often maintenance runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// The days known to have a partition (so the writer asks PostgreSQL only for new days).
#[derive(Default)]
pub struct KnownDays {
    days: std::sync::Mutex<HashSet<NaiveDate>>,
}

impl KnownDays {
    /// Makes sure every row's day has a partition, on the connection about to insert them.
    pub async fn ensure_for(&self, conn: &mut PgConnection, rows: &[&PredictionRecord]) -> sqlx::Result<()> {
        let missing: Vec<NaiveDate> = {
            let known = self.days.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut missing: Vec<NaiveDate> =
                rows.iter().map(|r| r.created_at.date_naive()).filter(|d| !known.contains(d)).collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        for day in missing {
            ensure(conn, day).await?;
            self.days.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(day);
        }
        Ok(())
    }
}

/// Creates the partition of `day` (UTC) unless it exists.
pub async fn ensure(conn: &mut PgConnection, day: NaiveDate) -> sqlx::Result<()> {
    sqlx::query("select ensure_prediction_log_partition($1)").bind(day).execute(conn).await?;
    Ok(())
}

/// The UTC days that have a partition, oldest first.
pub async fn days(pool: &PgPool) -> sqlx::Result<Vec<NaiveDate>> {
    // By name, not by pg_inherits: a partition detached by a run that died before its DROP is
    // still found (and dropped) by the next.
    let names: Vec<String> = sqlx::query_scalar(
        "select relname::text from pg_class
          where relkind = 'r' and relnamespace = current_schema()::regnamespace
            and relname ~ '^prediction_log_p[0-9]{8}$'
          order by 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(names
        .iter()
        .filter_map(|n| NaiveDate::parse_from_str(n.strip_prefix("prediction_log_p")?, "%Y%m%d").ok())
        .collect())
}

/// Drops the partition of `day` and the outcomes of its predictions without blocking the log's
/// inserts: the outcomes are deleted first (the rollups keep their sums: the outcome trigger is
/// told it is retention), then the partition is detached CONCURRENTLY (the insert path keeps
/// writing; a plain DETACH would lock the whole log while PostgreSQL checks the outcomes' foreign
/// key, long enough to send batches to the spool), then the detached table is dropped. Each step
/// is idempotent: a run that died half-way is finished by the next (a detach left pending is
/// FINALIZEd, a detached table is still found by name).
pub async fn drop_day(pool: &PgPool, day: NaiveDate) -> sqlx::Result<()> {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let mut tx = pool.begin().await?;
    sqlx::query("set local house_price.retention = 'on'").execute(&mut *tx).await?;
    sqlx::query("delete from prediction_outcomes where prediction_created_at >= $1 and prediction_created_at < $2")
        .bind(start)
        .bind(start + TimeDelta::days(1))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let name: String = sqlx::query_scalar("select prediction_log_partition_name($1)").bind(day).fetch_one(pool).await?;
    // None: not a partition (any more); Some(pending): attached, or detached half-way.
    let attached: Option<bool> = sqlx::query_scalar(
        "select i.inhdetachpending from pg_inherits i where i.inhrelid = to_regclass($1) and i.inhparent = 'prediction_log'::regclass",
    )
    .bind(&name)
    .fetch_optional(pool)
    .await?;
    // The name comes from the SQL function (digits only), never from a client. DETACH
    // CONCURRENTLY cannot run in a transaction block: each statement runs on its own.
    let detach = match attached {
        Some(false) => Some(format!("alter table prediction_log detach partition \"{name}\" concurrently")),
        Some(true) => Some(format!("alter table prediction_log detach partition \"{name}\" finalize")),
        None => None,
    };
    if let Some(detach) = detach {
        sqlx::query(sqlx::AssertSqlSafe(detach)).execute(pool).await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("drop table if exists \"{name}\""))).execute(pool).await?;
    Ok(())
}

/// One maintenance pass at `now`: partitions from yesterday to [`DAYS_AHEAD`] days ahead, and with
/// a retention, the days older than it dropped. Returns the days dropped.
pub async fn maintain(pool: &PgPool, now: DateTime<Utc>, retention_days: u32) -> sqlx::Result<Vec<NaiveDate>> {
    let today = now.date_naive();
    let mut conn = pool.acquire().await?;
    for offset in -1..=DAYS_AHEAD {
        ensure(&mut conn, today + TimeDelta::days(offset)).await?;
    }
    drop(conn);
    let mut dropped = Vec::new();
    if retention_days > 0 {
        let oldest_kept = today - TimeDelta::days(i64::from(retention_days) - 1);
        for day in days(pool).await?.into_iter().filter(|d| *d < oldest_kept) {
            drop_day(pool, day).await?;
            tracing::info!(%day, "prediction_log partition dropped (LOG_RETENTION_DAYS)");
            dropped.push(day);
        }
    }
    Ok(dropped)
}

/// Runs [`maintain`] now and every hour until `stop`, in one replica at a time (the
/// `partition-maintenance` lease; every step is idempotent, so a moment of two holders is harmless).
pub fn spawn_maintenance(pool: &PgPool, retention_days: u32, stop: CancellationToken) {
    let jobs = pool.clone();
    crate::db::lease::run_exclusively(pool, "partition-maintenance", stop, move |running| {
        let pool = jobs.clone();
        async move {
            loop {
                if let Err(err) = maintain(&pool, Utc::now(), retention_days).await {
                    tracing::error!(error = %err, "prediction_log partition maintenance failed; retrying in an hour");
                }
                tokio::select! {
                    () = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
                    () = running.cancelled() => return,
                }
            }
        }
    });
}
