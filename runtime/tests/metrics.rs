//! Metrics at `/metrics`: what the exposition says after traffic, that `promtool` accepts it,
//! and a real Prometheus scraping the proxy and answering PromQL per backend.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::exposition::{ROUND_ROBIN, samples, total, traffic};
use common::{Harness, admin, admin_call, harness};

#[tokio::test]
async fn the_exposition_counts_requests_by_operation_and_attempts_by_backend() {
    // Proves the request and backend metrics from the event seam: per operation and status on
    // the client side (a 404 passed back is counted with its status), per backend (address and
    // port) on the backend side, body sizes, the trust-mode decisions, the build info.
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    // A connection held open (accepted, no request yet: nothing to count but the connection).
    let _held = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) = admin_call(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    if std::env::var_os("STOREFRONT_PRINT_METRICS").is_some() {
        println!("{text}");
    }
    let samples = samples(&text);
    let requests = "http_server_request_duration_seconds_count";
    assert_eq!(total(&samples, requests, &[("rpc_method", "PutObject")]), 3.0, "{text}");
    assert_eq!(
        total(
            &samples,
            requests,
            &[("rpc_method", "GetObject"), ("http_response_status_code", "200")]
        ),
        9.0
    );
    assert_eq!(
        total(
            &samples,
            requests,
            &[("rpc_method", "GetObject"), ("http_response_status_code", "404")]
        ),
        1.0
    );
    assert_eq!(total(&samples, requests, &[("storefront_pool", "dc1")]), 14.0);
    let attempts = "storefront_backend_attempts_total";
    let mut reached = 0.0;
    for node in &harness.nodes {
        let port = node.address().expect("bound").port().to_string();
        let at_node = total(
            &samples,
            attempts,
            &[("server_address", "127.0.0.1"), ("server_port", &port)],
        );
        assert!(at_node > 0.0, "node {port} has no attempts series:\n{text}");
        let timed = total(
            &samples,
            "http_client_request_duration_seconds_count",
            &[("server_port", &port)],
        );
        assert_eq!(timed, at_node, "every attempt is timed");
        reached += at_node;
    }
    assert_eq!(reached, 14.0, "one attempt per request, none retried");
    assert_eq!(
        total(
            &samples,
            attempts,
            &[
                ("storefront_attempt_final", "true"),
                ("storefront_attempt_outcome", "response")
            ]
        ),
        14.0
    );
    assert_eq!(
        total(
            &samples,
            "http_server_request_body_size_bytes_sum",
            &[("rpc_method", "PutObject")]
        ),
        6000.0,
        "1000 + 2000 + 3000 bytes uploaded"
    );
    assert_eq!(
        total(
            &samples,
            "storefront_auth_decisions_total",
            &[
                ("storefront_auth_result", "allowed"),
                ("storefront_identity_source", "trusted")
            ]
        ),
        14.0
    );
    assert_eq!(total(&samples, "storefront_build_info", &[]), 1.0);
    assert_eq!(
        total(&samples, "http_server_active_requests", &[]),
        0.0,
        "every request ended"
    );
    assert_eq!(
        total(&samples, "storefront_server_connections_open", &[]),
        1.0,
        "the connection held open below (the SDK's closed with its client)"
    );
    assert!(
        total(&samples, "process_memory_usage_bytes", &[]) > 1_000_000.0,
        "{text}"
    );
    assert!(total(&samples, "process_open_file_descriptors", &[]) > 3.0);
    assert!(
        samples
            .iter()
            .any(|sample| sample.name == "process_cpu_time_seconds_total"
                && sample.labels.get("cpu_mode").map(String::as_str) == Some("user")),
        "{text}"
    );
    assert!(!text.contains("object-"), "keys never become attributes");
}

