//! The admin listener, drain, reload and `storefront check-config`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{BACKEND_KEY, BACKEND_SECRET, Harness, harness};
use s3_mock::{BodyFault, Faults};
use storefront::App;
use storefront::transport::TcpConnector;

use common::{admin, admin_call as call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Replace `harness`'s proxy with one started from the file at `path` (so it can reload), and
/// serve its admin endpoints; returns the admin address.
async fn serve_from_file(harness: &mut Harness, path: &std::path::Path) -> SocketAddr {
    let (config, credentials) = storefront::settings::load(path).expect("valid file");
    let app = App::with_seed(
        config,
        credentials,
        Some(path.to_owned()),
        TcpConnector,
        common::TEST_SEED,
    )
    .expect("app");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    harness.app = app;
    harness.endpoint = endpoint;
    admin(harness).await
}

#[tokio::test]
async fn health_readiness_backends_and_drain() {
    // Proves the admin API: health, readiness from backend availability, the backend table, and
    // that a drained backend gets no new requests.
    let harness = harness(2, "").await;
    let admin = admin(&harness).await;
    assert_eq!(call(admin, "GET", "/healthz").await.0, 200);
    assert_eq!(call(admin, "GET", "/readyz").await.0, 200);
    let (status, body) = call(admin, "GET", "/admin/backends").await;
    assert_eq!(status, 200);
    let backends: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let list = backends.as_array().expect("array");
    assert_eq!(list.len(), 2);
    for field in [
        "id",
        "address",
        "pool",
        "zone",
        "healthy",
        "ejected",
        "draining",
        "in_flight",
        "requests_total",
        "errors_total",
        "latency_ewma_ms",
    ] {
        assert!(list[0].get(field).is_some(), "missing {field} in {body}");
    }
    let first = list[0]["id"].as_str().expect("id").to_owned();
    let second = list[1]["id"].as_str().expect("id").to_owned();

    assert_eq!(
        call(admin, "POST", &format!("/admin/backends/{first}/drain")).await.0,
        200
    );
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    for _ in 0..20 {
        s3.head_bucket().bucket("data").send().await.expect("head");
    }
    let drained = harness.nodes[0]
        .stats()
        .requests_by_operation
        .get("HeadBucket")
        .copied()
        .unwrap_or(0);
    let other = harness.nodes[1]
        .stats()
        .requests_by_operation
        .get("HeadBucket")
        .copied()
        .unwrap_or(0);
    assert_eq!((drained, other), (0, 20), "a drained backend got new requests");
    assert_eq!(
        call(admin, "POST", &format!("/admin/backends/{second}/drain")).await.0,
        200
    );
    assert_eq!(
        call(admin, "GET", "/readyz").await.0,
        503,
        "not ready with every backend drained"
    );
    assert_eq!(call(admin, "POST", "/admin/backends/9.9/drain").await.0, 404);
    assert_eq!(call(admin, "POST", "/admin/backends/nonsense/drain").await.0, 400);
    assert_eq!(
        call(admin, "POST", &format!("/admin/backends/{first}/undrain")).await.0,
        200
    );
    assert_eq!(call(admin, "GET", "/readyz").await.0, 200);
}

#[tokio::test]
async fn reload_swaps_a_good_file_refuses_a_bad_one_and_spares_requests_in_flight() {
    // Proves reload: a valid file takes effect, a file with a typo is refused with a message
    // naming the key and the running configuration stays, and a request in flight during the
    // reload completes.
    let mut harness = harness(2, "").await;
    let directory = std::env::temp_dir().join(format!("storefront-reload-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("storefront.toml");
    // The test counts the reloads it asks for: the file watch, which would add its own, is off.
    std::fs::write(
        &path,
        common::config_text(
            &harness.nodes,
            "[health.active]\nenabled = false\n[admin]\nwatch_config = false\n",
        ),
    )
    .expect("write");
    let admin = serve_from_file(&mut harness, &path).await;

    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("slow")
        .body(ByteStream::from(vec![1u8; 400_000]))
        .send()
        .await
        .expect("put");
    // A slow download is in flight across the reload.
    for node in &harness.nodes {
        node.set_faults(Faults {
            body: BodyFault::Throttle(400_000),
            ..Faults::default()
        });
    }
    let slow = {
        let s3 = s3.clone();
        tokio::spawn(async move {
            let response = s3.get_object().bucket("data").key("slow").send().await.expect("get");
            response.body.collect().await.map(|body| body.into_bytes().len())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A good file: one backend only, round-robin.
    let one = [harness.nodes[1].clone()];
    let text = common::config_text(
        &one,
        "[health.active]\nenabled = false\n[balance]\nalgorithm = \"round-robin\"\n",
    );
    std::fs::write(&path, text).expect("write");
    let (status, body) = call(admin, "POST", "/admin/reload").await;
    assert_eq!(status, 200, "{body}");
    let (_, backends) = call(admin, "GET", "/admin/backends").await;
    let backends: serde_json::Value = serde_json::from_str(&backends).expect("JSON");
    assert_eq!(backends.as_array().map(Vec::len), Some(1));

    // A bad file: refused, naming the key; the reloaded configuration stays.
    std::fs::write(&path, "[balance]\nalgoritm = \"random\"\n").expect("write");
    let (status, body) = call(admin, "POST", "/admin/reload").await;
    assert_eq!(status, 400);
    assert!(body.contains("algoritm") && body.contains("storefront.toml"), "{body}");
    let (_, backends) = call(admin, "GET", "/admin/backends").await;
    let backends: serde_json::Value = serde_json::from_str(&backends).expect("JSON");
    assert_eq!(
        backends.as_array().map(Vec::len),
        Some(1),
        "the refused file changed the configuration"
    );
    // Both counted: the start and the good reload applied, the bad one refused.
    let (_, metrics) = call(admin, "GET", "/metrics").await;
    let reloads = |result: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("storefront_config_reloads_total{")
                    && line.contains(&format!("storefront_reload_result=\"{result}\""))
            })
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse::<u64>().ok())
    };
    assert_eq!(reloads("applied"), Some(2), "{metrics}");
    assert_eq!(reloads("refused"), Some(1), "{metrics}");
    for node in &harness.nodes {
        node.set_faults(Faults::default());
    }
    s3.head_bucket().bucket("data").send().await.expect("still serving");

    let downloaded = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("done")
        .expect("task");
    assert_eq!(downloaded.expect("the in-flight download completed"), 400_000);
    let _ = std::fs::remove_dir_all(&directory);
    let _ = (BACKEND_KEY, BACKEND_SECRET);
}

#[test]
fn check_config_names_the_file_the_key_and_the_allowed_values() {
    // Proves `storefront check-config`: status 0 for a valid file; for a typo, status 2 and a
    // message naming the file, the key and what is allowed.
    let directory = std::env::temp_dir().join(format!("storefront-check-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let good = directory.join("good.toml");
    std::fs::write(&good, "[[pools]]\nname = \"dc1\"\nbackends = [\"127.0.0.1:9001\"]\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));

    let bad = directory.join("typo.toml");
    std::fs::write(
        &bad,
        "[timeouts]\nbackend_conect = \"2s\"\n\n[[pools]]\nname = \"dc1\"\nbackends = [\"127.0.0.1:9001\"]\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("typo.toml"), "{message}");
    assert!(message.contains("backend_conect"), "{message}");
    assert!(message.contains("backend_connect"), "lists the allowed keys: {message}");

    let semantic = directory.join("semantic.toml");
    std::fs::write(
        &semantic,
        "[routing]\ndefault_pool = \"dc9\"\n\n[[pools]]\nname = \"dc1\"\nbackends = [\"127.0.0.1\"]\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("check-config")
        .arg(&semantic)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("routing.default_pool") && message.contains("pools[0].backends[0].address"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
    // Proves graceful shutdown: a download in flight completes, new connections are refused.
    let harness = harness(1, "").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("slow")
        .body(ByteStream::from(vec![3u8; 300_000]))
        .send()
        .await
        .expect("put");
    harness.nodes[0].set_faults(Faults {
        body: BodyFault::Throttle(600_000),
        ..Faults::default()
    });
    let download = {
        let s3 = s3.clone();
        tokio::spawn(async move {
            let response = s3.get_object().bucket("data").key("slow").send().await.expect("get");
            response.body.collect().await.map(|body| body.into_bytes().len())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    harness.app.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = tokio::net::TcpStream::connect(harness.endpoint).await;
    let accepted_and_served = match refused {
        Err(_) => false,
        Ok(mut stream) => {
            let _ = stream.write_all(b"GET /data/slow HTTP/1.1\r\nhost: p\r\n\r\n").await;
            let mut buffer = [0u8; 64];
            matches!(tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await, Ok(Ok(n)) if n > 0)
        }
    };
    assert!(!accepted_and_served, "a new connection was served after shutdown");
    let downloaded = tokio::time::timeout(Duration::from_secs(5), download)
        .await
        .expect("finished")
        .expect("task");
    assert_eq!(downloaded.expect("the in-flight download completed"), 300_000);
}

#[tokio::test]
async fn a_dns_name_becomes_one_backend_per_address() {
    // Proves DNS-backed pools: `localhost` resolves (here to 127.0.0.1, and ::1 if configured),
    // every address becomes a backend, and requests are served through them.
    let nodes = common::one_node().await;
    let port = nodes[0].address().expect("bound").port();
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[[pools]]\nname = \"dc1\"\ndns = {{ name = \"localhost\", port = {port}, refresh = \"1s\" }}\n[pools.credentials]\naccess_key = \"{BACKEND_KEY}\"\nsecret_key = \"{BACKEND_SECRET}\"\n"
    );
    let config = storefront_core::config::Config::from_toml(&text, "dns.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "dns.toml").expect("credentials");
    let app = App::with_seed(config, credentials, None, TcpConnector, common::TEST_SEED).expect("app");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let mut backends = Vec::new();
    for _ in 0..100 {
        backends = storefront::admin::backends(&app);
        if !backends.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        backends.iter().any(|b| b.address == format!("127.0.0.1:{port}")),
        "{backends:?}"
    );
    let s3 = common::client(endpoint, "caller", "secret");
    s3.create_bucket()
        .bucket("viadns")
        .send()
        .await
        .expect("served through a DNS-discovered backend");
}

#[tokio::test]
async fn a_reload_keeps_an_ejected_backend_ejected() {
    // Proves that a reload applies in place: a backend ejected before it is still ejected
    // after it (and gets no request), where a rebuild would have forgotten the ejection.
    let mut harness = harness(2, "").await;
    let directory = std::env::temp_dir().join(format!("storefront-reload-ejected-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("storefront.toml");
    let nodes = harness.nodes.clone();
    let text = |budget: &str| {
        common::config_text(
            &nodes,
            &format!(
                "[health.active]\nenabled = false\n[health.passive]\nconsecutive_failures = 1\nbase_ejection_time = \"60s\"\n[balance]\nalgorithm = \"round-robin\"\n[retry]\nbudget_ratio = {budget}\n"
            ),
        )
    };
    std::fs::write(&path, text("0.2")).expect("write");
    let admin = serve_from_file(&mut harness, &path).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("k")
        .body(ByteStream::from(vec![1u8; 10]))
        .send()
        .await
        .expect("put");
    harness.nodes[0].set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let failing = harness.nodes[0].address().expect("bound").to_string();
    let ejected = |backends: &serde_json::Value| {
        backends
            .as_array()
            .expect("array")
            .iter()
            .any(|backend| backend["address"] == failing.as_str() && backend["ejected"] == true)
    };
    for _ in 0..4 {
        let _ = s3.get_object().bucket("data").key("k").send().await;
    }
    let (_, body) = call(admin, "GET", "/admin/backends").await;
    assert!(ejected(&serde_json::from_str(&body).expect("JSON")), "{body}");
    harness.nodes[0].set_faults(Faults::default());

    std::fs::write(&path, text("0.3")).expect("write");
    harness.app.reload().expect("reload");
    let (_, body) = call(admin, "GET", "/admin/backends").await;
    assert!(
        ejected(&serde_json::from_str(&body).expect("JSON")),
        "the ejection survives the reload: {body}"
    );
    let before = harness.nodes[0].stats().requests_total;
    for _ in 0..10 {
        s3.get_object().bucket("data").key("k").send().await.expect("get");
    }
    assert_eq!(
        harness.nodes[0].stats().requests_total,
        before,
        "the ejected backend got no request after the reload"
    );
}

#[tokio::test]
async fn a_reload_that_raises_a_connection_limit_applies_it() {
    // Proves that a pool's connection settings follow a reload: with one connection per
    // backend, a second request waits and gets 503 SlowDown while the first holds it; after a
    // reload to two, the same second request is served (connection pools kept from before the
    // reload would still allow one).
    let mut harness = harness(1, "").await;
    let directory = std::env::temp_dir().join(format!("storefront-reload-limit-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("storefront.toml");
    let nodes = harness.nodes.clone();
    let text = |limit: usize| {
        common::config_text(&nodes, "[health.active]\nenabled = false\n")
            + &format!("[pools.connections]\nmax_per_backend = {limit}\nwait = \"200ms\"\n")
    };
    std::fs::write(&path, text(1)).expect("write");
    let _admin = serve_from_file(&mut harness, &path).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("object")
        .body(ByteStream::from(vec![4u8; 300_000]))
        .send()
        .await
        .expect("put");
    harness.nodes[0].set_faults(Faults {
        body: s3_mock::BodyFault::Throttle(300_000),
        ..Faults::default()
    });
    let head_while_busy = |s3: aws_sdk_s3::Client| async move {
        let busy = {
            let s3 = s3.clone();
            tokio::spawn(async move {
                s3.get_object()
                    .bucket("data")
                    .key("object")
                    .send()
                    .await
                    .map(|r| r.body)
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let head = s3.head_object().bucket("data").key("object").send().await;
        let body = busy.await.expect("task").expect("get").collect().await.expect("body");
        assert_eq!(body.into_bytes().len(), 300_000);
        head.map(|_| ()).map_err(|error| common::status_of(&error))
    };
    assert_eq!(
        head_while_busy(s3.clone()).await,
        Err(Some(503)),
        "one connection: the second waits"
    );
    std::fs::write(&path, text(2)).expect("write");
    harness.app.reload().expect("reload");
    assert_eq!(
        head_while_busy(s3.clone()).await,
        Ok(()),
        "two connections after the reload"
    );
}
