//! Bodies stream: a 256 MiB PUT and GET through the proxy (as its own process) leave its peak
//! RSS far below the object size.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::status_kib;
use s3_mock::{ClusterConfig, MockCluster};

const OBJECT: usize = 256 * 1024 * 1024;
/// The proxy's peak RSS must stay below this (a quarter of the object): memory does not grow
/// with object size.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn a_256_mib_object_streams_through_with_bounded_memory() {
    // Proves streaming in both directions: the proxy never holds an object whole.
    let cluster = ClusterConfig {
        nodes: 2,
        credentials: Some((common::BACKEND_KEY.into(), common::BACKEND_SECRET.into())),
        capacity: s3_mock::CapacityConfig {
            bandwidth_bytes_per_second: 0,
            ..Default::default()
        },
        ..ClusterConfig::default()
    };
    let nodes = MockCluster::start_tcp(&cluster, common::local(), 0)
        .await
        .expect("cluster");
    let proxy = common::proxy_process(&nodes, "", "", "", "memory").await;
    let (pid, endpoint) = (proxy.pid, proxy.endpoint);
    let idle_kib = status_kib(pid, "VmRSS:");
    let s3 = common::client(endpoint, "caller", "caller-secret");
    s3.create_bucket().bucket("big").send().await.expect("create");
    let data: Vec<u8> = (0..OBJECT).map(|i| (i % 253) as u8).collect();
    s3.put_object()
        .bucket("big")
        .key("object")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("256 MiB PUT");
    let response = s3
        .get_object()
        .bucket("big")
        .key("object")
        .send()
        .await
        .expect("256 MiB GET");
    let mut body = response.body;
    let mut received = 0usize;
    let mut matches = true;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        matches &= chunk.as_ref() == &data[received..received + chunk.len()];
        received += chunk.len();
    }
    assert_eq!(received, OBJECT);
    assert!(matches, "the body differs from what was uploaded");
    let peak_kib = status_kib(pid, "VmHWM:");
    proxy.stop().await;
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "proxy peak RSS {peak_kib} KiB (idle {idle_kib} KiB) for a {} MiB object",
        OBJECT >> 20
    );
    eprintln!("proxy RSS: idle {idle_kib} KiB, peak {peak_kib} KiB after a 256 MiB PUT and GET");
}
