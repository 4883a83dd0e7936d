//! Connection limits, active probes and the per-phase timeouts, end to end.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::harness;
use s3_mock::{BodyFault, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn with_object(harness: &common::Harness, size: usize) -> aws_sdk_s3::Client {
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("object")
        .body(ByteStream::from(vec![4u8; size]))
        .send()
        .await
        .expect("put");
    s3
}

async fn read_all(stream: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut response = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).to_string()
}

#[tokio::test]
async fn a_full_connection_limit_answers_slow_down_after_the_bounded_wait() {
    // Proves the per-backend bulkhead: with its one connection busy, a second request waits
    // `wait`, then gets 503 SlowDown (and the backend is not blamed).
    let harness = harness(1, "").await;
    let text = common::config_text(&harness.nodes, "[health.active]\nenabled = false\n")
        + "[pools.connections]\nmax_per_backend = 1\nwait = \"200ms\"\n";
    let config = storefront_core::config::Config::from_toml(&text, "limit.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "limit.toml").expect("credentials");
    let generation = storefront::request::Generation::new(
        config,
        credentials,
        &harness.app.proxy.clock,
        3,
        harness.app.proxy.events.clone(),
        &storefront::transport::TcpConnector,
    )
    .expect("generation");
    harness.app.proxy.swap(generation);
    let s3 = with_object(&harness, 300_000).await;
    harness.nodes[0].set_faults(Faults {
        body: BodyFault::Throttle(300_000),
        ..Faults::default()
    });
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
    let started = std::time::Instant::now();
    let error = s3
        .head_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect_err("no connection free");
    assert_eq!(common::status_of(&error), Some(503));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered before the bounded wait: {:?}",
        started.elapsed()
    );
    let body = busy
        .await
        .expect("task")
        .expect("head")
        .collect()
        .await
        .expect("the first request completes");
    assert_eq!(body.into_bytes().len(), 300_000);
    assert_eq!(
        storefront::admin::backends(&harness.app)[0].errors_total,
        0,
        "the limit is not the backend's fault"
    );
}

#[tokio::test]
async fn active_probes_mark_a_crashed_node_down_and_its_return_up() {
    // Proves active health: probes every 100 ms find a crashed node (2 failures) and its
    // return (2 successes) without any client traffic.
    let harness = harness(
        2,
        "[health.active]\nenabled = true\ninterval = \"100ms\"\njitter = \"10ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
    )
    .await;
    let address = harness.nodes[0].address().expect("bound").to_string();
    let healthy = |harness: &common::Harness| {
        storefront::admin::backends(&harness.app)
            .into_iter()
            .find(|b| b.address == address)
            .expect("listed")
            .healthy
    };
    // Several probes run against the live node first: they must find it healthy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(healthy(&harness), "probes fail against a live node");
    harness.nodes[0].crash();
    let mut down = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !healthy(&harness) {
            down = true;
            break;
        }
    }
    assert!(down, "probes never marked the crashed node down");
    harness.nodes[0].restart();
    let mut up = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if healthy(&harness) {
            up = true;
            break;
        }
    }
    assert!(up, "probes never noticed the node's return");
}

#[tokio::test]
async fn client_side_timeouts_close_slow_clients() {
    // Proves the client-header timeout (a slowloris head is cut off) and the client-body idle
    // timeout (a stalled upload is answered 400 RequestTimeout and nothing is stored).
    let harness = harness(
        1,
        "[timeouts]\nclient_header = \"300ms\"\nclient_body_idle = \"300ms\"\n",
    )
    .await;
    let _s3 = with_object(&harness, 10).await;
    let mut slowloris = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    slowloris
        .write_all(b"GET /data/object HTTP/1.1\r\nhost: p\r\n")
        .await
        .expect("part of a head");
    let started = std::time::Instant::now();
    let _ = read_all(&mut slowloris, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the half-sent head was held {:?}",
        started.elapsed()
    );

    let mut stalled = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    stalled
        .write_all(b"PUT /data/stalled HTTP/1.1\r\nhost: p\r\ncontent-length: 1000\r\n\r\n")
        .await
        .expect("head");
    stalled.write_all(&[1u8; 100]).await.expect("a little body");
    let text = read_all(&mut stalled, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("<Code>RequestTimeout</Code>"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        harness
            .direct(0)
            .head_object()
            .bucket("data")
            .key("stalled")
            .send()
            .await
            .is_err(),
        "a stalled upload was stored"
    );
    assert_eq!(
        storefront::admin::backends(&harness.app)[0].errors_total,
        0,
        "a slow client is not the backend's fault"
    );
}

#[tokio::test]
async fn backend_side_timeouts_retry_or_break_off() {
    // Proves the first-byte timeout (a node too slow to answer: the GET is retried on the other
    // node and succeeds) and the backend body-idle timeout (a stalled body is cut, an error).
    let harness = harness(2, "[balance]\nalgorithm = \"round-robin\"\n[timeouts]\nbackend_first_byte = \"300ms\"\nbackend_body_idle = \"300ms\"\n").await;
    let s3 = with_object(&harness, 200_000).await;
    harness.nodes[0].set_slow_factor(1000.0);
    for _ in 0..4 {
        let response = s3
            .get_object()
            .bucket("data")
            .key("object")
            .send()
            .await
            .expect("retried elsewhere");
        assert_eq!(response.body.collect().await.expect("body").into_bytes().len(), 200_000);
    }
    let slow = storefront::admin::backends(&harness.app)
        .into_iter()
        .find(|b| b.address == harness.nodes[0].address().expect("bound").to_string())
        .expect("listed");
    assert!(slow.errors_total >= 1, "{slow:?}");
    harness.nodes[0].set_slow_factor(1.0);
    for node in &harness.nodes {
        node.set_faults(Faults {
            body: BodyFault::StallAfter(10_000),
            ..Faults::default()
        });
    }
    let response = s3.get_object().bucket("data").key("object").send().await.expect("head");
    let started = std::time::Instant::now();
    assert!(response.body.collect().await.is_err(), "a stalled body completed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stall was held {:?}",
        started.elapsed()
    );
}
