//! The report: per-mode figures, invariants, the table and the JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::client::{Class, Record};
use crate::run::{Mode, ModeRun, SAMPLE_EVERY};
use crate::scenario::{Action, Event, Expect, Scenario};

mod replicas;
mod step;

use replicas::replica_report;
pub use replicas::{REPLICA_WINDOW, ReplicaReport};
use step::{connections_per_second_max, step_ttfb};

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// One mode's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// `direct`, `proxy-round-robin`, ...
    pub mode: String,
    /// Each proxy's final metrics exposition (Prometheus text), for `--metrics`; not in the
    /// JSON report.
    #[serde(skip)]
    pub metrics: Vec<(String, String)>,
    /// Client requests issued.
    pub requests: u64,
    /// Requests each node received, by node name.
    pub node_requests: BTreeMap<String, u64>,
    /// Busiest node's requests over the mean.
    pub imbalance_max_over_mean: f64,
    /// Coefficient of variation of the node requests.
    pub cv: f64,
    /// Jain's fairness index of the node requests (1 = perfectly even).
    pub jain: f64,
    /// Client latency of single-request operations that succeeded, whole response (multipart
    /// uploads, several requests each, are in `upload_ms`).
    pub latency_ms: Percentiles,
    /// Client time to first byte of single-request operations.
    pub ttfb_ms: Percentiles,
    /// Time to first byte of the well-behaved clients (groups that read at full speed).
    pub well_behaved_ttfb_ms: Percentiles,
    /// Latency of the well-behaved clients' uploads (PUT and multipart) that succeeded.
    pub upload_ms: Percentiles,
    /// Requests that did not end well, by class.
    pub client_errors: BTreeMap<String, u64>,
    /// Retries the proxy made.
    pub retries: u64,
    /// Retries the clients made (SDK-style, after a 5xx or a broken connection).
    pub client_retries: u64,
    /// For a scenario whose load steps up (a client group starting late): p99 time to first
    /// byte over the second before the step, and over the second after it.
    pub step_ttfb_ms: Option<(f64, f64)>,
    /// The most connections any node accepted within one [`crate::run::SAMPLE_EVERY`],
    /// per second.
    pub connections_per_second_max: f64,
    /// Hedged reads the proxy sent.
    pub hedges: u64,
    /// Hedges whose answer went back.
    pub hedges_won: u64,
    /// Passive ejections.
    pub ejections: u64,
    /// Slow readers cut off by the proxy.
    pub slow_readers_cut: u64,
    /// `100 Continue` answered by the proxy itself.
    pub local_continues: u64,
    /// Time from the scenario's first `slow` event until the slow node received less than half
    /// its fair share of a 100 ms interval's requests (none: never, or no such event).
    pub divert_ms: Option<f64>,
    /// Time from the first fault (crash, partition, slow node) until the last request issued
    /// during it that failed or took over a second (none: no such request, or no fault).
    pub disrupted_ms: Option<f64>,
    /// Time from the last recovery (restart, repair, heal) until the recovered nodes got half
    /// their fair share of a 100 ms interval again (none: never, or no recovery).
    pub failback_ms: Option<f64>,
    /// The proxies' exchanges by the caller's identity source (`anonymous`, `trusted`, `pod`,
    /// `access-key`, `session`, `cidr`) and result (`allowed`, `denied`, `rejected-<code>`
    /// before any decision, `sts-<status>` for the token exchange).
    pub auth: BTreeMap<String, BTreeMap<String, u64>>,
    /// Client operations by group and how they ended.
    pub groups: BTreeMap<String, BTreeMap<String, u64>>,
    /// Node request counters every 100 ms (for the plot; not in the JSON).
    #[serde(skip)]
    pub samples: Vec<Vec<u64>>,
    /// Each proxy replica's own figures (none in direct mode).
    pub replicas: Vec<ReplicaReport>,
    /// How long the rolling update of every replica took (none: no rollout, or unfinished).
    pub rollout_ms: Option<f64>,
}

/// A whole run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed everything drew from.
    pub seed: u64,
    /// Figures per mode.
    pub modes: Vec<ModeReport>,
}

fn millis(duration: Duration) -> f64 {
    // Round to microseconds: readable, and identical across runs of one seed.
    (duration.as_nanos() as f64 / 1000.0).round() / 1000.0
}

