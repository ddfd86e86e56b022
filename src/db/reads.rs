//! Bounded API reads: every history and monitoring read runs on a pool of its own whose
//! connections carry `statement_timeout = READ_TIMEOUT_MS`, and a read whose request is dropped
//! (request timeout, client gone) is cancelled in PostgreSQL instead of running on to the end.
//!
//! Why a pool of its own: the timeout is a startup parameter of its connections (no `SET` round
//! trip per read), the log writer's connections keep no timeout, and a burst of heavy reads can
//! hold at most `READ_POOL_SIZE` connections, never the ones predictions are logged on.
//!
//! Why cancel explicitly: dropping a sqlx future mid-query leaves the statement running in the
//! server until it ends (PostgreSQL only notices a vanished client when it next writes to it).
//! [`ReadPool::run`] knows the backend's pid; if the future is dropped before the read ended, the
//! connection is taken out of the pool (so no other request can be running on that backend when
//! the cancel arrives), `pg_cancel_backend` is sent from another connection, and the taken
//! connection is closed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AppError;

/// The `application_name` of read connections (how to find them in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "house-price-api/read";

/// The pool API reads run on.
#[derive(Debug, Clone)]
pub struct ReadPool {
    reads: PgPool,
    /// Where cancels are sent from (the main pool: a read pool exhausted by slow reads must not
    /// keep their cancels waiting).
    control: PgPool,
    timeout: Duration,
    /// One permit per read connection, held by a read until its connection is back in the pool
    /// or, for an abandoned read, closed: clients that start reads and hang up cannot make the
    /// pool open replacements faster than the cancelled backends go away.
    permits: Arc<Semaphore>,
}

/// A read that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// PostgreSQL cancelled it at `statement_timeout`.
    #[error("the database read took longer than {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// Any other failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<ReadError> for AppError {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::TimedOut(limit) => Self::Timeout(limit.as_millis() as u64),
            ReadError::Db(err) => err.into(),
        }
    }
}

impl ReadPool {
    /// A pool of `size` connections to `main`'s database, each with `statement_timeout` =
    /// `timeout`; connections are opened on first use.
    pub fn new(main: &PgPool, size: u32, timeout: Duration) -> Self {
        let options = super::timed_connect_options(main, timeout).application_name(APPLICATION_NAME);
        let reads = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(main.options().get_acquire_timeout())
            .connect_lazy_with(options);
        Self { reads, control: main.clone(), timeout, permits: Arc::new(Semaphore::new(size as usize)) }
    }

    /// The read timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `read` on a read connection. A statement past the timeout fails with
    /// [`ReadError::TimedOut`]; if this future is dropped before `read` finished, the running
    /// statement is cancelled in PostgreSQL.
    pub async fn run<T>(&self, read: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>) -> Result<T, ReadError> {
        let permit =
            tokio::time::timeout(self.reads.options().get_acquire_timeout(), self.permits.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut conn = self.reads.acquire().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await?;
        let mut guard = CancelOnDrop { conn: Some(conn), pid, control: self.control.clone(), permit: Some(permit) };
        let result = read(guard.conn()).await;
        guard.disarm();
        result.map_err(|err| match &err {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => ReadError::TimedOut(self.timeout),
            _ => ReadError::Db(err),
        })
    }
}

/// Holds a read's connection; dropped while armed, it cancels the backend's statement.
struct CancelOnDrop {
    conn: Option<PoolConnection<Postgres>>,
    pid: i32,
    control: PgPool,
    permit: Option<OwnedSemaphorePermit>,
}

impl CancelOnDrop {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_deref_mut().expect("the connection is held until disarmed")
    }

    /// The read ended: the connection goes back to the pool (then the permit).
    fn disarm(&mut self) {
        self.conn.take();
        self.permit.take();
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Out of the pool first: nothing else may run on this backend before the cancel lands.
        let conn = conn.detach();
        let (pid, control, permit) = (self.pid, self.control.clone(), self.permit.take());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            // Released once the backend is gone.
            let _permit = permit;
            match sqlx::query_scalar::<_, bool>("SELECT pg_cancel_backend($1)").bind(pid).fetch_one(&control).await {
                Ok(_) => tracing::debug!(pid, "cancelled an abandoned read"),
                Err(err) => tracing::warn!(pid, error = %err, "cannot cancel an abandoned read"),
            }
            let _ = conn.close().await;
        });
    }
}
