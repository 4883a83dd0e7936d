//! Balance, sick nodes and misbehaving clients, end to end through the proxy.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{harness, harness_with};
use s3_mock::{BodyFault, ClusterConfig, Faults};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn one_keep_alive_client_is_spread_evenly() {
    // Proves the point of the proxy: one client on one keep-alive connection (which DNS
    // round-robin would pin to one node) is spread over every node within ±10% by the
    // algorithms that aim for an even spread.
    for algorithm in ["round-robin", "least-in-flight", "random"] {
        let harness = harness(3, &format!("[balance]\nalgorithm = \"{algorithm}\"\n")).await;
        let s3 = common::bucket_with_object(&harness, 10).await;
        for _ in 0..3000 {
            s3.head_object()
                .bucket("data")
                .key("object")
                .send()
                .await
                .expect("HeadObject");
        }
        let counts = common::head_counts(&harness);
        assert_eq!(counts.iter().sum::<u64>(), 3000);
        for count in &counts {
            assert!((900..=1100).contains(count), "{algorithm}: per-node counts {counts:?}");
        }
    }
}

#[tokio::test]
async fn a_dead_node_costs_idempotent_requests_nothing() {
    // Proves retries: with one of three nodes crashed, every GET still succeeds. Round-robin
    // makes sure the dead node is tried (p2c over peak-EWMA may never pick a node whose first
    // sample was slow on a loaded machine, which left this test proving nothing, and failing).
    let harness = harness(3, "[balance]\nalgorithm = \"round-robin\"\n").await;
    let s3 = common::bucket_with_object(&harness, 1000).await;
    harness.nodes[1].crash();
    // The crash takes effect in the node's own task: wait until it refuses connections, so no
    // GET below can still reach it (under a loaded test run, 50 ms was not always enough).
    let address = harness.nodes[1].address().expect("bound");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(address).await.is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..200 {
        let response = s3
            .get_object()
            .bucket("data")
            .key("object")
            .send()
            .await
            .expect("GET despite a dead node");
        assert_eq!(response.body.collect().await.expect("body").into_bytes().len(), 1000);
    }
    let backends = storefront::admin::backends(&harness.app);
    let dead = backends
        .iter()
        .find(|b| b.address == harness.nodes[1].address().expect("bound").to_string())
        .expect("listed");
    assert!(dead.errors_total >= 1, "{dead:?}");
    assert!(dead.requests_total < 50, "the dead node kept getting traffic: {dead:?}");
}

#[tokio::test]
async fn a_backend_dying_mid_get_is_an_error_for_the_client() {
    // Proves that a broken backend body reaches the client as an error, never a short body.
    let harness = harness(1, "").await;
    let s3 = common::bucket_with_object(&harness, 512 * 1024).await;
    harness.nodes[0].set_faults(Faults {
        body: BodyFault::ResetAfter(64 * 1024),
        ..Faults::default()
    });
    let response = s3
        .get_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    assert_eq!(response.content_length(), Some(512 * 1024));
    let body = response.body.collect().await;
    assert!(
        body.is_err(),
        "a truncated body was delivered as complete: {:?}",
        body.map(|b| b.into_bytes().len())
    );
}

#[tokio::test]
async fn a_client_leaving_mid_upload_leaves_no_object() {
    // Proves the backend never commits a truncated upload.
    let harness = harness(2, "").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"PUT /data/partial HTTP/1.1\r\nhost: proxy\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .expect("head");
    stream.write_all(&[7u8; 300_000]).await.expect("part of the body");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for index in 0..2 {
        let direct = harness
            .direct(index)
            .head_object()
            .bucket("data")
            .key("partial")
            .send()
            .await;
        assert!(direct.is_err(), "node {index} committed a truncated upload");
    }
    // The same happens with chunked framing (no Content-Length): the backend must not see a
    // clean end of the chunked body.
    let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"PUT /data/chunked HTTP/1.1\r\nhost: proxy\r\ntransfer-encoding: chunked\r\n\r\n1000\r\n")
        .await
        .expect("head");
    stream.write_all(&[7u8; 4096]).await.expect("one chunk");
    stream.write_all(b"\r\n1000\r\n").await.expect("next chunk header");
    stream.write_all(&[7u8; 100]).await.expect("part of a chunk");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for index in 0..2 {
        let direct = harness
            .direct(index)
            .head_object()
            .bucket("data")
            .key("chunked")
            .send()
            .await;
        assert!(direct.is_err(), "node {index} committed a truncated chunked upload");
    }
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_and_its_backend_connection_closed() {
    // Proves the write-idle timeout: a client that stops reading a large GET is closed, and the
    // backend connection behind it is closed too (not held, not pooled).
    let harness = harness_with(
        1,
        ClusterConfig::default(),
        "[timeouts]\nresponse_write_idle = \"500ms\"\n",
    )
    .await;
    // Seed the object straight on the node, so the proxy holds no pooled connection and the
    // GET below opens the only proxy-to-node connection.
    let direct = harness.direct(0);
    direct.create_bucket().bucket("data").send().await.expect("create");
    direct
        .put_object()
        .bucket("data")
        .key("object")
        .body(ByteStream::from(vec![5u8; 32 * 1024 * 1024]))
        .send()
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = harness.nodes[0].stats().connections_open;
    let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"GET /data/object HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0u8; 512];
    let read = stream.read(&mut head).await.expect("head");
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );
    let during = harness.nodes[0].stats().connections_open;
    assert!(
        during > baseline,
        "the GET holds a backend connection ({during} vs {baseline})"
    );
    // Stop reading. Within a few write-idle periods the proxy closes the client connection...
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut drained = 0usize;
    let mut buffer = vec![0u8; 1 << 20];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => drained += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the slow reader's connection is still open");
    assert!(
        drained < 32 * 1024 * 1024,
        "the whole body was delivered to a client that stopped reading"
    );
    // ...and the backend connection count is back to where it was.
    let mut after = u64::MAX;
    for _ in 0..50 {
        after = harness.nodes[0].stats().connections_open;
        if after <= baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        after <= baseline,
        "backend connections: {after} open, baseline {baseline}"
    );
    let backends = storefront::admin::backends(&harness.app);
    assert_eq!(backends[0].in_flight, 0);
    assert_eq!(backends[0].errors_total, 0, "a slow client is not the backend's fault");
}

