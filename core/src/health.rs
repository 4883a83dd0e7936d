//! Backend health: passive outlier ejection and active-probe scheduling, as a state machine.
//!
//! The machine performs no IO and reads no clock. Its driver (one per pool):
//!
//! - feeds it what happened: [`Health::handle_outcome`] after every attempt,
//!   [`Health::handle_probe_result`] when a probe it asked for completes, and
//!   [`Health::handle_timeout`] once the instant from [`Health::poll_timeout`] has come;
//! - then drains [`Health::poll_event`] until `None`: probes to send and availability
//!   transitions to apply to the balancer.
//!
//! Time never goes backwards across calls; a `now` earlier than the last one is treated as
//! equal to it. Randomness (probe jitter) comes from the caller's RNG.
//!
//! **Passive ejection** (after Envoy's outlier detection). `consecutive_failures` backend
//! failures in a row (5xx, 429, connect errors, resets, backend timeouts; any other response
//! resets the count) eject a backend for `base_ejection_time × n`, where n counts its recent
//! ejections, capped at `max_ejection_time`: a node that keeps failing stays out longer each
//! time. n decreases by one for every `base_ejection_time` the backend then stays in. At most
//! `max_ejected_percent` of the pool (but always at least one backend) is ejected at once, so a
//! brown-out of the whole cluster cannot eject the whole pool; when everything is unavailable
//! anyway, the balancer's panic mode takes over.
//!
//! **Active probes.** Every `interval` (± `jitter`, so a fleet of proxies does not probe in
//! lockstep) the machine asks for a probe of each backend; a probe not answered within
//! `timeout` fails. `unhealthy_threshold` failures in a row mark a backend unhealthy,
//! `healthy_threshold` successes in a row mark it healthy again. Backends start healthy: a
//! proxy restarting in front of a live cluster must not refuse traffic for an interval, and a
//! dead node is caught by the first connect errors anyway. With `probes_end_ejection` (on by
//! default, as Envoy's `successful_active_health_check_uneject_host`), `healthy_threshold`
//! probe successes in a row after an ejection end it early: a restarted node is back within
//! seconds, not after the whole ejection time (found by the simulation's rolling restart, where
//! the ejected share cap filled up with restarted nodes and the next crash went unejected). Off,
//! only time ends an ejection: for nodes that answer a cheap probe while failing real requests.

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, RngExt};

use crate::balance::BackendId;
use crate::outcome::{AttemptOutcome, StatusSet};
use crate::time::Instant;

/// Passive ejection parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveParameters {
    /// Backend failures in a row that eject a backend.
    pub consecutive_failures: u32,
    /// Ejection time for a first ejection; multiplied by the number of recent ejections.
    pub base_ejection_time: Duration,
    /// Upper bound of one ejection.
    pub max_ejection_time: Duration,
    /// Most of the pool that may be ejected at once, in percent (at least one backend).
    pub max_ejected_percent: u8,
    /// `healthy_threshold` active-probe successes in a row after an ejection end it.
    pub probes_end_ejection: bool,
}

/// Active probe parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveParameters {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Each interval is lengthened or shortened by a uniform random amount up to this.
    pub jitter: Duration,
    /// A probe without result after this long has failed.
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
}

/// Health parameters of a pool; either half may be switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthParameters {
    /// Passive ejection, if enabled.
    pub passive: Option<PassiveParameters>,
    /// Active probes, if enabled.
    pub active: Option<ActiveParameters>,
    /// The answers that count as the node failing (`health.passive.failure_statuses`); any
    /// other answer counts as the node answering.
    pub failures: StatusSet,
}

/// Identifies one probe, so a late result of a timed-out probe is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(pub u64);

/// Why a backend's availability changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionReason {
    /// Passive ejection, until the given instant.
    Ejected {
        /// When the ejection ends.
        until: Instant,
    },
    /// A passive ejection ended.
    EjectionEnded,
    /// Active probes failed `unhealthy_threshold` times in a row.
    ProbesFailed,
    /// Active probes succeeded `healthy_threshold` times in a row.
    ProbesRecovered,
}

