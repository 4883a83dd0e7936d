//! A step in load: how the second after it compares with the second before, and the
//! connections the nodes had to accept.

use std::time::Duration;

use super::percentiles;
use crate::run::ModeRun;
use crate::scenario::Scenario;

/// p99 TTFB over the second before the latest group start and over the second after it.
pub(super) fn step_ttfb(run: &ModeRun, scenario: &Scenario) -> Option<(f64, f64)> {
    let step = scenario.clients.iter().map(|group| group.start.get()).max()?;
    if step < Duration::from_secs(1) {
        return None;
    }
    let window = |from: Duration, to: Duration| {
        let ttfb: Vec<Duration> = run
            .records
            .iter()
            .filter(|record| record.at >= from && record.at < to)
            .filter_map(|record| record.ttfb)
            .collect();
        percentiles(ttfb).p99
    };
    let second = Duration::from_secs(1);
    Some((window(step - second, step), window(step, step + second)))
}

/// The busiest node's busiest interval of connection opens, per second.
pub(super) fn connections_per_second_max(run: &ModeRun) -> f64 {
    let per_interval = run
        .connection_samples
        .windows(2)
        .flat_map(|pair| {
            pair[1]
                .iter()
                .zip(&pair[0])
                .map(|(now, before)| now.saturating_sub(*before))
        })
        .max()
        .unwrap_or(0);
    per_interval as f64 / crate::run::SAMPLE_EVERY.as_secs_f64()
}
