//! Past capacity: the proxy (its own process) sheds what the cluster cannot serve with
//! `503 SlowDown` and `Retry-After` instead of piling requests up, stays small, and serves
//! normally the moment the load drops.

mod common;

use std::time::Duration;

use s3_mock::{CapacityConfig, ClusterConfig, MockCluster};

/// The proxy's peak RSS under the overload must stay below this.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// The proxy's bounded wait for a busy backend (`pools.connections.wait`).
const WAIT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_capacity_is_shed_quickly_with_bounded_memory_and_recovers_at_once() {
    // Two nodes of two 50 ms slots serve 80 requests a second; the proxy allows two in
    // flight and two waiting per node. Offered 240 a second for 3 s, every answer must be a
    // success or a SlowDown with Retry-After; shed requests must be answered at once rather
    // than after the whole wait (most of them well under it), none may take much longer than
    // the wait; the proxy's peak RSS stays under 64 MiB; no node is blamed; and the first
    // request after the load succeeds.
    let cluster = ClusterConfig {
        nodes: 2,
        credentials: Some((common::BACKEND_KEY.into(), common::BACKEND_SECRET.into())),
        capacity: CapacityConfig {
            slots: 2,
            queue_max: 64,
            base: Duration::from_millis(50),
            bandwidth_bytes_per_second: 0,
            ..CapacityConfig::default()
        },
        ..ClusterConfig::default()
    };
    let nodes = MockCluster::start_tcp(&cluster, common::local(), 0)
        .await
        .expect("cluster");
    let proxy = common::proxy_process(
        &nodes,
        "",
        "",
        &format!(
            "[pools.connections]\nmax_per_backend = 2\nmax_waiting = 2\nwait = \"{}ms\"\n",
            WAIT.as_millis()
        ),
        "overload",
    )
    .await;
    let (pid, endpoint) = (proxy.pid, proxy.endpoint);
    let s3 = common::client(endpoint, "caller", "caller-secret");
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("object")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"small"))
        .send()
        .await
        .expect("put");

    // Open-loop arrivals at 240 a second for 3 s: 720 HeadObject calls.
    let mut tasks = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / 240));
    for _ in 0..720 {
        ticks.tick().await;
        let s3 = s3.clone();
        tasks.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let answer = s3.head_object().bucket("data").key("object").send().await;
            let took = started.elapsed();
            match answer {
                Ok(_) => (200u16, String::new(), took),
                Err(error) => {
                    let retry_after = error
                        .raw_response()
                        .and_then(|raw| raw.headers().get("retry-after"))
                        .unwrap_or("")
                        .to_owned();
                    (common::status_of(&error).unwrap_or(0), retry_after, took)
                }
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let ok = answers.iter().filter(|(status, _, _)| *status == 200).count();
    let shed: Vec<Duration> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .map(|(_, _, took)| *took)
        .collect();
    for (status, retry_after, took) in &answers {
        assert!(
            *status == 200 || *status == 503,
            "an answer that is neither success nor SlowDown: {status}"
        );
        if *status == 503 {
            assert_eq!(retry_after, "1", "SlowDown without Retry-After");
        }
        assert!(
            *took < WAIT + Duration::from_secs(2),
            "a request took {took:?}: piled up"
        );
    }
    assert!(
        ok > 0 && !shed.is_empty(),
        "{ok} served, {} shed: no overload",
        shed.len()
    );
    let quick = shed.iter().filter(|took| **took < WAIT / 2).count();
    assert!(
        quick * 2 > shed.len(),
        "only {quick} of {} shed requests were answered at once (the rest waited the full wait)",
        shed.len()
    );
    let peak = common::status_kib(pid, "VmHWM:");
    assert!(peak < RSS_LIMIT_KIB, "proxy peak RSS {peak} KiB under overload");

    // The load is gone: served at once, and no node was blamed for the proxy's own limits.
    s3.head_object()
        .bucket("data")
        .key("object")
        .send()
        .await
        .expect("the first request after the overload");
    let (_stream, backends) = common::send_raw(
        proxy.admin,
        b"GET /admin/backends HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (_, json) = backends.split_once("\r\n\r\n").expect("a body");
    let listed: serde_json::Value = serde_json::from_str(json).expect("JSON");
    for backend in listed.as_array().expect("a list") {
        assert_eq!(backend["errors_total"], 0, "{backend}");
        assert_eq!(backend["ejected"], false, "{backend}");
    }
    proxy.stop().await;
    eprintln!(
        "overload: {ok} served, {} shed ({quick} of them under {:?}); proxy peak RSS {peak} KiB",
        shed.len(),
        WAIT / 2
    );
}
