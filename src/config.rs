//! Typed configuration: every setting is a CLI flag and an environment variable with a documented
//! default. This is the only module that reads the environment (through clap).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Reads `.env` from the working directory (or the nearest parent that has one) into the
/// environment; variables already set win. Call it before any thread exists (it sets variables).
/// Returns the error if a `.env` exists but could not be read.
pub fn load_dotenv() -> Option<dotenvy::Error> {
    dotenvy::dotenv().err().filter(|err| !err.not_found())
}

/// Defaults, shared by clap and the `Default` impls so tests use exactly what operators get.
pub mod defaults {
    /// The Ames sales `train` fits and `replay` sends.
    pub const TRAIN_DATA: &str = "data/ames_housing.csv";
    /// Seed of the holdout shuffle: `train` and `replay` must agree to replay the true holdout.
    pub const SPLIT_SEED: u64 = 42;
    /// Share of the rows held out from training, for the metrics (and for `replay`).
    pub const HOLDOUT_FRACTION: f64 = 0.2;
    /// Where the service listens.
    pub const LISTEN_ADDR: &str = "127.0.0.1:8000";
    /// Root of `<name>/<version>/` model directories.
    pub const MODEL_DIR: &str = "models";
    /// Model answering requests that choose none and send optional features: the most accurate.
    pub const DEFAULT_MODEL: &str = "price-blend";
    /// Model answering requests that choose none and send only the three required inputs (the
    /// seed's shape, and the REST route's): the best model of those three.
    pub const THREE_INPUT_MODEL: &str = "three-input-boosting";
    /// Connections in the service pool (history, monitoring, readiness, shadow prices). The log
    /// writer has its own `LOG_WRITER_CONCURRENCY + 1` on top. PostgreSQL's default
    /// max_connections is 100.
    pub const POOL_SIZE: u32 = 10;
    /// How long a query waits for a connection before the request fails with SERVICE_UNAVAILABLE.
    pub const ACQUIRE_TIMEOUT_MS: u64 = 3_000;
    /// Log rows (not requests) held in memory for the writer; when full, durable requests wait and
    /// async ones are refused. Rows, because one request may carry hundreds (aliases × batch items):
    /// a bound in requests would not bound memory.
    pub const LOG_QUEUE_ROWS: usize = 20_000;
    /// Most rows one HTTP request (or WebSocket operation) may log, over every alias and batch
    /// item: 10 full `predictPrices` batches.
    pub const MAX_ROWS_PER_REQUEST: usize = 1_000;
    /// How long a request waits for PostgreSQL before its batch is spooled to local disk instead:
    /// long enough for a healthy commit under load, short enough that an outage is not felt.
    pub const LOG_FAILOVER_MS: u64 = 500;
    /// Where spooled batches wait for the database.
    pub const SPOOL_DIR: &str = "spool";
    /// Largest spool on disk (1 GiB, several hours of an outage at full load); beyond it
    /// requests get SERVICE_UNAVAILABLE.
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    /// Most rows in one INSERT (one round trip and one commit).
    pub const LOG_BATCH_SIZE: usize = 500;
    /// How long the writer waits for more rows after the first one of a batch. 0 (write what is
    /// queued at once) measured best: batches still form from the rows that arrive while the
    /// previous insert runs (bench/README.md: 18.1 k req/s at 0 ms vs 14.8 k at 1 ms, 12.0 k at 2 ms).
    pub const LOG_FLUSH_INTERVAL_MS: u64 = 0;
    /// Batches inserted concurrently. 1 measured best with PostgreSQL on the same 2 cores (12.9 k
    /// req/s vs 12.0 k at 2, 11.7 k at 3: CPU is the limit, and more writers only make batches
    /// smaller); raise it when the database is remote and round trips dominate.
    pub const LOG_WRITER_CONCURRENCY: usize = 1;
    /// Raw log rows are kept until an operator chooses a retention: dropping data is opt-in.
    pub const LOG_RETENTION_DAYS: u32 = 0;
    /// Items in one `predictPrices` call.
    pub const MAX_BATCH_SIZE: usize = 100;
    /// `predictions(first:)` when not given.
    pub const DEFAULT_PAGE_SIZE: usize = 20;
    /// Largest accepted `predictions(first:)`.
    pub const MAX_PAGE_SIZE: usize = 100;
    /// The evaluator runs every 5 minutes: drift moves over hours, and a run costs a few queries.
    pub const MONITOR_INTERVAL_MS: u64 = 300_000;
    /// How often each replica reads new log rows and alerts for its subscribers: the latency of
    /// `predictionLogged` and `driftAlert` (one indexed query per feed and period; with no
    /// subscriber, a one-line query).
    pub const EVENT_POLL_MS: u64 = 200;
    /// A day of traffic: enough values per feature for stable PSI, recent enough to react.
    pub const MONITOR_WINDOW_HOURS: u32 = 24;
    /// Request bodies above this are refused (413) before parsing.
    pub const MAX_BODY_BYTES: usize = 1 << 20;
    /// Whole-request budget, parsing to answer.
    pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
    /// Deepest accepted selection set.
    pub const MAX_QUERY_DEPTH: usize = 10;
    /// Largest accepted GraphQL cost (estimated database work, see `graphql::cost`) per request.
    pub const MAX_QUERY_COST: usize = 5_000;
    /// Most aliases in one GraphQL document (counted through fragments).
    pub const MAX_ALIASES: usize = 30;
    /// Most directives in one GraphQL document (counted through fragments).
    pub const MAX_DIRECTIVES: usize = 50;
    /// Most lexical tokens in one GraphQL document.
    pub const MAX_TOKENS: usize = 5_000;
    /// Milliseconds an API read may run in PostgreSQL (`statement_timeout` of the read pool).
    pub const READ_TIMEOUT_MS: u64 = 5_000;
    /// Connections of the pool API reads use (apart from the log writer's).
    pub const READ_POOL_SIZE: u32 = 4;
    /// Milliseconds between two re-reads of the `api_keys` table (and `last_used_at` writes).
    pub const KEY_REFRESH_MS: u64 = 1_000;
    /// Requests per second one client address may make (0: no limit).
    pub const RATE_LIMIT_PER_ADDRESS: u32 = 100;
    /// Requests per second one API key may make (0: no limit).
    pub const RATE_LIMIT_PER_KEY: u32 = 1_000;
    /// Seconds of the per-second rate a client may spend at once (the burst).
    pub const RATE_LIMIT_BURST_SECONDS: u32 = 2;
    /// Deepest accepted `__schema`/`__type` selection. The standard introspection query
    /// (graphql-js `getIntrospectionQuery()`, as GraphiQL, codegen and `gql` send it) is 15 deep
    /// (its `TypeRef` fragment nests `ofType` nine times to unwrap types like `[[T!]!]!`); this
    /// leaves room for tools that ask a few levels more and still refuses self-nested abuse.
    pub const MAX_INTROSPECTION_DEPTH: usize = 20;
    /// Introspection is on: GraphiQL, codegen and client libraries need it.
    pub const INTROSPECTION: bool = true;
}

