//! The balancing algorithms, behind one trait.
//!
//! Each algorithm sees the pool's backends and the indices of the candidates (eligible
//! backends, or on a retry the eligible ones not yet tried) and returns a position in that
//! candidate list. None of them allocates on the pick path.

use std::fmt;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::{Backend, BalanceParameters};
use crate::time::Instant;

/// A way of choosing one candidate.
pub trait Balance {
    /// Choose among `candidates` (indices into `backends`); returns a position in
    /// `candidates`, or `None` when it is empty.
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        parameters: &BalanceParameters,
        now: Instant,
        rng: &mut R,
    ) -> Option<usize>;

    /// The eligible set changed (health, drain, update). Stateful algorithms reset here.
    fn on_eligible_changed(&mut self, _backends: &[Backend], _eligible: &[usize]) {}
}

/// The algorithm names accepted in configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmKind {
    /// Each backend in turn (smooth weighted round-robin when weights differ).
    RoundRobin,
    /// Uniformly at random (weighted).
    Random,
    /// The backend with the fewest in-flight attempts per unit of weight, random tie-break.
    LeastInFlight,
    /// Two random candidates, the one with the lower peak-EWMA load wins.
    #[default]
    #[serde(rename = "p2c-peak-ewma")]
    P2cPeakEwma,
}

impl AlgorithmKind {
    /// Every algorithm, for tables, benchmarks and the simulation.
    pub const ALL: [AlgorithmKind; 4] = [
        AlgorithmKind::RoundRobin,
        AlgorithmKind::Random,
        AlgorithmKind::LeastInFlight,
        AlgorithmKind::P2cPeakEwma,
    ];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            AlgorithmKind::RoundRobin => "round-robin",
            AlgorithmKind::Random => "random",
            AlgorithmKind::LeastInFlight => "least-in-flight",
            AlgorithmKind::P2cPeakEwma => "p2c-peak-ewma",
        }
    }
}

impl fmt::Display for AlgorithmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Round-robin. With equal weights, a cursor: over any `n` consecutive picks from a stable set
/// of `n` backends, each is picked exactly once. With unequal weights, nginx's smooth weighted
/// round-robin, which spreads a heavy backend's turns instead of bunching them.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    cursor: usize,
    uniform: bool,
    /// Smooth WRR running weights, one per eligible position.
    current: Vec<i64>,
}

impl Balance for RoundRobin {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        _parameters: &BalanceParameters,
        _now: Instant,
        _rng: &mut R,
    ) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        // A retry's reduced candidate list does not match the WRR state: use the cursor.
        if self.uniform || candidates.len() != self.current.len() {
            let position = self.cursor % candidates.len();
            self.cursor = self.cursor.wrapping_add(1);
            return Some(position);
        }
        let mut total = 0i64;
        let mut best = 0usize;
        for (position, &index) in candidates.iter().enumerate() {
            let weight = i64::from(backends[index].spec.weight);
            self.current[position] += weight;
            total += weight;
            if self.current[position] > self.current[best] {
                best = position;
            }
        }
        self.current[best] -= total;
        Some(best)
    }

    fn on_eligible_changed(&mut self, backends: &[Backend], eligible: &[usize]) {
        let first = eligible.first().map(|&index| backends[index].spec.weight);
        self.uniform = eligible
            .iter()
            .all(|&index| Some(backends[index].spec.weight) == first);
        self.current.clear();
        self.current.resize(eligible.len(), 0);
    }
}

/// Uniform random choice, weighted by backend weight.
#[derive(Clone, Debug, Default)]
pub struct RandomChoice;

impl Balance for RandomChoice {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        _parameters: &BalanceParameters,
        _now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let total: u64 = candidates
            .iter()
            .map(|&index| u64::from(backends[index].spec.weight))
            .sum();
        let mut ticket = rng.random_range(0..total);
        for (position, &index) in candidates.iter().enumerate() {
            let weight = u64::from(backends[index].spec.weight);
            if ticket < weight {
                return Some(position);
            }
            ticket -= weight;
        }
        unreachable!("the ticket is below the total weight")
    }
}

/// The candidate with the fewest in-flight attempts per unit of weight; ties broken uniformly
/// at random (reservoir sampling over the tied candidates), so equal backends share evenly
/// instead of the first one taking every tie.
#[derive(Clone, Debug, Default)]
pub struct LeastInFlight;

