//! Metrics at `/metrics`: what the exposition says after traffic, that `promtool` accepts it,
//! and a real Prometheus scraping the proxy and answering PromQL per backend.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{Harness, admin, admin_call, harness};

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            with.iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

/// Traffic through the proxy: a bucket, three objects, nine reads, one missing key.
async fn traffic(harness: &Harness) {
    let s3 = harness.client();
    s3.create_bucket().bucket("metrics").send().await.expect("create");
    for index in 0..3 {
        s3.put_object()
            .bucket("metrics")
            .key(format!("object-{index}"))
            .body(ByteStream::from(vec![7u8; 1000 * (index + 1)]))
            .send()
            .await
            .expect("put");
    }
    for index in 0..9 {
        s3.get_object()
            .bucket("metrics")
            .key(format!("object-{}", index % 3))
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body");
    }
    let missing = s3.get_object().bucket("metrics").key("absent").send().await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn the_exposition_counts_requests_by_operation_and_attempts_by_backend() {
    // Proves the request and backend metrics from the event seam: per operation and status on
    // the client side (a 404 passed back is counted with its status), per backend (address and
    // port) on the backend side, body sizes, the trust-mode decisions, the build info.
    let harness = harness(3, "").await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
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

/// `binary` on PATH, if installed (Debian's `prometheus` package; `.ci/run` installs it and
/// sets `STOREFRONT_PROMETHEUS=required`).
fn installed(binary: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("STOREFRONT_PROMETHEUS").as_deref() != Ok("required"),
            "STOREFRONT_PROMETHEUS=required but `{binary}` is not installed"
        );
        eprintln!("`{binary}` is not installed: skipped (CI installs Debian's prometheus package)");
    }
    found
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
    let harness = harness(3, "").await;
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
    let harness = harness(3, "").await;
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
    let mut server = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", directory.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let query = "/api/v1/query?query=sum%20by%20(server_port)%20(storefront_backend_attempts_total)";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(body) = http_get(web, query).await {
            let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON from the query API");
            let series = parsed["data"]["result"].as_array().cloned().unwrap_or_default();
            if series.len() == harness.nodes.len() {
                break series;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not return a series per backend within 60 s"
        );
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