/// `house-price-api`: serve house-price predictions over GraphQL, train the model, migrate the log.
#[derive(Debug, Parser)]
#[command(name = "house-price-api", version, about)]
pub struct Cli {
    /// Logging options (all subcommands).
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (and the seed-compatible REST route).
    Serve(Box<ServeConfig>),
    /// Train the models on the Ames data and write them to the model directory.
    Train(TrainConfig),
    /// Apply pending database migrations.
    Migrate(DatabaseConfig),
    /// Print the GraphQL schema (SDL) the server serves.
    Schema,
    /// Replay the Ames holdout houses through a running service (optionally shifted) and record
    /// their true prices as outcomes.
    Replay(ReplayConfig),
    /// Manage the API keys kept in the database (every replica sees a change within
    /// `KEY_REFRESH_MS`).
    Keys {
        /// The database.
        #[command(flatten)]
        database: DatabaseConfig,
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Print the sha256 digest of an API key, for `API_KEYS`.
    HashKey {
        /// The key.
        key: String,
    },
    /// Print the README's model table, generated from the model cards.
    ModelTable {
        /// Root model directory.
        #[arg(long, env = "MODEL_DIR", default_value = defaults::MODEL_DIR)]
        model_dir: PathBuf,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (the only time it is shown).
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: predict, history, monitoring, outcomes, models.
        #[arg(long)]
        scopes: String,
        /// Days until the key expires (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
    },
    /// List the keys (never their secrets): id, name, scopes, state, created, expires, last used.
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id (the 12 hex digits after `hpk_`).
        id: String,
    },
    /// Replace a key with a new one of the same name and scopes; the old one keeps working for
    /// the grace period, so clients can switch without an outage.
    Rotate {
        /// The key's id.
        id: String,
        /// Hours the old key keeps working (at most ten years).
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=87_600))]
        grace_hours: u32,
    },
}

