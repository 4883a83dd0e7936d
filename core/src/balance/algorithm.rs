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

/// The candidates of one pick: indices into the pool's backends, with their in-flight counts
/// copied into a dense array so that scans over them are cache-friendly and vectorisable.
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    /// Every backend of the pool.
    pub backends: &'a [Backend],
    /// The candidates, as indices into `backends`.
    pub indices: &'a [usize],
    /// `in_flight[k]` is the in-flight count of `backends[indices[k]]`.
    pub in_flight: &'a [u32],
    /// Latency estimate of candidates that have not answered yet (the pool's typical latency).
    pub prior_ns: f64,
}

impl<'a> Candidates<'a> {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    /// True when there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// The candidate at `position`.
    pub fn backend(&self, position: usize) -> &'a Backend {
        &self.backends[self.indices[position]]
    }
    /// The weight of the candidate at `position`.
    fn weight(&self, position: usize) -> u32 {
        self.backend(position).spec.weight
    }
}

/// A way of choosing one candidate.
pub trait Balance {
    /// Choose among `candidates`; returns a position in them, or `None` when there is none.
    fn pick<R: Rng + ?Sized>(
        &mut self,
        candidates: Candidates<'_>,
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
        candidates: Candidates<'_>,
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
        for position in 0..candidates.len() {
            let weight = i64::from(candidates.weight(position));
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
        self.uniform = uniform_weights(backends, eligible);
        self.current.clear();
        self.current.resize(eligible.len(), 0);
    }
}

/// Uniform random choice, weighted by backend weight. Equal weights draw one index; unequal
/// weights draw a ticket and binary-search the cumulative weights, which are rebuilt when the
/// eligible set changes.
#[derive(Clone, Debug, Default)]
pub struct RandomChoice {
    uniform: bool,
    /// Cumulative weights over the eligible set (`cumulative[i]` = weights of 0..=i).
    cumulative: Vec<u64>,
}

impl Balance for RandomChoice {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        candidates: Candidates<'_>,
        _parameters: &BalanceParameters,
        _now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        if self.uniform {
            return Some(rng.random_range(0..candidates.len()));
        }
        if candidates.len() == self.cumulative.len() {
            let total = *self.cumulative.last().expect("non-empty");
            let ticket = rng.random_range(0..total);
            return Some(self.cumulative.partition_point(|&sum| sum <= ticket));
        }
        // A retry's reduced candidate list: scan its weights.
        let total: u64 = (0..candidates.len())
            .map(|position| u64::from(candidates.weight(position)))
            .sum();
        let mut ticket = rng.random_range(0..total);
        for position in 0..candidates.len() {
            let weight = u64::from(candidates.weight(position));
            if ticket < weight {
                return Some(position);
            }
            ticket -= weight;
        }
        unreachable!("the ticket is below the total weight")
    }

    fn on_eligible_changed(&mut self, backends: &[Backend], eligible: &[usize]) {
        self.uniform = uniform_weights(backends, eligible);
        self.cumulative.clear();
        let mut sum = 0u64;
        for &index in eligible {
            sum += u64::from(backends[index].spec.weight);
            self.cumulative.push(sum);
        }
    }
}

/// The candidate with the fewest in-flight attempts per unit of weight; ties broken uniformly
/// at random, so equal backends share evenly instead of the first one taking every tie.
///
/// Three passes over the dense in-flight array (least value, number of ties, the k-th tie for
/// one random k) instead of one pass with a random draw per tie: the passes are plain
/// reductions the compiler vectorises, and per-tie draws cost more.
#[derive(Clone, Debug, Default)]
pub struct LeastInFlight {
    /// All eligible weights are equal: compare in-flight counts directly.
    uniform: bool,
}

