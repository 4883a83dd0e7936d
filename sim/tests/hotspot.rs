//! The hotspot scenario replays exactly and shows what the proxy is for.

use std::time::Duration;

use sim::run::Mode;
use storefront_core::config::ConfigDuration;

fn short_hotspot() -> sim::scenario::Scenario {
    let mut scenario = sim::load("hotspot").expect("built-in scenario");
    // Two simulated seconds keep the test quick; the pinning happens from the first request.
    scenario.duration = ConfigDuration(Duration::from_secs(2));
    scenario
}

#[test]
fn the_same_seed_gives_the_same_report() {
    // Proves determinism: two runs of one seed produce byte-identical JSON.
    // The plot is drawn from the same samples, so it must be identical too, with one panel
    // per mode and one line per node in each.
    let scenario = short_hotspot();
    let first = sim::run(&scenario, 11, &Mode::ALL).expect("run");
    let second = sim::run(&scenario, 11, &Mode::ALL).expect("run");
    assert_eq!(
        serde_json::to_string(&first).expect("json"),
        serde_json::to_string(&second).expect("json")
    );
    let plot = sim::plot::svg(&first).expect("plot");
    assert_eq!(plot, sim::plot::svg(&second).expect("plot"));
    for mode in &first.modes {
        assert!(plot.contains(&mode.mode), "no panel for {}", mode.mode);
        assert_eq!(
            mode.samples.first().map(Vec::len),
            Some(3),
            "samples per node: {mode:?}"
        );
    }
    // Lines: one per node per mode, plus one legend swatch each.
    assert!(plot.matches("<polyline").count() >= first.modes.len() * 3 * 2, "{plot}");
}

#[test]
fn dns_pins_a_node_and_the_proxy_spreads_the_load() {
    // Proves the hotspot targets: direct access through a caching resolver puts (nearly) all
    // load on one node (max/mean ≥ 3 of 3 nodes); p2c-peak-ewma spreads it (max/mean ≤ 1.10,
    // CV ≤ 0.05), with no client errors.
    let report = sim::run(
        &short_hotspot(),
        7,
        &[
            Mode::Direct,
            Mode::Proxy(storefront_core::balance::AlgorithmKind::P2cPeakEwma),
        ],
    )
    .expect("run");
    let direct = &report.modes[0];
    let p2c = &report.modes[1];
    assert!(direct.imbalance_max_over_mean >= 3.0 - 1e-9, "direct: {direct:?}");
    assert!(p2c.imbalance_max_over_mean <= 1.10, "p2c: {p2c:?}");
    assert!(p2c.cv <= 0.05, "p2c: {p2c:?}");
    assert!(p2c.client_errors.is_empty(), "p2c errors: {:?}", p2c.client_errors);
    assert_eq!(
        direct.requests, p2c.requests,
        "the same seed gives the same workload in every mode"
    );
}

#[test]
fn a_dns_backed_pool_resolves_through_the_simulated_dns() {
    // Proves that the proxy's DNS pools run under the simulation: with the pool given as a
    // name (every node behind it, answered by the simulated resolver and re-resolved by the
    // runtime's own DNS driver), p2c-peak-ewma spreads the hotspot as it does with static
    // backends, with no client error, and the run replays exactly.
    let mut scenario = short_hotspot();
    scenario.proxy_backends = sim::scenario::ProxyBackends::Dns;
    let p2c = [Mode::Proxy(storefront_core::balance::AlgorithmKind::P2cPeakEwma)];
    let first = sim::run(&scenario, 7, &p2c).expect("run");
    let report = &first.modes[0];
    // The report lists every configured node, reached or not: each must have had requests.
    assert!(
        report.node_requests.values().all(|&count| count > 0),
        "every node was reached: {report:?}"
    );
    assert!(report.imbalance_max_over_mean <= 1.10, "p2c over DNS: {report:?}");
    assert!(report.cv <= 0.05, "p2c over DNS: {report:?}");
    assert!(report.client_errors.is_empty(), "errors: {:?}", report.client_errors);
    let second = sim::run(&scenario, 7, &p2c).expect("run");
    assert_eq!(
        serde_json::to_string(&first).expect("json"),
        serde_json::to_string(&second).expect("json")
    );
}

#[test]
fn the_proxys_hotspot_gauge_agrees_with_the_reports_max_over_mean() {
    // Proves the simulation runs the same metrics code as a deployment (`--metrics`): each
    // proxy mode's final exposition carries the pool's imbalance gauge, and it agrees with the
    // report's max/mean of the nodes' requests (the nodes also count the proxy's probes, which
    // are no attempts: hence the tolerance).
    let scenario = short_hotspot();
    let report = sim::run(&scenario, 7, &Mode::ALL).expect("run");
    for mode in report.modes.iter().filter(|mode| mode.mode.starts_with("proxy-")) {
        let [(_, exposition)] = mode.metrics.as_slice() else {
            panic!("one proxy, one exposition: {:?}", mode.metrics.len());
        };
        let gauge: f64 = exposition
            .lines()
            .find(|line| line.starts_with("storefront_pool_imbalance_ratio{"))
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or_else(|| panic!("no imbalance gauge in {}:\n{exposition}", mode.mode));
        assert!(
            (gauge - mode.imbalance_max_over_mean).abs() < 0.05,
            "{}: gauge {gauge}, report {}",
            mode.mode,
            mode.imbalance_max_over_mean
        );
    }
    let direct = report.modes.iter().find(|mode| mode.mode == "direct").expect("direct");
    assert!(direct.metrics.is_empty(), "no proxy, no metrics");
}