/// Diagnostic output: tracing format and trace export.
#[derive(Debug, Clone, Default, Args)]
pub struct TelemetryConfig {
    /// Format of the server's own diagnostic output (tracing): `pretty` for humans, `json` for
    /// log shippers. Filter with RUST_LOG (default `info`). ("Log" settings, `LOG_*`, are the
    /// prediction log's.)
    #[arg(long, env = "TRACE_FORMAT", value_enum, global = true)]
    pub trace_format: Option<TraceFormat>,
    /// Deprecated name of `TRACE_FORMAT`, still read (with a warning) when `TRACE_FORMAT` is unset.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, global = true, hide = true)]
    pub deprecated_log_format: Option<TraceFormat>,
    /// OTLP/HTTP endpoint of a trace collector, e.g. `http://otel-collector:4318`. When set, the
    /// server's spans are exported (protobuf, to `{endpoint}/v1/traces` unless
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` says otherwise) and a request's W3C `traceparent`
    /// continues the caller's trace. Unset: nothing is exported. The SDK reads the other standard
    /// `OTEL_*` variables (service name, sampler, headers, batch settings).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// The tracing format in force: `TRACE_FORMAT`, else the deprecated `LOG_FORMAT`, else pretty.
    pub fn format(&self) -> TraceFormat {
        self.trace_format.or(self.deprecated_log_format).unwrap_or(TraceFormat::Pretty)
    }

    /// Deprecated settings that are set, with what replaces them, to warn about once tracing is up.
    pub fn deprecations(&self) -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        if self.deprecated_log_format.is_some() {
            found.push(("LOG_FORMAT", "TRACE_FORMAT"));
        }
        found
    }
}

/// Format of the server's tracing output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// PostgreSQL connection.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL, e.g. `postgres://user:pass@127.0.0.1:5432/db`. Secret: never logged.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Maximum pool connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = defaults::POOL_SIZE)]
    pub pool_size: u32,
    /// Milliseconds to wait for a pooled connection.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = defaults::ACQUIRE_TIMEOUT_MS)]
    pub acquire_timeout_ms: u64,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("database_url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .finish()
    }
}

/// `serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database connection.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "LISTEN_ADDR", default_value = defaults::LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// Everything but the database and the socket.
    #[command(flatten)]
    pub app: AppConfig,
}