fn percentiles(mut values: Vec<Duration>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_unstable();
    let at = |quantile: f64| {
        let rank = ((quantile * values.len() as f64).ceil() as usize).clamp(1, values.len());
        millis(values[rank - 1])
    };
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
    }
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Spread figures of per-node counts: max/mean, CV, Jain's index.
pub fn spread(counts: &[u64]) -> (f64, f64, f64) {
    let n = counts.len() as f64;
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    if sum == 0.0 || counts.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mean = sum / n;
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let variance = counts.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / n;
    let squares: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    (
        round4(max / mean),
        round4(variance.sqrt() / mean),
        round4(sum * sum / (n * squares)),
    )
}

impl ModeReport {
    /// Figures for one mode's run of `scenario`.
    pub fn from_run(run: &ModeRun, scenario: &Scenario) -> ModeReport {
        let (imbalance, cv, jain) = spread(&run.node_requests);
        let digits = run.node_requests.len().to_string().len();
        let mut client_errors = BTreeMap::new();
        for record in &run.records {
            if record.class != Class::Ok {
                *client_errors.entry(record.class.name().to_owned()).or_insert(0u64) += 1;
            }
        }
        ModeReport {
            mode: run.mode.name(),
            metrics: run.metrics.clone(),
            requests: run.records.len() as u64,
            node_requests: run
                .node_requests
                .iter()
                .enumerate()
                // Zero-padded past nine nodes, so that the names sort in node order.
                .map(|(index, &count)| (format!("node-{:0width$}", index + 1, width = digits), count))
                .collect(),
            imbalance_max_over_mean: imbalance,
            cv,
            jain,
            latency_ms: percentiles(
                run.records
                    .iter()
                    .filter(|r| r.class == Class::Ok && r.operation != "MultipartUpload")
                    .map(|r| r.latency)
                    .collect(),
            ),
            ttfb_ms: percentiles(
                run.records
                    .iter()
                    .filter(|r| r.operation != "MultipartUpload")
                    .filter_map(|r| r.ttfb)
                    .collect(),
            ),
            well_behaved_ttfb_ms: percentiles(
                run.records
                    .iter()
                    .filter(|r| r.operation != "MultipartUpload" && well_behaved(scenario, &r.group))
                    .filter_map(|r| r.ttfb)
                    .collect(),
            ),
            upload_ms: percentiles(
                run.records
                    .iter()
                    .filter(|r| r.class == Class::Ok && matches!(r.operation, "PutObject" | "MultipartUpload"))
                    .filter(|r| well_behaved(scenario, &r.group))
                    .map(|r| r.latency)
                    .collect(),
            ),
            client_errors,
            retries: run.retries,
            client_retries: run.client_retries,
            step_ttfb_ms: step_ttfb(run, scenario),
            connections_per_second_max: connections_per_second_max(run),
            hedges: run.hedges,
            hedges_won: run.hedges_won,
            ejections: run.ejections,
            slow_readers_cut: run.slow_readers_cut,
            local_continues: run.local_continues,
            divert_ms: divert(run, scenario),
            disrupted_ms: disrupted(run, scenario),
            failback_ms: failback(run, scenario),
            auth: run
                .decisions
                .iter()
                .fold(BTreeMap::new(), |mut auth, ((source, result), &count)| {
                    auth.entry(source.clone())
                        .or_insert_with(BTreeMap::new)
                        .insert(result.clone(), count);
                    auth
                }),
            groups: run.records.iter().fold(BTreeMap::new(), |mut groups, record| {
                *groups
                    .entry(record.group.clone())
                    .or_insert_with(BTreeMap::new)
                    .entry(record.class.name().to_owned())
                    .or_insert(0) += 1;
                groups
            }),
            samples: run.samples.clone(),
            replicas: run
                .replicas
                .iter()
                .map(|replica| replica_report(replica, scenario))
                .collect(),
            rollout_ms: run.rollout.map(millis),
        }
    }
}

/// Whether a client group reads its responses at full speed.
fn well_behaved(scenario: &Scenario, group: &str) -> bool {
    scenario
        .clients
        .iter()
        .find(|candidate| candidate.name == group)
        .is_some_and(|group| group.read_rate.is_none())
}

/// What the policy is expected to do with a group's requests.
fn expected(scenario: &Scenario, group: &str) -> Expect {
    scenario
        .clients
        .iter()
        .find(|candidate| candidate.name == group)
        .map_or(Expect::Allowed, |group| group.expect)
}

