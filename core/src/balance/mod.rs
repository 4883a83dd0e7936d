//! A pool's backends, their live load, and the choice of a backend per request.
//!
//! [`Balancer`] owns one pool's backends. The exchange calls, for every attempt:
//!
//! 1. [`Balancer::pick`] (or [`Balancer::pick_excluding`] on a retry) to choose a backend;
//! 2. [`Balancer::on_start`] when the attempt is dispatched (in-flight goes up);
//! 3. [`Balancer::on_end`] exactly once when the attempt is over, with its outcome and its
//!    latency to the response head (in-flight goes down, the latency estimate moves).
//!
//! Health decides availability ([`Balancer::set_available`]), operators drain
//! ([`Balancer::set_draining`]), and DNS or a config reload replace the backend set
//! ([`Balancer::update`]) keeping the live state of backends that stay.
//!
//! **Eligibility.** A backend can be picked when it is available and not draining. If no
//! backend is, the pool is in *panic mode* and every backend that is not draining is eligible:
//! when health says everything is down, it is more likely that health is wrong (a network blip,
//! a shared dependency) than that every node is, and sending traffic is the only way to find
//! out. Draining is an operator's explicit wish and is honoured even in panic.
//!
//! **Time and randomness** are arguments: `now` must not go backwards between calls, and every
//! random choice draws from the caller's RNG, so a seed replays the same picks.

mod algorithm;
mod ewma;

use std::fmt;
use std::time::Duration;

use rand::Rng;

pub use algorithm::{
    Algorithm, AlgorithmKind, Balance, Candidates, LeastInFlight, PowerOfTwoChoices, RandomChoice, RoundRobin,
};
pub use ewma::{EwmaParameters, PeakEwma, PoolLatency};

use crate::outcome::{AttemptOutcome, StatusSet};
use crate::time::Instant;

/// The most backends one pool may hold. Bounds every scan in this module; a cluster with more
/// nodes than this should be split into pools.
pub const BACKENDS_PER_POOL_MAX: usize = 1024;

/// A backend's identity within its pool. Never reused: a backend that leaves and comes back
/// gets a new id, so a stale id held by an old exchange cannot touch the newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What configuration or DNS says about a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Stable name: the key by which updates recognise a backend that stays (the configured
    /// name, or the address for DNS-discovered backends).
    pub name: String,
    /// Where to connect (`host:port`); the runtime resolves and dials it.
    pub address: String,
    /// Relative capacity, at least 1. A weight-2 backend gets twice the share.
    pub weight: u32,
    /// Data centre / zone the backend lives in.
    pub zone: Option<String>,
}

impl BackendSpec {
    /// A weight-1 backend without zone whose name is its address.
    pub fn new(address: impl Into<String>) -> Self {
        let address = address.into();
        BackendSpec {
            name: address.clone(),
            address,
            weight: 1,
            zone: None,
        }
    }
}

/// How a pool balances; see the [`config`](crate::config) defaults for the why of each value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalanceParameters {
    /// Which algorithm picks.
    pub algorithm: AlgorithmKind,
    /// Peak-EWMA parameters.
    pub ewma: EwmaParameters,
    /// The latency a backend failure counts as (at least; a slower failure counts as itself).
    pub failure_penalty: Duration,
    /// The answers that count as the node failing (`health.passive.failure_statuses`).
    pub failures: StatusSet,
    /// When two loads are too close to tell apart.
    pub ties: TieBand,
}

/// Loads this close count as equal (p2c-peak-ewma): the latency differences of idle nodes are
/// measurement noise, and following them piles a light load on whichever node happened to
/// answer fastest lately. Two loads tie when they differ by at most `ratio` of the lower one,
/// or by at most `floor_ns`, and neither backend has a request in flight; a tie goes to the
/// backend picked least recently (as Prequal treats probes of near-equal load).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TieBand {
    /// Relative band (0.2: within 20 %).
    pub ratio: f64,
    /// Absolute band, nanoseconds of load.
    pub floor_ns: f64,
}

