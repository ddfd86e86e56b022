//! The deployment files of deploy/, checked with the tools teams run on them: hadolint on the
//! Dockerfile; `kubectl kustomize` and `kubernetes-validate --strict` on the manifests, plus the
//! rules they must keep (a spool claim per replica, probes, the drain inside the grace period);
//! `promtool` on the alert rules and on a live `/metrics`; the Grafana dashboards' metric names
//! against a live `/metrics` and their SQL against a migrated database, as the analysts' role.
//! scripts/test-tools.sh (run by `make test`) installs the tools.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use house_price_api::telemetry::{METRICS, MetricKind};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::common::TestApp;
use crate::monitoring::{monitored_config, run_replay};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A tool installed by scripts/test-tools.sh.
fn tool(path: &str) -> PathBuf {
    let path = repo(path);
    assert!(path.exists(), "{} is missing: run scripts/test-tools.sh (make test does)", path.display());
    path
}

fn run(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs `command`; panics with its output unless it succeeds. Returns stdout.
fn succeed(command: &mut Command, stdin: Option<&[u8]>) -> String {
    let out = run(command, stdin);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{command:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn text_of(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

// ---------------------------------------------------------------- image

#[test]
fn the_dockerfile_passes_hadolint_and_runs_as_non_root_with_the_spool_on_a_volume() {
    succeed(Command::new(tool("target/py-venv/bin/hadolint")).arg(repo("deploy/Dockerfile")), None);
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit_once("\nFROM ").expect("a runtime stage").1;
    assert!(runtime.starts_with("gcr.io/distroless/cc-debian12"), "{runtime}");
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("USER in the runtime stage");
    assert!(user.split(':').all(|id| id.parse::<u32>().is_ok_and(|id| id != 0)), "numeric, non-root: {user}");
    let spool = runtime.lines().find_map(|l| l.trim().strip_prefix("SPOOL_DIR=")).expect("SPOOL_DIR set");
    let spool = spool.trim_end_matches(" \\");
    assert!(runtime.contains(&format!("VOLUME [\"{spool}\"]")), "the spool directory is a volume");
    assert!(
        runtime.contains("/app/models") && runtime.contains("MODEL_DIR=/app/models"),
        "the models are in the image"
    );
    // The dependency layer is cooked before the sources are copied.
    let cook = dockerfile.find("cargo chef cook").unwrap();
    assert!(cook < dockerfile.rfind("COPY . .").unwrap());
}

// ---------------------------------------------------------------- Kubernetes

/// `kubectl kustomize dir`, validated by kubernetes-validate --strict; the documents as JSON.
fn render(dir: &str) -> Vec<Value> {
    let yaml = succeed(Command::new("kubectl").arg("kustomize").arg(repo(dir)), None);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    let validate = tool("target/py-venv/bin/kubernetes-validate");
    succeed(Command::new(&validate).args(["--strict", "--quiet"]).arg(file.path()), None);
    let json = succeed(
        Command::new(tool("target/py-venv/bin/python")).args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ]),
        Some(yaml.as_bytes()),
    );
    serde_json::from_str(&json).unwrap()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// The settings `house-price-api serve` reads from the environment (`[env: NAME=…]` in --help).
fn known_settings() -> BTreeSet<String> {
    let help = succeed(Command::new(env!("CARGO_BIN_EXE_house-price-api")).args(["serve", "--help"]), None);
    help.split("[env: ").skip(1).filter_map(|s| s.split(['=', ']']).next()).map(str::to_owned).collect()
}

fn check_manifests(docs: &[Value]) {
    let config = one(docs, "ConfigMap");
    let settings: HashMap<&str, &str> =
        config["data"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
    let known = known_settings();
    for key in settings.keys() {
        assert!(
            known.contains(*key) || key.starts_with("OTEL_") || *key == "RUST_LOG",
            "{key} in the ConfigMap is not a setting of the service"
        );
        assert!(!["DATABASE_URL", "API_KEYS"].contains(key), "{key} is a secret, not configuration");
    }
    let set = one(docs, "StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let api = &pod["containers"][0];
    assert!(api["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"], "{api}");
    let env: HashMap<&str, &Value> =
        api["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), &e["valueFrom"])).collect();
    assert!(env["DATABASE_URL"]["secretKeyRef"]["name"].is_string(), "the database URL comes from a Secret");

    // The spool: a claim per replica, mounted where SPOOL_DIR points, larger than SPOOL_MAX_BYTES;
    // it is the only writable path.
    let claim = &set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "spool");
    let mounts = api["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "only the spool is mounted: {mounts:?}");
    assert_eq!(mounts[0]["name"], "spool");
    assert_eq!(mounts[0]["mountPath"], settings["SPOOL_DIR"]);
    assert!(pod["volumes"].is_null(), "no pod volume (an emptyDir spool would lose rows): {}", pod["volumes"]);
    let size = claim["spec"]["resources"]["requests"]["storage"].as_str().unwrap();
    let gib: u64 = size.strip_suffix("Gi").expect("a size in Gi").parse().unwrap();
    assert!(gib << 30 > settings["SPOOL_MAX_BYTES"].parse::<u64>().unwrap(), "the claim holds a full spool");
    assert_eq!(set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Retain");
    let security = &api["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // Probes on the service's endpoints.
    assert_eq!(api["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(api["livenessProbe"]["httpGet"]["path"], "/health/live");
    assert!(api["startupProbe"]["httpGet"]["path"].is_string());
    // SIGTERM comes after preStop; the drain (in-flight requests, then the writer's last flush)
    // must end before the grace period does.
    let pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    let ms = |key: &str| settings[key].parse::<u64>().unwrap();
    let drain = pre_stop * 1000 + ms("REQUEST_TIMEOUT_MS") + ms("LOG_FAILOVER_MS");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap() * 1000;
    assert!(grace > drain, "grace {grace} ms is not longer than the drain {drain} ms");

    // Autoscaling on CPU; the HPA alone sets the replica count.
    let hpa = one(docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], set["metadata"]["name"]);
    assert!(hpa["spec"]["metrics"].as_array().unwrap().iter().any(|m| m["resource"]["name"] == "cpu"));
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert!(set["spec"]["replicas"].is_null(), "an applied replica count would fight the HPA");

    let pdb = one(docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"], set["spec"]["selector"]);
    let service = docs.iter().find(|d| d["kind"] == "Service" && d["spec"]["clusterIP"] != "None").unwrap();
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&set["spec"]["template"]["metadata"]["labels"][label], value, "the Service selects the pods");
    }
    let job = one(docs, "Job");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"], json!(["migrate"]));
    assert!(job["spec"]["activeDeadlineSeconds"].is_null(), "a migration is not cut short");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], api["image"], "migrations of the same build");
}

#[test]
fn the_kubernetes_base_and_production_overlay_render_validate_strictly_and_keep_the_spool_rules() {
    let base = render("deploy/k8s/base");
    check_manifests(&base);
    let production = render("deploy/k8s/overlays/production");
    check_manifests(&production);
    assert!(
        production.iter().filter(|d| d["kind"] != "Namespace").all(|d| d["metadata"]["namespace"] == "house-price")
    );
    let set = one(&production, "StatefulSet");
    let hpa = one(&production, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    // Requests in flight, a gauge the service exports, next to CPU.
    let custom =
        hpa["spec"]["metrics"].as_array().unwrap().iter().find(|m| m["type"] == "Pods").expect("a Pods metric")["pods"]
            ["metric"]["name"]
            .as_str()
            .unwrap();
    assert!(METRICS.iter().any(|(name, kind, _)| *name == custom && *kind == MetricKind::Gauge), "{custom}");
    // Scraped under the job name the alert rules read (`up{job="house-price-api"}`).
    let monitor = one(&production, "PodMonitor");
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(set["spec"]["template"]["metadata"]["labels"][job_label], "house-price-api");
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    assert!(rules.contains(r#"up{job="house-price-api"}"#));
    let image = set["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap();
    assert!(
        image.contains('/') && !image.ends_with(":latest") && image.contains(':'),
        "a pinned registry image: {image}"
    );
    assert_eq!(one(&production, "PodDisruptionBudget")["spec"]["minAvailable"], 2);
}

#[test]
fn kubernetes_validate_strict_refuses_a_field_kubernetes_does_not_know() {
    // The validation above has teeth: a misspelt field fails it.
    let yaml = succeed(Command::new("kubectl").arg("kustomize").arg(repo("deploy/k8s/base")), None);
    let broken = yaml.replacen("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1);
    assert_ne!(broken, yaml);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), broken).unwrap();
    let out = run(Command::new(tool("target/py-venv/bin/kubernetes-validate")).arg("--strict").arg(file.path()), None);
    assert!(!out.status.success(), "{}", text_of(&out));
    assert!(text_of(&out).contains("terminationGracePeriodSecond"), "{}", text_of(&out));
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("target/tools/bin/promtool");
    succeed(Command::new(&promtool).args(["check", "rules"]).arg(repo("deploy/prometheus/alerts.yml")), None);
    let out = succeed(
        Command::new(&promtool).args(["test", "rules", "alerts.test.yml"]).current_dir(repo("deploy/prometheus")),
        None,
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // The scrape configuration of `make run-cluster`'s replicas, with the rules.
    succeed(Command::new(&promtool).args(["check", "config"]).arg(repo("deploy/prometheus/prometheus.yml")), None);
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo("deploy/prometheus/alerts.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} has no unit test");
    }
}

/// Metric names a PromQL expression reads: the identifiers left once label matchers, ranges,
/// strings, function calls, aggregation operators and their grouping labels are taken out
/// (histogram series mapped to their histogram).
fn metric_names(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const OPERATORS: &[&str] = &["bool", "and", "or", "unless", "offset", "inf", "nan"];
    // Out: label matchers, ranges and strings.
    let mut cleaned = String::new();
    let (mut depth, mut quote) = (0, None);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, c) if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let next_is_paren = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i < chars.len() && chars[i] == '(').then_some(i)
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$') {
            // Numbers (0.99, 5e3) are skipped whole so their letters are not read as names.
            if c.is_ascii_digit() || c == '.' {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':' || chars[i] == '$')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if GROUPING.contains(&word.as_str()) {
            // Skip the label list.
            if let Some(open) = next_is_paren(i) {
                i = open + chars[open..].iter().position(|&c| c == ')').unwrap() + 1;
            }
            continue;
        }
        if AGGREGATIONS.contains(&word.as_str()) || OPERATORS.contains(&word.as_str()) || word.starts_with('$') {
            continue;
        }
        if next_is_paren(i).is_some() {
            continue; // a function
        }
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(&word);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{route=~"/graphql|x"}[5m]))) > 0.5"#,
    );
    assert_eq!(names, BTreeSet::from(["http_request_duration_seconds".to_owned()]));
    let names = metric_names(
        r#"sum(rate(predictions_total{status="failed"}[5m])) / sum without (instance) (rate(predictions_total[$__rate_interval])) or up{job="x"} == 0"#,
    );
    assert_eq!(names, BTreeSet::from(["predictions_total".to_owned(), "up".to_owned()]));
}

/// Every PromQL expression of the dashboards and the alert rules.
fn promql_in_deploy() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/house-price-api-service.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = panels(&dashboard)
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a PromQL target").to_owned())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let query = variable["definition"].as_str().unwrap();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.split_once(',')).unwrap().0;
        exprs.push(inner.to_owned());
    }
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let rules = succeed(
        Command::new(tool("target/py-venv/bin/python")).args([
            "-c",
            "import json, sys, yaml; print(json.dumps([r['expr'] for g in yaml.safe_load(sys.stdin)['groups'] for r in g['rules']]))",
        ]),
        Some(rules.as_bytes()),
    );
    exprs.extend(serde_json::from_str::<Vec<String>>(&rules).unwrap());
    exprs
}

fn panels(dashboard: &Value) -> impl Iterator<Item = &Value> {
    dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row")
}

/// A server with every metric family the dashboards and alerts read: traffic, refusals, the
/// writer, shadow scoring, the evaluator's drift and coverage gauges.
async fn busy_server(pool: PgPool) -> TestApp {
    let mut config = monitored_config();
    config.monitor_interval_ms = 200;
    config.shadow_model = Some("ridge-log".into());
    // Anonymous callers get 2 requests of burst (the two GraphQL requests below); the replay's
    // key is unlimited.
    config.access.rate_limit_per_address = 1;
    config.access.rate_limit_burst_seconds = 2;
    let app = TestApp::spawn_with(pool, config).await;
    run_replay(&app, &[]).await;
    let rejected =
        app.graphql("{ predictPrice(input: {squareFeet: -5, bedrooms: 3, bathrooms: 2}) { price } }", json!({})).await;
    assert_eq!(crate::common::error_code(&rejected), "BAD_USER_INPUT", "{rejected}");
    let aliases: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
    let refused = app.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(crate::common::error_code(&refused), "QUERY_TOO_COSTLY", "over MAX_ALIASES: {refused}");
    // Faster than 1 a second until one is refused (a loaded machine may need a few more).
    let mut statuses = Vec::new();
    while !statuses.contains(&reqwest::StatusCode::TOO_MANY_REQUESTS) {
        assert!(statuses.len() < 50, "never rate limited: {statuses:?}");
        statuses.push(app.post_rest(r#"{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}"#).await.status());
    }
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert!(ready.status().is_success());
    app
}

#[sqlx::test]
async fn live_metrics_pass_promtool_and_hold_every_metric_the_dashboards_and_alerts_read(pool: PgPool) {
    let wanted: BTreeSet<String> = promql_in_deploy()
        .iter()
        .flat_map(|e| metric_names(e))
        // Prometheus' own `up` and kube-state-metrics' series.
        .filter(|n| n != "up" && !n.starts_with("kube_"))
        .collect();
    for name in &wanted {
        assert!(METRICS.iter().any(|(m, _, _)| m == name), "{name} is not a metric of the service");
    }
    assert!(wanted.contains("drift_status") && wanted.contains("http_requests_in_flight"), "{wanted:?}");
    let app = busy_server(pool).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let families: BTreeSet<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        let missing: Vec<&String> = wanted.iter().filter(|n| !families.contains(n.as_str())).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "not in /metrics: {missing:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out =
        run(Command::new(tool("target/tools/bin/promtool")).args(["check", "metrics"]), Some(exposition.as_bytes()));
    assert!(out.status.success(), "promtool check metrics:\n{}", text_of(&out));
    // Counters that alerts watch for any increase exist at 0 before their first event.
    assert!(exposition.contains("prediction_log_rows_dropped_total 0"), "{exposition}");
    assert!(exposition.contains("query_refused_total{limit=\"aliases\"} 1"), "{exposition}");
    assert!(exposition.contains("graphql_errors_total{code=\"BAD_USER_INPUT\"} 1"), "{exposition}");
    // Histograms the alerts aggregate across replicas are histograms, not summaries.
    assert!(exposition.contains("# TYPE http_request_duration_seconds histogram"), "{exposition}");
    assert!(exposition.contains("http_request_duration_seconds_bucket{route=\"/graphql\",le=\"0.005\"}"));
}

// ---------------------------------------------------------------- Grafana

#[test]
fn the_dashboards_are_import_ready_with_stable_uids_and_declared_datasources() {
    for (file, uid, input) in [
        ("house-price-api-service.json", "house-price-api-service", "DS_PROMETHEUS"),
        ("house-price-api-analytics.json", "house-price-api-analytics", "DS_POSTGRES"),
    ] {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(&format!("deploy/grafana/{file}"))).unwrap()).unwrap();
        assert_eq!(dashboard["uid"], uid);
        assert!(dashboard["id"].is_null(), "{file}: no instance-specific id");
        assert_eq!(dashboard["__inputs"][0]["name"], input);
        assert_eq!(dashboard["__inputs"][0]["type"], "datasource");
        let reference = format!("${{{input}}}");
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            assert!(ids.insert(panel["id"].as_u64().unwrap()), "{file}: panel ids are unique");
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file}: {} has no description",
                panel["title"]
            );
            assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{file}: {}", panel["title"]);
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"]["uid"], reference.as_str());
            }
        }
    }
}

