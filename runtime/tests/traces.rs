//! Traces: a server span per request and a client span per attempt reach an OTLP collector
//! (decoded with the OpenTelemetry protobuf types), under the caller's trace; the backend gets
//! a `traceparent` naming its attempt's span, written before re-signing, and verifies the
//! signature (s3-mock checks every request's SigV4); sampling follows the caller's decision,
//! the configured ratio otherwise; a stalled collector costs dropped, counted spans only.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::collector::{self, Answer, Received, int_attribute, string_attribute};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;

/// The caller's trace and span, as W3C Trace Context spells them.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A proxy configuration exporting traces to `collector`, sampling `ratio` of new traces.
fn traced(collector: std::net::SocketAddr, ratio: f64, extra: &str) -> String {
    format!(
        "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"http://{collector}\"\ninterval = \"1h\"\n\n[telemetry.traces]\nsample_ratio = {ratio:?}\n{extra}\n"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every span the collector received until `enough` says so (or 15 s pass: a failure), with
/// the resource attributes of the exports they came in.
async fn spans_until(
    received: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    enough: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut spans = Vec::new();
    while !enough(&spans) {
        let Ok(Some((path, content_type, body))) = tokio::time::timeout_at(deadline, received.recv()).await else {
            panic!("the collector did not get the spans expected within 15 s; it got {spans:#?}");
        };
        if path != "/v1/traces" {
            continue;
        }
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
        for resource in request.resource_spans {
            let attributes = resource
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            assert_eq!(string_attribute(&attributes, "service.name"), Some("storefront"));
            spans.extend(resource.scope_spans.into_iter().flat_map(|scope| scope.spans));
        }
    }
    spans
}

fn in_trace<'a>(spans: &'a [Span], trace: &str) -> Vec<&'a Span> {
    spans.iter().filter(|span| hex(&span.trace_id) == trace).collect()
}

