//! Hedged reads on the real runtime: a node that stalls, and GETs that do not wait for it.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use s3_mock::Faults;

/// Two nodes, round-robin (so every other first attempt goes to the stalling node), hedges
/// after a fixed 50 ms; `hedge` adds to or replaces that section.
async fn stalling(hedge: &str) -> (common::Harness, std::net::SocketAddr) {
    let harness = common::harness(
        2,
        &format!("[balance]\nalgorithm = \"round-robin\"\n\n[hedge]\nenabled = true\ndelay = \"50ms\"\n{hedge}\n"),
    )
    .await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("k")
        .body(ByteStream::from_static(b"the object"))
        .send()
        .await
        .expect("put");
    // Every request to node 1 now takes 400 times its 2-ms service time: 800 ms.
    harness.nodes[0].set_faults(Faults {
        stall_rate: 1.0,
        stall_factor: 400.0,
        ..Faults::default()
    });
    let admin = common::admin(&harness).await;
    (harness, admin)
}

fn hedges(metrics: &str, result: &str) -> f64 {
    let samples = common::exposition::samples(metrics);
    common::exposition::total(
        &samples,
        "storefront_backend_hedges_total",
        &[("storefront_hedge_result", result)],
    )
}

#[tokio::test]
async fn gets_sent_to_a_stalling_node_are_answered_by_their_hedge() {
    // Proves hedging end to end: a GET whose first attempt went to the stalling node gets its
    // answer from the hedge to the other node, long before the stall ends; the slow attempt
    // is cancelled (its connection dropped, the node's slot freed as it finishes), counted as
    // no failure; the hedges are counted by result.
    let (harness, admin) = stalling("").await;
    let s3 = harness.client();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let object = s3.get_object().bucket("data").key("k").send().await.expect("get");
        let body = object.body.collect().await.expect("body").into_bytes();
        assert_eq!(&body[..], b"the object");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(600),
        "every GET answered well before the 800-ms stall ends (slowest {slowest:?})"
    );
    let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
    let won = hedges(&metrics, "won");
    assert!(
        won >= 1.0,
        "at least one hedge answered for the stalling node\n{metrics}"
    );
    assert_eq!(hedges(&metrics, "refused"), 0.0);
    let stalled = harness.nodes[0].stats().stalls_injected;
    assert!(stalled as f64 >= won, "each won hedge stood in for a stalled request");
    // The cancelled attempts are no failures: the stalling node was never ejected.
    let samples = common::exposition::samples(&metrics);
    let ejections = common::exposition::total(&samples, "storefront_backend_ejections_total", &[]);
    assert_eq!(ejections, 0.0, "{metrics}");
    // A hedge is no retry: nothing failed, so nothing was retried.
    let retries = common::exposition::total(&samples, "storefront_backend_retries_total", &[]);
    assert_eq!(retries, 0.0, "{metrics}");
}

#[tokio::test]
async fn without_budget_no_hedge_is_sent_and_the_stall_is_waited_out() {
    // Proves the budget bounds hedges on the real runtime: with none, the GET that meets the
    // stall waits for it, and the refusal is counted.
    let (harness, admin) = stalling("budget_ratio = 0.0\nbudget_min_per_second = 0.0\n").await;
    let s3 = harness.client();
    let mut slowest = Duration::ZERO;
    for _ in 0..2 {
        let started = Instant::now();
        s3.get_object()
            .bucket("data")
            .key("k")
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest >= Duration::from_millis(700),
        "a GET waited for the stall ({slowest:?})"
    );
    let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
    assert!(hedges(&metrics, "refused") >= 1.0, "{metrics}");
    assert_eq!(hedges(&metrics, "won") + hedges(&metrics, "lost"), 0.0);
}
