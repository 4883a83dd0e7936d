//! The proxy's decision state: every pool (balancer + health + retry budget), the router, and
//! the request-path settings. Exchanges take `&mut Cluster` for each step.
//!
//! A [`Pool`] keeps its balancer and its health machine consistent: every attempt's end goes to
//! both, and every health transition is applied to the balancer before the call returns, so no
//! pick can see an ejection that health made but the balancer did not hear of.
//!
//! The driver (runtime or simulation) owns one `Cluster` and, besides running exchanges:
//!
//! - calls [`Cluster::handle_timeout`] when [`Cluster::poll_timeout`] comes due (ejections
//!   end, probes fall due or time out);
//! - sends each probe from [`Cluster::poll_probe`] and reports it with
//!   [`Cluster::handle_probe_result`];
//! - replaces a pool's backends on DNS re-resolution with [`Cluster::update_backends`].
//!
//! - drains [`Cluster::poll_event`] after each of those calls and after every exchange step
//!   (health changes, panic mode, probe results, refused retries; see [`crate::event`]).
//!
//! Time never goes backwards across calls; randomness comes from the caller's RNG.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;

use crate::auth::{Authorize, DenyAll};
use crate::balance::{
    BackendId, BackendSpec, BalanceError, BalanceParameters, Balancer, EwmaParameters, UpdateSummary,
};
use crate::config::{Config, PoolSection};
use crate::event::{Event, HealthChange, POOL_EVENTS_MAX};
use crate::health::{ActiveParameters, Health, HealthEvent, HealthParameters, PassiveParameters, ProbeId};
use crate::outcome::AttemptOutcome;
use crate::retry::{BudgetParameters, RetryBudget, RetryPolicy};
use crate::route::{BucketRule, PoolId, PoolRoute, Router};
use crate::s3::ClassifyConfig;
use crate::time::Instant;

/// The per-phase timeouts, as durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Reading a request head.
    pub client_header: Duration,
    /// Silence between request body chunks.
    pub client_body_idle: Duration,
    /// A client not accepting response bytes.
    pub response_write_idle: Duration,
    /// Opening a backend connection.
    pub backend_connect: Duration,
    /// A backend not accepting request-body bytes.
    pub backend_send_idle: Duration,
    /// From request sent to response head.
    pub backend_first_byte: Duration,
    /// Silence between backend response body chunks.
    pub backend_body_idle: Duration,
    /// Whole-exchange deadline.
    pub total: Option<Duration>,
}

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

/// One pool: its backends and their load, health and retry budget.
#[derive(Debug)]
pub struct Pool {
    id: PoolId,
    name: String,
    zone: Option<String>,
    balancer: Balancer,
    health: Health,
    budget: RetryBudget,
    events: VecDeque<Event>,
    events_dropped: u64,
}

