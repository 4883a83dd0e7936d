//! A fleet of independent proxy replicas behind a Service: balance, failure and a rollout.

use std::time::Duration;

use sim::report::ModeReport;
use sim::run::Mode;
use storefront_core::balance::AlgorithmKind;
use storefront_core::config::ConfigDuration;

const P2C: Mode = Mode::Proxy(AlgorithmKind::P2cPeakEwma);

fn run_one(scenario: &sim::scenario::Scenario, seed: u64) -> ModeReport {
    match sim::run(scenario, seed, &[P2C]) {
        Ok(mut report) => report.modes.remove(0),
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn a_fleet_of_independent_replicas_balances_diverts_everywhere_and_rides_out_a_crash() {
    // Proves the fleet targets at seed 7: six replicas, each balancing on its own view, spread
    // the load of 240 clients over 24 nodes within 1.10 max/mean; every replica whose pool has
    // the slow node diverts from it within a second (and stays diverted); the crash of a node
    // with requests in flight fails no client request (the invariants, checked in every run,
    // add: no truncation, no lost write, no idempotent failure while a node was healthy).
    let scenario = sim::load("fleet").expect("built-in scenario");
    let p2c = run_one(&scenario, 7);
    assert!(p2c.imbalance_max_over_mean <= 1.10, "{:?}", p2c.node_requests);
    assert!(p2c.client_errors.is_empty(), "{:?}", p2c.client_errors);
    assert_eq!(p2c.replicas.len(), 6, "{:?}", p2c.replicas);
    let in_zone: Vec<_> = p2c
        .replicas
        .iter()
        .filter(|replica| replica.name.starts_with("proxy-dc1-"))
        .collect();
    assert_eq!(in_zone.len(), 3);
    for replica in &in_zone {
        let divert = replica
            .divert_ms
            .unwrap_or_else(|| panic!("{} never diverted from the slow node", replica.name));
        assert!(divert <= 1000.0, "{} diverted after {divert} ms", replica.name);
    }
    for replica in &p2c.replicas {
        assert!(replica.exchanges > 1000, "{replica:?}: the Service spreads connections");
    }
}

/// `proxy-rolling-restart`, shortened: two replicas, ten seconds.
fn short_rollout(drain_delay: &str) -> sim::scenario::Scenario {
    let mut scenario = sim::load("proxy-rolling-restart").expect("built-in scenario");
    scenario.fleet.replicas = 2;
    scenario.duration = ConfigDuration(Duration::from_secs(10));
    scenario.proxy_config = scenario
        .proxy_config
        .replace("drain_delay = \"2s\"", &format!("drain_delay = \"{drain_delay}\""));
    assert!(scenario.proxy_config.contains(drain_delay), "{}", scenario.proxy_config);
    scenario
}

#[test]
fn a_rolling_update_of_the_replicas_costs_the_clients_nothing() {
    // Proves the proxy-rolling-restart target at seed 7: all four replicas are replaced one at
    // a time while clients read, write and upload in parts, and no client operation fails or
    // even needs a retry (no request raced a connection closing under it); the invariants add
    // no truncated body and no lost write.
    let scenario = sim::load("proxy-rolling-restart").expect("built-in scenario");
    let p2c = run_one(&scenario, 7);
    assert!(p2c.client_errors.is_empty(), "{:?}", p2c.client_errors);
    assert_eq!(p2c.client_retries, 0);
    assert!(p2c.rollout_ms.is_some(), "the rollout did not finish");
    assert_eq!(p2c.replicas.len(), 4);
    for replica in &p2c.replicas {
        assert_eq!(replica.processes, 2, "{replica:?} was not replaced once");
    }
}

#[test]
fn without_the_drain_a_rollout_costs_retries_and_the_same_seed_replays_exactly() {
    // Proves that the drain is what the previous test measures (a replica that stops accepting
    // at SIGTERM, while the endpoint removal has not reached the clients, costs them retries
    // and waits), and that a fleet run with a rollout replays byte for byte from its seed.
    let drained = short_rollout("2s");
    let first = serde_json::to_string(&run_one(&drained, 7)).expect("JSON");
    let again = serde_json::to_string(&run_one(&drained, 7)).expect("JSON");
    assert_eq!(first, again, "one seed, two reports");
    let drained: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(drained["client_retries"], 0, "{first}");
    assert!(drained["rollout_ms"].is_number(), "{first}");

    let abrupt = run_one(&short_rollout("0s"), 7);
    assert!(abrupt.client_retries > 0, "{abrupt:?}");
}