/// What the machine asks of its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// Send a probe to `backend` and report it with [`Health::handle_probe_result`].
    Probe {
        /// Which backend.
        backend: BackendId,
        /// The probe's id, to quote in the result.
        probe: ProbeId,
    },
    /// `backend` was due an ejection that `max_ejected_percent` refused (the pool holds as many
    /// ejected backends as it may); it stays available.
    EjectionRefused {
        /// Which backend.
        backend: BackendId,
    },
    /// `backend` became available or unavailable.
    Transition {
        /// Which backend.
        backend: BackendId,
        /// Its availability now.
        available: bool,
        /// Why.
        reason: TransitionReason,
    },
}

/// One backend's health, for the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    /// Passive ejection end, if ejected.
    pub ejected_until: Option<Instant>,
    /// Ejections counted toward the next ejection's length.
    pub ejections: u32,
    /// Backend failures in a row.
    pub consecutive_failures: u32,
    /// Active probes' verdict (true when probes are off).
    pub probe_healthy: bool,
}

impl BackendHealth {
    /// Healthy by probes and not ejected.
    pub fn is_available(&self) -> bool {
        self.probe_healthy && self.ejected_until.is_none()
    }
}

#[derive(Clone, Debug)]
struct Tracked {
    id: BackendId,
    health: BackendHealth,
    /// When the last ejection ended, for the decay of `ejections`.
    restored_at: Option<Instant>,
    probe_successes: u32,
    probe_failures: u32,
    next_probe_at: Option<Instant>,
    outstanding: Option<(ProbeId, Instant)>,
}

/// The health state machine of one pool.
#[derive(Debug)]
pub struct Health {
    parameters: HealthParameters,
    /// Sorted by id.
    backends: Vec<Tracked>,
    events: VecDeque<HealthEvent>,
    next_probe: u64,
    last_now: Instant,
    ejections_total: u64,
    outcomes_total: u64,
}

impl Health {
    /// A machine tracking no backends yet.
    pub fn new(parameters: HealthParameters) -> Self {
        Health {
            parameters,
            backends: Vec::new(),
            events: VecDeque::new(),
            next_probe: 0,
            last_now: Instant::EPOCH,
            ejections_total: 0,
            outcomes_total: 0,
        }
    }

    /// Attempt outcomes handled so far (each attempt is reported exactly once).
    pub fn outcomes_total(&self) -> u64 {
        self.outcomes_total
    }

    /// The machine's parameters.
    pub fn parameters(&self) -> &HealthParameters {
        &self.parameters
    }

    /// Take new parameters (a reload), keeping every backend's ejection state and history.
    /// Probes switched off end their schedule and their verdict (a backend that only probes
    /// called unhealthy becomes available); probes switched on start for every backend at a
    /// random point of the first interval, as for a backend that joins.
    pub fn set_parameters<R: Rng + ?Sized>(&mut self, parameters: HealthParameters, now: Instant, rng: &mut R) {
        let now = self.advance(now);
        self.parameters = parameters;
        for index in 0..self.backends.len() {
            match parameters.active {
                None => {
                    let before = self.backends[index].health.is_available();
                    let tracked = &mut self.backends[index];
                    tracked.next_probe_at = None;
                    tracked.outstanding = None;
                    tracked.probe_successes = 0;
                    tracked.probe_failures = 0;
                    tracked.health.probe_healthy = true;
                    self.emit_if_changed(index, before, TransitionReason::ProbesRecovered);
                }
                Some(active) => {
                    let tracked = &mut self.backends[index];
                    if tracked.next_probe_at.is_none() {
                        let spread = active.interval.as_nanos().min(u128::from(u64::MAX)) as u64;
                        tracked.next_probe_at = Some(now + Duration::from_nanos(rng.random_range(0..=spread)));
                    }
                }
            }
        }
    }

    /// Start tracking `id` (healthy, not ejected). Its first probe is due at a random point in
    /// the first interval, so the probes of many backends spread out.
    pub fn add<R: Rng + ?Sized>(&mut self, id: BackendId, now: Instant, rng: &mut R) {
        let now = self.advance(now);
        let Err(slot) = self.backends.binary_search_by_key(&id, |tracked| tracked.id) else {
            return;
        };
        let next_probe_at = self.parameters.active.map(|active| {
            let spread = active.interval.as_nanos().min(u128::from(u64::MAX)) as u64;
            now + Duration::from_nanos(rng.random_range(0..=spread))
        });
        self.backends.insert(
            slot,
            Tracked {
                id,
                health: BackendHealth {
                    ejected_until: None,
                    ejections: 0,
                    consecutive_failures: 0,
                    probe_healthy: true,
                },
                restored_at: None,
                probe_successes: 0,
                probe_failures: 0,
                next_probe_at,
                outstanding: None,
            },
        );
    }

