//! The proxy's decision state: its pools (each behind its own lock) and the request-path
//! settings (router, classification, retry policy, timeouts, authoriser).
//!
//! **Bulkheads.** Each pool is a [`PoolCell`]: a lock of its own around its [`Pool`], and an
//! atomic copy of "has an available backend" for routing. An exchange takes its pool's lock for
//! the length of one call (a pick, an attempt's end) and never two locks at once; routing reads
//! the other pools' atomics only. So one pool's traffic never waits on another's, and since no
//! call into core awaits anything, no lock is ever held across an `.await` in the runtime.
//!
//! **Reconfiguration in place.** [`ProxyState::reconfigure`] applies a new configuration as a
//! diff: pools are matched by name, and a pool that stays keeps its backends (matched by name
//! too) with their health, ejection history, latency estimates, in-flight counts and RNG;
//! removed pools leave the list and are dropped once their last exchange ends (exchanges hold
//! their pool, not an index); new pools start fresh. The settings are swapped whole.
//!
//! The driver (runtime or simulation), besides running exchanges:
//!
//! - calls [`ProxyState::handle_timeout`] when [`ProxyState::poll_timeout`] comes due
//!   (ejections end, probes fall due or time out);
//! - sends each probe from [`ProxyState::poll_probe`] and reports it with
//!   [`ProxyState::handle_probe_result`];
//! - replaces a DNS pool's backends on re-resolution with [`ProxyState::update_backends`];
//! - drains [`ProxyState::poll_event`] after each of those calls (health changes, panic mode,
//!   probe results, configuration applied; see [`crate::event`]). Events that an exchange's
//!   own calls cause come out of [`crate::exchange::Exchange::poll_event`] instead.
//!
//! Time never goes backwards across calls. Each pool draws from its own RNG, seeded from the
//! state's seed and the pool's position, so a run replays exactly from one seed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::auth::{Authorize, DenyAll};
use crate::balance::{BackendId, BackendSpec, BalanceError, UpdateSummary};
use crate::config::Config;
use crate::event::Event;
use crate::health::ProbeId;
use crate::outcome::StatusSet;
use crate::pool::static_backends;
pub use crate::pool::{Pool, PoolParameters, ProbeRequest};
use crate::retry::RetryPolicy;
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

impl Timeouts {
    /// The timeouts `config` sets.
    pub fn from_config(config: &Config) -> Self {
        let timeouts = &config.timeouts;
        Timeouts {
            client_header: timeouts.client_header.get(),
            client_body_idle: timeouts.client_body_idle.get(),
            response_write_idle: timeouts.response_write_idle.get(),
            backend_connect: timeouts.backend_connect.get(),
            backend_send_idle: timeouts.backend_send_idle.get(),
            backend_first_byte: timeouts.backend_first_byte.get(),
            backend_body_idle: timeouts.backend_body_idle.get(),
            total: timeouts.total.map(|total| total.get()),
        }
    }
}

/// The request-path settings of one configuration: read-only, shared by the exchanges that
/// started under it.
#[derive(Debug)]
pub struct Settings {
    router: Router,
    classify: ClassifyConfig,
    retry_policy: RetryPolicy,
    failures: StatusSet,
    timeouts: Timeouts,
    authorizer: Box<dyn Authorize>,
}

impl Settings {
    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }
    /// The classification settings.
    pub fn classify_config(&self) -> &ClassifyConfig {
        &self.classify
    }
    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry_policy
    }
    /// The backend answers that count as the node failing (`health.passive.failure_statuses`).
    pub fn failure_statuses(&self) -> &StatusSet {
        &self.failures
    }
    /// The per-phase timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    /// The authoriser every exchange consults.
    pub fn authorizer(&self) -> &dyn Authorize {
        self.authorizer.as_ref()
    }
}

/// One configuration's settings and pools, swapped whole on reload. An exchange holds the
/// snapshot it started under (one reference count per exchange, and no lock after that): its
/// pool index stays valid for its whole life, whatever reloads come.
#[derive(Debug)]
pub struct Snapshot {
    settings: Settings,
    pools: Vec<Arc<PoolCell>>,
}

impl Snapshot {
    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// The pools, in id order.
    pub fn pools(&self) -> &[Arc<PoolCell>] {
        &self.pools
    }
}

/// One pool behind its own lock.
#[derive(Debug)]
pub struct PoolCell {
    pool: Mutex<Pool>,
    /// A copy of `has_available()`, refreshed after every locked call, so that routing reads
    /// every pool's availability without taking their locks.
    available: AtomicBool,
}

