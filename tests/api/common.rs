//! Test harness: a real server on 127.0.0.1:0 over the per-test database `#[sqlx::test]` provides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use house_price_api::Application;
use house_price_api::config::AppConfig;
use house_price_api::log::LogWriter;
use house_price_api::model::{HouseFeatures, LoadedModel};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The committed model directory.
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// How long a test waits for PostgreSQL before a batch fails over to the spool. The suite runs
/// in parallel on 2 loaded cores, where a healthy commit can take longer than the production
/// default (`LOG_FAILOVER_MS`, 500 ms); spooling is then correct, but it makes rows reach
/// PostgreSQL later. Tests that assert on the failover set their own bound (`spooling_config`).
pub const TEST_FAILOVER_MS: u64 = 10_000;

/// Default service settings pointed at the committed models, with a spool directory of the
/// test's own (under `target/`, so concurrent tests never share one).
pub fn config() -> AppConfig {
    let mut config = AppConfig::with_model_dir(model_dir());
    config.log.spool_dir = fresh_spool_dir();
    config.log.log_failover_ms = TEST_FAILOVER_MS;
    config.event_poll_ms = 50;
    // The suite sends thousands of requests from 127.0.0.1 at full speed; the rate limits have
    // tests of their own (`security.rs`), which set them.
    config.access.rate_limit_per_address = 0;
    config.access.rate_limit_per_key = 0;
    config
}

