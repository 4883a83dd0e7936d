//! One pool of backends (a data centre, a cluster): its balancer, health machine, retry
//! budget, RNG and event queue, kept consistent with each other.
//!
//! Every attempt's end goes to both the balancer and the health machine, and every health
//! transition is applied to the balancer before the call returns, so no pick can see an
//! ejection that health made but the balancer did not hear of. A pool is one bulkhead: it sits
//! behind its own lock in [`crate::state::ProxyState`], draws from its own RNG, and queues its
//! own events, so one pool's traffic never waits on another's.

use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::balance::{
    BackendId, BackendSpec, BalanceError, BalanceParameters, Balancer, EwmaParameters, UpdateSummary,
};
use crate::config::{Config, PoolSection};
use crate::event::{Event, HealthChange, POOL_EVENTS_MAX};
use crate::health::{ActiveParameters, Health, HealthEvent, HealthParameters, PassiveParameters, ProbeId};
use crate::hedge::{HedgeParameters, Hedging};
use crate::outcome::{AttemptOutcome, StatusSet};
use crate::retry::{BudgetParameters, RetryBudget};
use crate::route::PoolId;
use crate::time::Instant;
use crate::warm::{Arrivals, WarmParameters, WarmTarget};

/// A probe the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The backend's pool.
    pub pool: PoolId,
    /// The backend.
    pub backend: BackendId,
    /// Its address.
    pub address: String,
    /// The probe's id, to quote in the result.
    pub probe: ProbeId,
}

/// The parameters every pool is built with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolParameters {
    /// Balancing.
    pub balance: BalanceParameters,
    /// Health.
    pub health: HealthParameters,
    /// Retry budget.
    pub budget: BudgetParameters,
    /// Hedged reads.
    pub hedge: HedgeParameters,
    /// Warm connections (per pool: see [`PoolParameters::for_pool`]).
    pub warm: WarmParameters,
}

impl PoolParameters {
    /// The parameters `config` describes.
    pub fn from_config(config: &Config) -> Self {
        let passive = &config.health.passive;
        let active = &config.health.active;
        PoolParameters {
            balance: BalanceParameters {
                algorithm: config.balance.algorithm,
                ewma: EwmaParameters {
                    decay: config.balance.decay.get(),
                    default_latency: config.balance.default_latency.get(),
                    stale_after: config.balance.stale_after.get(),
                },
                failure_penalty: config.balance.failure_penalty.get(),
                failures: StatusSet::of(&passive.failure_statuses),
                ties: crate::balance::TieBand {
                    ratio: config.balance.tie_ratio,
                    floor_ns: config.balance.tie_floor.get().as_nanos() as f64,
                },
            },
            health: HealthParameters {
                passive: passive.enabled.then_some(PassiveParameters {
                    consecutive_failures: passive.consecutive_failures,
                    base_ejection_time: passive.base_ejection_time.get(),
                    max_ejection_time: passive.max_ejection_time.get(),
                    max_ejected_percent: passive.max_ejected_percent,
                    probes_end_ejection: passive.probes_end_ejection,
                }),
                active: active.enabled.then_some(ActiveParameters {
                    interval: active.interval.get(),
                    jitter: active.jitter.get(),
                    timeout: active.timeout.get(),
                    healthy_threshold: active.healthy_threshold,
                    unhealthy_threshold: active.unhealthy_threshold,
                }),
                failures: StatusSet::of(&passive.failure_statuses),
            },
            budget: BudgetParameters {
                ratio: config.retry.budget_ratio,
                min_per_second: config.retry.budget_min_per_second,
                window: config.retry.budget_window.get(),
            },
            hedge: HedgeParameters::from_config(config),
            warm: WarmParameters::default(),
        }
    }

    /// These parameters with pool `section`'s own settings.
    pub fn for_pool(mut self, section: &PoolSection) -> Self {
        self.warm = WarmParameters::from_section(&section.connections);
        self
    }
}

/// One pool: its backends and their load, health and retry budget.
#[derive(Debug)]
pub struct Pool {
    id: PoolId,
    name: String,
    zone: Option<String>,
    balancer: Balancer,
    health: Health,
    budget: RetryBudget,
    hedging: Hedging,
    warm: WarmParameters,
    arrivals: Arrivals,
    rng: StdRng,
    events: VecDeque<Event>,
    events_dropped: u64,
    probes: VecDeque<ProbeRequest>,
    /// The latest `now` any caller passed. Callers on several threads read the clock before
    /// they take the pool's lock, so one may arrive with a `now` a little behind another's:
    /// the pool orders time under its lock ([`Pool::order`]), so that the machines inside it
    /// never see it go backwards.
    last_now: Instant,
}