impl PoolCell {
    fn new(pool: Pool) -> Self {
        let available = AtomicBool::new(pool.balancer().has_available());
        PoolCell {
            pool: Mutex::new(pool),
            available,
        }
    }

    /// Run `f` on the pool under its lock. Keep `f` short: requests to this pool wait on it.
    pub fn with<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> T {
        let mut pool = self.lock();
        let result = f(&mut pool);
        self.available.store(pool.balancer().has_available(), Ordering::Release);
        result
    }

    /// The pool, locked for reading (admin views, tests).
    pub fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .expect("a pool lock is never poisoned: core does not panic")
    }

    /// Replace the pool's backends (a DNS answer), keeping the state of those that stay.
    pub fn update_backends(&self, specs: Vec<BackendSpec>, now: Instant) -> Result<UpdateSummary, StateError> {
        self.with(|pool| {
            pool.update_backends(specs, now).map_err(|source| StateError::Backends {
                pool: pool.name().to_owned(),
                source,
            })
        })
    }

    /// True when the pool has an available backend (as of its last call).
    pub fn has_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }
}

/// Why a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
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

/// Every pool, the settings, and what the state queued for its driver.
#[derive(Debug)]
pub struct ProxyState {
    current: RwLock<Arc<Snapshot>>,
    events: Mutex<VecDeque<Event>>,
    seed: u64,
    pools_created: AtomicU64,
}

impl ProxyState {
    /// Build from a validated configuration. Static backends are added now; DNS pools start
    /// empty until the driver resolves them. The authoriser starts as [`DenyAll`] until one is
    /// installed. Pool RNGs derive from `seed`.
    pub fn from_config(config: &Config, now: Instant, seed: u64) -> Result<Self, StateError> {
        let state = ProxyState {
            current: RwLock::new(Arc::new(Snapshot {
                settings: settings(config, Box::new(DenyAll))?,
                pools: Vec::new(),
            })),
            events: Mutex::new(VecDeque::new()),
            seed,
            pools_created: AtomicU64::new(0),
        };
        let authorizer = Box::new(DenyAll);
        state.reconfigure(config, authorizer, now)?;
        Ok(state)
    }

    /// Apply `config` in place (see the module docs), with `authorizer` for the exchanges that
    /// start from now on. On error nothing changed.
    pub fn reconfigure(&self, config: &Config, authorizer: Box<dyn Authorize>, now: Instant) -> Result<(), StateError> {
        let settings = settings(config, authorizer)?;
        let parameters = PoolParameters::from_config(config);
        let current = self.pools();
        // Check every static backend set first, so that a refused one changes nothing.
        for section in &config.pools {
            crate::balance::Balancer::check_specs(&static_backends(section)).map_err(|source| {
                StateError::Backends {
                    pool: section.name.clone(),
                    source,
                }
            })?;
        }
        let mut next = Vec::with_capacity(config.pools.len());
        for (index, section) in config.pools.iter().enumerate() {
            let id = PoolId(index);
            let specs = static_backends(section);
            let existing = current.iter().find(|cell| cell.lock().name() == section.name);
            let cell = match existing {
                Some(cell) => {
                    let static_specs = section.dns.is_none().then_some(specs);
                    cell.with(|pool| {
                        pool.reconfigure(
                            id,
                            section.zone.clone(),
                            parameters.for_pool(section),
                            static_specs,
                            now,
                        )
                    })
                    .map_err(|source| StateError::Backends {
                        pool: section.name.clone(),
                        source,
                    })?;
                    cell.clone()
                }
                None => {
                    let seed = self.pool_seed();
                    let pool = Pool::new(
                        id,
                        section.name.clone(),
                        section.zone.clone(),
                        parameters.for_pool(section),
                        specs,
                        now,
                        seed,
                    )
                    .map_err(|source| StateError::Backends {
                        pool: section.name.clone(),
                        source,
                    })?;
                    Arc::new(PoolCell::new(pool))
                }
            };
            next.push(cell);
        }
        *self.current.write().expect("the snapshot lock is never poisoned") =
            Arc::new(Snapshot { settings, pools: next });
        self.events
            .lock()
            .expect("the event lock is never poisoned")
            .push_back(Event::ConfigApplied {
                pools: config.pools.len(),
                backends: config.pools.iter().map(|pool| pool.backends.len()).sum(),
            });
        Ok(())
    }

    /// Install the authoriser consulted by exchanges that start from now on.
    pub fn set_authorizer(&self, authorizer: Box<dyn Authorize>) {
        let mut current = self.current.write().expect("the snapshot lock is never poisoned");
        let settings = &current.settings;
        *current = Arc::new(Snapshot {
            settings: Settings {
                router: settings.router.clone(),
                classify: settings.classify.clone(),
                retry_policy: settings.retry_policy,
                failures: settings.failures,
                timeouts: settings.timeouts,
                authorizer,
            },
            pools: current.pools.clone(),
        });
    }