impl Balance for LeastInFlight {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        candidates: Candidates<'_>,
        _parameters: &BalanceParameters,
        _now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        let in_flight = candidates.in_flight;
        if self.uniform {
            let least = in_flight.iter().copied().min()?;
            let ties: usize = in_flight.iter().map(|&count| usize::from(count == least)).sum();
            let chosen = if ties > 1 { rng.random_range(0..ties) } else { 0 };
            // Count down to the chosen tie: the only branch is the exit, which predicts well.
            let mut remaining = chosen + 1;
            for (position, &count) in in_flight.iter().enumerate() {
                remaining -= usize::from(count == least);
                if remaining == 0 {
                    return Some(position);
                }
            }
            unreachable!("the chosen tie is among the candidates");
        }
        if candidates.is_empty() {
            return None;
        }
        // Weighted: compare in_flight / weight by cross-multiplying, exact in integers.
        let load = |position: usize| (in_flight[position], candidates.weight(position));
        let mut least = load(0);
        let mut ties = 0usize;
        for position in 0..candidates.len() {
            match compare_load(load(position), least) {
                std::cmp::Ordering::Less => {
                    least = load(position);
                    ties = 1;
                }
                std::cmp::Ordering::Equal => ties += 1,
                std::cmp::Ordering::Greater => {}
            }
        }
        let chosen = if ties > 1 { rng.random_range(0..ties) } else { 0 };
        (0..candidates.len())
            .filter(|&position| compare_load(load(position), least).is_eq())
            .nth(chosen)
    }

    fn on_eligible_changed(&mut self, backends: &[Backend], eligible: &[usize]) {
        self.uniform = uniform_weights(backends, eligible);
    }
}

/// `a.0 / a.1` against `b.0 / b.1` (in-flight over weight), exactly.
fn compare_load(a: (u32, u32), b: (u32, u32)) -> std::cmp::Ordering {
    (u64::from(a.0) * u64::from(b.1)).cmp(&(u64::from(b.0) * u64::from(a.1)))
}

/// True when every eligible backend has the same weight.
fn uniform_weights(backends: &[Backend], eligible: &[usize]) -> bool {
    let first = eligible.first().map(|&index| backends[index].spec.weight);
    eligible.iter().all(|&index| Some(backends[index].spec.weight) == first)
}

/// Power of two choices over peak-EWMA load (after tower's `balance::p2c`): draw two distinct
/// candidates uniformly, keep the one with the lower load (two idle candidates whose loads are
/// within the pool's [`TieBand`](super::TieBand) tie: the one picked least recently wins).
/// Comparing two instead of all costs
/// O(1) and, unlike "least of all", does not send a burst of requests to the one node that
/// looked best a moment ago (the herd effect), while still avoiding the worst nodes with high
/// probability (Mitzenmacher's result: the maximum load drops from O(log n / log log n) to
/// O(log log n)).
#[derive(Clone, Debug, Default)]
pub struct PowerOfTwoChoices;

impl Balance for PowerOfTwoChoices {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        candidates: Candidates<'_>,
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
                let a_load = candidates.backend(a).load(now, &parameters.ewma, candidates.prior_ns);
                let b_load = candidates.backend(b).load(now, &parameters.ewma, candidates.prior_ns);
                // Only idle loads tie: their differences are the noise of single answers. Once
                // requests are in flight, the in-flight factor is the signal, and a tie broken by
                // "picked least recently" would keep going back to a node whose requests are
                // stuck (it is avoided, so it is the least recently picked).
                let idle = candidates.in_flight[a] == 0 && candidates.in_flight[b] == 0;
                let chosen = if idle && parameters.ties.ties(a_load, b_load) {
                    // Too close to tell: the one picked least recently.
                    if candidates.backend(b).last_pick() < candidates.backend(a).last_pick() {
                        b
                    } else {
                        a
                    }
                } else if b_load < a_load {
                    b
                } else {
                    a
                };
                tracing::trace!(
                    a.backend = %candidates.backend(a).id,
                    a.load = a_load,
                    b.backend = %candidates.backend(b).id,
                    b.load = b_load,
                    chosen = %candidates.backend(chosen).id,
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
            AlgorithmKind::Random => Algorithm::Random(RandomChoice::default()),
            AlgorithmKind::LeastInFlight => Algorithm::LeastInFlight(LeastInFlight::default()),
            AlgorithmKind::P2cPeakEwma => Algorithm::P2cPeakEwma(PowerOfTwoChoices),
        }
    }
}

impl Balance for Algorithm {
    fn pick<R: Rng + ?Sized>(
        &mut self,
        candidates: Candidates<'_>,
        parameters: &BalanceParameters,
        now: Instant,
        rng: &mut R,
    ) -> Option<usize> {
        match self {
            Algorithm::RoundRobin(inner) => inner.pick(candidates, parameters, now, rng),
            Algorithm::Random(inner) => inner.pick(candidates, parameters, now, rng),
            Algorithm::LeastInFlight(inner) => inner.pick(candidates, parameters, now, rng),
            Algorithm::P2cPeakEwma(inner) => inner.pick(candidates, parameters, now, rng),
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