/// Service settings independent of the database and socket (what tests vary).
#[derive(Debug, Clone, Args)]
pub struct AppConfig {
    /// Root directory of `<name>/<version>/{card.json,model.postcard}`.
    #[arg(long, env = "MODEL_DIR", default_value = defaults::MODEL_DIR)]
    pub model_dir: PathBuf,
    /// `name` (highest version) or `name@version` of the model that prices requests that choose
    /// none and send any optional feature (and every such request when THREE_INPUT_MODEL is empty).
    #[arg(long, env = "DEFAULT_MODEL", default_value = defaults::DEFAULT_MODEL)]
    pub default_model: String,
    /// The model that prices requests that choose none and send only `squareFeet`, `bedrooms`
    /// and `bathrooms` (the REST route's shape). Empty: DEFAULT_MODEL prices them too.
    #[arg(long, env = "THREE_INPUT_MODEL", default_value = defaults::THREE_INPUT_MODEL)]
    pub three_input_model: String,
    /// `name` or `name@version` of a shadow model that also scores every accepted prediction off the
    /// response path (its price is stored next to the answer). Unset: no shadow scoring.
    #[arg(long, env = "SHADOW_MODEL")]
    pub shadow_model: Option<String>,
    /// API keys allowed to call mutations, as sha256 hex digests (`house-price-api hash-key KEY`),
    /// comma-separated, each optionally `:scope+scope` (`models`, `outcomes`; default both).
    /// Empty: mutations are disabled.
    /// Largest accepted request body, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Milliseconds between runs of the drift/accuracy evaluator (0: off).
    #[arg(long, env = "MONITOR_INTERVAL_MS", default_value_t = defaults::MONITOR_INTERVAL_MS)]
    pub monitor_interval_ms: u64,
    /// Hours of traffic each evaluator run looks at (1 to 8784, a leap year).
    #[arg(long, env = "MONITOR_WINDOW_HOURS", default_value_t = defaults::MONITOR_WINDOW_HOURS,
          value_parser = clap::value_parser!(u32).range(1..=8784))]
    pub monitor_window_hours: u32,
    /// Milliseconds between two reads of new log rows and alerts for subscribers (1 to 60000).
    #[arg(long, env = "EVENT_POLL_MS", default_value_t = defaults::EVENT_POLL_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub event_poll_ms: u64,
    /// Origins allowed to call the API from a browser (comma-separated, `*` for any). Empty: no CORS headers.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_allowed_origins: Vec<String>,
    /// Request-log writer.
    #[command(flatten)]
    pub log: LogWriterConfig,
    /// Request limits.
    #[command(flatten)]
    pub limits: LimitsConfig,
    /// Keys, scopes and rate limits.
    #[command(flatten)]
    pub access: AccessConfig,
}

impl AppConfig {
    /// The configured model roles.
    pub fn model_roles(&self) -> crate::model::ModelRoles {
        crate::model::ModelRoles {
            default: self.default_model.clone(),
            three_input: Some(self.three_input_model.clone()).filter(|m| !m.is_empty()),
            shadow: self.shadow_model.clone(),
        }
    }

    /// [`Self::event_poll_ms`] as a duration.
    pub fn event_poll(&self) -> Duration {
        Duration::from_millis(self.event_poll_ms.max(1))
    }

    /// Defaults with another model directory (tests point it at the crate's `models/`).
    pub fn with_model_dir(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            default_model: defaults::DEFAULT_MODEL.to_owned(),
            three_input_model: defaults::THREE_INPUT_MODEL.to_owned(),
            shadow_model: None,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            monitor_interval_ms: defaults::MONITOR_INTERVAL_MS,
            monitor_window_hours: defaults::MONITOR_WINDOW_HOURS,
            event_poll_ms: defaults::EVENT_POLL_MS,
            cors_allowed_origins: Vec::new(),
            log: LogWriterConfig::default(),
            limits: LimitsConfig::default(),
            access: AccessConfig::default(),
        }
    }
}

/// When a request may be answered relative to its log row's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogMode {
    /// Answer only after the batch holding the row has committed (group commit). An OK answer
    /// means the row is durable; if the database is down, requests fail with SERVICE_UNAVAILABLE.
    Durable,
    /// Answer once the row is queued. Faster, but rows still queued when the process dies are lost;
    /// a full queue refuses requests with SERVICE_UNAVAILABLE rather than dropping rows.
    Async,
}

