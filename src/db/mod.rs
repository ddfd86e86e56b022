//! PostgreSQL: the pool and the embedded migrations ([`errors`] classifies what a failed
//! statement means, [`lease`] runs a job in one replica at a time, [`feed`] turns a table's new
//! rows into events for every replica, [`reads`] bounds and cancels the API's reads).

pub mod errors;
pub mod feed;
pub mod lease;
pub mod reads;

pub use errors::DbFault;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connects the pool, failing fast with an actionable message.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.pool_size)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .connect(&config.database_url)
        .await
        .context("cannot connect to PostgreSQL; check DATABASE_URL and that the server runs (`make db` sets it up)")
}

/// A pool like `pool` (same size, same server) whose every statement is cancelled by PostgreSQL
/// after `timeout`: the service's reads cannot outlive the request that asked for them, even when
/// the request itself is abandoned (sqlx does not cancel a query whose future is dropped). The
/// log writer does not use it (a commit outliving its request still lands: inserts are
/// idempotent), nor do migrations (converting a large log takes as long as it takes).
pub fn with_statement_timeout(pool: &PgPool, timeout: Duration) -> PgPool {
    let options = pool.options();
    PgPoolOptions::new()
        .max_connections(options.get_max_connections())
        .acquire_timeout(options.get_acquire_timeout())
        .connect_lazy_with(timed_connect_options(pool, timeout))
}

/// `pool`'s connect options with `statement_timeout` = `timeout` as a startup parameter (no `SET`
/// round trip per statement).
pub fn timed_connect_options(pool: &PgPool, timeout: Duration) -> PgConnectOptions {
    pool.connect_options()
        .as_ref()
        .clone()
        .options([("statement_timeout", format!("{}ms", timeout.as_millis().max(1)))])
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("migrating the database failed")
}

/// Versions of embedded migrations that are not (successfully) applied.
pub async fn pending_migrations(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("select version from _sqlx_migrations where success").fetch_all(pool).await {
            Ok(applied) => applied,
            // undefined_table: nothing was ever migrated.
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => Vec::new(),
            Err(err) => return Err(err).context("reading _sqlx_migrations failed"),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect())
}
