//! OTLP/HTTP export of metrics to a collector: a receiver on loopback decodes what the proxy
//! sends with the OpenTelemetry protobuf types and checks names, units and attributes; a dead
//! collector costs nothing but counted failures.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_an_otlp_collector_with_their_names_units_and_attributes() {
    // Proves the OTLP/HTTP export: protobuf POSTs to /v1/metrics carry
    // http.server.request.duration in seconds with the S3 operation as rpc.method, and the
    // per-backend attempts with server.address and server.port, for the traffic sent.
    let (address, mut received) = common::collector::start(common::collector::Answer::Success).await;
    let harness = common::harness(
        2,
        &format!(
            "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"http://{address}\"\ninterval = \"300ms\"\n"
        ),
    )
    .await;
    let s3 = harness.client();
    s3.create_bucket().bucket("otlp").send().await.expect("create");
    for index in 0..3 {
        s3.put_object()
            .bucket("otlp")
            .key(format!("k{index}"))
            .body(ByteStream::from_static(b"exported"))
            .send()
            .await
            .expect("put");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (mut saw_duration, mut saw_attempts) = (false, false);
    while !(saw_duration && saw_attempts) {
        let (path, content_type, body) = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("an export within 15 s")
            .expect("the collector runs");
        assert_eq!(path, "/v1/metrics");
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportMetricsServiceRequest::decode(body).expect("an OTLP protobuf export");
        for metric in request
            .resource_metrics
            .iter()
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
        {
            match (metric.name.as_str(), &metric.data) {
                ("http.server.request.duration", Some(Data::Histogram(histogram))) => {
                    assert_eq!(metric.unit, "s");
                    let puts: u64 = histogram
                        .data_points
                        .iter()
                        .filter(|point| {
                            common::collector::string_attribute(&point.attributes, "rpc.method") == Some("PutObject")
                        })
                        .map(|point| point.count)
                        .sum();
                    saw_duration |= puts == 3;
                }
                ("storefront.backend.attempts", Some(Data::Sum(sum))) => {
                    let at_nodes = sum
                        .data_points
                        .iter()
                        .filter(|point| {
                            common::collector::string_attribute(&point.attributes, "server.address")
                                == Some("127.0.0.1")
                        })
                        .filter(|point| point.attributes.iter().any(|attribute| attribute.key == "server.port"))
                        .count();
                    saw_attempts |= at_nodes > 0;
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_counted_failures_and_no_request() {
    // Proves a dead collector never reaches the request path: requests are served as usual
    // while every export fails (connection refused), and the failures are counted.
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let harness = common::harness(
        1,
        &format!(
            "[telemetry]\naccess_log = \"off\"\n\n[telemetry.otlp]\nendpoint = \"http://{dead}\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\n"
        ),
    )
    .await;
    let admin = common::admin(&harness).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("dead").send().await.expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::timeout(Duration::from_secs(2), s3.head_bucket().bucket("dead").send())
            .await
            .expect("served at once")
            .expect("served");
        let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
        let failures: f64 = metrics
            .lines()
            .find(|line| line.starts_with("storefront_otlp_export_failures_total"))
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0);
        if failures >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no export failure counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
