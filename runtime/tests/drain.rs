//! Draining a whole proxy (`/admin/drain`, SIGTERM): what a replica leaving a fleet does so
//! that its clients lose nothing.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{admin, admin_call as call, harness};
use s3_mock::{BodyFault, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `GET path` on `stream` (keep-alive) and read one whole response: its head (lowercase)
/// and its body length.
async fn get(stream: &mut TcpStream, path: &str) -> (String, usize) {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: proxy\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "connection closed before a response head");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("a content-length");
    while buffer.len() - head_end < length {
        let read = stream.read(&mut chunk).await.expect("read body");
        assert!(read > 0, "body cut short at {} of {length}", buffer.len() - head_end);
        buffer.extend_from_slice(&chunk[..read]);
    }
    (head, buffer.len() - head_end)
}

/// Whether the server closes `stream` within a few seconds with nothing more sent.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Whether a new connection to `endpoint` gets a response within a second.
async fn serves_new_connections(endpoint: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(endpoint).await else {
        return false;
    };
    let _ = stream
        .write_all(b"GET /data/small HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await;
    let mut buffer = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await, Ok(Ok(n)) if n > 0)
}

#[tokio::test]
async fn a_drained_proxy_is_not_ready_ends_keep_alive_and_still_serves_whoever_arrives() {
    // Proves `/admin/drain`: readiness turns 503 while liveness stays 200; a download in flight
    // completes whole; an idle keep-alive connection is not
    // closed under its client (who could be sending on it that instant) but its next request
    // is answered `Connection: close` and the connection closed after it; a connection arriving
    // during the drain (the endpoint removal has not reached every client yet) is served one
    // request, answered `Connection: close`.
    let harness = harness(1, "[server]\ndrain_delay = \"30s\"\n").await;
    let admin = admin(&harness).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    for (key, size) in [("small", 1000), ("slow", 300_000)] {
        s3.put_object()
            .bucket("data")
            .key(key)
            .body(ByteStream::from(vec![5u8; size]))
            .send()
            .await
            .expect("put");
    }
    let mut idle = TcpStream::connect(harness.endpoint).await.expect("connect");
    let (head, length) = get(&mut idle, "/data/small").await;
    assert_eq!(length, 1000);
    assert!(!head.contains("connection: close"), "{head}");

    harness.nodes[0].set_faults(Faults {
        body: BodyFault::Throttle(600_000),
        ..Faults::default()
    });
    let endpoint = harness.endpoint;
    let download = tokio::spawn(async move {
        let mut busy = TcpStream::connect(endpoint).await.expect("connect");
        let (_, length) = get(&mut busy, "/data/slow").await;
        (length, busy)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(call(admin, "GET", "/readyz").await.0, 200);
    assert_eq!(
        call(admin, "POST", "/admin/drain").await,
        (200, "draining\n".to_owned())
    );
    assert_eq!(
        call(admin, "GET", "/readyz").await,
        (503, "not ready: draining\n".to_owned())
    );
    assert_eq!(call(admin, "GET", "/healthz").await.0, 200, "draining is not dead");
    let (head, length) = get(&mut idle, "/data/small").await;
    assert_eq!(length, 1000, "the idle connection was not kept for its next request");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        closed_by_server(&mut idle).await,
        "the idle connection stayed open after its response"
    );

    let (length, mut busy) = tokio::time::timeout(Duration::from_secs(10), download)
        .await
        .expect("the download finished")
        .expect("task");
    assert_eq!(length, 300_000, "the download in flight was cut short");

    harness.nodes[0].set_faults(Faults::default());
    // Its head had left before the drain began; the next response on it says close.
    let (head, length) = get(&mut busy, "/data/small").await;
    assert_eq!(length, 1000);
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        closed_by_server(&mut busy).await,
        "the busy connection stayed open after `close`"
    );

    let mut late = TcpStream::connect(harness.endpoint).await.expect("still accepting");
    let (head, length) = get(&mut late, "/data/small").await;
    assert_eq!(length, 1000);
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_by_server(&mut late).await, "a late connection was kept alive");
}

#[tokio::test]
async fn terminate_keeps_accepting_for_the_drain_delay_then_stops() {
    // Proves `App::terminate` (what SIGTERM calls): new connections are still served while the
    // drain delay runs, and after it the proxy stops accepting, no sooner than the delay, and
    // closes the keep-alive connections that stayed idle throughout.
    let harness = harness(1, "[server]\ndrain_delay = \"3s\"\nshutdown_grace = \"5s\"\n").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("small")
        .body(ByteStream::from(vec![1u8; 100]))
        .send()
        .await
        .expect("put");
    let mut idle = TcpStream::connect(harness.endpoint).await.expect("connect");
    let (head, _) = get(&mut idle, "/data/small").await;
    assert!(!head.contains("connection: close"), "{head}");
    let started = Instant::now();
    harness.app.terminate();
    assert!(harness.app.is_draining());
    assert!(
        serves_new_connections(harness.endpoint).await,
        "a connection during the drain delay was not served"
    );
    let mut stopped = None;
    for _ in 0..200 {
        if !serves_new_connections(harness.endpoint).await {
            stopped = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = stopped.expect("the proxy never stopped accepting");
    assert!(
        stopped >= Duration::from_secs(3),
        "stopped after {stopped:?}, before the drain delay"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection outlived the shutdown"
    );
}

#[tokio::test]
async fn sigterm_drains_the_process_and_it_exits_cleanly() {
    // Proves the binary's SIGTERM path: readiness turns 503 at once, the process keeps serving
    // through the drain delay, then exits with status 0.
    let nodes = common::one_node().await;
    let mut proxy = common::proxy_process(&nodes, "drain_delay = \"2s\"", "", "", "drain").await;
    let mut ready = false;
    for _ in 0..100 {
        if call(proxy.admin, "GET", "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the proxy never became ready");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let mut draining = false;
    for _ in 0..40 {
        if call(proxy.admin, "GET", "/readyz").await == (503, "not ready: draining\n".to_owned()) {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(draining, "readiness did not turn to draining on SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), proxy.child.wait())
        .await
        .expect("the process exited")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "exited before the drain delay"
    );
    proxy.stop().await;
}