/// A PutObject of `key` carrying `traceparent` (and `tracestate`, when given).
async fn put_traced(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, traceparent: &str, tracestate: Option<&str>) {
    let (traceparent, tracestate) = (traceparent.to_owned(), tracestate.map(str::to_owned));
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"traced"))
        .customize()
        .mutate_request(move |request| {
            request.headers_mut().insert("traceparent", traceparent.clone());
            if let Some(state) = &tracestate {
                request.headers_mut().insert("tracestate", state.clone());
            }
        })
        .send()
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_under_the_callers_trace_with_a_client_span_the_backend_sees() {
    // Proves the server and client spans, their attributes and their parentage, and that the
    // backend received the traceparent naming the client span, signed: s3-mock verified the
    // re-signed request (it answered 200 and stored the object).
    let (address, mut received) = collector::start(Answer::Success).await;
    let harness = common::harness(1, &traced(address, 1.0, "")).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("traced").send().await.expect("create");
    put_traced(
        &s3,
        "traced",
        "under/a/key",
        &format!("00-{TRACE}-{CALLER_SPAN}-01"),
        Some("vendor=opaque"),
    )
    .await;
    let spans = spans_until(&mut received, |spans| in_trace(spans, TRACE).len() >= 2).await;
    let ours = in_trace(&spans, TRACE);
    assert_eq!(ours.len(), 2, "one server span and one attempt: {ours:#?}");
    let server = ours
        .iter()
        .find(|span| span.kind == SpanKind::Server as i32)
        .expect("a server span");
    let client = ours
        .iter()
        .find(|span| span.kind == SpanKind::Client as i32)
        .expect("a client span");
    assert_eq!(server.name, "S3.PutObject");
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(server.trace_state, "vendor=opaque");
    let attributes = &server.attributes;
    assert_eq!(string_attribute(attributes, "rpc.method"), Some("PutObject"));
    assert_eq!(string_attribute(attributes, "http.request.method"), Some("PUT"));
    assert_eq!(string_attribute(attributes, "aws.s3.bucket"), Some("traced"));
    assert_eq!(
        string_attribute(attributes, "aws.s3.key"),
        None,
        "keys are off by default"
    );
    assert_eq!(string_attribute(attributes, "storefront.decision"), Some("allow"));
    assert_eq!(string_attribute(attributes, "storefront.pool"), Some("dc1"));
    assert_eq!(int_attribute(attributes, "http.response.status_code"), Some(200));
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);

    assert_eq!(
        client.parent_span_id, server.span_id,
        "the attempt hangs under the server span"
    );
    assert_eq!(client.name, "S3.PutObject");
    let node = harness.nodes[0].address().expect("bound");
    assert_eq!(
        string_attribute(&client.attributes, "server.address"),
        Some("127.0.0.1")
    );
    assert_eq!(
        int_attribute(&client.attributes, "server.port"),
        Some(i64::from(node.port()))
    );
    assert_eq!(int_attribute(&client.attributes, "storefront.attempt"), Some(1));
    assert_eq!(
        int_attribute(&client.attributes, "http.response.status_code"),
        Some(200)
    );
    let events: Vec<&str> = client.events.iter().map(|event| event.name.as_str()).collect();
    assert!(events.contains(&"response head"), "{events:?}");

    // The backend saw the attempt's span as its parent, in the caller's trace, and verified
    // the signature over it.
    let expected = format!("00-{TRACE}-{}-01", hex(&client.span_id));
    let seen = harness.nodes[0].traced();
    assert!(
        seen.contains(&(expected.clone(), 200)),
        "the node got {seen:?}, not {expected}"
    );
    assert!(
        !seen.iter().any(|(traceparent, _)| traceparent.contains(CALLER_SPAN)),
        "the caller's span id is replaced, not passed on: {seen:?}"
    );
    let stored = harness
        .direct(0)
        .get_object()
        .bucket("traced")
        .key("under/a/key")
        .send()
        .await
        .expect("stored");
    assert_eq!(&stored.body.collect().await.expect("body").into_bytes()[..], b"traced");

    // The bucket's creation carried no traceparent: a trace of its own, started by the proxy.
    let created = spans
        .iter()
        .find(|span| span.name == "S3.CreateBucket")
        .expect("the CreateBucket server span");
    assert!(created.parent_span_id.is_empty(), "a root span");
    assert_ne!(hex(&created.trace_id), TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_callers_flag_and_the_ratio_for_traces_the_proxy_starts() {
    // Proves parent-based sampling: with a ratio of 0, a request without a traceparent, with a
    // malformed one, or with an unsampled parent exports nothing, yet its backend still gets a
    // traceparent (unsampled); a caller's sampled parent is followed and exported.
    let (address, mut received) = collector::start(Answer::Success).await;
    let harness = common::harness(1, &traced(address, 0.0, "keys = true")).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("sampled").send().await.expect("create");
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    put_traced(
        &s3,
        "sampled",
        "unsampled",
        &format!("00-{unsampled}-{CALLER_SPAN}-00"),
        None,
    )
    .await;
    put_traced(&s3, "sampled", "malformed", "00-not-a-trace-01", None).await;
    put_traced(
        &s3,
        "sampled",
        "followed",
        &format!("00-{TRACE}-{CALLER_SPAN}-01"),
        None,
    )
    .await;
    let spans = spans_until(&mut received, |spans| in_trace(spans, TRACE).len() >= 2).await;
    assert!(
        spans.iter().all(|span| hex(&span.trace_id) == TRACE),
        "only the sampled caller's trace is exported: {spans:#?}"
    );
    let server = spans
        .iter()
        .find(|span| span.kind == SpanKind::Server as i32)
        .expect("the server span");
    assert_eq!(string_attribute(&server.attributes, "aws.s3.key"), Some("followed"));

    let seen: Vec<String> = harness.nodes[0]
        .traced()
        .into_iter()
        .map(|(traceparent, status)| {
            assert_eq!(status, 200, "{traceparent} was refused");
            traceparent
        })
        .collect();
    assert_eq!(seen.len(), 4, "every request's attempt carries a traceparent: {seen:?}");
    assert!(
        seen[1].starts_with(&format!("00-{unsampled}-")) && seen[1].ends_with("-00"),
        "{seen:?}"
    );
    assert!(!seen[1].contains(CALLER_SPAN));
    // The malformed one started a new, unsampled trace.
    let fields: Vec<&str> = seen[2].split('-').collect();
    assert_eq!(fields.len(), 4, "{seen:?}");
    assert!(
        fields[1].len() == 32 && fields[1] != "0".repeat(32) && fields[3] == "00",
        "{seen:?}"
    );
    assert!(seen[3].starts_with(&format!("00-{TRACE}-")) && seen[3].ends_with("-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_client_span_of_its_own_that_says_why() {
    // Proves one client span per attempt: a node answering 503 SlowDown to everything makes
    // round-robin's first pick there fail, and the retry on the other node is a second client
    // span under the same server span, numbered 2, with the first attempt's status as reason.
    let (address, mut received) = collector::start(Answer::Success).await;
    let harness = common::harness(2, &traced(address, 1.0, "[balance]\nalgorithm = \"round-robin\"\n")).await;
    let failing = harness.nodes[0].address().expect("bound").port();
    harness.nodes[0].set_faults(s3_mock::Faults {
        error_rate: 1.0,
        error_kind: s3_mock::ErrorKind::SlowDown,
        ..Default::default()
    });
    let s3 = harness.client();
    for index in 0..4 {
        let answered = s3.head_bucket().bucket(format!("retried-{index}")).send().await;
        if let Err(error) = answered {
            assert_eq!(
                common::status_of(&error),
                Some(404),
                "answered by the healthy node: {error:?}"
            );
        }
    }
    let retried = |spans: &[Span]| {
        spans
            .iter()
            .find(|span| int_attribute(&span.attributes, "storefront.attempt") == Some(2))
            .cloned()
    };
    let spans = spans_until(&mut received, |spans| retried(spans).is_some()).await;
    let second = retried(&spans).expect("a second attempt");
    let first = spans
        .iter()
        .find(|span| span.parent_span_id == second.parent_span_id && span.span_id != second.span_id)
        .expect("the first attempt, under the same server span");
    assert_eq!(int_attribute(&first.attributes, "storefront.attempt"), Some(1));
    assert_eq!(
        int_attribute(&first.attributes, "server.port"),
        Some(i64::from(failing))
    );
    assert_eq!(int_attribute(&first.attributes, "http.response.status_code"), Some(503));
    assert_eq!(
        first.status.as_ref().map(|status| status.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        string_attribute(&second.attributes, "storefront.retry.reason"),
        Some("status_503")
    );
    assert_ne!(
        int_attribute(&second.attributes, "server.port"),
        Some(i64::from(failing))
    );
    let server = spans
        .iter()
        .find(|span| span.span_id == second.parent_span_id)
        .expect("the server span");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_ne!(
        server.status.as_ref().map(|status| status.code),
        Some(StatusCode::Error as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traces_a_callers_trace_context_passes_untouched() {
    // Proves that a proxy with traces off forwards the caller's traceparent as it came (the
    // backend's span then hangs under the caller's), signed along with the rest.
    let harness = common::harness(1, "").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("untouched").send().await.expect("create");
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    put_traced(&s3, "untouched", "key", &traceparent, None).await;
    assert_eq!(harness.nodes[0].traced(), vec![(traceparent, 200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_costs_dropped_and_counted_spans_and_no_request() {
    // Proves the export never reaches the request path: with a collector that never answers
    // and a queue of four spans, requests are served at once while spans are dropped and
    // counted in `storefront_trace_spans_total{result="dropped"}`.
    let (address, _received) = collector::start(Answer::Never).await;
    let config = format!(
        "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"http://{address}\"\ninterval = \"1h\"\ntimeout = \"60s\"\n\n[telemetry.traces]\nsample_ratio = 1.0\nqueue = 4\n"
    );
    let harness = common::harness(1, &config).await;
    let admin = common::admin(&harness).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("stalled").send().await.expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::timeout(Duration::from_secs(2), s3.head_bucket().bucket("stalled").send())
            .await
            .expect("served at once")
            .expect("served");
        let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
        let dropped: f64 = metrics
            .lines()
            .find(|line| line.starts_with("storefront_trace_spans_total{") && line.contains("result=\"dropped\""))
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0);
        if dropped >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dropped span counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_a_collector_over_https_trusting_only_the_configured_ca() {
    // Proves OTLP over https: with `ca_file` naming the collector's CA, spans and metrics
    // arrive over TLS.
    let pki = common::pki::pki();
    let (directory, ca) = common::pki::pki_files(&pki, "otlp-https");
    let (address, mut received) = collector::start_tls(Answer::Success, pki.server_config()).await;
    let config = format!(
        "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"https://localhost:{}\"\nca_file = \"{}\"\ninterval = \"300ms\"\n\n[telemetry.traces]\nsample_ratio = 1.0\n",
        address.port(),
        ca.display()
    );
    let harness = common::harness(1, &config).await;
    harness
        .client()
        .create_bucket()
        .bucket("tls")
        .send()
        .await
        .expect("create");
    spans_until(&mut received, |spans| {
        spans.iter().any(|span| span.name == "S3.CreateBucket")
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (path, _, _) = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("metrics within 15 s")
            .expect("the collector runs");
        if path == "/v1/metrics" {
            break;
        }
    }

    // A proxy trusting another CA refuses the collector's certificate: nothing arrives, and
    // the spans are counted as failed.
    let other = common::pki::pki();
    let (other_directory, other_ca) = common::pki::pki_files(&other, "otlp-https-other");
    let (address, mut refused) = collector::start_tls(Answer::Success, pki.server_config()).await;
    let config = format!(
        "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"https://localhost:{}\"\nca_file = \"{}\"\ninterval = \"1h\"\n\n[telemetry.traces]\nsample_ratio = 1.0\n",
        address.port(),
        other_ca.display()
    );
    let harness = common::harness(1, &config).await;
    let admin = common::admin(&harness).await;
    harness
        .client()
        .create_bucket()
        .bucket("untrusted")
        .send()
        .await
        .expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
        let failed = metrics.lines().any(|line| {
            line.starts_with("storefront_trace_spans_total{")
                && line.contains("result=\"failed\"")
                && !line.ends_with(" 0")
        });
        if failed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed span counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused.try_recv().is_err(),
        "nothing reaches a collector the proxy does not trust"
    );
    let _ = std::fs::remove_dir_all(directory);
    let _ = std::fs::remove_dir_all(other_directory);
}
