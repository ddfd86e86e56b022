//! # house-price-api
//!
//! A GraphQL service that prices houses with a model trained on the Ames, Iowa sales and writes
//! every request, accepted or rejected, to PostgreSQL for monitoring.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | the typed configuration (clap flags + env vars, documented defaults) |
//! | [`auth`] | API keys (database and `API_KEYS`), scopes, `ACCESS` |
//! | [`error`] | `AppError` and the stable GraphQL error codes |
//! | [`model`] | the feature catalogue and validation, artifacts + checksums, model cards, registry, training |
//! | [`log`] | the prediction log: row type, SQL, the writer (group commit, failover to the spool, drain), shadow scoring |
//! | [`monitoring`] | outcomes, accuracy, drift statistics and reports, the evaluator and alerts |
//! | [`replay`] | the `replay` tool: holdout houses (optionally shifted) through a running API |
//! | [`service`] | `AppState` and the prediction use case shared by GraphQL and REST |
//! | [`graphql`] | `build_schema`, query/subscription roots, types, error-code extension |
//! | [`http`] | `app()`: the router, and one file per handler (GraphQL, `/ws`, REST compat route, health, metrics, pages) |
//! | [`db`] | pool, embedded migrations, migration check, the classifier of database errors |
//! | [`telemetry`] | tracing subscriber and Prometheus recorder |
//!
//! [`Application`] ties them together: `main`, the tests and the benchmarks all start the server
//! through it, so there is one way to assemble the service.

pub mod auth;
pub mod config;
pub mod convergence;
pub mod db;
pub mod error;
pub mod graphql;
pub mod http;
pub mod log;
pub mod model;
pub mod monitoring;
pub mod replay;
pub mod service;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use graphql::{AppSchema, build_schema};
pub use http::app;

use auth::KeyStore;
use config::{AppConfig, Cli, Command};
use log::LogWriter;
use log::shadow::ShadowScorer;
use model::ModelRegistry;
use service::{AppParts, AppState};

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    schema: AppSchema,
}

impl Application {
    /// Loads the models (refusing to start on a missing or corrupt artifact), starts the log writer
    /// and binds `listen_addr` (port 0 picks a free port, as the tests do).
    pub async fn build(config: AppConfig, pool: PgPool, listen_addr: SocketAddr) -> anyhow::Result<Self> {
        config.limits.validate()?;
        if config.log.log_queue_rows < config.limits.max_rows_per_request {
            anyhow::bail!(
                "LOG_QUEUE_ROWS ({}) must be at least MAX_ROWS_PER_REQUEST ({}): one request's rows must fit the queue",
                config.log.log_queue_rows,
                config.limits.max_rows_per_request
            );
        }
        let models = ModelRegistry::load(&config.model_dir, config.model_roles())
            .with_context(|| format!("cannot load the models in {}", config.model_dir.display()))?;
        let keys = Arc::new(KeyStore::from_env(&config.access.api_keys).context("invalid API_KEYS")?);
        let set = models.snapshot();
        for m in set.models() {
            tracing::info!(model = %m.id(), sha256 = %m.card.artifact.sha256, r2 = m.card.metrics.r2, "model loaded");
        }
        let listener =
            TcpListener::bind(listen_addr).await.with_context(|| format!("cannot listen on {listen_addr}"))?;
        let _ = telemetry::metrics_handle();
        telemetry::warn_deprecated_metrics();
        let models = Arc::new(models);
        // The writer and the shadow scorer write with their own budgets; every other statement
        // (the API's reads above all) is cancelled by PostgreSQL past the request timeout.
        let shadow = config.shadow_model.is_some().then(|| ShadowScorer::spawn(pool.clone(), models.clone()));
        let log = LogWriter::spawn(pool.clone(), &config.log, shadow)?;
        let pool = db::with_statement_timeout(&pool, config.limits.request_timeout());
        let reads = db::reads::ReadPool::new(&pool, config.limits.read_pool_size, config.limits.read_timeout());
        // Not fatal: the keys of API_KEYS work, and the refresh task retries every KEY_REFRESH_MS.
        if let Err(err) = keys.refresh(&pool).await {
            tracing::error!(error = %err, "cannot read the API keys from the database");
        }
        // Not fatal: without it only the SQL drift view lacks this version (readiness reports an
        // unmigrated database).
        if let Err(err) = monitoring::references::sync(&pool, &set).await {
            tracing::error!(error = %err, "cannot store the models' reference distributions");
        }
        let schema = build_schema(&config.limits);
        let shutdown = CancellationToken::new();
        let poll = config.event_poll();
        let events =
            db::feed::Feed::spawn("predictions", log::events::LoggedRows, pool.clone(), poll, shutdown.clone());
        let alerts =
            db::feed::Feed::spawn("alerts", monitoring::alerts::RaisedAlerts, pool.clone(), poll, shutdown.clone());
        let state = AppState::new(AppParts {
            pool,
            models,
            log,
            config: Arc::new(config),
            keys,
            reads,
            shutdown,
            events,
            alerts,
            reloads: Arc::default(),
            replica: replica_name(listener.local_addr()?.port()),
            model_sync: convergence::SyncStatus::default(),
        });
        convergence::record_startup(&state).await;
        Ok(Self { listener, state, schema })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The shared state (tests use it to reach the loaded model and the writer).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting connections, finishes in-flight
    /// requests, ends subscriptions, and drains the log writer before returning.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let stopping = self.state.shutdown.clone();
        reload_on_sighup(self.state.clone());
        let config = &self.state.config;
        let state = &self.state;
        let evaluator = monitoring::evaluator::Evaluator {
            pool: state.pool.clone(),
            models: state.models.clone(),
            shutdown: state.shutdown.clone(),
        };
        convergence::spawn(state.clone());
        state.keys.clone().spawn_refresh(state.pool.clone(), config.access.key_refresh(), state.shutdown.clone());
        log::partitions::spawn_maintenance(&state.pool, config.log.log_retention_days, state.shutdown.clone());
        monitoring::evaluator::spawn(
            evaluator,
            std::time::Duration::from_millis(config.monitor_interval_ms),
            chrono::TimeDelta::hours(i64::from(config.monitor_window_hours)),
        );
        let router = app(self.schema, self.state.clone());
        tracing::info!(%addr, "listening (GraphiQL at http://{addr}/graphql)");
        // With the peer address (the rate limit per client address reads it).
        axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                stopping.cancel();
            })
            .await
            .context("HTTP server failed")?;
        self.state.log.shutdown().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// This replica's name: the host name and the port it serves on.
