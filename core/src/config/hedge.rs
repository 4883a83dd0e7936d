//! `[hedge]`: hedged reads (a second attempt when the first is slow to answer).

use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// `[hedge]`: for bodyless reads (GetObject, HeadObject, the lists) whose first attempt has no
/// response head after a delay, a second attempt goes to another backend of the pool; the
/// first head wins and the other attempt is cancelled (after "The Tail at Scale" and
/// Finagle's backup requests).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeSection {
    /// Default false: a hedge is extra load on the storage cluster, which its operator opts
    /// into.
    pub enabled: bool,
    /// A fixed delay before the hedge. Default none: the delay is the pool's own recent
    /// latency at `percentile` (time to the response head of its last 256 successful
    /// answers), so only the slowest few per cent of requests are hedged.
    pub delay: Option<ConfigDuration>,
    /// Which percentile of the pool's recent latency the delay is. Default 95.
    pub percentile: f64,
    /// The shortest delay, whatever the percentile says. Default 5 ms: below it the second
    /// request costs more than the wait it could save.
    pub min_delay: ConfigDuration,
    /// Hedges allowed per eligible request over the retry budget's window. Default 0.05: at
    /// most 5 % extra load. A hedge must also be allowed by the retry budget, so that hedges
    /// and retries together stay within it.
    pub budget_ratio: f64,
    /// Hedges allowed per second regardless of traffic. Default 1.
    pub budget_min_per_second: f64,
}

impl Default for HedgeSection {
    fn default() -> Self {
        HedgeSection {
            enabled: false,
            delay: None,
            percentile: 95.0,
            min_delay: ConfigDuration::from_millis(5),
            budget_ratio: 0.05,
            budget_min_per_second: 1.0,
        }
    }
}

impl HedgeSection {
    /// What is wrong with the section, as (key, message).
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !(self.percentile > 0.0 && self.percentile < 100.0) {
            problems.push((
                "hedge.percentile".to_owned(),
                format!("{} is outside 0 to 100 (exclusive)", self.percentile),
            ));
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            problems.push((
                "hedge.budget_ratio".to_owned(),
                format!("{} is outside 0.0 to 1.0", self.budget_ratio),
            ));
        }
        if !(self.budget_min_per_second >= 0.0 && self.budget_min_per_second.is_finite()) {
            problems.push((
                "hedge.budget_min_per_second".to_owned(),
                format!("{} must be a finite number at least 0", self.budget_min_per_second),
            ));
        }
        if self.delay.is_some_and(|delay| delay.get().is_zero()) {
            problems.push((
                "hedge.delay".to_owned(),
                "must be more than 0 (leave it out for the pool's percentile)".to_owned(),
            ));
        }
        problems
    }
}
