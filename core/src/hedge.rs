//! Hedged reads: when a bodyless read has had no answer for longer than most do, a second
//! attempt goes to another backend and the first answer wins ("The Tail at Scale"; Finagle's
//! backup requests).
//!
//! Each pool keeps what the decision needs: the delay (fixed, or a percentile of the pool's
//! recent times to a response head, so that only the slowest few per cent of requests are
//! hedged) and a budget (hedges per eligible request over a sliding window, so that a
//! brown-out, when every request is slow, cannot double the load). The exchange asks for the
//! delay when it dispatches and for the budget when the delay has passed
//! ([`crate::exchange`]).

use std::time::Duration;

use crate::config::Config;
use crate::retry::{BudgetParameters, RetryBudget};
use crate::time::Instant;

/// Recent latencies kept per pool.
pub const WINDOW: usize = 256;
/// Latencies observed between two computations of the percentile (and before the first).
const RECOMPUTE_EVERY: u32 = 32;

/// How a pool hedges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HedgeParameters {
    /// Hedging on.
    pub enabled: bool,
    /// A fixed delay, or none for the percentile.
    pub delay: Option<Duration>,
    /// The percentile of recent latency the delay is (0 to 100).
    pub percentile: f64,
    /// The shortest delay.
    pub min_delay: Duration,
    /// Hedges per eligible request, and per second, over the window.
    pub budget: BudgetParameters,
}

impl HedgeParameters {
    /// The parameters `config` describes (the budget's window is the retry budget's).
    pub fn from_config(config: &Config) -> Self {
        let hedge = &config.hedge;
        HedgeParameters {
            enabled: hedge.enabled,
            delay: hedge.delay.map(|delay| delay.get()),
            percentile: hedge.percentile,
            min_delay: hedge.min_delay.get(),
            budget: BudgetParameters {
                ratio: hedge.budget_ratio,
                min_per_second: hedge.budget_min_per_second,
                window: config.retry.budget_window.get(),
            },
        }
    }

    /// Hedging off.
    pub fn off() -> Self {
        HedgeParameters {
            enabled: false,
            delay: None,
            percentile: 95.0,
            min_delay: Duration::from_millis(5),
            budget: BudgetParameters {
                ratio: 0.0,
                min_per_second: 0.0,
                window: Duration::from_secs(10),
            },
        }
    }
}

/// The last [`WINDOW`] latencies of a pool and a percentile of them, recomputed every
/// [`RECOMPUTE_EVERY`] observations (sorting 256 numbers once per 32 answers costs less than
/// keeping an order on every one).
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    samples: Vec<u64>,
    next: usize,
    since_recompute: u32,
    percentile: f64,
    value: Option<Duration>,
}

impl LatencyWindow {
    /// An empty window reporting `percentile` (0 to 100).
    pub fn new(percentile: f64) -> Self {
        LatencyWindow {
            samples: Vec::with_capacity(WINDOW),
            next: 0,
            since_recompute: 0,
            percentile,
            value: None,
        }
    }

    /// Count one latency.
    pub fn observe(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if self.samples.len() < WINDOW {
            self.samples.push(nanos);
        } else {
            self.samples[self.next] = nanos;
        }
        self.next = (self.next + 1) % WINDOW;
        self.since_recompute += 1;
        if self.since_recompute >= RECOMPUTE_EVERY {
            self.since_recompute = 0;
            self.value = Some(self.compute());
        }
    }

    /// The percentile as last computed; `None` before [`RECOMPUTE_EVERY`] latencies were seen.
    pub fn value(&self) -> Option<Duration> {
        self.value
    }

    /// Report another percentile from now on (a reload); the samples stay.
    pub fn set_percentile(&mut self, percentile: f64) {
        if percentile != self.percentile {
            self.percentile = percentile;
            self.value = (self.samples.len() >= RECOMPUTE_EVERY as usize).then(|| self.compute());
        }
    }

    fn compute(&self) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least `percentile` % of them at or below.
        let rank = ((self.percentile / 100.0) * sorted.len() as f64).ceil() as usize;
        Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
    }
}

/// A pool's hedging state: its parameters, recent latency and budget.
#[derive(Clone, Debug)]
pub struct Hedging {
    parameters: HedgeParameters,
    window: LatencyWindow,
    budget: RetryBudget,
}

