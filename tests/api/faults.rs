//! Faults on the link between the service and PostgreSQL — cut, black-holed, slowed — injected by
//! a TCP proxy in the test, never by stopping the shared cluster. Every test ends by checking
//! that each id answered OK is in `prediction_log` (read over a direct connection), once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use house_price_api::config::{AppConfig, LogFallback, LogMode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::{TestApp, config, error_code, fresh_spool_dir};

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Forward everything.
    Up,
    /// Close every connection and refuse new ones at once (a restart, a pulled cable with RST).
    Cut,
    /// Keep connections open but let nothing through (packets vanish; no RST, no FIN).
    BlackHole,
    /// Forward, each chunk after a delay (a congested WAN link).
    Slow(Duration),
}

/// A TCP proxy in front of the PostgreSQL the test database lives on.
struct LinkProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
}

impl LinkProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Up);
        let watcher = link.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let mode = watcher.subscribe();
                if *mode.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    // Either direction ending ends the connection.
                    tokio::select! {
                        () = pump(client_read, server_write, mode.clone()) => {}
                        () = pump(server_read, client_write, mode) => {}
                    }
                });
            }
        });
        Self { addr, link }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// A pool like the server's own, connected through the proxy.
    async fn pool_for(&self, direct: &PgPool) -> PgPool {
        let options = (*direct.connect_options()).clone().host("127.0.0.1").port(self.addr.port());
        PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .expect("connects through the proxy")
    }

    /// The test database's URL through the proxy (for a server run as a separate process).
    fn url_for(&self, direct: &PgPool) -> String {
        let mut url = reqwest::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.set_path(direct.connect_options().get_database().expect("database name"));
        url.to_string()
    }
}

/// Copies one direction, obeying the link: a cut closes, a black hole stalls (and closes when it
/// ends, as a connection that lost packets would be), a slow link delays every chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mode = *link.borrow_and_update();
        match mode {
            Link::Cut => return,
            Link::BlackHole => {
                // Read nothing, send nothing, until the hole closes; then the connection is dead.
                let _ = link.wait_for(|l| *l != Link::BlackHole).await;
                return;
            }
            Link::Up | Link::Slow(_) => {}
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = link.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        if let Link::Slow(delay) = mode {
            tokio::time::sleep(delay).await;
        }
        if *link.borrow() == Link::Cut || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Where the test cluster listens (from DATABASE_URL).
fn upstream() -> SocketAddr {
    let url = reqwest::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).unwrap();
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{}", url.port().unwrap_or(5432)).parse().unwrap()
}

/// The service with its database behind a proxy, and a direct pool to check the log with.
struct Rig {
    app: TestApp,
    proxy: LinkProxy,
    direct: PgPool,
}

impl Rig {
    async fn start(direct: PgPool, config: AppConfig) -> Self {
        let proxy = LinkProxy::start(upstream()).await;
        let app = TestApp::spawn_with(proxy.pool_for(&direct).await, config).await;
        Self { app, proxy, direct }
    }
}

fn spooling_config() -> AppConfig {
    let mut config = config();
    config.log.log_failover_ms = 300;
    config
}

/// One `predictPrice`: its id if answered OK, else its error code.
pub(crate) async fn predict(client: &reqwest::Client, addr: SocketAddr, sqft: f64) -> Result<String, String> {
    let body: Value = client
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": "query($s: Float!) { predictPrice(input: {squareFeet: $s, bedrooms: 3, bathrooms: 2}) { id } }",
                       "variables": { "s": sqft } }))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    match body["data"]["predictPrice"]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(error_code(&body).to_owned()),
    }
}

/// What a load run saw.
#[derive(Default)]
struct Load {
    ok: Vec<String>,
    errors: Vec<String>,
    /// OK answers while the fault was on.
    ok_during_fault: usize,
    slowest: Duration,
}

