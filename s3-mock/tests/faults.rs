//! Each injected fault, as a client sees it.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{clients, cluster, code, status};
use s3_mock::{BodyFault, ClusterConfig, ErrorKind, Faults, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OBJECT_LENGTH: usize = 256 * 1024;

/// A one-node cluster holding `bucket/object` of OBJECT_LENGTH bytes.
async fn node_with_object() -> (NodeHandle, aws_sdk_s3::Client) {
    let handles = cluster(1, ClusterConfig::default()).await;
    let client = clients(&handles).remove(0);
    client.create_bucket().bucket("bucket").send().await.expect("create");
    client
        .put_object()
        .bucket("bucket")
        .key("object")
        .body(ByteStream::from(vec![7u8; OBJECT_LENGTH]))
        .send()
        .await
        .expect("put");
    (handles.into_iter().next().expect("one node"), client)
}

fn with_body(fault: BodyFault) -> Faults {
    Faults {
        body: fault,
        ..Faults::default()
    }
}

#[tokio::test]
async fn injected_errors_are_s3_errors() {
    // Proves error injection answers real S3 error responses with the chosen code.
    let (node, client) = node_with_object().await;
    node.set_faults(Faults {
        error_rate: 1.0,
        error_kind: ErrorKind::InternalError,
        ..Faults::default()
    });
    let error = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect_err("500");
    assert_eq!(
        (status(&error), code(&error).as_deref()),
        (Some(500), Some("InternalError"))
    );
    node.set_faults(Faults {
        error_rate: 1.0,
        error_kind: ErrorKind::SlowDown,
        ..Faults::default()
    });
    let error = client.head_bucket().bucket("bucket").send().await.expect_err("503");
    assert_eq!(status(&error), Some(503));
    node.set_faults(Faults::default());
    client.head_bucket().bucket("bucket").send().await.expect("healed");
    assert_eq!(node.stats().errors_injected, 2);
}

#[tokio::test]
async fn a_slow_node_is_slower_by_its_factor() {
    // Proves the slow factor multiplies service time (a lower bound: a sleep is never shorter).
    let handles = cluster(
        1,
        ClusterConfig {
            capacity: s3_mock::CapacityConfig {
                base: Duration::from_millis(10),
                ..Default::default()
            },
            ..ClusterConfig::default()
        },
    )
    .await;
    let client = clients(&handles).remove(0);
    client.create_bucket().bucket("bucket").send().await.expect("create");
    handles[0].set_slow_factor(20.0);
    let started = std::time::Instant::now();
    client
        .head_bucket()
        .bucket("bucket")
        .send()
        .await
        .expect("served, slowly");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_reset_mid_body_is_an_error_never_a_short_body() {
    // Proves that a body broken off mid-way reaches the client as an error.
    let (node, client) = node_with_object().await;
    node.set_faults(with_body(BodyFault::ResetAfter(1000)));
    let response = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    assert_eq!(
        response.content_length(),
        Some(OBJECT_LENGTH as i64),
        "the declared length stays true"
    );
    let body = response.body.collect().await;
    assert!(
        body.is_err(),
        "a short body was taken as complete: {:?}",
        body.map(|b| b.into_bytes().len())
    );
}

#[tokio::test]
async fn a_stall_mid_body_never_completes() {
    // Proves a stalled body delivers its first bytes and then nothing (the client must time out).
    let (node, client) = node_with_object().await;
    node.set_faults(with_body(BodyFault::StallAfter(4096)));
    let response = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    let mut body = response.body;
    let mut received = 0usize;
    let outcome = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(chunk) = body.next().await {
            received += chunk.expect("no error, just silence").len();
        }
    })
    .await;
    assert!(outcome.is_err(), "the stalled body completed");
    assert_eq!(received, 4096);

    // A stalled write (stall at byte 0): the head arrives, no body byte ever does.
    node.set_faults(with_body(BodyFault::StallAfter(0)));
    let response = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    let mut body = response.body;
    let first = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(first.is_err(), "a body byte arrived from a stalled write");
}

#[tokio::test]
async fn a_throttled_body_arrives_whole_and_slowly() {
    // Proves the slow-write fault: complete and correct, at the configured rate.
    let (node, client) = node_with_object().await;
    node.set_faults(with_body(BodyFault::Throttle(512 * 1024)));
    let started = std::time::Instant::now();
    let response = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("get");
    let bytes = response.body.collect().await.expect("whole body").into_bytes();
    assert_eq!(bytes.len(), OBJECT_LENGTH);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "256 KiB at 512 KiB/s took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn crash_refuses_and_drops_connections_and_restart_serves_again() {
    // Proves crash semantics: in-flight responses break, new connections are refused, and the
    // node comes back on the same address after a restart.
    let (node, client) = node_with_object().await;
    let address = node.address().expect("bound");
    node.set_faults(with_body(BodyFault::StallAfter(1000)));
    let response = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    node.crash();
    let body = tokio::time::timeout(Duration::from_secs(5), response.body.collect())
        .await
        .expect("not left hanging");
    assert!(body.is_err(), "a crashed node's body completed");
    // Wait for the listener to close, then connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "a crashed node still accepts connections");
    node.set_faults(Faults::default());
    node.restart();
    let mut served = false;
    for _ in 0..100 {
        if client.head_bucket().bucket("bucket").send().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the restarted node does not serve");
    assert_eq!(node.address(), Some(address), "restarted on the same address");
    let data = client
        .get_object()
        .bucket("bucket")
        .key("object")
        .send()
        .await
        .expect("get");
    assert_eq!(
        data.body.collect().await.expect("body").into_bytes().len(),
        OBJECT_LENGTH,
        "data survives a node crash"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_upload_stores_nothing() {
    // Proves that a truncated upload is never committed.
    // An anonymous node, so that raw HTTP requests need no signature.
    let anonymous = common::anonymous_cluster(1, ClusterConfig::default()).await;
    let address = anonymous[0].address().expect("bound");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"PUT /bucket HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).await.expect("response");
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buffer[..read])
    );

    let mut upload = tokio::net::TcpStream::connect(address).await.expect("connect");
    upload
        .write_all(b"PUT /bucket/partial HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\n")
        .await
        .expect("head");
    upload.write_all(&[1u8; 50_000]).await.expect("half the body");
    drop(upload);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut check = tokio::net::TcpStream::connect(address).await.expect("connect");
    check
        .write_all(b"HEAD /bucket/partial HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let read = check.read(&mut buffer).await.expect("response");
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 404"),
        "a truncated upload was stored: {}",
        String::from_utf8_lossy(&buffer[..read])
    );
}