/// Request-log writer settings.
#[derive(Debug, Clone, Args)]
pub struct LogWriterConfig {
    /// `durable` (default) or `async`; see README "Durability".
    #[arg(long, env = "LOG_MODE", value_enum, default_value_t = LogMode::Durable)]
    pub log_mode: LogMode,
    /// Rows that may wait in memory for the writer (over all requests).
    #[arg(long, env = "LOG_QUEUE_ROWS", default_value_t = defaults::LOG_QUEUE_ROWS)]
    pub log_queue_rows: usize,
    /// What the writer does with a batch PostgreSQL does not take in time (unreachable, slower
    /// than `LOG_FAILOVER_MS`, restarting): `spool` it to local disk and answer OK, or `fail` the
    /// requests with SERVICE_UNAVAILABLE.
    #[arg(long, env = "LOG_FALLBACK", value_enum, default_value_t = LogFallback::Spool)]
    pub log_fallback: LogFallback,
    /// Milliseconds a batch waits for PostgreSQL before it is spooled (or failed).
    #[arg(long, env = "LOG_FAILOVER_MS", default_value_t = defaults::LOG_FAILOVER_MS)]
    pub log_failover_ms: u64,
    /// Directory of the write-ahead spool (created if missing).
    #[arg(long, env = "SPOOL_DIR", default_value = defaults::SPOOL_DIR)]
    pub spool_dir: PathBuf,
    /// Largest total size of the spool's segment files, bytes.
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value_t = defaults::SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,
    /// Most rows per INSERT.
    #[arg(long, env = "LOG_BATCH_SIZE", default_value_t = defaults::LOG_BATCH_SIZE)]
    pub log_batch_size: usize,
    /// Milliseconds the writer waits to fill a batch after its first row.
    #[arg(long, env = "LOG_FLUSH_INTERVAL_MS", default_value_t = defaults::LOG_FLUSH_INTERVAL_MS)]
    pub log_flush_interval_ms: u64,
    /// Batches being inserted at the same time.
    #[arg(long, env = "LOG_WRITER_CONCURRENCY", default_value_t = defaults::LOG_WRITER_CONCURRENCY)]
    pub log_writer_concurrency: usize,
    /// Days of raw log rows kept: older daily partitions (and their outcomes) are dropped whole;
    /// the hourly rollups keep the long history. 0 keeps every day.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = defaults::LOG_RETENTION_DAYS)]
    pub log_retention_days: u32,
}

impl Default for LogWriterConfig {
    fn default() -> Self {
        Self {
            log_mode: LogMode::Durable,
            log_queue_rows: defaults::LOG_QUEUE_ROWS,
            log_fallback: LogFallback::Spool,
            log_failover_ms: defaults::LOG_FAILOVER_MS,
            spool_dir: PathBuf::from(defaults::SPOOL_DIR),
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            log_batch_size: defaults::LOG_BATCH_SIZE,
            log_flush_interval_ms: defaults::LOG_FLUSH_INTERVAL_MS,
            log_writer_concurrency: defaults::LOG_WRITER_CONCURRENCY,
            log_retention_days: defaults::LOG_RETENTION_DAYS,
        }
    }
}

impl LogWriterConfig {
    /// [`Self::log_flush_interval_ms`] as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.log_flush_interval_ms)
    }

    /// [`Self::log_failover_ms`] as a duration.
    pub fn failover(&self) -> Duration {
        Duration::from_millis(self.log_failover_ms)
    }
}

/// What happens to a batch PostgreSQL does not take in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFallback {
    /// Append it to the local write-ahead spool (fsynced), answer OK, drain it into PostgreSQL when the
    /// database is back. An OK answer still means the row is durable — on local disk until drained.
    Spool,
    /// Fail the waiting requests with SERVICE_UNAVAILABLE (async mode: retry, then drop).
    Fail,
}