/// `clients` concurrent loops of predictions for `total`, with `fault` applied from `at` for `for_`.
async fn load_through(rig: &Rig, clients: usize, total: Duration, fault: Link, at: Duration, for_: Duration) -> Load {
    let fault_on = Arc::new(AtomicBool::new(false));
    let stop_at = tokio::time::Instant::now() + total;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (client, addr, fault_on) = (rig.app.client.clone(), rig.app.addr, fault_on.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut i = 0;
                while tokio::time::Instant::now() < stop_at {
                    let started = tokio::time::Instant::now();
                    let during = fault_on.load(Ordering::Relaxed);
                    match predict(&client, addr, 800.0 + (c * 1000 + i) as f64 % 2000.0).await {
                        Ok(id) => {
                            load.ok_during_fault += usize::from(during && fault_on.load(Ordering::Relaxed));
                            load.ok.push(id);
                        }
                        Err(code) => load.errors.push(code),
                    }
                    load.slowest = load.slowest.max(started.elapsed());
                    i += 1;
                }
                load
            })
        })
        .collect();
    tokio::time::sleep(at).await;
    rig.proxy.set(fault);
    fault_on.store(true, Ordering::Relaxed);
    tokio::time::sleep(for_).await;
    fault_on.store(false, Ordering::Relaxed);
    rig.proxy.set(Link::Up);
    let mut all = Load::default();
    for worker in workers {
        let load = worker.await.unwrap();
        all.ok.extend(load.ok);
        all.errors.extend(load.errors);
        all.ok_during_fault += load.ok_during_fault;
        all.slowest = all.slowest.max(load.slowest);
    }
    all
}

