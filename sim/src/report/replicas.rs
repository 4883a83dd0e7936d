//! Each proxy replica's own figures, beside the fleet's.

use std::time::Duration;

use serde::Serialize;

use super::{millis, spread};
use crate::run::{ReplicaRun, SAMPLE_EVERY};
use crate::scenario::{Action, Scenario};

/// One proxy replica's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaReport {
    /// Its host name.
    pub name: String,
    /// Exchanges it handled.
    pub exchanges: u64,
    /// Exchanges it answered with an error after every attempt failed.
    pub failed: u64,
    /// Processes it ran (more than 1: replaced in a rollout).
    pub processes: u64,
    /// Busiest node of its own zone's pool over the mean, by the requests it sent them.
    pub imbalance_max_over_mean: f64,
    /// Time from the first `slow` event until this replica sent the slow node less than half
    /// its fair share over a sliding window (see [`REPLICA_WINDOW`]) and kept it there while the
    /// node stayed slow (none: the node is not in its pool, or it never diverted).
    pub divert_ms: Option<f64>,
}

/// The window a replica's share of a node is measured over: a replica carries a fraction of
/// the fleet's load, too few requests per node in 100 ms to tell a share from noise.
pub const REPLICA_WINDOW: Duration = Duration::from_millis(300);

pub(super) fn replica_report(replica: &ReplicaRun, scenario: &Scenario) -> ReplicaReport {
    let last = replica.samples.last().cloned().unwrap_or_default();
    let own: Vec<u64> = replica
        .zone_nodes
        .iter()
        .map(|&node| last.get(node).copied().unwrap_or(0))
        .collect();
    ReplicaReport {
        name: replica.name.clone(),
        exchanges: replica.exchanges,
        failed: replica.failed,
        processes: replica.processes,
        imbalance_max_over_mean: spread(&own).0,
        divert_ms: replica_divert(replica, scenario),
    }
}

/// See [`ReplicaReport::divert_ms`].
fn replica_divert(replica: &ReplicaRun, scenario: &Scenario) -> Option<f64> {
    let event = scenario.events.iter().find(|event| event.action == Action::Slow)?;
    let node = event.node? - 1;
    if !replica.zone_nodes.contains(&node) {
        return None;
    }
    let healed = scenario
        .events
        .iter()
        .filter(|later| later.action == Action::Heal && later.node == event.node && later.at > event.at)
        .map(|later| later.at.get())
        .min();
    let fair = 1.0 / replica.zone_nodes.len() as f64;
    let window = (REPLICA_WINDOW.as_nanos() / SAMPLE_EVERY.as_nanos()) as usize;
    let first = (event.at.get().as_nanos() / SAMPLE_EVERY.as_nanos()) as usize + window;
    let samples = &replica.samples;
    let below = |index: usize| {
        let (before, after) = (&samples[index - window], &samples[index]);
        let total: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
        total > 0 && ((after[node] - before[node]) as f64 / total as f64) < fair / 2.0
    };
    // The last window that ends before the node healed.
    let end = healed.map_or(samples.len(), |at| {
        samples
            .len()
            .min((at.as_nanos() / SAMPLE_EVERY.as_nanos()) as usize + 1)
    });
    let mut diverted = None;
    for index in first.max(window)..end {
        match (below(index), diverted) {
            (true, None) => diverted = Some(index),
            (false, Some(_)) => diverted = None,
            _ => {}
        }
    }
    diverted.map(|index| millis((SAMPLE_EVERY * index as u32).saturating_sub(event.at.get())))
}