/// Request limits.
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Most items in one `predictPrices` call.
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = defaults::MAX_BATCH_SIZE)]
    pub max_batch_size: usize,
    /// `predictions(first:)` when omitted.
    #[arg(long, env = "DEFAULT_PAGE_SIZE", default_value_t = defaults::DEFAULT_PAGE_SIZE)]
    pub default_page_size: usize,
    /// Largest accepted `predictions(first:)`.
    #[arg(long, env = "MAX_PAGE_SIZE", default_value_t = defaults::MAX_PAGE_SIZE)]
    pub max_page_size: usize,
    /// Milliseconds a request may take before it fails with REQUEST_TIMEOUT.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// Deepest accepted GraphQL selection.
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = defaults::MAX_QUERY_DEPTH)]
    pub max_query_depth: usize,
    /// Largest accepted cost of one request (the sum over a batch's operations): estimated
    /// database work, each field's cost in its description (`graphql::cost`). QUERY_TOO_COSTLY beyond.
    #[arg(long, env = "MAX_QUERY_COST", default_value_t = defaults::MAX_QUERY_COST)]
    pub max_query_cost: usize,
    /// Most aliases in one GraphQL document, counted through fragments (QUERY_TOO_COSTLY beyond).
    #[arg(long, env = "MAX_ALIASES", default_value_t = defaults::MAX_ALIASES)]
    pub max_aliases: usize,
    /// Most directives in one GraphQL document, counted through fragments (QUERY_TOO_COSTLY beyond).
    #[arg(long, env = "MAX_DIRECTIVES", default_value_t = defaults::MAX_DIRECTIVES)]
    pub max_directives: usize,
    /// Most lexical tokens in one GraphQL document, counted before parsing (QUERY_TOO_COSTLY beyond).
    #[arg(long, env = "MAX_TOKENS", default_value_t = defaults::MAX_TOKENS)]
    pub max_tokens: usize,
    /// Milliseconds an API read (history, monitoring) may run in PostgreSQL: the read pool's
    /// `statement_timeout`. A read cut off answers REQUEST_TIMEOUT.
    #[arg(long, env = "READ_TIMEOUT_MS", default_value_t = defaults::READ_TIMEOUT_MS)]
    pub read_timeout_ms: u64,
    /// Connections of the read pool (history and monitoring reads); the log writer has its own.
    #[arg(long, env = "READ_POOL_SIZE", default_value_t = defaults::READ_POOL_SIZE)]
    pub read_pool_size: u32,
    /// Most rows one request may log, counting every alias and batch item (BAD_USER_INPUT beyond).
    #[arg(long, env = "MAX_ROWS_PER_REQUEST", default_value_t = defaults::MAX_ROWS_PER_REQUEST)]
    pub max_rows_per_request: usize,
    /// Deepest accepted introspection (`__schema`, `__type`) selection; the standard
    /// introspection query needs 15.
    #[arg(long, env = "MAX_INTROSPECTION_DEPTH", default_value_t = defaults::MAX_INTROSPECTION_DEPTH)]
    pub max_introspection_depth: usize,
    /// Whether clients may introspect the schema (`__schema`, `__type`). GraphiQL's docs and
    /// autocompletion, graphql-codegen and `gql` need it; an operator may turn it off in
    /// production (clients then use the published `schema.graphql`).
    #[arg(long, env = "INTROSPECTION", default_value_t = defaults::INTROSPECTION, action = clap::ArgAction::Set)]
    pub introspection: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_batch_size: defaults::MAX_BATCH_SIZE,
            default_page_size: defaults::DEFAULT_PAGE_SIZE,
            max_page_size: defaults::MAX_PAGE_SIZE,
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            max_query_depth: defaults::MAX_QUERY_DEPTH,
            max_query_cost: defaults::MAX_QUERY_COST,
            max_aliases: defaults::MAX_ALIASES,
            max_directives: defaults::MAX_DIRECTIVES,
            max_tokens: defaults::MAX_TOKENS,
            read_timeout_ms: defaults::READ_TIMEOUT_MS,
            read_pool_size: defaults::READ_POOL_SIZE,
            max_rows_per_request: defaults::MAX_ROWS_PER_REQUEST,
            max_introspection_depth: defaults::MAX_INTROSPECTION_DEPTH,
            introspection: defaults::INTROSPECTION,
        }
    }
}

