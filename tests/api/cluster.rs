//! `make run-cluster` as the test runs it: scripts/run-cluster.sh starts nginx (the committed
//! deploy/nginx template) in front of three replicas of the real binary on one PostgreSQL.
//! Predictions through nginx are logged once each, a subscription through nginx sees what any
//! replica serves, and a replica killed is routed around.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::common::{Subscriber, model_dir};
use crate::faults::{direct_url, predict};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// scripts/run-cluster.sh in its own process group, stopped (SIGTERM to the group) when dropped.
struct Cluster {
    script: Child,
    dir: PathBuf,
    nginx: SocketAddr,
    replicas: Vec<SocketAddr>,
}

impl Cluster {
    async fn start(database_url: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-cluster")
            .join(uuid::Uuid::new_v4().to_string());
        let nginx: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let replicas: Vec<SocketAddr> = (0..3).map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()).collect();
        let ports: Vec<String> = replicas.iter().map(|a| a.port().to_string()).collect();
        let script = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run-cluster.sh"))
            .env("BIN", env!("CARGO_BIN_EXE_house-price-api"))
            .env("DATABASE_URL", database_url)
            .env("CLUSTER_DIR", &dir)
            .env("CLUSTER_PORT", nginx.port().to_string())
            .env("REPLICA_PORTS", ports.join(" "))
            .env("MODEL_DIR", model_dir())
            .env("MONITOR_INTERVAL_MS", "0")
            .env("EVENT_POLL_MS", "50")
            .env("RUST_LOG", "warn")
            .env("RATE_LIMIT_PER_ADDRESS", "0")
            .env("RATE_LIMIT_PER_KEY", "0")
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("scripts/run-cluster.sh starts");
        let cluster = Self { script, dir, nginx, replicas };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("http://{nginx}/health/live")).send().await
                && r.status().is_success()
            {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not answer; see {}", cluster.dir.display());
    }

    /// SIGKILL to the replica at `index`.
    fn kill_replica(&self, index: usize) {
        let pid =
            std::fs::read_to_string(self.dir.join(format!("replica-{}.pid", self.replicas[index].port()))).unwrap();
        let status = Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let group = format!("-{}", self.script.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.script.wait();
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

/// The seed's REST route through `addr`: the price.
async fn rest_price(client: &reqwest::Client, addr: SocketAddr) -> f64 {
    let body: Value = client
        .post(format!("http://{addr}/prever_precos/"))
        .json(&json!({ "square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["previsao"][0].as_f64().unwrap_or_else(|| panic!("{body}"))
}

#[sqlx::test]
async fn nginx_in_front_of_three_replicas_logs_once_fans_out_subscriptions_and_routes_around_a_dead_one(pool: PgPool) {
    let cluster = Cluster::start(&direct_url(&pool)).await;
    let client = reqwest::Client::new();

    // A subscription through nginx (a WebSocket upgrade proxied to one of the replicas).
    let mut ws = Subscriber::connect_to(cluster.nginx, "graphql-transport-ws", Value::Null).await;
    ws.send(json!({ "id": "logged", "type": "subscribe",
                    "payload": { "query": "subscription { predictionLogged { id } }" } }))
        .await;
    // The subscription is live once a probe written after it shows up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'live: loop {
        let probe = predict(&client, cluster.nginx, 900.0).await.expect("a probe answered");
        let until = (tokio::time::Instant::now() + Duration::from_secs(2)).min(deadline);
        while let Ok(event) = tokio::time::timeout_at(until, ws.next_result("logged")).await {
            if event["payload"]["data"]["predictionLogged"]["id"] == probe.as_str() {
                break 'live;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the subscription through nginx never started");
    }

    // Through nginx: every id answered is in the log, once.
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(predict(&client, cluster.nginx, 1000.0 + f64::from(i)).await.expect("answered through nginx"));
    }
    assert!(rest_price(&client, cluster.nginx).await > 0.0);
    // Straight to each replica: the subscriber behind nginx hears of all of them.
    let mut direct = Vec::new();
    for &replica in &cluster.replicas {
        direct.push(predict(&client, replica, 2000.0).await.expect("answered by the replica"));
    }
    let mut seen = HashSet::new();
    let wanted: HashSet<&String> = ids.iter().chain(&direct).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|id| seen.contains(*id)) {
        let event = tokio::time::timeout_at(deadline, ws.next_result("logged")).await.unwrap_or_else(|_| {
            panic!(
                "missing from the subscription: {:?}",
                wanted.iter().filter(|id| !seen.contains(**id)).collect::<Vec<_>>()
            )
        });
        seen.insert(event["payload"]["data"]["predictionLogged"]["id"].as_str().unwrap().to_owned());
    }
    let logged: Vec<(String, i64)> =
        sqlx::query_as("select id::text, count(*) from prediction_log where id = any($1::uuid[]) group by id")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(logged.len(), ids.len(), "every id answered through nginx is logged");
    assert!(logged.iter().all(|(_, n)| *n == 1), "once each: {logged:?}");
    let rest_rows: i64 = sqlx::query_scalar("select count(*) from prediction_log where route like 'rest:%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rest_rows, 1);

    // One replica killed: nginx sends every request to the others; none fails. (A request sent
    // while the process is still dying would get a 502, as it would from any proxy: wait until
    // its port refuses connections.)
    cluster.kill_replica(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(cluster.replicas[0]).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the killed replica still accepts connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after = Vec::new();
    for i in 0..30 {
        after
            .push(predict(&client, cluster.nginx, 3000.0 + f64::from(i)).await.expect("answered after a replica died"));
    }
    let found: i64 = sqlx::query_scalar("select count(*) from prediction_log where id = any($1::uuid[])")
        .bind(&after)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(found as usize, after.len());
    assert!(
        client.get(format!("http://{}/health/live", cluster.replicas[0])).send().await.is_err(),
        "the replica is dead"
    );
}