impl Hedging {
    /// Hedging as `parameters` say, with no history.
    pub fn new(parameters: HedgeParameters) -> Self {
        Hedging {
            parameters,
            window: LatencyWindow::new(parameters.percentile),
            budget: RetryBudget::new(parameters.budget),
        }
    }

    /// The parameters.
    pub fn parameters(&self) -> &HedgeParameters {
        &self.parameters
    }

    /// Take new parameters (a reload); the latency history and budget counts stay.
    pub fn set_parameters(&mut self, parameters: HedgeParameters) {
        self.window.set_percentile(parameters.percentile);
        self.budget.set_parameters(parameters.budget);
        self.parameters = parameters;
    }

    /// How long an eligible request waits for its answer before it is hedged; `None` when
    /// hedging is off or the pool has not yet seen enough answers to know its percentile.
    pub fn delay(&self) -> Option<Duration> {
        if !self.parameters.enabled {
            return None;
        }
        let delay = self.parameters.delay.or_else(|| self.window.value())?;
        Some(delay.max(self.parameters.min_delay))
    }

    /// A backend's time to its response head, for the percentile.
    pub fn observe(&mut self, latency: Duration) {
        if self.parameters.enabled {
            self.window.observe(latency);
        }
    }

    /// Count one request that may be hedged.
    pub fn record_request(&mut self, now: Instant) {
        if self.parameters.enabled {
            self.budget.record_request(now);
        }
    }

    /// Take one hedge from the budget if it allows one.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.parameters.enabled && self.budget.try_withdraw(now)
    }

    /// True when the budget would allow a hedge now (takes nothing).
    pub fn allows(&self, now: Instant) -> bool {
        self.parameters.enabled && self.budget.allows(now)
    }

    /// The recent latency at the configured percentile (for reports).
    pub fn percentile(&self) -> Option<Duration> {
        self.window.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(delay: Option<Duration>) -> HedgeParameters {
        HedgeParameters {
            enabled: true,
            delay,
            budget: BudgetParameters {
                ratio: 0.05,
                min_per_second: 0.0,
                window: Duration::from_secs(10),
            },
            ..HedgeParameters::off()
        }
    }

    #[test]
    fn the_delay_is_the_pool_percentile_once_known_and_never_below_the_floor() {
        // Proves the adaptive delay: unknown until 32 answers, then their p95, floored.
        let mut hedging = Hedging::new(on(None));
        for millis in 1..=31 {
            hedging.observe(Duration::from_millis(millis));
        }
        assert_eq!(hedging.delay(), None, "too few answers to know the pool's p95");
        for millis in 32..=100 {
            hedging.observe(Duration::from_millis(millis));
        }
        // 96 samples (1 to 96 ms) at the last recompute: nearest rank ceil(0.95 × 96) = 92.
        assert_eq!(hedging.delay(), Some(Duration::from_millis(92)));
        let mut fast = Hedging::new(on(None));
        for _ in 0..64 {
            fast.observe(Duration::from_micros(300));
        }
        assert_eq!(fast.delay(), Some(Duration::from_millis(5)), "the floor");
        let fixed = Hedging::new(on(Some(Duration::from_millis(40))));
        assert_eq!(fixed.delay(), Some(Duration::from_millis(40)));
        assert_eq!(Hedging::new(HedgeParameters::off()).delay(), None);
    }

    #[test]
    fn the_window_forgets_what_is_older_than_its_last_256_answers() {
        // Proves the window slides: after 256 fast answers, earlier slow ones no longer count.
        let mut window = LatencyWindow::new(95.0);
        for _ in 0..256 {
            window.observe(Duration::from_secs(1));
        }
        assert_eq!(window.value(), Some(Duration::from_secs(1)));
        for _ in 0..256 {
            window.observe(Duration::from_millis(2));
        }
        assert_eq!(window.value(), Some(Duration::from_millis(2)));
    }

    #[test]
    fn the_budget_allows_its_share_of_eligible_requests() {
        // Proves the bound on extra load: 5 % of 200 requests is 10 hedges, then none.
        let mut hedging = Hedging::new(on(None));
        let now = Instant::from_millis(1);
        for _ in 0..200 {
            hedging.record_request(now);
        }
        let granted = (0..50).filter(|_| hedging.try_withdraw(now)).count();
        assert_eq!(granted, 10);
        let mut off = Hedging::new(HedgeParameters::off());
        off.record_request(now);
        assert!(!off.try_withdraw(now));
    }
}
