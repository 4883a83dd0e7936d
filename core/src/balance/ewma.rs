//! Peak-EWMA: a latency estimate that jumps up at once and decays down slowly.
//!
//! The math (after Finagle's `PeakEwma` and tower's `load::PeakEwma`):
//!
//! ```text
//! on an observation rtt at time t, with the estimate c last touched at t0:
//!     w = exp(-(t - t0) / decay)
//!     c = rtt                       if rtt > c   (peak: a slow answer counts at once)
//!     c = c·w + rtt·(1 - w)         otherwise    (time-weighted moving average)
//! load = c · (in_flight + 1) / weight
//! ```
//!
//! Two choices of ours differ from tower's:
//!
//! - **Reading decays toward a prior.** Tower's estimate only moves when a response arrives.
//!   A node that was penalised then loses every comparison, gets no requests, and so never
//!   gets the observation that would clear it: it stays dark until the others are loaded. We
//!   let the estimate drift toward the configured default latency (the prior for a node we know
//!   nothing about) with the same time constant, so an idle node is tried again after about
//!   one `decay` and the next response corrects the estimate.
//! - **New nodes start at the prior**, not at zero, and their first observations are
//!   weighted by how long ago they were added. A fresh or restarted node is therefore fed
//!   gradually instead of receiving every request while its estimate is empty.
//!
//! Failures are folded in by the caller as a long latency (the `failure_penalty`), so a node
//! that answers 503 in a millisecond does not look like the fastest node in the pool.

use std::time::Duration;

use crate::time::Instant;

/// The estimator's parameters, shared by a pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EwmaParameters {
    /// Time constant of the moving average and of the drift toward the prior.
    pub decay: Duration,
    /// The prior: the estimate of a node with no recent observations.
    pub default_latency: Duration,
}

/// One backend's latency estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated_at: Instant,
}

impl PeakEwma {
    /// A new estimate at the prior, as of `now`.
    pub fn new(now: Instant, parameters: &EwmaParameters) -> Self {
        PeakEwma {
            estimate_ns: nanos(parameters.default_latency),
            updated_at: now,
        }
    }

    /// The estimate as of `now`, drifted toward the prior since the last observation.
    pub fn estimate_ns(&self, now: Instant, parameters: &EwmaParameters) -> f64 {
        let prior = nanos(parameters.default_latency);
        let weight = decay_weight(now - self.updated_at, parameters.decay);
        prior + (self.estimate_ns - prior) * weight
    }

    /// Fold in one observed latency (time to the response head, or a failure penalty).
    pub fn observe(&mut self, latency: Duration, now: Instant, parameters: &EwmaParameters) {
        debug_assert!(
            now >= self.updated_at,
            "time went backwards: {now:?} < {:?}",
            self.updated_at
        );
        let observed = nanos(latency);
        let current = self.estimate_ns(now, parameters);
        self.estimate_ns = if observed > current {
            observed
        } else {
            let weight = decay_weight(now - self.updated_at, parameters.decay);
            current * weight + observed * (1.0 - weight)
        };
        self.updated_at = self.updated_at.max(now);
        debug_assert!(self.estimate_ns.is_finite() && self.estimate_ns >= 0.0);
    }
}

/// `exp(-elapsed / decay)`: 1 for no time elapsed, toward 0 as time passes.
fn decay_weight(elapsed: Duration, decay: Duration) -> f64 {
    debug_assert!(!decay.is_zero(), "decay > 0 is validated by config");
    if elapsed.is_zero() {
        return 1.0;
    }
    let decay_ns = nanos(decay).max(1.0);
    (-nanos(elapsed) / decay_ns).exp()
}

/// Nanoseconds as `f64`, without the slow `u128` conversion of `Duration::as_nanos`
/// (this runs on every pick).
fn nanos(duration: Duration) -> f64 {
    duration.as_secs() as f64 * 1e9 + f64::from(duration.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMETERS: EwmaParameters = EwmaParameters {
        decay: Duration::from_secs(10),
        default_latency: Duration::from_millis(30),
    };

    fn ms(value: f64) -> f64 {
        value * 1e6
    }

    #[test]
    fn a_slow_answer_counts_at_once_and_a_fast_one_slowly() {
        // Proves the peak behaviour: up immediately, down by the time-weighted average.
        let start = Instant::EPOCH;
        let mut ewma = PeakEwma::new(start, &PARAMETERS);
        assert_eq!(ewma.estimate_ns(start, &PARAMETERS), ms(30.0));
        ewma.observe(
            Duration::from_millis(500),
            start + Duration::from_millis(1),
            &PARAMETERS,
        );
        let peak = ewma.estimate_ns(start + Duration::from_millis(1), &PARAMETERS);
        assert!((peak - ms(500.0)).abs() < 1.0, "peak {peak}");
        // A fast answer 10 ms later barely moves it: 10 ms is a thousandth of the decay.
        let later = start + Duration::from_millis(11);
        ewma.observe(Duration::from_millis(1), later, &PARAMETERS);
        let after = ewma.estimate_ns(later, &PARAMETERS);
        assert!(after > ms(490.0) && after < ms(500.0), "after {after}");
    }

    #[test]
    fn an_idle_estimate_drifts_to_the_prior() {
        // Proves that a penalised node is tried again after a few decay periods.
        let mut ewma = PeakEwma::new(Instant::EPOCH, &PARAMETERS);
        ewma.observe(Duration::from_secs(1), Instant::EPOCH, &PARAMETERS);
        let much_later = Instant::EPOCH + Duration::from_secs(60);
        let drifted = ewma.estimate_ns(much_later, &PARAMETERS);
        assert!((drifted - ms(30.0)).abs() < ms(3.0), "drifted {drifted}");
        // A fast node that goes idle drifts up to the prior as well, never past it.
        let mut fast = PeakEwma::new(Instant::EPOCH, &PARAMETERS);
        fast.observe(Duration::from_millis(2), much_later, &PARAMETERS);
        let fast_now = fast.estimate_ns(much_later, &PARAMETERS);
        assert!(
            fast_now < ms(3.0),
            "long-idle first observation replaces the prior: {fast_now}"
        );
        let fast_idle = fast.estimate_ns(much_later + Duration::from_secs(600), &PARAMETERS);
        assert!(fast_idle <= ms(30.0) && fast_idle > ms(29.0));
    }
}