    /// Stop tracking `id` (it left the pool). Pending events about it stay queued; the driver
    /// ignores events for unknown backends.
    pub fn remove(&mut self, id: BackendId) {
        self.backends.retain(|tracked| tracked.id != id);
    }

    /// `id`'s health, if tracked.
    pub fn get(&self, id: BackendId) -> Option<BackendHealth> {
        self.find(id).map(|index| self.backends[index].health)
    }

    /// True when `id` is tracked, healthy and not ejected.
    pub fn is_available(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(|health| health.is_available())
    }

    /// Passive ejections since the machine started.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total
    }

    /// Number of backends currently ejected.
    pub fn ejected_count(&self) -> usize {
        self.backends
            .iter()
            .filter(|tracked| tracked.health.ejected_until.is_some())
            .count()
    }

    /// Record how an attempt on `id` ended.
    pub fn handle_outcome(&mut self, now: Instant, id: BackendId, outcome: AttemptOutcome) {
        let now = self.advance(now);
        self.outcomes_total += 1;
        let Some(index) = self.find(id) else {
            return;
        };
        if outcome.is_backend_failure(&self.parameters.failures) {
            let tracked = &mut self.backends[index];
            tracked.health.consecutive_failures = tracked.health.consecutive_failures.saturating_add(1);
            if let Some(passive) = self.parameters.passive {
                let due = tracked.health.consecutive_failures >= passive.consecutive_failures;
                if due && tracked.health.ejected_until.is_none() {
                    self.try_eject(index, now, passive);
                }
            }
        } else if matches!(outcome, AttemptOutcome::Response { .. }) {
            self.backends[index].health.consecutive_failures = 0;
        }
    }

    /// Record a probe's result. Results of unknown or timed-out probes are ignored.
    pub fn handle_probe_result(&mut self, now: Instant, id: BackendId, probe: ProbeId, healthy: bool) {
        let now = self.advance(now);
        let Some(index) = self.find(id) else {
            return;
        };
        if self.backends[index].outstanding.map(|(outstanding, _)| outstanding) != Some(probe) {
            return;
        }
        self.backends[index].outstanding = None;
        self.count_probe(index, healthy, now);
    }

    /// Process everything due at `now`: ejections that end, probes that time out, probes to
    /// send.
    pub fn handle_timeout<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        let now = self.advance(now);
        for index in 0..self.backends.len() {
            if let Some(until) = self.backends[index].health.ejected_until
                && until <= now
            {
                let before = self.backends[index].health.is_available();
                let tracked = &mut self.backends[index];
                tracked.health.ejected_until = None;
                tracked.health.consecutive_failures = 0;
                tracked.restored_at = Some(now);
                self.emit_if_changed(index, before, TransitionReason::EjectionEnded);
            }
            let Some(active) = self.parameters.active else {
                continue;
            };
            if let Some((_, deadline)) = self.backends[index].outstanding
                && deadline <= now
            {
                self.backends[index].outstanding = None;
                self.count_probe(index, false, now);
            }
            let tracked = &mut self.backends[index];
            let due = tracked.next_probe_at.is_some_and(|at| at <= now);
            if due && tracked.outstanding.is_none() {
                let probe = ProbeId(self.next_probe);
                self.next_probe += 1;
                tracked.outstanding = Some((probe, now + active.timeout));
                tracked.next_probe_at = Some(now + jittered(active.interval, active.jitter, rng));
                self.events.push_back(HealthEvent::Probe {
                    backend: tracked.id,
                    probe,
                });
            } else if due {
                // The previous probe is still out (timeout > interval): wait for it.
                tracked.next_probe_at = Some(now + jittered(active.interval, active.jitter, rng));
            }
        }
    }

    /// The next instant at which [`Health::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.backends
            .iter()
            .flat_map(|tracked| {
                [
                    tracked.health.ejected_until,
                    tracked.outstanding.map(|(_, deadline)| deadline),
                    tracked.next_probe_at,
                ]
            })
            .flatten()
            .min()
    }

    /// The next event for the driver, if any.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    fn try_eject(&mut self, index: usize, now: Instant, passive: PassiveParameters) {
        let pool_size = self.backends.len();
        let allowed = (pool_size * usize::from(passive.max_ejected_percent) / 100).max(1);
        if passive.max_ejected_percent == 0 || self.ejected_count() >= allowed {
            tracing::debug!(backend = %self.backends[index].id, allowed, "ejection skipped: share cap reached");
            self.events.push_back(HealthEvent::EjectionRefused {
                backend: self.backends[index].id,
            });
            return;
        }
        let before = self.backends[index].health.is_available();
        let tracked = &mut self.backends[index];
        if let Some(restored_at) = tracked.restored_at {
            let base = passive.base_ejection_time.as_nanos().max(1);
            let quiet_periods = (now - restored_at).as_nanos() / base;
            let forgiven = u32::try_from(quiet_periods).unwrap_or(u32::MAX);
            tracked.health.ejections = tracked.health.ejections.saturating_sub(forgiven);
        }
        tracked.health.ejections = tracked.health.ejections.saturating_add(1);
        let length = passive
            .base_ejection_time
            .saturating_mul(tracked.health.ejections)
            .min(passive.max_ejection_time);
        let until = now + length;
        tracked.health.ejected_until = Some(until);
        // Only probes answered after the ejection may end it.
        tracked.probe_successes = 0;
        self.ejections_total += 1;
        tracing::info!(backend = %tracked.id, ejections = tracked.health.ejections, ?length, "backend ejected");
        self.emit_if_changed(index, before, TransitionReason::Ejected { until });
        debug_assert!(self.ejected_count() <= allowed);
    }

    fn count_probe(&mut self, index: usize, healthy: bool, now: Instant) {
        let Some(active) = self.parameters.active else {
            return;
        };
        let before = self.backends[index].health.is_available();
        let probes_end_ejection = self
            .parameters
            .passive
            .is_some_and(|passive| passive.probes_end_ejection);
        let tracked = &mut self.backends[index];
        if healthy {
            tracked.probe_failures = 0;
            tracked.probe_successes = tracked.probe_successes.saturating_add(1);
            let recovered = tracked.probe_successes >= active.healthy_threshold;
            if recovered && probes_end_ejection && tracked.health.ejected_until.is_some() {
                tracked.health.ejected_until = None;
                tracked.health.consecutive_failures = 0;
                tracked.restored_at = Some(now);
                tracing::info!(backend = %tracked.id, "ejection ended early: probes pass");
                if tracked.health.probe_healthy {
                    self.emit_if_changed(index, before, TransitionReason::EjectionEnded);
                    return;
                }
            }
            let tracked = &mut self.backends[index];
            if !tracked.health.probe_healthy && recovered {
                tracked.health.probe_healthy = true;
                self.emit_if_changed(index, before, TransitionReason::ProbesRecovered);
            }
        } else {
            tracked.probe_successes = 0;
            tracked.probe_failures = tracked.probe_failures.saturating_add(1);
            if tracked.health.probe_healthy && tracked.probe_failures >= active.unhealthy_threshold {
                tracked.health.probe_healthy = false;
                self.emit_if_changed(index, before, TransitionReason::ProbesFailed);
            }
        }
    }

    fn emit_if_changed(&mut self, index: usize, before: bool, reason: TransitionReason) {
        let tracked = &self.backends[index];
        let available = tracked.health.is_available();
        if available != before {
            self.events.push_back(HealthEvent::Transition {
                backend: tracked.id,
                available,
                reason,
            });
        }
    }

    /// Tracked backends are kept sorted by id (ids only grow, so this is nearly free).
    fn find(&self, id: BackendId) -> Option<usize> {
        self.backends.binary_search_by_key(&id, |tracked| tracked.id).ok()
    }

    /// Enforce the time rule: `now` never goes backwards.
    fn advance(&mut self, now: Instant) -> Instant {
        debug_assert!(
            now >= self.last_now,
            "time went backwards: {now:?} < {:?}",
            self.last_now
        );
        self.last_now = self.last_now.max(now);
        self.last_now
    }
}

/// `interval` ± a uniform amount up to `jitter` (never below a millisecond).
fn jittered<R: Rng + ?Sized>(interval: Duration, jitter: Duration, rng: &mut R) -> Duration {
    let jitter_ns = jitter.min(interval).as_nanos().min(u128::from(u64::MAX / 2)) as u64;
    if jitter_ns == 0 {
        return interval;
    }
    let offset = rng.random_range(0..=2 * jitter_ns);
    (interval + Duration::from_nanos(offset))
        .saturating_sub(Duration::from_nanos(jitter_ns))
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests;