#[tokio::test]
async fn refused_signatures_timeouts_and_reloads_are_counted() {
    // Proves the auth and operations counters: a wrong secret in policy mode is a refused
    // credential (with its code), an unknown key too, a denied request is `denied`; the start
    // counts one configuration applied.
    let rules = r#"
[auth]
mode = "policy"

[[auth.keys]]
access_key = "AKIDAPP"
secret_key = "app-secret"

[health.active]
enabled = false

[[policy.rules]]
name = "app-reads"
effect = "allow"
identity = { access_key = "AKIDAPP" }
actions = ["read", "list"]
buckets = ["data"]
"#;
    let nodes = common::nodes(2).await;
    let text = common::config_text(&nodes, "").replace("[auth]\nmode = \"trust\"\n", rules);
    let (app, endpoint) = common::serve_text(&text).await;
    let harness = Harness { nodes, app, endpoint };
    let admin = admin(&harness).await;
    let wrong = common::client(endpoint, "AKIDAPP", "not-the-secret");
    assert!(wrong.list_objects_v2().bucket("data").send().await.is_err());
    let unknown = common::client(endpoint, "AKIDNOBODY", "x");
    assert!(unknown.list_objects_v2().bucket("data").send().await.is_err());
    let app_key = common::client(endpoint, "AKIDAPP", "app-secret");
    let denied = app_key
        .put_object()
        .bucket("data")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(denied.is_err(), "the rule allows no writes");
    let (_, text) = admin_call(admin, "GET", "/metrics").await;
    let samples = samples(&text);
    let decisions = "storefront_auth_decisions_total";
    assert_eq!(
        total(
            &samples,
            decisions,
            &[
                ("storefront_auth_result", "refused"),
                ("storefront_auth_reason", "SignatureDoesNotMatch")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(
            &samples,
            decisions,
            &[
                ("storefront_auth_result", "refused"),
                ("storefront_auth_reason", "InvalidAccessKeyId")
            ]
        ),
        1.0
    );
    assert_eq!(
        total(
            &samples,
            decisions,
            &[
                ("storefront_auth_result", "denied"),
                ("storefront_identity_source", "access_key")
            ]
        ),
        1.0
    );
    assert_eq!(
        total(
            &samples,
            "storefront_config_reloads_total",
            &[("storefront_reload_result", "applied")]
        ),
        1.0
    );
}

/// `binary` (Debian's `prometheus` package: prometheus, promtool), if installed.
fn installed(binary: &str) -> Option<std::path::PathBuf> {
    common::installed(binary, "STOREFRONT_PROMETHEUS")
}

/// GET `path` from `address` over HTTP/1.1; the body of a 200, `None` for anything else (not
/// listening yet, not ready).
async fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    tokio::net::TcpStream::connect(address).await.ok()?;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), admin_call(address, "GET", path))
        .await
        .ok()?;
    (status == 200).then_some(body)
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    // Proves the exposition is valid Prometheus text format (names, types, help, units).
    let Some(promtool) = installed("promtool") else {
        return;
    };
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    let (_, text) = admin_call(admin, "GET", "/metrics").await;
    let mut check = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).await.expect("exposition written");
    }
    let output = check.wait_with_output().await.expect("promtool ends");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_proxy_and_answers_per_backend() {
    // Proves the export end to end: Prometheus scrapes `/metrics` every second, and a PromQL
    // query through its HTTP API returns one series per backend with the attempts each served.
    let Some(prometheus) = installed("prometheus") else {
        return;
    };
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    let directory = std::env::temp_dir().join(format!("storefront-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a directory");
    let config = directory.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: storefront\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("config written");
    let web = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let log = std::fs::File::create(directory.join("prometheus.log")).expect("a log file");
    let mut server = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", directory.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let query = "/api/v1/query?query=sum%20by%20(server_port)%20(storefront_backend_attempts_total)";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut last = None;
    let answer = loop {
        if let Some(body) = http_get(web, query).await {
            let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON from the query API");
            let series = parsed["data"]["result"].as_array().cloned().unwrap_or_default();
            if series.len() == harness.nodes.len() {
                break series;
            }
            last = Some(body);
        }
        let exited = server.try_wait().ok().flatten();
        if exited.is_some() || tokio::time::Instant::now() >= deadline {
            let targets = http_get(web, "/api/v1/targets").await;
            let log = std::fs::read_to_string(directory.join("prometheus.log")).unwrap_or_default();
            panic!(
                "Prometheus returned no series per backend (exited: {exited:?}); last answer {last:?}; targets {targets:?}; log:\n{log}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut served = 0.0;
    for node in &harness.nodes {
        let port = node.address().expect("bound").port().to_string();
        let series = answer
            .iter()
            .find(|series| series["metric"]["server_port"].as_str() == Some(port.as_str()))
            .unwrap_or_else(|| panic!("no series for backend port {port}: {answer:?}"));
        let value: f64 = series["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        assert!(value > 0.0, "backend {port}: {value}");
        served += value;
    }
    assert_eq!(served, 14.0, "the attempts of the 14 requests, as Prometheus sums them");
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    // Proves deploy/monitoring/storefront.rules.yaml is valid and fires as intended: an
    // imbalance above 30 % for five minutes, an ejection, panic mode, refused credentials
    // (deploy/monitoring/storefront.rules.test.yaml).
    let Some(promtool) = installed("promtool") else {
        return;
    };
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring");
    for args in [
        ["check", "rules", "storefront.rules.yaml"],
        ["test", "rules", "storefront.rules.test.yaml"],
    ] {
        let output = tokio::process::Command::new(&promtool)
            .args(args)
            .current_dir(directory)
            .output()
            .await
            .expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn the_dashboard_queries_are_promql_over_families_the_proxy_exports() {
    // Proves deploy/monitoring/grafana-dashboard.json is usable: it is JSON with panels, every
    // panel query is valid PromQL (promtool checks them as recording rules, Grafana's
    // variables filled in), and every metric family a query names is one the proxy exports.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/monitoring/grafana-dashboard.json"
    ))
    .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(expressions.len() >= 12, "{expressions:?}");
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    let (_, exposition) = admin_call(admin, "GET", "/metrics").await;
    let exported: Vec<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    // Counters that saw nothing yet (ejections, timeouts) are absent from a live exposition:
    // the README's table names every family, and must name every one exported.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let telemetry = readme
        .split("## Telemetry")
        .nth(1)
        .and_then(|section| section.split("\n## ").next())
        .expect("a Telemetry section");
    let documented: Vec<&str> = telemetry
        .split('`')
        .filter(|word| {
            ["storefront_", "http_", "process_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
                && !word.contains(' ')
        })
        .collect();
    for family in &exported {
        assert!(
            documented.contains(family),
            "`{family}` is exported but not in the README's Telemetry table"
        );
    }
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/monitoring/storefront.rules.yaml"
    ))
    .expect("the rules");
    for expression in expressions.iter().map(String::as_str).chain([rules.as_str()]) {
        // A metric name is followed by its selector or range.
        for word in expression.split_inclusive(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let Some(name) = word.strip_suffix(['{', '[']) else {
                continue;
            };
            if !(name.starts_with("storefront_") || name.starts_with("http_")) {
                continue;
            }
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exported.contains(&family) || documented.contains(&family),
                "`{family}` (in `{expression}`) is neither exported nor documented"
            );
        }
    }
    let Some(promtool) = installed("promtool") else {
        return;
    };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, expression) in expressions.iter().enumerate() {
        let filled = expression.replace("$__rate_interval", "1m").replace("$pool", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:panel_{index}\n        expr: {}\n",
            serde_json::to_string(&filled).expect("a string")
        ));
    }
    let path = std::env::temp_dir().join(format!("storefront-dashboard-{}.rules.yaml", std::process::id()));
    std::fs::write(&path, rules).expect("rules written");
    let output = tokio::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .await
        .expect("promtool runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "a dashboard query is not PromQL:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn with_metrics_off_nothing_is_recorded_and_the_gauges_remain() {
    // Proves `telemetry.metrics = false` (the benchmark's "off"): after traffic, no request,
    // attempt or decision series exist, while what is read at collection (build info, the
    // backends' gauges) still is.
    let harness = harness(
        3,
        &format!("[telemetry]\naccess_log = \"off\"\nmetrics = false\n\n{ROUND_ROBIN}"),
    )
    .await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    let (status, text) = admin_call(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let samples = samples(&text);
    for family in [
        "http_server_request_duration_seconds_count",
        "storefront_backend_attempts_total",
        "storefront_auth_decisions_total",
    ] {
        assert_eq!(total(&samples, family, &[]), 0.0, "{family} recorded:\n{text}");
    }
    assert_eq!(total(&samples, "storefront_build_info", &[]), 1.0, "{text}");
    assert_eq!(
        total(&samples, "storefront_backend_available_ratio", &[]),
        3.0,
        "{text}"
    );
}