/// Node indices (0-based) an event affects.
fn affected_nodes(scenario: &Scenario, event: &Event) -> Vec<usize> {
    match (event.node, event.zone.as_deref()) {
        (Some(node), _) if event.action.is_node_action() => vec![node - 1],
        (_, Some(zone)) => (0..scenario.cluster.nodes)
            .filter(|&index| scenario.cluster.zone_of(index) == Some(zone))
            .collect(),
        _ => Vec::new(),
    }
}

/// Periods in which each node is unhealthy (slow, crashed, partitioned): start, end (none:
/// until the run ends).
fn unhealthy_periods(scenario: &Scenario) -> Vec<Vec<(Duration, Option<Duration>)>> {
    let mut periods: Vec<Vec<(Duration, Option<Duration>)>> = vec![Vec::new(); scenario.cluster.nodes];
    let mut events = scenario.events.clone();
    events.sort_by_key(|event| event.at);
    for event in &events {
        for node in affected_nodes(scenario, event) {
            let open = periods[node].last_mut().filter(|(_, end)| end.is_none());
            match (event.action, open) {
                (Action::Slow | Action::Crash | Action::Partition, None) => periods[node].push((event.at.get(), None)),
                (Action::Heal | Action::Restart | Action::Repair, Some(period)) => period.1 = Some(event.at.get()),
                _ => {}
            }
        }
    }
    periods
}

/// A node recovered this long ago counts as healthy again (the proxy must have had time to
/// notice).
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Whether some node was healthy throughout `from..to`.
fn healthy_node_throughout(periods: &[Vec<(Duration, Option<Duration>)>], from: Duration, to: Duration) -> bool {
    periods.iter().any(|node| {
        node.iter().all(|&(start, end)| {
            let end = end.map(|end| end + HEALTHY_AFTER);
            to < start || end.is_some_and(|end| from >= end)
        })
    })
}

/// See [`ModeReport::disrupted_ms`].
fn disrupted(run: &ModeRun, scenario: &Scenario) -> Option<f64> {
    let fault = scenario
        .events
        .iter()
        .filter(|event| matches!(event.action, Action::Slow | Action::Crash | Action::Partition))
        .min_by_key(|event| event.at)?
        .at
        .get();
    run.records
        .iter()
        .filter(|r| r.at >= fault && well_behaved(scenario, &r.group))
        .filter(|r| r.class != Class::Ok || r.latency > Duration::from_secs(1))
        .map(|r| r.at)
        .max()
        .map(|at| millis(at - fault))
}

/// See [`ModeReport::failback_ms`].
fn failback(run: &ModeRun, scenario: &Scenario) -> Option<f64> {
    let event = scenario
        .events
        .iter()
        .filter(|event| matches!(event.action, Action::Heal | Action::Restart | Action::Repair))
        .max_by_key(|event| event.at)?;
    let nodes = affected_nodes(scenario, event);
    let fair = nodes.len() as f64 / scenario.cluster.nodes as f64;
    after_event(run, event.at.get(), &nodes, |share| share >= fair / 2.0)
}

/// How long after `at` the first sampling interval came in which the share of `nodes`
/// satisfied `test`.
fn after_event(run: &ModeRun, at: Duration, nodes: &[usize], test: impl Fn(f64) -> bool) -> Option<f64> {
    let first = (at.as_nanos() / SAMPLE_EVERY.as_nanos()) as usize;
    for index in first.max(1)..run.samples.len() {
        let before = &run.samples[index - 1];
        let after = &run.samples[index];
        let total: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
        if total == 0 {
            continue;
        }
        let got: u64 = nodes.iter().map(|&node| after[node] - before[node]).sum();
        if test(got as f64 / total as f64) {
            return Some(millis((SAMPLE_EVERY * index as u32).saturating_sub(at)));
        }
    }
    None
}

/// How long after the first `slow` event the slow node's share of a sampling interval fell
/// below half of its fair share.
fn divert(run: &ModeRun, scenario: &Scenario) -> Option<f64> {
    let event = scenario.events.iter().find(|event| event.action == Action::Slow)?;
    let node = event.node? - 1;
    let fair = 1.0 / scenario.cluster.nodes as f64;
    after_event(run, event.at.get(), &[node], |share| share < fair / 2.0)
}