/// The analytics dashboard's SQL with Grafana's macros expanded as Grafana does, over the last
/// 30 days.
fn dashboard_sql() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/house-price-api-analytics.json")).unwrap())
            .unwrap();
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| format!("'{}'", t.format("%Y-%m-%dT%H:%M:%SZ"));
    let (from, to) = (stamp(now - chrono::TimeDelta::days(30)), stamp(now + chrono::TimeDelta::hours(1)));
    let (from, to) = (from.as_str(), to.as_str());
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().unwrap() {
            let mut sql = target["rawSql"].as_str().expect("raw SQL").to_owned();
            while let Some(start) = sql.find("$__timeFilter(") {
                let end = start + sql[start..].find(')').unwrap();
                let column = &sql[start + "$__timeFilter(".len()..end];
                sql = format!("{}{column} BETWEEN {from} AND {to}{}", &sql[..start], &sql[end + 1..]);
            }
            let sql = sql.replace("$__timeFrom()", from).replace("$__timeTo()", to);
            assert!(!sql.contains('$'), "a macro this test does not expand: {sql}");
            queries.push((panel["title"].as_str().unwrap().to_owned(), sql));
        }
    }
    queries
}

#[sqlx::test]
async fn the_analytics_dashboards_sql_runs_as_the_analysts_read_only_role_and_finds_the_data(pool: PgPool) {
    let app = busy_server(pool.clone()).await;
    app.wait_durable().await;
    // Shadow prices and reports are written in the background: wait for both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (shadowed, reports): (i64, i64) = sqlx::query_as(
            "select (select count(*) from prediction_log where shadow_price is not null), (select count(*) from monitoring_reports)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if shadowed > 0 && reports > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no shadow prices ({shadowed}) or reports ({reports})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let url = std::env::var("DATABASE_URL").unwrap();
    let options: PgConnectOptions = url.parse::<PgConnectOptions>().unwrap();
    let analyst = options.username("house_price_analyst").password("house_price_analyst").database(&database);
    let analyst = sqlx::PgPool::connect_with(analyst).await.expect("the analyst role connects");
    let mut empty = Vec::new();
    for (title, sql) in dashboard_sql() {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(&analyst)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
        if rows.is_empty() {
            empty.push(title);
        }
    }
    // The replay labelled every prediction, the shadow model priced them, reports ran, one
    // prediction was rejected: only the
    // panel about what did not happen (drift alerts, on unshifted data) may be empty.
    empty.retain(|t| t != "Drift alerts");
    assert!(empty.is_empty(), "panels without data: {empty:?}");
}