    /// The current configuration's settings and pools.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .expect("the snapshot lock is never poisoned")
            .clone()
    }

    /// Every pool, in id order (cells stay valid across reloads).
    pub fn pools(&self) -> Vec<Arc<PoolCell>> {
        self.snapshot().pools.clone()
    }

    /// One pool of the current configuration.
    pub fn pool(&self, id: PoolId) -> Option<Arc<PoolCell>> {
        self.snapshot().pools.get(id.0).cloned()
    }

    /// The per-phase timeouts of the current configuration.
    pub fn timeouts(&self) -> Timeouts {
        *self.snapshot().settings.timeouts()
    }

    /// True when every pool has an available backend (the `/readyz` rule).
    pub fn is_ready(&self) -> bool {
        self.snapshot().pools.iter().all(|cell| cell.has_available())
    }

    /// Replace a pool's backends (DNS re-resolution).
    pub fn update_backends(
        &self,
        pool: PoolId,
        specs: Vec<BackendSpec>,
        now: Instant,
    ) -> Result<UpdateSummary, StateError> {
        match self.pool(pool) {
            Some(cell) => cell.update_backends(specs, now),
            None => Ok(UpdateSummary::default()),
        }
    }

    /// Drain (or undrain) a backend by pool and id; false if unknown.
    pub fn set_draining(&self, pool: PoolId, backend: BackendId, draining: bool) -> bool {
        self.pool(pool)
            .is_some_and(|cell| cell.with(|target| target.set_draining(backend, draining)))
    }

    /// Process timers due at `now` in every pool.
    pub fn handle_timeout(&self, now: Instant) {
        for cell in self.pools() {
            cell.with(|pool| pool.handle_timeout(now));
        }
    }

    /// The next instant at which [`ProxyState::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pools().iter().filter_map(|cell| cell.lock().poll_timeout()).min()
    }

    /// The next probe to send, if any.
    pub fn poll_probe(&self) -> Option<ProbeRequest> {
        self.pools().iter().find_map(|cell| cell.with(Pool::poll_probe))
    }

    /// Report a probe's result.
    pub fn handle_probe_result(&self, now: Instant, pool: PoolId, backend: BackendId, probe: ProbeId, healthy: bool) {
        if let Some(cell) = self.pool(pool) {
            cell.with(|target| target.handle_probe_result(now, backend, probe, healthy));
        }
    }

    /// The next queued event: the state's own first, then each pool's in id order. Drain it
    /// until `None` after every call into the state.
    pub fn poll_event(&self) -> Option<Event> {
        if let Some(event) = self
            .events
            .lock()
            .expect("the event lock is never poisoned")
            .pop_front()
        {
            return Some(event);
        }
        self.pools().iter().find_map(|cell| cell.with(Pool::poll_event))
    }

    /// Events dropped because nobody drained them (see [`crate::event::POOL_EVENTS_MAX`]).
    pub fn events_dropped(&self) -> u64 {
        self.pools().iter().map(|cell| cell.lock().events_dropped()).sum()
    }

    /// The seed of the next new pool: the first pool draws from the state's seed itself, the
    /// others from seeds spread from it (a SplitMix64 step per pool).
    fn pool_seed(&self) -> u64 {
        let index = self.pools_created.fetch_add(1, Ordering::Relaxed);
        self.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// The settings `config` describes, consulting `authorizer`.
fn settings(config: &Config, authorizer: Box<dyn Authorize>) -> Result<Settings, StateError> {
    let problems = config.validate();
    if let Some(first) = problems.first() {
        return Err(StateError::InvalidConfig(format!("{}: {}", first.key, first.message)));
    }
    let index_of = |name: &str| config.pools.iter().position(|pool| pool.name == name).map(PoolId);
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
    Ok(Settings {
        router: Router::new(routes, rules, default_pool, config.routing.failover),
        classify: ClassifyConfig {
            max_uri_bytes: config.server.max_uri_bytes,
            ..ClassifyConfig::with_base_domains(&config.s3.base_domains)
        },
        retry_policy: RetryPolicy {
            max_attempts: config.retry.max_attempts,
            retried: StatusSet::of(&config.retry.retry_statuses),
        },
        failures: StatusSet::of(&config.health.passive.failure_statuses),
        timeouts: Timeouts::from_config(config),
        authorizer,
    })
}

#[cfg(test)]
mod tests;