/// `/health/ready` as JSON (and its status).
async fn ready(app: &TestApp) -> (u16, Value) {
    let response = app.client.get(app.url("/health/ready")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Every id is in the log exactly once; the drift counters count every accepted row.
pub(crate) async fn assert_all_logged(direct: &PgPool, ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
    let found: i64 = sqlx::query_scalar("select count(*) from prediction_log where id = any($1::uuid[])")
        .bind(ids)
        .fetch_one(direct)
        .await
        .unwrap();
    assert_eq!(found as usize, ids.len(), "every id answered OK is in prediction_log");
    let (rows, counted): (i64, Option<i64>) = sqlx::query_as(
        "select (select count(*) from prediction_log where status = 'ok'),
                (select sum(n)::bigint from drift_counts where feature = '_price' and bin >= 0)",
    )
    .fetch_one(direct)
    .await
    .unwrap();
    assert_eq!(counted.unwrap_or(0), rows, "one `_price` counter per accepted row: counters and rows agree");
}

#[sqlx::test]
async fn a_cut_link_under_load_keeps_answering_ok_spools_and_drains_every_row(pool: PgPool) {
    let rig = Rig::start(pool, spooling_config()).await;
    let load =
        load_through(&rig, 8, Duration::from_secs(5), Link::Cut, Duration::from_millis(800), Duration::from_secs(2))
            .await;
    assert!(load.errors.is_empty(), "no request failed: {:?}", &load.errors[..load.errors.len().min(5)]);
    assert!(load.ok_during_fault > 50, "answers continued during the cut: {}", load.ok_during_fault);
    rig.app.wait_durable().await;
    assert_all_logged(&rig.direct, &load.ok).await;
    let metrics = rig.app.client.get(rig.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in ["prediction_log_rows_spooled_total", "prediction_log_rows_drained_total", "prediction_log_spool_bytes"]
    {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    // Renamed metrics keep their old names, with the same value, until they are removed.
    let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(str::to_owned);
    for (old, new) in house_price_api::telemetry::DEPRECATED_METRICS {
        assert!(value(new).is_some(), "{new} in /metrics");
        assert_eq!(value(old), value(new), "{old} still reports {new}'s value");
    }
}

#[sqlx::test]
async fn a_black_holed_link_spools_after_the_failover_bound_and_nothing_hangs(pool: PgPool) {
    let rig = Rig::start(pool, spooling_config()).await;
    let load = load_through(
        &rig,
        4,
        Duration::from_secs(5),
        Link::BlackHole,
        Duration::from_millis(500),
        Duration::from_secs(3),
    )
    .await;
    assert!(load.errors.is_empty(), "{:?}", &load.errors[..load.errors.len().min(5)]);
    assert!(load.ok_during_fault > 20, "answers continued: {}", load.ok_during_fault);
    // LOG_FAILOVER_MS (300) plus the fsync and scheduling: far from the 3 s the hole lasted.
    assert!(load.slowest < Duration::from_millis(1500), "slowest answer {:?}", load.slowest);
    rig.app.wait_durable().await;
    assert_all_logged(&rig.direct, &load.ok).await;
}

#[sqlx::test]
async fn a_slow_link_bounds_latency_by_the_failover_and_loses_nothing(pool: PgPool) {
    let rig = Rig::start(pool, spooling_config()).await;
    let load = load_through(
        &rig,
        4,
        Duration::from_secs(4),
        Link::Slow(Duration::from_millis(300)),
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .await;
    assert!(load.errors.is_empty(), "{:?}", &load.errors[..load.errors.len().min(5)]);
    assert!(load.slowest < Duration::from_millis(1500), "slowest answer {:?}", load.slowest);
    rig.app.wait_durable().await;
    assert_all_logged(&rig.direct, &load.ok).await;
}

#[sqlx::test]
async fn readiness_stays_ok_while_spooling_and_reports_the_backlog(pool: PgPool) {
    let rig = Rig::start(pool, spooling_config()).await;
    rig.proxy.set(Link::Cut);
    let client = reqwest::Client::new();
    for i in 0..5 {
        predict(&client, rig.app.addr, 1000.0 + f64::from(i)).await.expect("answered OK while the link is cut");
    }
    let (status, body) = ready(&rig.app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["database"], "unreachable", "{body}");
    assert_eq!(body["log"]["state"], "spooling");
    assert_eq!(body["log"]["backlog"]["rows"], 5);
    rig.proxy.set(Link::Up);
    rig.app.wait_durable().await;
    assert_eq!(ready(&rig.app).await.1["status"], "ok");
}

#[sqlx::test]
async fn a_full_spool_answers_service_unavailable_and_loses_nothing(pool: PgPool) {
    let mut config = spooling_config();
    config.log.spool_max_bytes = 8 * 1024;
    let rig = Rig::start(pool, config).await;
    rig.proxy.set(Link::Cut);
    let client = reqwest::Client::new();
    let mut ok = Vec::new();
    let refused = loop {
        match predict(&client, rig.app.addr, 1000.0 + ok.len() as f64).await {
            Ok(id) => ok.push(id),
            Err(code) => break code,
        }
        assert!(ok.len() < 1000, "the spool never filled");
    };
    assert_eq!(refused, "SERVICE_UNAVAILABLE");
    assert!(!ok.is_empty());
    assert_eq!(ready(&rig.app).await.0, 503, "not ready: it cannot answer OK any more");
    rig.proxy.set(Link::Up);
    rig.app.wait_durable().await;
    assert_all_logged(&rig.direct, &ok).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from prediction_log").fetch_one(&rig.direct).await.unwrap();
    assert_eq!(rows as usize, ok.len(), "the refused request left no row");
}

#[sqlx::test]
async fn log_fallback_fail_refuses_requests_while_the_database_is_away(pool: PgPool) {
    let mut config = config();
    config.log.log_fallback = LogFallback::Fail;
    let rig = Rig::start(pool, config).await;
    let client = reqwest::Client::new();
    let first = predict(&client, rig.app.addr, 1500.0).await.expect("OK while up");
    rig.proxy.set(Link::Cut);
    assert_eq!(predict(&client, rig.app.addr, 1500.0).await, Err("SERVICE_UNAVAILABLE".to_owned()));
    assert_eq!(ready(&rig.app).await.0, 503);
    rig.proxy.set(Link::Up);
    let second = predict(&client, rig.app.addr, 1500.0).await.expect("OK once the link is back");
    assert_all_logged(&rig.direct, &[first, second]).await;
}

#[sqlx::test]
async fn async_mode_through_a_cut_loses_nothing_it_answered(pool: PgPool) {
    let mut config = spooling_config();
    config.log.log_mode = LogMode::Async;
    let rig = Rig::start(pool, config).await;
    let load =
        load_through(&rig, 4, Duration::from_secs(4), Link::Cut, Duration::from_millis(500), Duration::from_secs(2))
            .await;
    assert!(load.errors.is_empty(), "{:?}", &load.errors[..load.errors.len().min(5)]);
    rig.app.wait_durable().await;
    assert_all_logged(&rig.direct, &load.ok).await;
}

#[sqlx::test]
async fn killed_backends_are_replaced_without_failing_a_request(pool: PgPool) {
    // Without the spool, so a failed first statement would show as SERVICE_UNAVAILABLE.
    let mut config = config();
    config.log.log_fallback = LogFallback::Fail;
    let rig = Rig::start(pool, config).await;
    let client = reqwest::Client::new();
    let mut ok = vec![predict(&client, rig.app.addr, 1500.0).await.unwrap()];
    for round in 0..3 {
        // What a PostgreSQL restart or an operator's pg_terminate_backend does to the pool.
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()")
            .execute(&rig.direct)
            .await
            .unwrap();
        for i in 0..5 {
            let id = predict(&client, rig.app.addr, 1000.0 + f64::from(round * 10 + i)).await;
            ok.push(id.unwrap_or_else(|code| panic!("round {round}: {code}")));
        }
        let history = rig.app.graphql("{ predictions(first: 1) { nodes { id } } }", json!({})).await;
        assert!(history["errors"].is_null(), "{history}");
    }
    assert_all_logged(&rig.direct, &ok).await;
}

#[sqlx::test]
async fn a_torn_final_spool_record_is_skipped_and_the_records_before_it_drained(pool: PgPool) {
    let spool_dir = fresh_spool_dir();
    let mut config = spooling_config();
    config.log.spool_dir = spool_dir.clone();
    let rig = Rig::start(pool.clone(), config.clone()).await;
    rig.proxy.set(Link::Cut);
    let client = reqwest::Client::new();
    let kept = predict(&client, rig.app.addr, 1200.0).await.unwrap();
    let torn = predict(&client, rig.app.addr, 1300.0).await.unwrap();
    rig.app.stop().await;
    // A crash in the middle of the second append: cut its record short. (The drain seals
    // a segment at each attempt, so the two records may sit in one segment or two; the second
    // is the last record of the newest either way.)
    let segment = newest_segment(&spool_dir);
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 30).unwrap();

    let app = TestApp::spawn_with(pool.clone(), config).await;
    app.wait_durable().await;
    assert_all_logged(&pool, std::slice::from_ref(&kept)).await;
    let torn_rows: i64 = sqlx::query_scalar("select count(*) from prediction_log where id = $1::uuid")
        .bind(&torn)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(torn_rows, 0, "the torn record is skipped");
    assert!(!segment.exists(), "the drained segment is deleted");
    assert!(std::fs::read_dir(&spool_dir).unwrap().next().is_none(), "the spool is empty");
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a spool segment")
}

#[sqlx::test]
async fn a_server_killed_while_spooling_drains_everything_it_answered_after_restart(pool: PgPool) {
    let proxy = LinkProxy::start(upstream()).await;
    let spool_dir = fresh_spool_dir();
    let client = reqwest::Client::new();
    let mut ok = Vec::new();
    let first = ServerProcess::start(&proxy.url_for(&pool), &spool_dir).await;
    ok.push(predict(&client, first.addr, 1500.0).await.unwrap());
    proxy.set(Link::Cut);
    // Concurrent requests, so the kill lands while some are being spooled.
    let answers: Vec<_> =
        futures_util::future::join_all((0..40).map(|i| predict(&client, first.addr, 900.0 + f64::from(i)))).await;
    ok.extend(answers.into_iter().map(|a| a.expect("answered OK while spooling")));
    let inflight: Vec<_> =
        (0..20).map(|i| tokio::spawn(predict_owned(client.clone(), first.addr, 2000.0 + f64::from(i)))).collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    first.kill();
    for answer in inflight {
        // Killed mid-flight: whatever was answered OK must be durable; the rest never was.
        if let Ok(Ok(id)) = answer.await {
            ok.push(id);
        }
    }
    proxy.set(Link::Up);
    let second = ServerProcess::start(&proxy.url_for(&pool), &spool_dir).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value =
            client.get(format!("http://{}/health/ready", second.addr)).send().await.unwrap().json().await.unwrap();
        if body["log"]["backlog"]["rows"] == 0 && body["log"]["state"] == "ok" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_logged(&pool, &ok).await;
    second.kill();
}

async fn predict_owned(client: reqwest::Client, addr: SocketAddr, sqft: f64) -> Result<String, String> {
    predict(&client, addr, sqft).await
}

/// The test database's URL, straight to PostgreSQL (for a server run as a separate process).
pub(crate) fn direct_url(direct: &PgPool) -> String {
    let mut url = reqwest::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).unwrap();
    url.set_path(direct.connect_options().get_database().expect("database name"));
    url.to_string()
}

/// The real binary as its own process (so it can be SIGKILLed).
pub(crate) struct ServerProcess {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProcess {
    pub(crate) async fn start(database_url: &str, spool_dir: &Path) -> Self {
        Self::start_with(database_url, spool_dir, &[]).await
    }

    /// [`Self::start`] with more environment variables (they override the defaults here).
    pub(crate) async fn start_with(database_url: &str, spool_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_house-price-api"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", addr.to_string())
            .env("MODEL_DIR", crate::common::model_dir())
            .env("SPOOL_DIR", spool_dir)
            .env("LOG_FAILOVER_MS", "300")
            .env("MONITOR_INTERVAL_MS", "0")
            .env("RUST_LOG", "warn")
            // Load from one address, as in the suite's in-process servers (`common::config`).
            .env("RATE_LIMIT_PER_ADDRESS", "0")
            .env("RATE_LIMIT_PER_KEY", "0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("http://{addr}/health/live")).send().await.is_ok() {
                return Self { child, addr };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server process did not start");
    }

    /// SIGKILL: no shutdown, no drain.
    pub(crate) fn kill(self) {
        drop(self);
    }
}

impl Drop for ServerProcess {
    /// A test that fails half-way must not leave its server running (it would hold the test
    /// database open, and the next run could not recreate it).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[sqlx::test]
async fn many_aliases_of_large_batches_are_refused_beyond_the_row_cap(pool: PgPool) {
    // The cost budget refuses such a document before it runs (5 per input: 5,511 > 5,000); with a
    // larger budget the row cap is what holds.
    let mut config = config();
    config.limits.max_query_cost = 100_000;
    let app = TestApp::spawn_with(pool, config).await;
    let batch: Vec<Value> = (0..100).map(|i| json!({ "squareFeet": 900 + i, "bedrooms": 3, "bathrooms": 2 })).collect();
    // 11 aliases × 100 items = 1,100 rows, over MAX_ROWS_PER_REQUEST (1,000).
    let aliases: String = (0..11).map(|i| format!("a{i}: predictPrices(inputs: $b) {{ index }} ")).collect();
    let body = app.graphql(&format!("query($b: [HouseInput!]!) {{ {aliases} }}"), json!({ "b": batch })).await;
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(errors.len(), 1, "exactly one alias over the cap: {errors:?}");
    assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(errors[0]["extensions"]["field"], "inputs");
    assert!(errors[0]["message"].as_str().unwrap().contains("1000 rows"), "{errors:?}");
    assert_eq!(app.count_rows("true").await, 1000, "the refused alias logged nothing");
}