impl Pool {
    /// A pool named `name` in `zone` with these parameters and backends.
    pub fn new<R: Rng + ?Sized>(
        id: PoolId,
        name: String,
        zone: Option<String>,
        parameters: PoolParameters,
        specs: Vec<BackendSpec>,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, BalanceError> {
        let mut pool = Pool {
            id,
            name,
            zone,
            balancer: Balancer::new(parameters.balance, Vec::new(), now)?,
            health: Health::new(parameters.health),
            budget: RetryBudget::new(parameters.budget),
            events: VecDeque::new(),
            events_dropped: 0,
        };
        pool.update_backends(specs, now, rng)?;
        Ok(pool)
    }

    /// The pool's id.
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

    /// Replace the backend set (DNS re-resolution, reload), keeping state of those that stay.
    pub fn update_backends<R: Rng + ?Sized>(
        &mut self,
        specs: Vec<BackendSpec>,
        now: Instant,
        rng: &mut R,
    ) -> Result<UpdateSummary, BalanceError> {
        let summary = self.balancer.update(specs, now)?;
        for &id in &summary.removed {
            self.health.remove(id);
        }
        for &id in &summary.added {
            self.health.add(id, now, rng);
        }
        Ok(summary)
    }

    /// Start or stop draining a backend; false for an unknown id.
    pub fn set_draining(&mut self, id: BackendId, draining: bool) -> bool {
        self.balancer.set_draining(id, draining)
    }

    pub(crate) fn balancer_mut(&mut self) -> &mut Balancer {
        &mut self.balancer
    }

    pub(crate) fn budget_mut(&mut self) -> &mut RetryBudget {
        &mut self.budget
    }

    /// Queue an event for the driver, dropping the oldest past [`POOL_EVENTS_MAX`].
    pub(crate) fn push_event(&mut self, event: Event) {
        if self.events.len() >= POOL_EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// The next queued event of this pool.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Record the end of an attempt in the balancer and in health, and apply any transition.
    pub(crate) fn end_attempt(&mut self, id: BackendId, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        self.balancer.on_end(id, outcome, latency, now);
        self.health.handle_outcome(now, id, outcome);
        self.apply_health_events(None);
    }

    fn apply_health_events(&mut self, mut probes: Option<&mut VecDeque<ProbeRequest>>) {
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
                HealthEvent::Probe { backend, probe } => {
                    let Some(address) = self.balancer.get(backend).map(|b| b.spec().address.clone()) else {
                        continue;
                    };
                    if let Some(queue) = probes.as_deref_mut() {
                        queue.push_back(ProbeRequest {
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
                },
                failure_penalty: config.balance.failure_penalty.get(),
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
            },
            budget: BudgetParameters {
                ratio: config.retry.budget_ratio,
                min_per_second: config.retry.budget_min_per_second,
                window: config.retry.budget_window.get(),
            },
        }
    }
}

/// Why a cluster could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration did not validate (see `Config::validate`).
    #[error("configuration is invalid: {0}")]
    InvalidConfig(String),
    /// A pool's backend set was refused.
    #[error("pool `{pool}`: {source}")]
    Backends {
        /// The pool's name.
        pool: String,
        /// The balancer's objection.
        source: BalanceError,
    },
}

/// Every pool, the router and the request-path settings.
#[derive(Debug)]
pub struct Cluster {
    pools: Vec<Pool>,
    router: Router,
    classify: ClassifyConfig,
    retry_policy: RetryPolicy,
    timeouts: Timeouts,
    authorizer: Box<dyn Authorize>,
    probes: VecDeque<ProbeRequest>,
    events: VecDeque<Event>,
}

impl Cluster {
    /// Build from a validated configuration. Static backends are added now; DNS pools start
    /// empty until the driver resolves them and calls [`Cluster::update_backends`]. The
    /// authoriser starts as [`DenyAll`]: the driver installs the configured one.
    pub fn from_config<R: Rng + ?Sized>(config: &Config, now: Instant, rng: &mut R) -> Result<Self, ClusterError> {
        let problems = config.validate();
        if let Some(first) = problems.first() {
            return Err(ClusterError::InvalidConfig(format!("{}: {}", first.key, first.message)));
        }
        let parameters = PoolParameters::from_config(config);
        let index_of = |name: &str| config.pools.iter().position(|pool| pool.name == name).map(PoolId);
        let mut pools = Vec::with_capacity(config.pools.len());
        for (index, section) in config.pools.iter().enumerate() {
            let pool = Pool::new(
                PoolId(index),
                section.name.clone(),
                section.zone.clone(),
                parameters,
                static_backends(section),
                now,
                rng,
            )
            .map_err(|source| ClusterError::Backends {
                pool: section.name.clone(),
                source,
            })?;
            pools.push(pool);
        }
        let routes = config
            .pools
            .iter()
            .map(|section| PoolRoute {
                name: section.name.clone(),
                zone: section.zone.clone(),
                failover_to: section.failover_to.iter().filter_map(|name| index_of(name)).collect(),
            })
            .collect();
        let rules = config
            .routing
            .rules
            .iter()
            .filter_map(|rule| {
                index_of(&rule.pool).map(|pool| BucketRule {
                    bucket: rule.bucket.clone(),
                    pool,
                })
            })
            .collect();
        let default_pool = config
            .routing
            .default_pool
            .as_deref()
            .and_then(index_of)
            .unwrap_or(PoolId(0));
        let timeouts = &config.timeouts;
        Ok(Cluster {
            pools,
            router: Router::new(routes, rules, default_pool, config.routing.failover),
            classify: ClassifyConfig::with_base_domains(&config.s3.base_domains),
            retry_policy: RetryPolicy {
                max_attempts: config.retry.max_attempts,
            },
            timeouts: Timeouts {
                client_header: timeouts.client_header.get(),
                client_body_idle: timeouts.client_body_idle.get(),
                response_write_idle: timeouts.response_write_idle.get(),
                backend_connect: timeouts.backend_connect.get(),
                backend_send_idle: timeouts.backend_send_idle.get(),
                backend_first_byte: timeouts.backend_first_byte.get(),
                backend_body_idle: timeouts.backend_body_idle.get(),
                total: timeouts.total.map(|total| total.get()),
            },
            authorizer: Box::new(DenyAll),
            probes: VecDeque::new(),
            events: VecDeque::from([Event::ConfigApplied {
                pools: config.pools.len(),
                backends: config.pools.iter().map(|pool| pool.backends.len()).sum(),
            }]),
        })
    }

    /// Install the authoriser consulted by every exchange.
    pub fn set_authorizer(&mut self, authorizer: Box<dyn Authorize>) {
        self.authorizer = authorizer;
    }

    /// Every pool, in id order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// One pool.
    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.0)
    }

