//! The conformance suite against its three targets: s3-mock directly (three nodes over one
//! namespace), through the proxy in policy mode (the suite's key is the proxy's caller key,
//! not the backend's: every request is verified, authorised and re-signed), and s3s-fs (the
//! s3s project's reference server) directly and through the proxy. What passes directly must
//! pass through the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use conformance::{Report, Target, run};
use s3_mock::{ClusterConfig, MockCluster, NodeHandle};
use storefront::App;
use storefront::transport::TcpConnector;
use storefront_core::config::Config;

const BACKEND_KEY: &str = "backend-key";
const BACKEND_SECRET: &str = "backend-secret";
const CALLER_KEY: &str = "AKIDCONFORMANCE";
const CALLER_SECRET: &str = "conformance-secret";

/// A proxy in policy mode in front of `backends` (signing for them with the backend key),
/// whose one caller key may do anything, SigV2 accepted; on a free loopback port.
async fn proxy(backends: &[SocketAddr]) -> (Arc<App<TcpConnector>>, SocketAddr) {
    let list: Vec<String> = backends.iter().map(|address| format!("\"{address}\"")).collect();
    let text = format!(
        r#"
[auth]
mode = "policy"
sigv2 = true

[[auth.keys]]
access_key = "{CALLER_KEY}"
secret_key = "{CALLER_SECRET}"
name = "conformance"

[[policy.rules]]
name = "conformance-does-anything"
effect = "allow"
identity = {{ access_key = "{CALLER_KEY}" }}
actions = ["read", "list", "write", "delete", "multipart", "bucket-admin"]
buckets = ["*"]

[health.active]
enabled = false

[telemetry]
access_log = "off"

[[pools]]
name = "dc1"
backends = [{}]

[pools.credentials]
access_key = "{BACKEND_KEY}"
secret_key = "{BACKEND_SECRET}"
"#,
        list.join(", ")
    );
    let config = Config::from_toml(&text, "conformance.toml").unwrap_or_else(|error| panic!("{error}\n{text}"));
    let credentials = storefront::settings::resolve_credentials(&config, "conformance.toml").expect("credentials");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let app = App::with_seed(config, credentials, None, TcpConnector, 1).expect("app");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (app, endpoint)
}

async fn mock_nodes() -> Vec<NodeHandle> {
    let config = ClusterConfig {
        nodes: 3,
        credentials: Some((BACKEND_KEY.into(), BACKEND_SECRET.into())),
        ..ClusterConfig::default()
    };
    MockCluster::start_tcp(&config, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .expect("mock cluster")
}

fn url(address: SocketAddr) -> String {
    format!("http://{address}")
}

/// Fail with the report unless every case passed or was skipped.
fn assert_all_passed(report: &Report) {
    print!("{}", report.table());
    assert!(report.failed().is_empty(), "{}", report.table());
}

/// Fail unless every case that passed `direct` passed `proxied` too, naming each that did not.
fn assert_no_regression(direct: &Report, proxied: &Report) {
    let proxied_passed = proxied.passed();
    let lost: Vec<String> = direct
        .passed()
        .into_iter()
        .filter(|name| !proxied_passed.contains(name))
        .map(|name| {
            let why = proxied
                .failed()
                .into_iter()
                .find(|(failed, _)| *failed == name)
                .map_or("not run", |(_, why)| why)
                .to_owned();
            format!("{name}: {why}")
        })
        .collect();
    assert!(
        lost.is_empty(),
        "passed against {} but not through the proxy:\n{}",
        direct.target,
        lost.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mock_directly_and_through_the_proxy() {
    // Proves s3-mock is an S3 server for every case (writes through one node read through
    // another: one namespace), and the proxy is transparent for every one of them with the
    // caller's own keys.
    let nodes = mock_nodes().await;
    let mut direct = Target::new(
        "s3-mock (3 nodes)",
        nodes.iter().map(|node| url(node.address().expect("bound"))).collect(),
        BACKEND_KEY,
        BACKEND_SECRET,
    );
    direct.sigv2 = true;
    let direct = run(&direct, "").await;
    assert_all_passed(&direct);
    for node in &nodes {
        assert!(node.stats().requests_total > 0, "node {} idle", node.index());
    }
    let operations = nodes[0].stats().requests_by_operation;
    assert!(
        operations.contains_key("CreateBucket") && operations.contains_key("PutObject"),
        "{operations:?}"
    );

    let fresh = mock_nodes().await;
    let backends: Vec<SocketAddr> = fresh.iter().map(|node| node.address().expect("bound")).collect();
    let (_app, endpoint) = proxy(&backends).await;
    let mut proxied = Target::new(
        "the proxy in policy mode over s3-mock",
        vec![url(endpoint)],
        CALLER_KEY,
        CALLER_SECRET,
    );
    proxied.sigv2 = true;
    let proxied = run(&proxied, "").await;
    assert_all_passed(&proxied);
    assert_no_regression(&direct, &proxied);
    // The backends saw the proxy's signed requests, spread over all three nodes.
    for node in &fresh {
        assert!(node.stats().requests_total > 0, "node {} got nothing", node.index());
    }
}

/// The s3s-fs binary, if installed (`cargo install s3s-fs --version 0.14.1 --features
/// binary`; CI installs it and sets `CONFORMANCE_S3S_FS=required`).
fn s3s_fs() -> Option<std::path::PathBuf> {
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("s3s-fs")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME").or_else(|| {
        std::env::var_os("HOME").map(|home| {
            let mut path = std::path::PathBuf::from(home);
            path.push(".cargo");
            path.into_os_string()
        })
    }) {
        candidates.push(std::path::PathBuf::from(home).join("bin").join("s3s-fs"));
    }
    candidates.into_iter().find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_directly_and_through_the_proxy() {
    // Proves the proxy against a second, independent S3 server: whatever s3s-fs passes
    // directly, it passes through the proxy too (s3s-fs does not implement every case; those
    // it fails directly are listed in the report, not counted against the proxy).
    let Some(binary) = s3s_fs() else {
        assert!(
            std::env::var("CONFORMANCE_S3S_FS").as_deref() != Ok("required"),
            "CONFORMANCE_S3S_FS=required but no s3s-fs binary is installed"
        );
        eprintln!("s3s-fs is not installed: this target is skipped (CI installs it)");
        return;
    };
    let root = std::env::temp_dir().join(format!("conformance-s3s-fs-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("a data directory");
    let port = free_port();
    let mut server = tokio::process::Command::new(&binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", BACKEND_KEY, "--secret-key", BACKEND_SECRET])
        .arg(&root)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("s3s-fs starts");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "s3s-fs did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut direct = Target::new("s3s-fs", vec![url(address)], BACKEND_KEY, BACKEND_SECRET);
    direct.sigv2 = true;
    let direct = run(&direct, "").await;
    print!("{}", direct.table());
    let (_app, endpoint) = proxy(&[address]).await;
    let mut proxied = Target::new(
        "the proxy in policy mode over s3s-fs",
        vec![url(endpoint)],
        CALLER_KEY,
        CALLER_SECRET,
    );
    proxied.sigv2 = true;
    let proxied = run(&proxied, "").await;
    print!("{}", proxied.table());
    assert_no_regression(&direct, &proxied);
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&root);
}