impl Pool {
    /// A pool named `name` in `zone` with these parameters and backends; its picks and probe
    /// jitter draw from an RNG seeded with `seed`.
    pub fn new(
        id: PoolId,
        name: String,
        zone: Option<String>,
        parameters: PoolParameters,
        specs: Vec<BackendSpec>,
        now: Instant,
        seed: u64,
    ) -> Result<Self, BalanceError> {
        let mut pool = Pool {
            id,
            name,
            zone,
            balancer: Balancer::new(parameters.balance, Vec::new(), now)?,
            health: Health::new(parameters.health),
            budget: RetryBudget::new(parameters.budget),
            hedging: Hedging::new(parameters.hedge),
            warm: parameters.warm,
            arrivals: Arrivals::default(),
            rng: StdRng::seed_from_u64(seed),
            events: VecDeque::new(),
            events_dropped: 0,
            probes: VecDeque::new(),
            last_now: now,
        };
        pool.update_backends(specs, now)?;
        Ok(pool)
    }

    /// The pool's id in the current configuration.
    pub fn id(&self) -> PoolId {
        self.id
    }
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The pool's zone.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
    /// Backends and their load.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }
    /// Backends' health.
    pub fn health(&self) -> &Health {
        &self.health
    }
    /// The retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
    /// Hedging: its delay, recent latency and budget.
    pub fn hedging(&self) -> &Hedging {
        &self.hedging
    }
    /// Events dropped because nobody drained them (see [`POOL_EVENTS_MAX`]).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Replace the backend set (DNS re-resolution, reload), keeping state of those that stay.
    pub fn update_backends(&mut self, specs: Vec<BackendSpec>, now: Instant) -> Result<UpdateSummary, BalanceError> {
        let now = self.order(now);
        let summary = self.balancer.update(specs, now)?;
        for &id in &summary.removed {
            self.health.remove(id);
        }
        for &id in &summary.added {
            self.health.add(id, now, &mut self.rng);
        }
        Ok(summary)
    }

    /// Apply a reloaded configuration in place: the pool's id, zone and parameters change;
    /// its backends, their health, ejection history, latency estimates and in-flight counts
    /// stay. `specs` replaces the static backend set (`None` for a DNS pool, whose backends
    /// come from resolution and stay until the next one).
    pub fn reconfigure(
        &mut self,
        id: PoolId,
        zone: Option<String>,
        parameters: PoolParameters,
        specs: Option<Vec<BackendSpec>>,
        now: Instant,
    ) -> Result<UpdateSummary, BalanceError> {
        let now = self.order(now);
        let summary = match specs {
            Some(specs) => self.balancer.update(specs, now)?,
            None => UpdateSummary::default(),
        };
        self.id = id;
        self.zone = zone;
        self.balancer.set_parameters(parameters.balance);
        self.health.set_parameters(parameters.health, now, &mut self.rng);
        self.budget.set_parameters(parameters.budget);
        self.hedging.set_parameters(parameters.hedge);
        self.warm = parameters.warm;
        for &removed in &summary.removed {
            self.health.remove(removed);
        }
        for &added in &summary.added {
            self.health.add(added, now, &mut self.rng);
        }
        self.apply_health_events();
        Ok(summary)
    }

    /// Start or stop draining a backend; false for an unknown id.
    pub fn set_draining(&mut self, id: BackendId, draining: bool) -> bool {
        self.balancer.set_draining(id, draining)
    }

