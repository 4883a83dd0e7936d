//! Backend metrics: the gauges read at collection (shares against fair shares, health, the
//! p99 against the pool's median, connections) and the counters of dials and refused
//! ejections.

mod common;

use common::exposition::{ROUND_ROBIN, Sample, samples, total, traffic};
use common::{admin, admin_call, harness};

#[tokio::test]
async fn backend_gauges_show_load_health_and_each_share_against_the_fair_one() {
    // Proves the gauges read at collection: each backend's share of its pool's attempts sums to
    // one with the fair shares (a third each: equal weights), the imbalance is the largest
    // share over its fair one, and a drained backend is unavailable with no fair share.
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    traffic(&harness).await;
    let (_, text) = admin_call(admin, "GET", "/metrics").await;
    let samples = samples(&text);
    let shares: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == "storefront_backend_share_ratio")
        .collect();
    assert_eq!(shares.len(), 3, "{text}");
    let sum: f64 = shares.iter().map(|sample| sample.value).sum();
    assert!((sum - 1.0).abs() < 1e-9, "shares sum to {sum}");
    for sample in &samples {
        if sample.name == "storefront_backend_fair_share_ratio" {
            assert!((sample.value - 1.0 / 3.0).abs() < 1e-9, "{sample:?}");
        }
    }
    let largest = shares.iter().map(|sample| sample.value).fold(0.0, f64::max);
    let imbalance = total(
        &samples,
        "storefront_pool_imbalance_ratio",
        &[("storefront_pool", "dc1")],
    );
    assert!(
        (imbalance - largest * 3.0).abs() < 1e-9,
        "imbalance {imbalance}, largest share {largest}"
    );
    assert_eq!(total(&samples, "storefront_backend_available_ratio", &[]), 3.0);
    assert_eq!(total(&samples, "storefront_backend_in_flight", &[]), 0.0);
    let (_, backends) = admin_call(admin, "GET", "/admin/backends").await;
    let backends: serde_json::Value = serde_json::from_str(&backends).expect("JSON");
    let first = backends[0]["id"].as_str().expect("an id").to_owned();
    let port = backends[0]["address"]
        .as_str()
        .and_then(|address| address.rsplit_once(':'))
        .map(|(_, port)| port.to_owned())
        .expect("a port");
    assert_eq!(
        admin_call(admin, "POST", &format!("/admin/backends/{first}/drain"))
            .await
            .0,
        200
    );
    let (_, text) = admin_call(admin, "GET", "/metrics").await;
    let samples = self::samples(&text);
    assert_eq!(
        total(
            &samples,
            "storefront_backend_available_ratio",
            &[("server_port", &port)]
        ),
        0.0
    );
    assert_eq!(
        total(&samples, "storefront_backend_draining_ratio", &[("server_port", &port)]),
        1.0
    );
    assert_eq!(
        total(
            &samples,
            "storefront_backend_fair_share_ratio",
            &[("server_port", &port)]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_slow_node_stands_out_in_the_p99_against_the_pool_median() {
    // Proves the latency gauges: with one node fifty times slower, its p99 time to first byte
    // over the pool's median is well above the others' (which sit near or below 1). Fifty,
    // not ten: on a loaded machine a healthy node's slowest of ten answers can reach a third of
    // a ten-times-slower one's.
    let harness = harness(3, ROUND_ROBIN).await;
    let admin = admin(&harness).await;
    let slow = harness.nodes[1].address().expect("bound").port().to_string();
    harness.nodes[1].set_faults(s3_mock::Faults {
        slow_factor: 50.0,
        ..s3_mock::Faults::default()
    });
    let s3 = harness.client();
    s3.create_bucket().bucket("latency").send().await.expect("create");
    for _ in 0..30 {
        s3.head_bucket().bucket("latency").send().await.expect("head");
    }
    let (_, text) = admin_call(admin, "GET", "/metrics").await;
    let samples = samples(&text);
    let ratio = |port: &str| {
        total(
            &samples,
            "storefront_backend_latency_p99_over_pool_median_ratio",
            &[("server_port", port)],
        )
    };
    assert!(ratio(&slow) > 3.0, "the slow node: {}\n{text}", ratio(&slow));
    for node in [&harness.nodes[0], &harness.nodes[2]] {
        let port = node.address().expect("bound").port().to_string();
        // Ten samples a node: a p99 is nearly its slowest, so the healthy ones sit around 1-2.
        assert!(
            ratio(&port) * 2.0 < ratio(&slow),
            "node {port}: {} against the slow one's {}",
            ratio(&port),
            ratio(&slow)
        );
        let p99 = total(
            &samples,
            "storefront_backend_latency_p99_seconds",
            &[("server_port", &port)],
        );
        let slow_p99 = total(
            &samples,
            "storefront_backend_latency_p99_seconds",
            &[("server_port", &slow)],
        );
        assert!(slow_p99 > p99 * 3.0, "slow {slow_p99} against {p99}");
    }
}

#[tokio::test]
async fn backend_connections_dials_and_refused_ejections_are_counted() {
    // Proves the connection figures per backend: pooled connections show as idle once the
    // requests are done, every dial's duration is recorded, a dial to a dead backend counts as
    // a connect error; and an ejection the pool's cap refuses is counted: with both backends
    // failing and `max_ejected_percent = 50`, one is ejected and the other's is refused.
    let nodes = common::nodes(2).await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let text = common::config_text(
        &nodes,
        &format!(
            "[health.active]\nenabled = false\n[health.passive]\nconsecutive_failures = 1\nmax_ejected_percent = 50\n\n{ROUND_ROBIN}"
        ),
    )
    .replace(
        &format!("backends = [\"{}\"", nodes[0].address().expect("bound")),
        &format!("backends = [\"{dead}\", \"{}\"", nodes[0].address().expect("bound")),
    );
    let (app, endpoint) = common::serve_text(&text).await;
    let s3 = common::client(endpoint, "caller", "secret");
    for index in 0..4 {
        let _ = s3.head_bucket().bucket(format!("b{index}")).send().await;
    }
    let first = samples(&app.metrics.render());
    let live = nodes[0].address().expect("bound").port().to_string();
    let idle = total(
        &first,
        "storefront_backend_connections",
        &[("server_port", live.as_str()), ("storefront_connection_state", "idle")],
    );
    assert!(idle >= 1.0, "no idle connection to the live node");
    assert_eq!(
        total(
            &first,
            "storefront_backend_connections",
            &[("storefront_connection_state", "in_use")]
        ),
        0.0
    );
    assert!(total(&first, "storefront_backend_connections_waiting", &[]) == 0.0);
    assert!(
        total(
            &first,
            "storefront_backend_connect_duration_seconds_count",
            &[("server_port", live.as_str())]
        ) >= 1.0
    );
    assert!(
        total(
            &first,
            "storefront_backend_connect_errors_total",
            &[
                ("server_port", &dead.port().to_string()),
                ("error_type", "connect_failed")
            ]
        ) >= 1.0
    );

    // Both nodes now fail: the first failure ejects one, the other's ejection is refused.
    for node in &nodes {
        node.set_faults(s3_mock::Faults {
            error_rate: 1.0,
            ..Default::default()
        });
    }
    let text = common::config_text(
        &nodes,
        &format!(
            "[health.active]\nenabled = false\n[health.passive]\nconsecutive_failures = 1\nmax_ejected_percent = 50\n\n{ROUND_ROBIN}"
        ),
    );
    let (app, endpoint) = common::serve_text(&text).await;
    let s3 = common::client(endpoint, "caller", "secret");
    for index in 0..6 {
        let _ = s3.head_bucket().bucket(format!("failing-{index}")).send().await;
    }
    let second = samples(&app.metrics.render());
    assert_eq!(total(&second, "storefront_backend_ejections_total", &[]), 1.0);
    assert!(total(&second, "storefront_backend_ejections_refused_total", &[]) >= 1.0);
}