impl TieBand {
    /// No band: the lower load wins, the first drawn on equality.
    pub const NONE: TieBand = TieBand {
        ratio: 0.0,
        floor_ns: 0.0,
    };

    /// Whether loads `a` and `b` tie (never with no band: then equal loads go to the first
    /// candidate drawn, as plain p2c does).
    pub fn ties(&self, a: f64, b: f64) -> bool {
        if self.ratio <= 0.0 && self.floor_ns <= 0.0 {
            return false;
        }
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        high - low <= (low * self.ratio).max(self.floor_ns)
    }
}

/// One backend and its live state.
#[derive(Clone, Debug)]
pub struct Backend {
    id: BackendId,
    spec: BackendSpec,
    in_flight: u32,
    requests_total: u64,
    errors_total: u64,
    ewma: PeakEwma,
    available: bool,
    draining: bool,
    /// Left the backend set while requests were in flight; deleted when they finish.
    removed: bool,
    /// The pool's dispatch count at this backend's latest dispatch (0: never picked).
    last_pick: u64,
}

impl Backend {
    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.id
    }
    /// What configuration or DNS says about it.
    pub fn spec(&self) -> &BackendSpec {
        &self.spec
    }
    /// Attempts dispatched and not yet ended.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
    /// Attempts dispatched since the backend joined.
    pub fn requests_total(&self) -> u64 {
        self.requests_total
    }
    /// When it was last dispatched to, as the pool's dispatch count then (0: never); orders
    /// backends by how recently they were picked.
    pub fn last_pick(&self) -> u64 {
        self.last_pick
    }
    /// Attempts that ended in a backend failure.
    pub fn errors_total(&self) -> u64 {
        self.errors_total
    }
    /// Health's verdict (not ejected, not failing active probes).
    pub fn is_available(&self) -> bool {
        self.available
    }
    /// Draining: no new picks; in-flight attempts finish.
    pub fn is_draining(&self) -> bool {
        self.draining
    }
    /// Removed from the pool's configuration or DNS answer; it stays only until its in-flight
    /// attempts end.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
    /// The peak-EWMA latency estimate as of `now` (the default latency until it answers).
    pub fn latency_estimate(&self, now: Instant, parameters: &EwmaParameters) -> Duration {
        Duration::from_nanos(self.ewma.estimate_ns(now, parameters) as u64)
    }
    /// Peak-EWMA load as of `now`: estimate × (in-flight + 1) ÷ weight, where a backend that
    /// has not answered yet is estimated at `prior_ns` (the pool's typical latency). So is an
    /// idle backend whose estimate is stale: one slow answer does not keep it dark until the
    /// estimate decays; it is tried again and re-measured.
    pub fn load(&self, now: Instant, parameters: &EwmaParameters, prior_ns: f64) -> f64 {
        let unknown = !self.ewma.is_observed() || (self.in_flight == 0 && self.ewma.is_stale(now, parameters));
        let estimate = if unknown {
            prior_ns
        } else {
            self.ewma.estimate_ns(now, parameters)
        };
        estimate * f64::from(self.in_flight + 1) / f64::from(self.spec.weight.max(1))
    }
}

/// Why the balancer refused an operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// More backends than [`BACKENDS_PER_POOL_MAX`].
    #[error("{count} backends in one pool; the limit is {BACKENDS_PER_POOL_MAX}")]
    TooManyBackends {
        /// How many were given.
        count: usize,
    },
    /// Two backends share a name.
    #[error("backend name `{name}` appears twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A weight of zero.
    #[error("backend `{name}` has weight 0; weights start at 1")]
    ZeroWeight {
        /// The backend's name.
        name: String,
    },
}

/// What [`Balancer::update`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Backends that joined.
    pub added: Vec<BackendId>,
    /// Backends that left (deleted now, or once their in-flight attempts end).
    pub removed: Vec<BackendId>,
}