impl Balance for LeastInFlight {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        _parameters: &BalanceParameters,
        _now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        let (&first, rest) = candidates.split_first()?;
        let mut best = 0usize;
        let mut best_backend = &backends[first];
        let mut ties = 1u32;
        for (offset, &index) in rest.iter().enumerate() {
            let backend = &backends[index];
            // in_flight / weight compared by cross-multiplying, exact in integers.
            let this = u64::from(backend.in_flight) * u64::from(best_backend.spec.weight);
            let that = u64::from(best_backend.in_flight) * u64::from(backend.spec.weight);
            if this < that {
                best = offset + 1;
                best_backend = backend;
                ties = 1;
            } else if this == that {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = offset + 1;
                    best_backend = backend;
                }
            }
        }
        Some(best)
    }
}

/// Power of two choices over peak-EWMA load (after tower's `balance::p2c`): draw two distinct
/// candidates uniformly, keep the one with the lower load. Comparing two instead of all costs
/// O(1) and, unlike "least of all", does not send a burst of requests to the one node that
/// looked best a moment ago (the herd effect), while still avoiding the worst nodes with high
/// probability (Mitzenmacher's result: the maximum load drops from O(log n / log log n) to
/// O(log log n)).
#[derive(Clone, Debug, Default)]
pub struct PowerOfTwoChoices;

impl Balance for PowerOfTwoChoices {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        parameters: &BalanceParameters,
        now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        match candidates.len() {
            0 => None,
            1 => Some(0),
            len => {
                let a = rng.random_range(0..len);
                let mut b = rng.random_range(0..len - 1);
                if b >= a {
                    b += 1;
                }
                debug_assert_ne!(a, b, "p2c compares two distinct candidates");
                let a_load = backends[candidates[a]].load(now, &parameters.ewma);
                let b_load = backends[candidates[b]].load(now, &parameters.ewma);
                let chosen = if b_load < a_load { b } else { a };
                tracing::trace!(
                    a.backend = %backends[candidates[a]].id,
                    a.load = a_load,
                    b.backend = %backends[candidates[b]].id,
                    b.load = b_load,
                    chosen = %backends[candidates[chosen]].id,
                    "p2c"
                );
                Some(chosen)
            }
        }
    }
}

/// The configured algorithm (an enum rather than a trait object: picks are hot and the set is
/// closed).
#[derive(Clone, Debug)]
pub enum Algorithm {
    /// See [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// See [`RandomChoice`].
    Random(RandomChoice),
    /// See [`LeastInFlight`].
    LeastInFlight(LeastInFlight),
    /// See [`PowerOfTwoChoices`].
    P2cPeakEwma(PowerOfTwoChoices),
}

impl Algorithm {
    /// A fresh instance of `kind`.
    pub fn new(kind: AlgorithmKind) -> Self {
        match kind {
            AlgorithmKind::RoundRobin => Algorithm::RoundRobin(RoundRobin::default()),
            AlgorithmKind::Random => Algorithm::Random(RandomChoice),
            AlgorithmKind::LeastInFlight => Algorithm::LeastInFlight(LeastInFlight),
            AlgorithmKind::P2cPeakEwma => Algorithm::P2cPeakEwma(PowerOfTwoChoices),
        }
    }
}

impl Balance for Algorithm {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        backends: &[Backend],
        candidates: &[usize],
        parameters: &BalanceParameters,
        now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        match self {
            Algorithm::RoundRobin(inner) => inner.pick(backends, candidates, parameters, now, rng),
            Algorithm::Random(inner) => inner.pick(backends, candidates, parameters, now, rng),
            Algorithm::LeastInFlight(inner) => {
                inner.pick(backends, candidates, parameters, now, rng)
            }
            Algorithm::P2cPeakEwma(inner) => inner.pick(backends, candidates, parameters, now, rng),
        }
    }

    fn on_eligible_changed(&mut self, backends: &[Backend], eligible: &[usize]) {
        match self {
            Algorithm::RoundRobin(inner) => inner.on_eligible_changed(backends, eligible),
            Algorithm::Random(inner) => inner.on_eligible_changed(backends, eligible),
            Algorithm::LeastInFlight(inner) => inner.on_eligible_changed(backends, eligible),
            Algorithm::P2cPeakEwma(inner) => inner.on_eligible_changed(backends, eligible),
        }
    }
}