impl LimitsConfig {
    /// Rejects settings the service cannot honour (checked at start).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_page_size == 0 || !(1..=self.max_page_size).contains(&self.default_page_size) {
            anyhow::bail!(
                "DEFAULT_PAGE_SIZE ({}) must be between 1 and MAX_PAGE_SIZE ({}), and MAX_PAGE_SIZE at least 1",
                self.default_page_size,
                self.max_page_size
            );
        }
        if self.read_pool_size == 0 || self.read_timeout_ms == 0 {
            anyhow::bail!("READ_POOL_SIZE and READ_TIMEOUT_MS must be at least 1");
        }
        if self.max_batch_size == 0 {
            anyhow::bail!("MAX_BATCH_SIZE must be at least 1");
        }
        if self.max_rows_per_request < self.max_batch_size {
            anyhow::bail!(
                "MAX_ROWS_PER_REQUEST ({}) must be at least MAX_BATCH_SIZE ({}): a full batch must be loggable",
                self.max_rows_per_request,
                self.max_batch_size
            );
        }
        Ok(())
    }

    /// [`Self::read_timeout_ms`] as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Who may call, and how often.
#[derive(Debug, Clone, Args)]
pub struct AccessConfig {
    /// `open`: predictions, history, monitoring and model metadata need no key (local use, the
    /// seed's clients); `keys`: every operation needs a key with its scope (production).
    #[arg(long, env = "ACCESS", value_enum, default_value_t = crate::auth::Access::Open)]
    pub access: crate::auth::Access,
    /// Bootstrap API keys as sha256 digests (`house-price-api hash-key`), comma-separated:
    /// `<digest>` (every scope) or `<digest>:<scope>+<scope>`. Keys are otherwise kept in the
    /// database (`house-price-api keys create`).
    #[arg(long, env = "API_KEYS", value_delimiter = ',', default_value = "", hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Milliseconds between two re-reads of the `api_keys` table: how long a created, revoked or
    /// rotated key takes to reach this replica.
    #[arg(long, env = "KEY_REFRESH_MS", default_value_t = defaults::KEY_REFRESH_MS,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub key_refresh_ms: u64,
    /// Requests per second one client address may make, per replica (0: unlimited). Requests
    /// with a valid key count against the key instead.
    #[arg(long, env = "RATE_LIMIT_PER_ADDRESS", default_value_t = defaults::RATE_LIMIT_PER_ADDRESS)]
    pub rate_limit_per_address: u32,
    /// Requests per second one API key may make, per replica (0: unlimited).
    #[arg(long, env = "RATE_LIMIT_PER_KEY", default_value_t = defaults::RATE_LIMIT_PER_KEY)]
    pub rate_limit_per_key: u32,
    /// Seconds of its rate a client may spend at once (burst = rate × this).
    #[arg(long, env = "RATE_LIMIT_BURST_SECONDS", default_value_t = defaults::RATE_LIMIT_BURST_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub rate_limit_burst_seconds: u32,
    /// Take the client address from the last entry of `X-Forwarded-For` (set it only behind a
    /// proxy that appends the address it saw, such as nginx with `$proxy_add_x_forwarded_for`).
    #[arg(long, env = "TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            access: crate::auth::Access::Open,
            api_keys: Vec::new(),
            key_refresh_ms: defaults::KEY_REFRESH_MS,
            rate_limit_per_address: defaults::RATE_LIMIT_PER_ADDRESS,
            rate_limit_per_key: defaults::RATE_LIMIT_PER_KEY,
            rate_limit_burst_seconds: defaults::RATE_LIMIT_BURST_SECONDS,
            trust_forwarded_for: false,
        }
    }
}

impl AccessConfig {
    /// [`Self::key_refresh_ms`] as a duration.
    pub fn key_refresh(&self) -> Duration {
        Duration::from_millis(self.key_refresh_ms)
    }
}