    /// Process health timers due at `now` (ejections end, probes fall due or time out).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.order(now);
        if self.health.poll_timeout().is_some_and(|due| due <= now) {
            self.health.handle_timeout(now, &mut self.rng);
            self.apply_health_events();
        }
    }

    /// The next instant at which [`Pool::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.health.poll_timeout()
    }

    /// Report a probe's result.
    pub fn handle_probe_result(&mut self, now: Instant, backend: BackendId, probe: ProbeId, healthy: bool) {
        let now = self.order(now);
        if let Some(known) = self.balancer.get(backend) {
            let address = known.spec().address.clone();
            self.push_event(Event::Probe {
                pool: self.id,
                backend,
                address,
                healthy,
            });
        }
        self.health.handle_probe_result(now, backend, probe, healthy);
        self.apply_health_events();
    }

    /// The next probe to send, if any.
    pub fn poll_probe(&mut self) -> Option<ProbeRequest> {
        self.probes.pop_front()
    }

    /// The next queued event of this pool.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queue an event for the driver, dropping the oldest past [`POOL_EVENTS_MAX`].
    pub(crate) fn push_event(&mut self, event: Event) {
        if self.events.len() >= POOL_EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// `now`, or the latest instant a caller already passed if that is later: under the
    /// pool's lock, time only moves forward.
    pub(crate) fn order(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    pub(crate) fn budget_mut(&mut self) -> &mut RetryBudget {
        &mut self.budget
    }

    pub(crate) fn hedging_mut(&mut self) -> &mut Hedging {
        &mut self.hedging
    }

    /// Count a request routed to this pool (for warming ahead of its rate).
    pub(crate) fn record_arrival(&mut self, now: Instant) {
        if self.warm.ahead {
            self.arrivals.record(now);
        }
    }

    /// How many connections each available backend should have open now (empty when the pool
    /// does not warm): see [`crate::warm`].
    pub fn warm_targets(&mut self, now: Instant) -> Vec<WarmTarget> {
        if !self.warm.enabled() {
            return Vec::new();
        }
        let now = self.order(now);
        let available: Vec<&crate::balance::Backend> = self
            .balancer
            .backends()
            .iter()
            .filter(|backend| backend.is_available() && !backend.is_draining() && !backend.is_removed())
            .collect();
        let connections = crate::warm::wanted(
            &self.warm,
            self.arrivals.rates(now),
            self.balancer.typical_latency(),
            available.len(),
        );
        available
            .into_iter()
            .map(|backend| WarmTarget {
                address: backend.spec().address.clone(),
                connections,
            })
            .collect()
    }

    /// The balancer and the RNG, borrowed together for a pick.
    pub(crate) fn balancer_and_rng(&mut self) -> (&mut Balancer, &mut StdRng) {
        (&mut self.balancer, &mut self.rng)
    }

    /// Record the end of an attempt in the balancer and in health, and apply any transition.
    pub(crate) fn end_attempt(&mut self, id: BackendId, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        let now = self.order(now);
        self.balancer.on_end(id, outcome, latency, now);
        if let AttemptOutcome::Response { status } = outcome
            && !self.balancer.parameters().failures.contains(status)
        {
            self.hedging.observe(latency);
        }
        self.health.handle_outcome(now, id, outcome);
        self.apply_health_events();
    }

    fn apply_health_events(&mut self) {
        while let Some(event) = self.health.poll_event() {
            match event {
                HealthEvent::Transition {
                    backend,
                    available,
                    reason,
                } => {
                    tracing::info!(pool = %self.name, %backend, available, ?reason, "backend health changed");
                    let panic_before = self.balancer.is_panic_mode();
                    self.balancer.set_available(backend, available);
                    let address = self
                        .balancer
                        .get(backend)
                        .map(|known| known.spec().address.clone())
                        .unwrap_or_default();
                    self.push_event(Event::Health(HealthChange {
                        pool: self.id,
                        backend,
                        address,
                        available,
                        reason,
                    }));
                    let panic_after = self.balancer.is_panic_mode();
                    if panic_before != panic_after {
                        self.push_event(Event::PanicMode {
                            pool: self.id,
                            entered: panic_after,
                        });
                    }
                }
                HealthEvent::EjectionRefused { backend } => {
                    let address = self
                        .balancer
                        .get(backend)
                        .map(|known| known.spec().address.clone())
                        .unwrap_or_default();
                    self.push_event(Event::EjectionRefused {
                        pool: self.id,
                        backend,
                        address,
                    });
                }
                HealthEvent::Probe { backend, probe } => {
                    let Some(address) = self.balancer.get(backend).map(|b| b.spec().address.clone()) else {
                        continue;
                    };
                    self.probes.push_back(ProbeRequest {
                        pool: self.id,
                        backend,
                        address,
                        probe,
                    });
                }
            }
        }
    }
}

/// The static backends a pool section lists.
pub(crate) fn static_backends(section: &PoolSection) -> Vec<BackendSpec> {
    section
        .backends
        .iter()
        .map(|entry| BackendSpec {
            name: entry.name.clone().unwrap_or_else(|| entry.address.clone()),
            address: entry.address.clone(),
            weight: entry.weight,
            zone: section.zone.clone(),
        })
        .collect()
}
