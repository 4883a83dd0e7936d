//! Connection-level defences, with raw sockets: silent and idle connections are closed, one
//! address holds at most its share, and the limit refuses at once instead of queueing.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::harness;
use s3_mock::{BodyFault, Faults};
use storefront::telemetry::{Expiry, Observer, Refusal, RuntimeEvent};
use storefront_core::event::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The runtime events a proxy reported.
#[derive(Default)]
struct Seen(Mutex<Vec<RuntimeEvent>>);

impl Observer for Seen {
    fn core_event(&self, _event: &Event) {}
    fn runtime_event(&self, event: &RuntimeEvent) {
        self.0.lock().expect("not poisoned").push(event.clone());
    }
}

impl Seen {
    fn count(&self, event: &RuntimeEvent) -> usize {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|seen| *seen == event)
            .count()
    }
}

fn seen(harness: &common::Harness) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    harness.app.proxy.events.subscribe(seen.clone());
    seen
}

/// A connection from `from` that sends nothing.
async fn silent(from: Ipv4Addr, endpoint: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("bind source");
    socket.connect(endpoint).await.expect("connect")
}

/// Read until the proxy closes the connection (within `limit`): what it said before.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    closed.ok().map(|_| String::from_utf8_lossy(&answer).into_owned())
}

const HEAD: &[u8] = b"HEAD /data/missing HTTP/1.1\r\nhost: proxy\r\n\r\n";

#[tokio::test]
async fn silent_connections_at_the_limit_lock_nobody_out_past_the_header_timeout() {
    // Proves the hole is closed: four connections that send nothing hold a proxy with
    // max_connections = 4; a fifth client is refused at once with 503 SlowDown (not left in
    // the backlog); the silent ones are closed at the 1 s header timeout, and then a new
    // client is served.
    let harness = harness(1, "[server]\nmax_connections = 4\n[timeouts]\nclient_header = \"1s\"\n").await;
    let seen = seen(&harness);
    let mut quiet = Vec::new();
    for _ in 0..4 {
        quiet.push(silent(Ipv4Addr::LOCALHOST, harness.endpoint).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = common::send_from(Ipv4Addr::LOCALHOST, harness.endpoint, HEAD).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("<Code>SlowDown</Code>") && refused.contains("Retry-After: 1"),
        "{refused}"
    );
    for stream in &mut quiet {
        let said = until_closed(stream, Duration::from_secs(5)).await;
        assert_eq!(said.as_deref(), Some(""), "a silent connection was not closed");
    }
    let served = common::send_from(Ipv4Addr::LOCALHOST, harness.endpoint, HEAD).await;
    assert!(served.starts_with("HTTP/1.1 404"), "{served}");
    assert_eq!(seen.count(&RuntimeEvent::ConnectionExpired(Expiry::Header)), 4);
    assert!(seen.count(&RuntimeEvent::ConnectionRefused(Refusal::AtCapacity)) >= 1);
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share() {
    // Proves the per-client bound: with two connections per address, 127.0.0.1's third is
    // refused at once while 127.0.0.2 is served.
    let harness = harness(1, "[server]\nmax_connections_per_client = 2\n").await;
    let seen = seen(&harness);
    let _held = [
        silent(Ipv4Addr::LOCALHOST, harness.endpoint).await,
        silent(Ipv4Addr::LOCALHOST, harness.endpoint).await,
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = common::send_from(Ipv4Addr::LOCALHOST, harness.endpoint, HEAD).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let other = common::send_from(Ipv4Addr::new(127, 0, 0, 2), harness.endpoint, HEAD).await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert_eq!(seen.count(&RuntimeEvent::ConnectionRefused(Refusal::PerClient)), 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_long_response_is_not_cut() {
    // Proves the idle deadline: a keep-alive connection with nothing after its response is
    // closed after client_idle (1 s), while a response that takes three times as long to
    // send is not cut (a request in progress holds the connection open).
    let harness = harness(1, "[timeouts]\nclient_idle = \"1s\"\n").await;
    let seen = seen(&harness);
    let s3 = common::bucket_with_object(&harness, 300_000).await;
    drop(s3);
    harness.nodes[0].set_faults(Faults {
        body: BodyFault::Throttle(100_000),
        ..Faults::default()
    });
    let mut stream = TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"GET /data/object HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("write");
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 65536];
    let started = tokio::time::Instant::now();
    let body_at = loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the response keeps coming")
            .expect("read");
        assert!(read > 0, "closed mid-response after {:?}", started.elapsed());
        received.extend_from_slice(&buffer[..read]);
        if let Some(at) = received.windows(4).position(|window| window == b"\r\n\r\n")
            && received.len() - (at + 4) >= 300_000
        {
            break at + 4;
        }
    };
    assert_eq!(received.len() - body_at, 300_000, "the whole body, nothing more");
    assert!(started.elapsed() >= Duration::from_secs(2), "the response was not slow");
    let said = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(said.as_deref(), Some(""), "the idle connection was not closed");
    assert_eq!(seen.count(&RuntimeEvent::ConnectionExpired(Expiry::Idle)), 1);
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed_at_the_header_timeout() {
    // Proves the deadline for HTTP/2: a client that sends the connection preface and its
    // settings but opens no stream is closed after client_header (1 s), as a silent HTTP/1
    // one is.
    let harness = harness(1, "[timeouts]\nclient_header = \"1s\"\n").await;
    let seen = seen(&harness);
    let mut stream = TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    assert!(closed.is_ok(), "a streamless HTTP/2 connection was not closed");
    assert!(
        !received.is_empty(),
        "the server spoke HTTP/2 (its SETTINGS) before closing"
    );
    assert_eq!(seen.count(&RuntimeEvent::ConnectionExpired(Expiry::Header)), 1);
}
