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
//! Two choices differ from tower's, both Finagle's:
//!
//! - **Reading decays the estimate toward zero.** Tower's estimate only moves when a response
//!   arrives. A node that was penalised, or that was never picked, then loses every
//!   comparison, gets no requests, and never gets the observation that would correct it: with
//!   light load it stays dark forever. Decaying toward zero (with the same time constant) makes
//!   every idle node attractive again after a while, so it is re-measured; the first response
//!   then sets its estimate afresh (see `observe`: after a long idle time the weight of the
//!   old estimate is near zero). Among equal nodes this rotation is what spreads a light,
//!   sequential load evenly. P2C bounds the exploration burst: an idle node is chosen only when
//!   it is one of the two sampled candidates.
//! - **A node that has not answered yet is estimated at the pool's typical latency**
//!   ([`PoolLatency`]: a moving average of every answer in the pool), or at `default_latency`
//!   before anything was measured. A fresh or restarted node is thus treated as an average
//!   node: it gets its share, neither flooded (as an estimate of zero would) nor starved (as a
//!   fixed prior above the pool's real latency would, for as long as the prior takes to
//!   decay).
//!
//! - **A peak is held for `stale_after`, not for most of `decay`** (an addition of ours): an
//!   estimate set that long ago (by a peak or a first answer) is stale. The next answer
//!   replaces it, and an idle node with a stale estimate counts at the pool's typical
//!   latency, so it is tried again. Without this, one slow answer (loopback noise, a
//!   collection pause) keeps a node out of a light load for tens of seconds: faster answers
//!   move the time-weighted average by a fraction of their spacing over `decay`, and an
//!   avoided node gets none. A node that is really slow sets a new peak with every answer,
//!   so it stays out, at the cost of one request per `stale_after` to re-measure it. A
//!   failure's penalty is never stale: it decays, while health ejects and probes.
//!
//! Failures are folded in by the caller as a long latency (the `failure_penalty`), so a node
//! that answers 503 in a millisecond does not look like the fastest node in the pool.

use std::time::Duration;

use crate::time::Instant;

/// The estimator's parameters, shared by a pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EwmaParameters {
    /// Time constant of the moving average and of the decay toward zero.
    pub decay: Duration,
    /// The prior: the estimate a new node starts with.
    pub default_latency: Duration,
    /// An estimate no answer refreshed for this long is stale (zero: never): an idle backend
    /// then counts at the pool's typical latency, and its next answer replaces the estimate.
    pub stale_after: Duration,
}

/// One backend's latency estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated_at: Instant,
    /// When the estimate was last set outright (a first answer, a peak, a stale estimate
    /// replaced), rather than averaged toward: staleness counts from here.
    set_at: Instant,
    observed: bool,
    /// The estimate holds a failure's penalty: it is never stale, it decays.
    penalised: bool,
}

impl PeakEwma {
    /// A new estimate at the prior, as of `now`.
    pub fn new(now: Instant, parameters: &EwmaParameters) -> Self {
        PeakEwma {
            estimate_ns: nanos(parameters.default_latency),
            updated_at: now,
            set_at: now,
            observed: false,
            penalised: false,
        }
    }

    /// True once an observation was folded in.
    pub fn is_observed(&self) -> bool {
        self.observed
    }

    /// True when the estimate was set (by an answer slower than it, or a first answer) at
    /// least `stale_after` ago: faster answers since then have barely moved it (the moving
    /// average weighs them by the time between them, a fraction of `decay`), so it tells how
    /// the backend answered then, not now.
    pub fn is_stale(&self, now: Instant, parameters: &EwmaParameters) -> bool {
        !self.penalised && !parameters.stale_after.is_zero() && now - self.set_at >= parameters.stale_after
    }

    /// Fold in a failure, counted as the latency `penalty` (at least the failure penalty):
    /// a peak like any slower answer, but one that is not set aside after `stale_after`
    /// (a node that refuses connections or answers 503 must not be tried again every tenth
    /// of a second: health ejects it, probes bring it back, and its penalty decays).
    pub fn observe_failure(&mut self, penalty: Duration, now: Instant, parameters: &EwmaParameters) {
        self.observe(penalty, now, parameters);
        self.penalised = true;
    }

    /// The estimate as of `now`, decayed toward zero since the last observation.
    pub fn estimate_ns(&self, now: Instant, parameters: &EwmaParameters) -> f64 {
        self.estimate_ns * decay_weight(now - self.updated_at, parameters.decay)
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
        // The first answer replaces whatever prior the node was judged by, a fresh answer
        // replaces a stale estimate (one slow answer long ago is no evidence), and a slower
        // answer counts at once (the peak).
        let set = !self.observed || self.is_stale(now, parameters) || observed > current;
        self.estimate_ns = if set {
            self.set_at = self.set_at.max(now);
            observed
        } else {
            let weight = decay_weight(now - self.updated_at, parameters.decay);
            current * weight + observed * (1.0 - weight)
        };
        self.updated_at = self.updated_at.max(now);
        self.observed = true;
        self.penalised = false;
        debug_assert!(self.estimate_ns.is_finite() && self.estimate_ns >= 0.0);
    }
}

/// A pool's typical latency: a time-weighted moving average of every healthy answer in the
/// pool (no peak, no decay on read). It is the estimate of nodes that have not answered yet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolLatency {
    estimate_ns: f64,
    updated_at: Instant,
    observed: bool,
}

impl PoolLatency {
    /// Nothing measured yet.
    pub fn new(now: Instant) -> Self {
        PoolLatency {
            estimate_ns: 0.0,
            updated_at: now,
            observed: false,
        }
    }

    /// Fold in one healthy answer's latency.
    pub fn observe(&mut self, latency: Duration, now: Instant, parameters: &EwmaParameters) {
        let observed = nanos(latency);
        self.estimate_ns = if self.observed {
            let weight = decay_weight(now - self.updated_at, parameters.decay);
            self.estimate_ns * weight + observed * (1.0 - weight)
        } else {
            observed
        };
        self.updated_at = self.updated_at.max(now);
        self.observed = true;
    }

    /// The estimate for a node that has not answered yet.
    pub fn prior_ns(&self, parameters: &EwmaParameters) -> f64 {
        if self.observed {
            self.estimate_ns
        } else {
            nanos(parameters.default_latency)
        }
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
        stale_after: Duration::ZERO,
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
    fn an_idle_estimate_decays_so_the_node_is_tried_again() {
        // Proves that a penalised or unpicked node becomes attractive again, and that its next
        // observation replaces the stale estimate instead of averaging with it.
        let mut ewma = PeakEwma::new(Instant::EPOCH, &PARAMETERS);
        ewma.observe(Duration::from_secs(1), Instant::EPOCH, &PARAMETERS);
        let much_later = Instant::EPOCH + Duration::from_secs(60);
        let decayed = ewma.estimate_ns(much_later, &PARAMETERS);
        assert!(decayed < ms(3.0), "a minute later the penalty is gone: {decayed}");
        ewma.observe(Duration::from_millis(4), much_later, &PARAMETERS);
        let fresh = ewma.estimate_ns(much_later, &PARAMETERS);
        assert!((fresh - ms(4.0)).abs() < ms(0.1), "the new observation stands: {fresh}");
        // The pool prior follows the pool's answers.
        let mut pool = PoolLatency::new(Instant::EPOCH);
        assert_eq!(pool.prior_ns(&PARAMETERS), ms(30.0));
        pool.observe(Duration::from_millis(3), Instant::EPOCH, &PARAMETERS);
        assert_eq!(pool.prior_ns(&PARAMETERS), ms(3.0));
    }
}