#[tokio::test]
async fn expect_continue_is_answered_before_any_backend_is_contacted() {
    // Proves 100-continue handling: the decision comes from the head alone.
    let harness = harness(1, "").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    let requests_before = harness.nodes[0].stats().requests_total;
    let (mut stream, text) = common::send_raw(
        harness.endpoint,
        b"PUT /data/continued HTTP/1.1\r\nhost: proxy\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
    assert_eq!(
        harness.nodes[0].stats().requests_total,
        requests_before,
        "a backend was contacted before the 100"
    );
    stream.write_all(b"hello").await.expect("body");
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).await.expect("final status");
    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
    assert!(text.contains("200 OK"), "{text}");
    let stored = harness
        .direct(0)
        .get_object()
        .bucket("data")
        .key("continued")
        .send()
        .await
        .expect("stored");
    assert_eq!(
        stored.body.collect().await.expect("body").into_bytes().as_ref(),
        b"hello"
    );
}

#[tokio::test]
async fn a_denied_upload_gets_its_final_status_without_its_body_being_read() {
    // Proves the rejection path of 100-continue: 403 at once, no 100, no body byte consumed.
    let harness = harness(1, "").await;
    let denied = harness.app.clone();
    // Deny mode: swap in a configuration whose auth mode is `deny`.
    let _ = denied;
    let text = common::config_text(&harness.nodes, "[health.active]\nenabled = false\n")
        .replace("mode = \"trust\"", "mode = \"deny\"");
    let config = storefront_core::config::Config::from_toml(&text, "deny.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "deny.toml").expect("credentials");
    let generation = storefront::request::Generation::new(
        config,
        credentials,
        &harness.app.proxy.clock,
        9,
        harness.app.proxy.events.clone(),
        &storefront::transport::TcpConnector,
    )
    .expect("generation");
    harness.app.proxy.swap(generation);
    let (_stream, text) = common::send_raw(
        harness.endpoint,
        b"PUT /data/denied HTTP/1.1\r\nhost: proxy\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("<Code>AccessDenied</Code>"), "{text}");
    assert_eq!(
        harness.nodes[0].stats().requests_total,
        0,
        "a denied request reached a backend"
    );
}

#[tokio::test]
async fn malformed_http_gets_400_or_431_and_the_connection_closes() {
    // Proves hostile input is refused cleanly.
    let harness = harness(1, "[server]\nmax_header_bytes = 8192\n").await;
    let cases: [(&[u8], &str); 3] = [
        (b"GARBAGE\r\n\r\n", "400"),
        (
            b"GET /data/k HTTP/1.1\r\nhost: p\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            "400",
        ),
        (b"GET /data/%zz HTTP/1.1\r\nhost: p\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
        let text = String::from_utf8_lossy(&response).to_string();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?} -> {text}",
            String::from_utf8_lossy(request)
        );
    }
    let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    let mut oversized = b"GET /data/k HTTP/1.1\r\nhost: p\r\n".to_vec();
    for index in 0..400 {
        oversized.extend_from_slice(format!("x-amz-meta-filler-{index}: {}\r\n", "v".repeat(60)).as_bytes());
    }
    oversized.extend_from_slice(b"\r\n");
    let _ = stream.write_all(&oversized).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    assert!(text.starts_with("HTTP/1.1 431"), "oversized head -> {text}");
    assert_eq!(
        harness.nodes[0].stats().requests_total,
        0,
        "malformed requests reached a backend"
    );
}

#[tokio::test]
async fn conflicting_framing_cannot_smuggle_a_request() {
    // Proves the framing of a request with both Content-Length and Transfer-Encoding is
    // unambiguous: Transfer-Encoding wins and Content-Length is dropped (RFC 9112 §6.3, what
    // hyper does for an intermediary). The request is answered at once (with CL's 100 bytes
    // it would wait for a body that never comes), and the backend receives no Content-Length.
    let harness = harness(1, "").await;
    harness
        .client()
        .create_bucket()
        .bucket("data")
        .send()
        .await
        .expect("create");
    let bytes_in_before = harness.nodes[0].stats().bytes_in;
    let (_stream, text) = common::send_raw(
        harness.endpoint,
        b"PUT /data/first HTTP/1.1\r\nhost: p\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    assert_eq!(
        harness.nodes[0].stats().bytes_in,
        bytes_in_before,
        "a Content-Length reached the backend"
    );
}

#[tokio::test]
async fn the_total_deadline_bounds_the_whole_exchange() {
    // Proves `timeouts.total`: a node too slow to answer gets the client a 504 at the deadline,
    // and a body still streaming at the deadline is cut (an error, not a short body).
    let harness = harness(1, "[timeouts]\ntotal = \"400ms\"\n").await;
    let s3 = common::bucket_with_object(&harness, 200_000).await;
    harness.nodes[0].set_slow_factor(1000.0);
    let started = std::time::Instant::now();
    let error = s3
        .get_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect_err("deadline");
    assert_eq!(common::code(&error).as_deref(), Some("GatewayTimeout"), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    harness.nodes[0].set_faults(Faults {
        body: BodyFault::Throttle(100_000),
        ..Faults::default()
    });
    let response = s3
        .get_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect("head in time");
    assert!(
        response.body.collect().await.is_err(),
        "a body cut by the deadline looked complete"
    );
    assert_eq!(storefront::admin::backends(&harness.app)[0].in_flight, 0);
}

#[tokio::test]
async fn completed_responses_are_recorded_and_their_connections_reused() {
    // Proves that a response read to its end completes its exchange: the backend connection is
    // reused (one connection for many sequential requests) and the latency estimate learns
    // from the answers (it leaves the 30 ms default).
    let harness = harness(1, "").await;
    let s3 = common::bucket_with_object(&harness, 50_000).await;
    let before = harness.nodes[0].stats().connections_total;
    for _ in 0..50 {
        let response = s3.get_object().bucket("data").key("object").send().await.expect("get");
        assert_eq!(response.body.collect().await.expect("body").into_bytes().len(), 50_000);
    }
    let opened = harness.nodes[0].stats().connections_total - before;
    assert!(opened <= 2, "{opened} backend connections for 50 sequential GETs");
    let backend = &storefront::admin::backends(&harness.app)[0];
    assert_eq!((backend.in_flight, backend.errors_total), (0, 0));
    assert!(
        backend.latency_ewma_ms < 29.0,
        "the estimate never learned: {} ms",
        backend.latency_ewma_ms
    );
}

#[tokio::test]
async fn a_body_cut_short_in_the_same_read_is_still_an_error() {
    // Proves that write coalescing never swallows a backend failure: a backend that sends part
    // of a chunked body and closes at once (data and end in one read) still gives the client an
    // error.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = backend.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                // Chunked, so only the missing terminal chunk marks the body as incomplete:
                // hyper cannot catch a dropped error by a length check here.
                let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n".to_vec();
                response.extend_from_slice(&[9u8; 1000]);
                response.extend_from_slice(b"\r\n");
                let _ = stream.write_all(&response).await;
            });
        }
    });
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[[pools]]\nname = \"raw\"\nbackends = [\"{address}\"]\n"
    );
    let config = storefront_core::config::Config::from_toml(&text, "raw.toml").expect("valid");
    let app = storefront::App::with_seed(
        config,
        vec![None],
        None,
        storefront::transport::TcpConnector,
        common::TEST_SEED,
    )
    .expect("app");
    let (listener, endpoint) = storefront::App::<storefront::transport::TcpConnector>::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let s3 = common::client(endpoint, "caller", "secret");
    let response = s3
        .get_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect("head arrives");
    let body = response.body.collect().await;
    assert!(
        body.is_err(),
        "a body cut short was delivered as complete: {:?}",
        body.map(|b| b.into_bytes().len())
    );
}