/// One pool's backends, their live state, and the algorithm that picks among them.
#[derive(Debug)]
pub struct Balancer {
    parameters: BalanceParameters,
    /// Sorted by id (ids only grow), so lookups are a binary search.
    backends: Vec<Backend>,
    /// Indices into `backends` that may be picked now. Rebuilt when eligibility changes, which
    /// is rare next to picks.
    eligible: Vec<usize>,
    /// In-flight counts of the eligible backends, parallel to `eligible` (dense, for scans).
    eligible_in_flight: Vec<u32>,
    /// For each backend index, its position in `eligible`, or `NOT_ELIGIBLE`.
    eligible_position: Vec<u32>,
    panic_mode: bool,
    /// The pool's typical latency: the estimate of backends that have not answered yet.
    pool_latency: PoolLatency,
    algorithm: Algorithm,
    next_id: u64,
    /// Dispatches so far (each backend's `last_pick` is a value of it).
    dispatches: u64,
}

impl Balancer {
    /// A pool of `specs`, all available, as of `now`.
    pub fn new(parameters: BalanceParameters, specs: Vec<BackendSpec>, now: Instant) -> Result<Self, BalanceError> {
        let mut balancer = Balancer {
            parameters,
            backends: Vec::new(),
            eligible: Vec::new(),
            eligible_in_flight: Vec::new(),
            eligible_position: Vec::new(),
            panic_mode: false,
            pool_latency: PoolLatency::new(now),
            algorithm: Algorithm::new(parameters.algorithm),
            next_id: 0,
            dispatches: 0,
        };
        balancer.update(specs, now)?;
        Ok(balancer)
    }

    /// The pool's parameters.
    pub fn parameters(&self) -> &BalanceParameters {
        &self.parameters
    }