fn replica_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}:{port}")
}

/// SIGHUP reloads the models, like the `reloadModels` mutation. The handler is installed before
/// this returns, so a SIGHUP sent once the server runs is never the default (terminating) action.
fn reload_on_sighup(state: AppState) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP; reload with the reloadModels mutation");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hangups.recv() => {
                        // Failures are logged and recorded by reload_models; the old set keeps serving.
                        let _ = state.reload_models("sighup", None).await;
                    }
                    () = state.shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Runs a parsed command line (what `main` does after installing telemetry).
pub async fn run_cli(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let config = *config;
            let pool = db::connect(&config.database).await?;
            let pending = db::pending_migrations(&pool).await?;
            if !pending.is_empty() {
                anyhow::bail!("the database has pending migrations {pending:?}; run `house-price-api migrate` first");
            }
            Application::build(config.app, pool, config.listen_addr).await?.run_until(shutdown_signal()).await
        }
        Command::Migrate(config) => {
            let pool = db::connect(&config).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Train(config) => {
            let cards = model::train::train(&config)?;
            println!("{:<20} {:>8} {:>10} {:>10} {:>8} {:>8}", "model", "version", "MAE", "RMSE", "RMSLE", "R2");
            for c in cards {
                let m = c.metrics;
                println!(
                    "{:<20} {:>8} {:>10.0} {:>10.0} {:>8.4} {:>8.4}",
                    c.name, c.version, m.mae, m.rmse, m.rmsle, m.r2
                );
            }
            Ok(())
        }
        Command::Replay(config) => {
            let summary = replay::run(&config).await?;
            println!(
                "sent {}, priced {}, rejected {}, outcomes recorded {}, MAE {:.0} USD",
                summary.sent,
                summary.priced.len(),
                summary.rejected.len(),
                summary.outcomes_recorded,
                summary.mae()
            );
            Ok(())
        }
        Command::Keys { database, action } => {
            let pool = db::connect(&database).await?;
            auth::keys::run_cli(&pool, action).await
        }
        Command::HashKey { key } => {
            println!("{}", auth::hash_key(&key));
            Ok(())
        }
        Command::ModelTable { model_dir } => {
            print!("{}", model::card::markdown_table(&model::registry::read_cards(&model_dir)?));
            Ok(())
        }
        Command::Schema => {
            print!("{}", graphql::sdl(&build_schema(&config::LimitsConfig::default())).await);
            Ok(())
        }
    }
}
