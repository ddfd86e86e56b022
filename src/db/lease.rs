//! Exclusive leases across replicas: a job that must run in exactly one replica at a time (the
//! monitoring evaluator, partition maintenance) runs only while its replica holds a PostgreSQL
//! session advisory lock named after the job.
//!
//! The lock lives on a dedicated connection (never a pooled one: the pool would release or leak
//! it at its whim) and is checked every second; when the check fails (the backend was
//! terminated, the network dropped, PostgreSQL restarted) the job is cancelled at once, and the
//! replica tries to take the lease again. Another replica, polling every second, takes over
//! within seconds of the holder's death. A moment of two holders is still possible (between a
//! lost connection and the next check), so the jobs' writes are idempotent (see each job).

use std::future::Future;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// How often a holder checks its lease and a waiting replica tries to take it.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a check may take before the lease counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The advisory lock key of a lease name (the same in every replica).
const KEY_SQL: &str = "hashtextextended('house-price-api lease: ' || $1, 0)";

/// Runs `job` whenever this replica holds the lease `name`, until `stop`. `job` gets a token
/// that is cancelled when the lease is lost or at `stop`; it must return promptly then.
pub fn run_exclusively<J, F>(pool: &PgPool, name: &'static str, stop: CancellationToken, job: J)
where
    J: Fn(CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let options = pool.connect_options().as_ref().clone();
    tokio::spawn(async move {
        let mut announced_wait = false;
        while !stop.is_cancelled() {
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(lease = name, error = %err, "cannot connect for the lease; retrying");
                    if sleep_or_stop(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            let usable = hold(&mut conn, name, &stop, &job, &mut announced_wait).await;
            if usable {
                let _ = conn.close().await;
            }
        }
    });
}

/// Takes the lease on `conn` (waiting for it) and runs the job while it holds. Returns whether
/// the connection is still usable (to close it politely).
async fn hold<J, F>(
    conn: &mut PgConnection,
    name: &'static str,
    stop: &CancellationToken,
    job: &J,
    announced_wait: &mut bool,
) -> bool
where
    J: Fn(CancellationToken) -> F + Sync,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let taken =
            sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(format!("select pg_try_advisory_lock({KEY_SQL})")))
                .bind(name)
                .fetch_one(&mut *conn)
                .await;
        match taken {
            Ok(true) => break,
            Ok(false) => {
                if !*announced_wait {
                    tracing::info!(lease = name, "another replica holds the lease; standing by");
                    *announced_wait = true;
                }
                if sleep_or_stop(stop).await {
                    return true;
                }
            }
            Err(err) => {
                tracing::warn!(lease = name, error = %err, "cannot take the lease; reconnecting");
                let _ = sleep_or_stop(stop).await;
                return false;
            }
        }
    }
    *announced_wait = false;
    tracing::info!(lease = name, "lease taken: running the job here");
    metrics::gauge!("lease_held", "lease" => name).set(1.0);
    let running = stop.child_token();
    let task = tokio::spawn(job(running.clone()));
    let usable = loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            () = stop.cancelled() => break true,
        }
        let check = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("select 1").execute(&mut *conn)).await;
        if !matches!(check, Ok(Ok(_))) {
            tracing::warn!(lease = name, "lease lost (its connection failed): the job stops here");
            break false;
        }
    };
    running.cancel();
    let _ = task.await;
    metrics::gauge!("lease_held", "lease" => name).set(0.0);
    if usable {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("select pg_advisory_unlock({KEY_SQL})")))
            .bind(name)
            .execute(&mut *conn)
            .await;
    }
    usable
}

/// Sleeps one check interval; true if `stop` fired instead.
async fn sleep_or_stop(stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(CHECK_INTERVAL) => false,
        () = stop.cancelled() => true,
    }
}
