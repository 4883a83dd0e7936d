//! Warm connection pools on the real runtime: connections opened ahead of need, at a bounded
//! rate, and used by the requests that come.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

#[tokio::test]
async fn idle_connections_are_opened_ahead_of_need_at_a_bounded_rate() {
    // Proves `min_idle` and `warm_dials_per_second`: with no request at all, each node gets
    // six connections from the proxy, no faster than ten per second allows (one per 100-ms
    // tick, so the sixth comes at least half a second after the first), and no more; the
    // requests that follow use them instead of dialling.
    let nodes = common::nodes(2).await;
    let text = format!(
        "{}\n[pools.connections]\nmin_idle = 6\nwarm_dials_per_second = 10\n",
        common::config_text(&nodes, "[health.active]\nenabled = false\n")
    );
    let started = Instant::now();
    let (app, endpoint) = common::serve_text(&text).await;
    let open = || {
        nodes
            .iter()
            .map(|node| node.stats().connections_open)
            .collect::<Vec<_>>()
    };
    while open().iter().any(|&count| count < 6) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "warming stalled at {:?}",
            open()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "six dials at ten per second take five ticks at least, not {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = || {
        nodes
            .iter()
            .map(|node| node.stats().connections_total)
            .collect::<Vec<_>>()
    };
    assert_eq!(accepted(), vec![6, 6], "no more than the minimum");
    let s3 = common::client(endpoint, "caller", "secret");
    s3.create_bucket().bucket("warm").send().await.expect("create");
    for index in 0..4 {
        s3.put_object()
            .bucket("warm")
            .key(format!("k{index}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    assert_eq!(accepted(), vec![6, 6], "the requests used the warm connections");
    drop(app);
}