/// Longest [`TestApp::wait_durable`] waits.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until every row `log` has taken is in PostgreSQL: nothing queued or being written,
/// nothing in the spool. Panics after [`DURABLE_TIMEOUT`] saying what was still pending.
pub async fn wait_durable(log: &LogWriter) {
    let deadline = tokio::time::Instant::now() + DURABLE_TIMEOUT;
    loop {
        let status = log.status();
        if status.is_settled() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let b = &status.backlog;
            panic!(
                "the prediction log is not durable in PostgreSQL after {DURABLE_TIMEOUT:?}: {} rows in memory, \
                 {} rows in {} spool segments, spooling {}, {} unreadable segments",
                status.in_memory_rows, b.rows, b.segments, status.spooling, b.unreadable_segments
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A new, empty directory for a spool.
pub fn fresh_spool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-spool").join(uuid::Uuid::new_v4().to_string())
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        // Never dropped: nothing is exported in-process (OTLP is tested on a server process).
        std::mem::forget(
            house_price_api::telemetry::init_tracing(&house_price_api::config::TelemetryConfig::default()),
        );
    }
}

/// A running server and what tests need to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub model: Arc<LoadedModel>,
    /// The server's log writer, to wait until what it took is durable.
    pub log: LogWriter,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, config()).await
    }

    pub async fn spawn_with(pool: PgPool, config: AppConfig) -> Self {
        init_logs();
        let app = Application::build(config, pool.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("app builds");
        let addr = app.local_addr().unwrap();
        // What prices the three required inputs alone (the routing of `predictPrice` without `model`).
        let model = app.state().models.snapshot().route(&HouseFeatures::new(1500.0, 3, 2.0)).clone();
        let log = app.state().log.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let app =
            Self { addr, pool, client: reqwest::Client::new(), model, log, stop: Some(stop), server: Some(server) };
        // Wait until the server task runs (and has installed its signal handlers).
        for _ in 0..200 {
            if app.client.get(app.url("/health/live")).send().await.is_ok() {
                return app;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the server did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a GraphQL operation and returns the raw HTTP response.
    pub async fn post_graphql(&self, query: &str, variables: Value) -> reqwest::Response {
        self.client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a GraphQL operation and returns the JSON body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self.post_graphql(query, variables).await;
        assert_eq!(response.status(), 200, "GraphQL always answers 200");
        response.json().await.expect("JSON body")
    }

    /// `predictPrice` for one house; returns the JSON body.
    pub async fn predict(&self, square_feet: f64, bedrooms: i64, bathrooms: f64) -> Value {
        self.graphql(
            "query($input: HouseInput!) { predictPrice(input: $input) { id requestId price createdAt model { name version } } }",
            json!({ "input": { "squareFeet": square_feet, "bedrooms": bedrooms, "bathrooms": bathrooms } }),
        )
        .await
    }

    /// POSTs a raw body to the seed-compatible route.
    pub async fn post_rest(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/prever_precos/"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The price of the model that answers a three-input request, computed in-process.
    pub fn expected_price(&self, square_feet: f64, bedrooms: i64, bathrooms: f64) -> f64 {
        price_of(&self.model, &HouseFeatures::new(square_feet, bedrooms, bathrooms))
    }

    /// Waits until every row answered so far is in PostgreSQL (see [`wait_durable`]). Call it
    /// before reading `prediction_log` (or what is written with it) after predictions.
    pub async fn wait_durable(&self) {
        wait_durable(&self.log).await;
    }

    /// Rows of `prediction_log` matching `condition`, once every answered row is in PostgreSQL.
    pub async fn count_rows(&self, condition: &str) -> i64 {
        self.wait_durable().await;
        self.count_rows_now(condition).await
    }

    /// Rows of `prediction_log` matching `condition` right now, without waiting for the writer
    /// (for tests about what is not yet written).
    pub async fn count_rows_now(&self, condition: &str) -> i64 {
        let sql = format!("select count(*) from prediction_log where {condition}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.pool).await.expect("count")
    }

    /// Triggers graceful shutdown and waits until the server (and the log writer) stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `errors[0].extensions.code` of a GraphQL response.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// `errors[0].extensions.field` of a GraphQL response.
pub fn error_field(body: &Value) -> &str {
    body["errors"][0]["extensions"]["field"].as_str().unwrap_or_else(|| panic!("no error field in {body}"))
}

/// A model's own price for a house, computed in-process.
pub fn price_of(model: &LoadedModel, house: &HouseFeatures) -> f64 {
    model.score(&[house]).pop().expect("one score").expect("model prices the house").price
}

/// The committed model `spec` (`name` or `name@version`), loaded in-process.
pub fn committed_model(spec: &str) -> Arc<LoadedModel> {
    house_price_api::model::ModelSet::load(&model_dir(), &house_price_api::model::ModelRoles::new(spec))
        .expect("committed models load")
        .default_model()
        .clone()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A GraphQL WebSocket client on `/ws`.
pub struct Subscriber {
    ws: Ws,
}

impl Subscriber {
    /// Connects with `protocol` (`graphql-transport-ws` or `graphql-ws`) and completes the handshake.
    pub async fn connect(app: &TestApp, protocol: &str) -> Self {
        Self::connect_with(app, protocol, Value::Null).await
    }

    /// [`Self::connect`] with a `connection_init` payload (`Null`: none).
    pub async fn connect_with(app: &TestApp, protocol: &str, payload: Value) -> Self {
        Self::connect_to(app.addr, protocol, payload).await
    }

    /// A connection to `/ws` at `addr` (a server or a proxy in front of servers), initialised
    /// with `payload`.
    pub async fn connect_to(addr: std::net::SocketAddr, protocol: &str, payload: Value) -> Self {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        let mut subscriber = Self { ws };
        subscriber
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                if payload.is_null() {
                    json!({ "type": "connection_init" })
                } else {
                    json!({ "type": "connection_init", "payload": payload })
                }
                .to_string(),
            ))
            .await
            .unwrap();
        assert_eq!(subscriber.next_event().await["type"], "connection_ack");
        subscriber
    }

    /// Sends a raw protocol message.
    pub async fn send(&mut self, message: Value) {
        use futures_util::SinkExt;
        self.ws.send(tokio_tungstenite::tungstenite::Message::text(message.to_string())).await.unwrap();
    }

    /// The `next` message of operation `id` (other operations' messages skipped).
    pub async fn next_result(&mut self, id: &str) -> Value {
        loop {
            let event = self.next_event().await;
            if event["type"] == "next" && event["id"] == id {
                return event;
            }
        }
    }

    /// The next JSON message (pings skipped).
    pub async fn next_event(&mut self) -> Value {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await.expect("socket open").expect("frame") {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

impl TestApp {
    /// A `driftAlert` subscription over graphql-transport-ws.
    pub async fn subscribe_alerts(&self) -> Subscriber {
        let mut subscriber = Subscriber::connect(self, "graphql-transport-ws").await;
        subscriber
            .send(json!({ "id": "alerts", "type": "subscribe",
                "payload": { "query": "subscription { driftAlert { modelName modelVersion feature status previous psi sampleSize } }" } }))
            .await;
        subscriber
    }
}