/// The invariants every run must keep; an error names the seed and how to replay it.
pub fn check_invariants(run: &ModeRun, scenario: &Scenario, seed: u64) -> Result<(), String> {
    let mut broken = Vec::new();
    if run.records.len() as u64 != run.issued {
        broken.push(format!(
            "{} operation(s) issued but {} outcome(s) recorded: each must end exactly once",
            run.issued,
            run.records.len()
        ));
    }
    let truncated = run.records.iter().filter(|r| r.class == Class::Truncated).count();
    if truncated > 0 {
        broken.push(format!(
            "{truncated} silent truncation(s): a body shorter than its length without an error"
        ));
    }
    if !run.lost_writes.is_empty() {
        broken.push(format!(
            "{} acknowledged PUT(s) lost or stored at another size than sent, e.g. {}",
            run.lost_writes.len(),
            run.lost_writes[0]
        ));
    }
    let leftovers = [
        (
            run.in_flight_at_end,
            "request(s) still in flight at a node after every client finished",
        ),
        (
            run.proxy_in_flight_at_end,
            "request(s) still counted in flight by the proxy after every client finished",
        ),
        (
            run.connections_open_at_end,
            "connection(s) still open at the nodes after the clients finished and the proxy shut down",
        ),
        (
            run.dispatched_to_unavailable,
            "attempt(s) sent to an unavailable backend outside panic mode",
        ),
    ];
    for (count, what) in leftovers {
        if count > 0 {
            broken.push(format!("{count} {what}"));
        }
    }
    if matches!(run.mode, Mode::Proxy(_)) && run.budget_refusals == 0 {
        // Every idempotent request of a well-behaved client must succeed while some node is
        // healthy (the budget never refused a retry in this run).
        let periods = unhealthy_periods(scenario);
        let failed: Vec<&Record> = run
            .records
            .iter()
            .filter(|r| {
                matches!(
                    r.operation,
                    "GetObject" | "GetObjectRange" | "HeadObject" | "ListObjectsV2"
                )
            })
            .filter(|r| r.class != Class::Ok && r.class != Class::Truncated)
            .filter(|r| well_behaved(scenario, &r.group) && expected(scenario, &r.group) == Expect::Allowed)
            .filter(|r| healthy_node_throughout(&periods, r.at, r.at + r.latency))
            .collect();
        if let Some(first) = failed.first() {
            broken.push(format!(
                "{} idempotent request(s) failed while a node was healthy and the retry budget allowed retries, e.g. {} at {:?} ({})",
                failed.len(),
                first.operation,
                first.at,
                first.class.name()
            ));
        }
    }
    // Policy: a group the policy must refuse never gets through; an allowed one is never
    // refused.
    for (expect, class, what) in [
        (
            Expect::Denied,
            Class::Ok,
            "succeeded, from a group the proxy must refuse",
        ),
        (
            Expect::Allowed,
            Class::Denied,
            "refused (403), from a group the proxy must allow",
        ),
    ] {
        let wrong: Vec<&Record> = run
            .records
            .iter()
            .filter(|r| r.class == class && expected(scenario, &r.group) == expect)
            .collect();
        if let Some(first) = wrong.first() {
            broken.push(format!(
                "{} request(s) {what}, e.g. {} of `{}` at {:?}",
                wrong.len(),
                first.operation,
                first.group,
                first.at
            ));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "invariants broken in mode {} of scenario {}, seed {seed}:\n  - {}\nreplay: cargo run --release -p sim -- --scenario {} --seed {seed}",
            run.mode.name(),
            scenario.name,
            broken.join("\n  - "),
            scenario.name
        ))
    }
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario {} · seed {}", report.scenario, report.seed);
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>24} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "mode",
        "requests",
        "node share %",
        "max/mean",
        "cv",
        "jain",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "retries",
        "ejects"
    );
    for mode in &report.modes {
        let total: u64 = mode.node_requests.values().sum();
        let shares = mode
            .node_requests
            .values()
            .map(|&count| {
                format!(
                    "{:.0}",
                    if total == 0 {
                        0.0
                    } else {
                        100.0 * count as f64 / total as f64
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("/");
        let errors: u64 = mode.client_errors.values().sum();
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>24} {:>9.2} {:>6.3} {:>6.3} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>7} {:>7}",
            mode.mode,
            mode.requests,
            shares,
            mode.imbalance_max_over_mean,
            mode.cv,
            mode.jain,
            mode.latency_ms.p50,
            mode.latency_ms.p99,
            mode.latency_ms.p999,
            errors,
            mode.retries,
            mode.ejections
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5} {:>5} {:>7}  errors by class",
        "mode", "ttfb p99", "wb ttfb", "upl p99", "divert", "disrupt", "failback", "cut", "100s", "sdk rt"
    );
    let optional = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |value| format!("{value:.0}"));
    for mode in &report.modes {
        let errors = mode
            .client_errors
            .iter()
            .map(|(class, count)| format!("{class}:{count}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<24} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>9} {:>9} {:>5} {:>5} {:>7}  {}",
            mode.mode,
            mode.ttfb_ms.p99,
            mode.well_behaved_ttfb_ms.p99,
            mode.upload_ms.p99,
            optional(mode.divert_ms),
            optional(mode.disrupted_ms),
            optional(mode.failback_ms),
            mode.slow_readers_cut,
            mode.local_continues,
            mode.client_retries,
            if errors.is_empty() { "-" } else { &errors }
        );
    }
    let _ = writeln!(
        out,
        "(ms; wb: clients that read at full speed; cut: slow readers cut off; 100s: 100 Continue sent by the proxy; sdk rt: requests the clients retried)"
    );
    // A step in load: how the second after it compares with the second before.
    for mode in &report.modes {
        if let Some((before, after)) = mode.step_ttfb_ms {
            let _ = writeln!(
                out,
                "{}: TTFB p99 {before:.0} ms the second before the step, {after:.0} ms the second after; at most {:.0} connections opened per second at a node",
                mode.mode, mode.connections_per_second_max
            );
        }
    }
    // Hedged reads, where the proxies sent any.
    for mode in report.modes.iter().filter(|mode| mode.hedges > 0) {
        let _ = writeln!(
            out,
            "{}: {} hedges ({:.2} % of the requests; the hedge answered {} times)",
            mode.mode,
            mode.hedges,
            100.0 * mode.hedges as f64 / mode.requests.max(1) as f64,
            mode.hedges_won
        );
    }
    // Identities and decisions, where the scenario has any beyond trust mode's.
    for mode in &report.modes {
        if mode.auth.keys().all(|source| source == "trusted") {
            continue;
        }
        let _ = writeln!(out, "\n{}: proxy exchanges by identity source and result", mode.mode);
        for (source, results) in &mode.auth {
            let results = results
                .iter()
                .map(|(result, count)| format!("{result}:{count}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(out, "  {source:<12} {results}");
        }
        let _ = writeln!(out, "{}: client operations by group and outcome", mode.mode);
        for (group, classes) in &mode.groups {
            let classes = classes
                .iter()
                .map(|(class, count)| format!("{class}:{count}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(out, "  {group:<12} {classes}");
        }
    }
    // The replicas of a fleet, each beside the fleet's figures above.
    for mode in report.modes.iter().filter(|mode| mode.replicas.len() > 1) {
        let _ = writeln!(
            out,
            "\n{}: per replica ({} replicas{})",
            mode.mode,
            mode.replicas.len(),
            mode.rollout_ms
                .map_or_else(String::new, |ms| format!("; every one replaced in {ms:.0} ms"))
        );
        let _ = writeln!(
            out,
            "  {:<14} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "replica", "exchanges", "failed", "processes", "max/mean", "divert"
        );
        for replica in &mode.replicas {
            let _ = writeln!(
                out,
                "  {:<14} {:>9} {:>7} {:>9} {:>9.2} {:>9}",
                replica.name,
                replica.exchanges,
                replica.failed,
                replica.processes,
                replica.imbalance_max_over_mean,
                optional(replica.divert_ms)
            );
        }
    }
    let _ = writeln!(
        out,
        "replay: cargo run --release -p sim -- --scenario {} --seed {}",
        report.scenario, report.seed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_figures() {
        // Proves the formulas: even counts give 1/0/1, one hot node of three gives 3/√2/⅓.
        assert_eq!(spread(&[10, 10, 10]), (1.0, 0.0, 1.0));
        let (max_over_mean, cv, jain) = spread(&[30, 0, 0]);
        assert_eq!((max_over_mean, jain), (3.0, 0.3333));
        assert!((cv - std::f64::consts::SQRT_2).abs() < 1e-4, "cv {cv}");
        let p = percentiles((1..=1000).map(Duration::from_millis).collect());
        assert_eq!((p.p50, p.p99, p.p999), (500.0, 990.0, 999.0));
    }
}