    /// Every backend, including removed ones still finishing in-flight attempts.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend with this id, if it is still in the pool.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.index_of(id).map(|index| &self.backends[index])
    }

    /// True when no backend is available and the pool picks among all non-draining ones.
    pub fn is_panic_mode(&self) -> bool {
        self.panic_mode
    }

    /// The pool's typical latency (what a backend that has not answered yet counts at).
    pub fn typical_latency(&self) -> Duration {
        Duration::from_nanos(self.pool_latency.prior_ns(&self.parameters.ewma) as u64)
    }

    /// True when at least one backend is available and not draining.
    pub fn has_available(&self) -> bool {
        !self.panic_mode && !self.eligible.is_empty()
    }

    /// True when a backend not in `tried` is available and not draining: a retry has
    /// somewhere healthy left to go in this pool.
    pub fn has_available_untried(&self, tried: &[BackendId]) -> bool {
        !self.panic_mode
            && self
                .eligible
                .iter()
                .any(|&index| !tried.contains(&self.backends[index].id))
    }

    /// Sum of in-flight attempts over the pool.
    pub fn in_flight_total(&self) -> u64 {
        self.backends.iter().map(|backend| u64::from(backend.in_flight)).sum()
    }

    /// Whether `specs` is a backend set [`Balancer::update`] accepts (bounded, names unique,
    /// weights positive); checking changes nothing.
    pub fn check_specs(specs: &[BackendSpec]) -> Result<(), BalanceError> {
        if specs.len() > BACKENDS_PER_POOL_MAX {
            return Err(BalanceError::TooManyBackends { count: specs.len() });
        }
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for spec in specs {
            if !seen.insert(spec.name.as_str()) {
                return Err(BalanceError::DuplicateName {
                    name: spec.name.clone(),
                });
            }
            if spec.weight == 0 {
                return Err(BalanceError::ZeroWeight {
                    name: spec.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Take new parameters (a reload), keeping every backend's live state: a new algorithm
    /// starts its own bookkeeping over the same backends, latency estimates carry over.
    pub fn set_parameters(&mut self, parameters: BalanceParameters) {
        if parameters == self.parameters {
            return;
        }
        let algorithm_changed = parameters.algorithm != self.parameters.algorithm;
        self.parameters = parameters;
        if algorithm_changed {
            self.algorithm = Algorithm::new(parameters.algorithm);
            self.rebuild_eligible();
        }
    }

    /// Replace the backend set. Backends whose name stays keep their live state (their spec is
    /// refreshed); new names join available with a fresh estimate; missing names leave, at once
    /// if idle or as soon as their in-flight attempts end.
    pub fn update(&mut self, specs: Vec<BackendSpec>, now: Instant) -> Result<UpdateSummary, BalanceError> {
        Self::check_specs(&specs)?;
        let seen: std::collections::HashSet<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
        let mut summary = UpdateSummary::default();
        for backend in &mut self.backends {
            if !backend.removed && !seen.contains(backend.spec.name.as_str()) {
                backend.removed = true;
                summary.removed.push(backend.id);
            }
        }
        for spec in specs {
            let existing = self
                .backends
                .iter_mut()
                .find(|backend| !backend.removed && backend.spec.name == spec.name);
            match existing {
                Some(backend) => backend.spec = spec,
                None => {
                    let id = BackendId(self.next_id);
                    self.next_id += 1;
                    summary.added.push(id);
                    self.backends.push(Backend {
                        id,
                        spec,
                        in_flight: 0,
                        requests_total: 0,
                        errors_total: 0,
                        ewma: PeakEwma::new(now, &self.parameters.ewma),
                        available: true,
                        draining: false,
                        removed: false,
                        last_pick: 0,
                    });
                }
            }
        }
        self.backends
            .retain(|backend| !(backend.removed && backend.in_flight == 0));
        self.rebuild_eligible();
        Ok(summary)
    }

    /// Mark a backend available or not (health's verdict). Unknown ids are ignored: the
    /// backend may have left meanwhile.
    pub fn set_available(&mut self, id: BackendId, available: bool) {
        if let Some(index) = self.index_of(id)
            && self.backends[index].available != available
        {
            self.backends[index].available = available;
            self.rebuild_eligible();
        }
    }

    /// Start or stop draining a backend. Returns false for an unknown id.
    pub fn set_draining(&mut self, id: BackendId, draining: bool) -> bool {
        let Some(index) = self.index_of(id) else {
            return false;
        };
        let backend = &mut self.backends[index];
        if backend.removed {
            return true;
        }
        if backend.draining != draining {
            backend.draining = draining;
            self.rebuild_eligible();
        }
        true
    }

    /// Choose a backend for a new request, or `None` when every backend is draining or the pool
    /// is empty.
    pub fn pick<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Option<BackendId> {
        debug_assert!(
            self.eligible
                .iter()
                .zip(&self.eligible_in_flight)
                .all(|(&index, &mirrored)| self.backends[index].in_flight == mirrored),
            "the dense in-flight mirror drifted from the backends"
        );
        let candidates = Candidates {
            backends: &self.backends,
            indices: &self.eligible,
            in_flight: &self.eligible_in_flight,
            prior_ns: self.pool_latency.prior_ns(&self.parameters.ewma),
        };
        let position = self.algorithm.pick(candidates, &self.parameters, now, rng)?;
        let index = self.eligible[position];
        tracing::trace!(backend = %self.backends[index].id, panic = self.panic_mode, "picked");
        Some(self.backends[index].id)
    }

    /// Choose a backend for a retry, avoiding those already tried. If every eligible backend
    /// was tried, choose among all eligible ones: a second try on the same node beats none.
    pub fn pick_excluding<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
        tried: &[BackendId],
    ) -> Option<BackendId> {
        if tried.is_empty() {
            return self.pick(now, rng);
        }
        let untried: Vec<usize> = self
            .eligible
            .iter()
            .copied()
            .filter(|&index| !tried.contains(&self.backends[index].id))
            .collect();
        if untried.is_empty() {
            return self.pick(now, rng);
        }
        let in_flight: Vec<u32> = untried.iter().map(|&index| self.backends[index].in_flight).collect();
        let candidates = Candidates {
            backends: &self.backends,
            indices: &untried,
            in_flight: &in_flight,
            prior_ns: self.pool_latency.prior_ns(&self.parameters.ewma),
        };
        let position = self.algorithm.pick(candidates, &self.parameters, now, rng)?;
        Some(self.backends[untried[position]].id)
    }

    /// An attempt was dispatched to `id`. Returns false (and changes nothing) for an unknown id.
    pub fn on_start(&mut self, id: BackendId, _now: Instant) -> bool {
        let Some(index) = self.index_of(id) else {
            return false;
        };
        let backend = &mut self.backends[index];
        backend.in_flight = backend
            .in_flight
            .checked_add(1)
            .expect("in-flight attempts are bounded by the runtime's connection limits");
        backend.requests_total += 1;
        self.dispatches += 1;
        backend.last_pick = self.dispatches;
        self.mirror_in_flight(index);
        true
    }

    /// The attempt on `id` is over. `latency` is the time to the response head (or to the
    /// failure). Failures count as at least the failure penalty; outcomes that are the client's
    /// fault leave the estimate alone. Must be called exactly once per `on_start`.
    pub fn on_end(&mut self, id: BackendId, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        let Some(index) = self.index_of(id) else {
            debug_assert!(false, "on_end for unknown backend {id}: on_start/on_end must pair");
            return;
        };
        let parameters = self.parameters;
        let backend = &mut self.backends[index];
        debug_assert!(backend.in_flight > 0, "in-flight underflow on {id}");
        backend.in_flight = backend.in_flight.saturating_sub(1);
        if outcome.is_backend_failure(&parameters.failures) {
            backend.errors_total += 1;
            backend
                .ewma
                .observe_failure(latency.max(parameters.failure_penalty), now, &parameters.ewma);
        } else if matches!(outcome, AttemptOutcome::Response { .. }) {
            backend.ewma.observe(latency, now, &parameters.ewma);
            self.pool_latency.observe(latency, now, &parameters.ewma);
        } else if outcome == AttemptOutcome::Cancelled
            && latency.as_nanos() as f64 > backend.ewma.estimate_ns(now, &parameters.ewma)
        {
            // Dropped unanswered after this long: the node is at least this slow now (the
            // slow side of a hedge race), which its estimate must show. A time shorter than
            // the estimate says nothing.
            backend.ewma.observe(latency, now, &parameters.ewma);
        }
        if backend.removed && backend.in_flight == 0 {
            self.backends.remove(index);
            self.rebuild_eligible();
        } else {
            self.mirror_in_flight(index);
        }
    }

    /// Copy backend `index`'s in-flight count into the dense eligible array.
    fn mirror_in_flight(&mut self, index: usize) {
        let position = self.eligible_position[index];
        if position != NOT_ELIGIBLE {
            self.eligible_in_flight[position as usize] = self.backends[index].in_flight;
        }
    }

    fn index_of(&self, id: BackendId) -> Option<usize> {
        self.backends.binary_search_by_key(&id, |backend| backend.id).ok()
    }

    fn rebuild_eligible(&mut self) {
        self.eligible.clear();
        let candidate = |backend: &Backend| !backend.removed && !backend.draining;
        self.eligible.extend(
            self.backends
                .iter()
                .enumerate()
                .filter(|(_, backend)| candidate(backend) && backend.available)
                .map(|(index, _)| index),
        );
        self.panic_mode = self.eligible.is_empty();
        if self.panic_mode {
            self.eligible.extend(
                self.backends
                    .iter()
                    .enumerate()
                    .filter(|(_, backend)| candidate(backend))
                    .map(|(index, _)| index),
            );
            if !self.eligible.is_empty() {
                tracing::warn!(backends = self.eligible.len(), "no backend available: panic mode");
            }
        }
        self.eligible_position.clear();
        self.eligible_position.resize(self.backends.len(), NOT_ELIGIBLE);
        self.eligible_in_flight.clear();
        for (position, &index) in self.eligible.iter().enumerate() {
            self.eligible_position[index] = position as u32;
            self.eligible_in_flight.push(self.backends[index].in_flight);
        }
        self.algorithm.on_eligible_changed(&self.backends, &self.eligible);
    }
}

/// Marks a backend that is not in the eligible list.
const NOT_ELIGIBLE: u32 = u32::MAX;

#[cfg(test)]
mod tests;