fn in_flight(harness: &common::Harness) -> u64 {
    harness
        .app
        .proxy
        .current()
        .state()
        .pools()
        .iter()
        .map(|pool| pool.lock().balancer().in_flight_total())
        .sum()
}

#[tokio::test]
async fn a_client_leaving_before_the_response_head_leaves_nothing_in_flight() {
    // Proves that an attempt ends when the client's connection closes while the proxy waits
    // for the backend's answer: the balancer must not count it in flight forever.
    let harness = harness(1, "").await;
    let s3 = common::bucket_with_object(&harness, 10).await;
    drop(s3);
    harness.nodes[0].set_slow_factor(1500.0); // 2 ms × 1500: the answer takes 3 s.
    let mut stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    stream
        .write_all(b"GET /data/object HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(in_flight(&harness), 1, "the request is with the backend");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(in_flight(&harness), 0, "the abandoned attempt still counts in flight");
}

#[tokio::test]
async fn an_upload_to_a_backend_that_stops_reading_times_out() {
    // Proves timeouts.backend_send_idle: a backend that accepts a PUT and then reads no more
    // of its body (its receive window fills) no longer holds the upload forever; the client
    // gets 504 soon after the idle time. Found by the simulation's one-way partition.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = backend.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = backend.accept().await {
            let mut head = vec![0u8; 4096];
            let _ = socket.read(&mut head).await;
            held.push(socket); // never read again, never answer
        }
    });
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[timeouts]\nbackend_send_idle = \"500ms\"\n\n\
         [[pools]]\nname = \"dc1\"\nbackends = [\"{address}\"]\n"
    );
    let (_, endpoint) = common::serve_text(&text).await;
    let s3 = common::client(endpoint, "caller-key", "caller-secret");
    let started = tokio::time::Instant::now();
    let put = tokio::time::timeout(
        Duration::from_secs(20),
        s3.put_object()
            .bucket("data")
            .key("stuck")
            .body(ByteStream::from(vec![1u8; 32 * 1024 * 1024]))
            .send(),
    )
    .await
    .expect("the proxy answers instead of waiting forever");
    let error = put.expect_err("the upload cannot succeed");
    assert_eq!(common::status_of(&error), Some(504), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn answers_that_fault_the_request_neither_eject_a_node_nor_are_retried() {
    // Proves the status classes end to end: GetObjectTagging, which the mock nodes answer
    // `501 Not Implemented`, and HEADs of a missing key (404) go straight back to the SDK,
    // one request each, and leave every node healthy with no error counted, although a
    // single failure would eject a node here. Before, ten such calls ejected healthy nodes.
    let harness = harness(3, "[health.passive]\nconsecutive_failures = 1\n").await;
    let s3 = common::bucket_with_object(&harness, 10).await;
    let before: u64 = harness.nodes.iter().map(|node| node.stats().requests_total).sum();
    for _ in 0..10 {
        let error = s3
            .get_object_tagging()
            .bucket("data")
            .key("object")
            .send()
            .await
            .expect_err("the nodes do not implement tagging");
        assert_eq!(common::status_of(&error), Some(501));
        let error = s3
            .head_object()
            .bucket("data")
            .key("missing")
            .send()
            .await
            .expect_err("no such key");
        assert_eq!(common::status_of(&error), Some(404));
    }
    let after: u64 = harness.nodes.iter().map(|node| node.stats().requests_total).sum();
    assert_eq!(after - before, 20, "each answer reached the client from its first node");
    for backend in storefront::admin::backends(&harness.app) {
        assert!(backend.healthy && !backend.ejected, "{backend:?}");
        assert_eq!(backend.errors_total, 0, "{backend:?}");
    }
}

#[tokio::test]
async fn a_request_target_past_the_bound_gets_414_and_never_reaches_a_node() {
    // Proves `server.max_uri_bytes` (default 8 KiB, as nginx and HAProxy bound it): a 16 KiB
    // target is answered 414 with S3 XML and no backend contact; a 7 KiB one goes through.
    let harness = harness(1, "").await;
    let s3 = common::bucket_with_object(&harness, 10).await;
    drop(s3);
    let before = harness.nodes[0].stats().requests_total;
    let long = format!(
        "GET /data/object?x={} HTTP/1.1\r\nhost: p\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (_stream, text) = common::send_raw(harness.endpoint, long.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 414"), "{text}");
    assert!(text.contains("<Code>RequestURITooLong</Code>"), "{text}");
    assert_eq!(
        harness.nodes[0].stats().requests_total,
        before,
        "the long target reached a node"
    );
    let fits = format!(
        "HEAD /data/object?x={} HTTP/1.1\r\nhost: p\r\n\r\n",
        "a".repeat(7 * 1024)
    );
    let (_stream, text) = common::send_raw(harness.endpoint, fits.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(harness.nodes[0].stats().requests_total, before + 1);
}