/// `train` settings (what the training pipeline takes).
#[derive(Debug, Clone, Args)]
pub struct TrainConfig {
    /// Ames CSV to train on.
    #[arg(long, env = "TRAIN_DATA", default_value = defaults::TRAIN_DATA)]
    pub data: PathBuf,
    /// Root directory the versions are written under.
    #[arg(long, env = "MODEL_DIR", default_value = defaults::MODEL_DIR)]
    pub out_dir: PathBuf,
    /// Seed of the holdout shuffle; every model uses it so metrics compare.
    #[arg(long, default_value_t = defaults::SPLIT_SEED)]
    pub seed: u64,
    /// Fraction of rows held out for metrics.
    #[arg(long, default_value_t = defaults::HOLDOUT_FRACTION)]
    pub holdout_fraction: f64,
    /// RFC 3339 time to stamp the cards with (default: now); set it to reproduce a card exactly.
    #[arg(long)]
    pub trained_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Train only these models (repeatable; default: all).
    #[arg(long = "only")]
    pub only: Vec<String>,
    /// Leave out the 5-fold cross-validation (most of the training time; the cards then have
    /// none): for quick experiments, never for committed models.
    #[arg(long = "no-cross-validation", action = clap::ArgAction::SetFalse)]
    pub cross_validate: bool,
}

/// `replay` settings (what the replay tool takes).
#[derive(Debug, Clone, Args)]
pub struct ReplayConfig {
    /// Base URL of the running service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Model to ask (`name` or `name@version`); default: the service's default model.
    #[arg(long)]
    pub model: Option<String>,
    /// Ames CSV (the same split as training: `--seed`, `--holdout-fraction`).
    #[arg(long, default_value = defaults::TRAIN_DATA)]
    pub data: PathBuf,
    /// Seed of the holdout split.
    #[arg(long, default_value_t = defaults::SPLIT_SEED)]
    pub seed: u64,
    /// Holdout fraction.
    #[arg(long, default_value_t = defaults::HOLDOUT_FRACTION)]
    pub holdout_fraction: f64,
    /// Change a feature of every house: `squareFeet=+30%`, `yearBuilt=-10`, `neighborhood=Gilbert`
    /// (repeatable; checked against the feature catalogue when the replay starts).
    #[arg(long = "shift")]
    pub shifts: Vec<String>,
    /// Replay only a slice of the holdout by a numeric feature: `squareFeet=top30%` (the 30 %
    /// largest) or `squareFeet=bottom30%`: a shift in who is priced, with true prices intact.
    #[arg(long)]
    pub slice: Option<String>,
    /// API key with the `outcomes` scope, to record the true prices.
    #[arg(long, env = "REPLAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Houses per request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Replay only the first N holdout houses.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_documented_constants() {
        let cli = Cli::try_parse_from(["house-price-api", "serve", "--database-url", "postgres://x"]).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("expected serve") };
        assert_eq!(serve.listen_addr.to_string(), defaults::LISTEN_ADDR);
        assert_eq!(serve.app.log.log_mode, LogMode::Durable);
        assert_eq!(serve.app.limits.max_page_size, LimitsConfig::default().max_page_size);
        assert!(serve.app.cors_allowed_origins.iter().all(String::is_empty));
    }

    #[test]
    fn a_monitoring_window_outside_one_hour_to_a_year_is_refused() {
        let serve = |hours: &str| {
            Cli::try_parse_from([
                "house-price-api",
                "serve",
                "--database-url",
                "postgres://x",
                "--monitor-window-hours",
                hours,
            ])
        };
        for bad in ["0", "8785", "4294967295"] {
            let err = serve(bad).unwrap_err().to_string();
            assert!(err.contains("monitor-window-hours") && err.contains("1..=8784"), "{err}");
        }
        assert!(serve("8784").is_ok());
    }

    #[test]
    fn the_database_url_is_not_printed() {
        let cli =
            Cli::try_parse_from(["house-price-api", "migrate", "--database-url", "postgres://u:hunter2@h/db"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
