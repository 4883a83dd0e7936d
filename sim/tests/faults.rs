//! A slow node and a crashed node, through the proxy.

use sim::run::Mode;
use storefront_core::balance::AlgorithmKind;

const P2C: Mode = Mode::Proxy(AlgorithmKind::P2cPeakEwma);

#[test]
fn a_slow_node_is_diverted_from_within_a_second_and_p99_barely_moves() {
    // Proves the slow-node targets: with one node ten times slower, p2c-peak-ewma's p99 stays
    // within 1.3× of the same cluster's p99 with no slow node, and the slow node's share drops
    // below half its fair share within one simulated second.
    let scenario = sim::load("slow-node").expect("built-in scenario");
    let mut healthy = scenario.clone();
    healthy.events.clear();
    let slow = sim::run(&scenario, 7, &[P2C]).expect("run").modes.remove(0);
    let baseline = sim::run(&healthy, 7, &[P2C]).expect("run").modes.remove(0);
    assert!(
        slow.latency_ms.p99 <= 1.3 * baseline.latency_ms.p99,
        "p99 {} ms with the slow node against {} ms healthy",
        slow.latency_ms.p99,
        baseline.latency_ms.p99
    );
    let divert = slow.divert_ms.expect("the slow node was diverted from");
    assert!(divert <= 1000.0, "diverted after {divert} ms");
    assert!(slow.client_errors.is_empty(), "{:?}", slow.client_errors);
}

#[test]
fn a_crashed_node_costs_clients_nothing_through_the_proxy() {
    // Proves the node-crash targets: with a node crashing mid-run (requests in flight) and
    // restarting, no client request fails through any proxy mode (the invariants, checked in
    // every run, also guarantee no silent truncation and no lost write), and the proxy retried.
    let scenario = sim::load("node-crash").expect("built-in scenario");
    let modes = [
        Mode::Proxy(AlgorithmKind::RoundRobin),
        Mode::Proxy(AlgorithmKind::LeastInFlight),
        P2C,
    ];
    let report = sim::run(&scenario, 7, &modes).expect("run");
    for mode in &report.modes {
        assert!(mode.client_errors.is_empty(), "{}: {:?}", mode.mode, mode.client_errors);
    }
    let retries: u64 = report.modes.iter().map(|mode| mode.retries).sum();
    assert!(retries > 0, "a crash with requests in flight must cause retries");
}