    /// The pool with this name.
    pub fn pool_by_name(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The per-phase timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The classification settings.
    pub fn classify_config(&self) -> &ClassifyConfig {
        &self.classify
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry_policy
    }

    /// True when every pool has an available backend (the `/readyz` rule).
    pub fn is_ready(&self) -> bool {
        self.pools.iter().all(|pool| pool.balancer.has_available())
    }

    /// Replace a pool's backends.
    pub fn update_backends<R: Rng + ?Sized>(
        &mut self,
        pool: PoolId,
        specs: Vec<BackendSpec>,
        now: Instant,
        rng: &mut R,
    ) -> Result<UpdateSummary, ClusterError> {
        let Some(target) = self.pools.get_mut(pool.0) else {
            return Ok(UpdateSummary::default());
        };
        target
            .update_backends(specs, now, rng)
            .map_err(|source| ClusterError::Backends {
                pool: target.name.clone(),
                source,
            })
    }

    /// Drain (or undrain) a backend by pool and id; false if unknown.
    pub fn set_draining(&mut self, pool: PoolId, backend: BackendId, draining: bool) -> bool {
        self.pools
            .get_mut(pool.0)
            .is_some_and(|target| target.set_draining(backend, draining))
    }

    /// Process timers due at `now` in every pool.
    pub fn handle_timeout<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        for pool in &mut self.pools {
            if pool.health.poll_timeout().is_some_and(|due| due <= now) {
                pool.health.handle_timeout(now, rng);
                pool.apply_health_events(Some(&mut self.probes));
            }
        }
    }

    /// The next instant at which [`Cluster::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pools.iter().filter_map(|pool| pool.health.poll_timeout()).min()
    }

    /// The next probe to send, if any.
    pub fn poll_probe(&mut self) -> Option<ProbeRequest> {
        self.probes.pop_front()
    }

    /// Report a probe's result.
    pub fn handle_probe_result(
        &mut self,
        now: Instant,
        pool: PoolId,
        backend: BackendId,
        probe: ProbeId,
        healthy: bool,
    ) {
        if let Some(target) = self.pools.get_mut(pool.0) {
            if let Some(known) = target.balancer.get(backend) {
                let address = known.spec().address.clone();
                target.push_event(Event::Probe {
                    pool,
                    backend,
                    address,
                    healthy,
                });
            }
            target.health.handle_probe_result(now, backend, probe, healthy);
            target.apply_health_events(Some(&mut self.probes));
        }
    }

    /// The next queued event: the cluster's own first, then each pool's in id order. Drain it
    /// until `None` after every call into the cluster or an exchange.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.pools.iter_mut().find_map(Pool::poll_event)
    }

    /// Events dropped because nobody drained them (see [`POOL_EVENTS_MAX`]).
    pub fn events_dropped(&self) -> u64 {
        self.pools.iter().map(|pool| pool.events_dropped).sum()
    }

    pub(crate) fn authorizer(&self) -> &dyn Authorize {
        self.authorizer.as_ref()
    }

    pub(crate) fn pool_mut(&mut self, id: PoolId) -> Option<&mut Pool> {
        self.pools.get_mut(id.0)
    }
}

fn static_backends(section: &PoolSection) -> Vec<BackendSpec> {
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
