//! Per-backend pools of keep-alive HTTP/1.1 connections, with a concurrency cap and a bounded
//! wait.
//!
//! Each backend has `max_per_backend` lease permits: a request holds one from checkout until
//! its response body is finished (or abandoned). A request that cannot get a permit within
//! `wait` gives up (the caller answers `503 SlowDown`), so one overloaded node cannot queue an
//! unbounded number of requests in the proxy. Released connections go back to an idle list if
//! they are reusable; idle connections older than `idle_timeout` are closed instead of reused.
//! A connection whose response was not read to the end is never pooled: it is dropped, which
//! closes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::tls::BackendTls;
use crate::request::body::ForwardBody;
use crate::transport::Connect;
use crate::transport::MaybeTls;

/// Pool limits for one pool of backends.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// The pool's name: connections are kept per pool name and backend address, so a reload
    /// that reorders pools keeps each pool's connections its own.
    pub pool: String,
    /// A digest of the settings below, as configured: a reload that changes them gives the
    /// pool's backends fresh connection pools (the old ones close as their leases end);
    /// one that keeps them keeps the connections.
    pub fingerprint: u64,
    /// Concurrent requests (and so connections in use) per backend.
    pub max_per_backend: usize,
    /// Longest wait for a lease before giving up.
    pub wait: Duration,
    /// Requests that may wait for one backend's leases at once.
    pub max_waiting: usize,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
    /// Longest wait for a TCP connection to open (and TLS to be established).
    pub connect_timeout: Duration,
    /// Connections warming may open per second to one backend.
    pub warm_dials_per_second: u32,
    /// TLS to the backends, if configured.
    pub tls: Option<BackendTls>,
}

/// Why no connection could be leased.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Every lease was taken for the whole bounded wait.
    #[error("all {0} connections to the backend are busy")]
    Saturated(usize),
    /// The TCP connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// One backend's connections at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionCounts {
    /// Leased to an attempt, or being opened for one.
    pub in_use: usize,
    /// Open and pooled, ready for reuse.
    pub idle: usize,
    /// Attempts waiting for a slot (the backend holds `max_per_backend`).
    pub waiting: usize,
}

impl CheckoutError {
    /// The failure's kind, as metrics name it (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            CheckoutError::Connect(_) => "connect_failed",
            CheckoutError::Handshake(_) => "handshake_failed",
            CheckoutError::Tls(_) => "tls_failed",
            CheckoutError::ConnectTimeout => "timeout",
            CheckoutError::Saturated(_) => "saturated",
        }
    }
}

struct Idle {
    sender: http1::SendRequest<ForwardBody>,
    since: tokio::time::Instant,
}

struct BackendConnections {
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    waiting: AtomicUsize,
    /// Connections being opened ahead of need (warming).
    opening: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    settings: PoolSettings,
}

/// A leased connection: use [`Lease::sender`], then [`Lease::release`] when its response was
/// read whole, or drop it to close the connection.
pub struct Lease {
    sender: http1::SendRequest<ForwardBody>,
    backend: Arc<BackendConnections>,
    _permit: OwnedSemaphorePermit,
    /// The connection came from the idle list (it may have been closed by the server since).
    pub reused: bool,
}

impl Lease {
    /// The connection's request sender.
    pub fn sender(&mut self) -> &mut http1::SendRequest<ForwardBody> {
        &mut self.sender
    }

    /// Swap in a fresh connection (after the pooled one turned out to be closed).
    pub fn replace(&mut self, sender: http1::SendRequest<ForwardBody>) {
        self.sender = sender;
        self.reused = false;
    }

    /// Return the connection for reuse (if it can take another request); the lease permit is
    /// freed either way.
    ///
    /// Called as the response body ends, when hyper's connection task may not yet have
    /// processed the end of the message: the connection is not "ready" yet but will be in a
    /// moment, so only a closed one is refused here; checkout waits briefly for readiness.
    pub fn release(self) {
        if !self.sender.is_closed() {
            let mut idle = self.backend.idle.lock().expect("idle lock is never poisoned");
            if idle.len() < self.backend.settings.max_per_backend {
                idle.push(Idle {
                    sender: self.sender,
                    since: tokio::time::Instant::now(),
                });
            }
        }
    }
}

/// The right to use one of a backend's connections (a lease permit), before a connection was
/// chosen: reuse an idle one ([`ConnectionPool::reuse`]) or dial ([`ConnectionPool::dial`]).
pub struct Slot {
    backend: Arc<BackendConnections>,
    permit: OwnedSemaphorePermit,
}

/// A backend whose permits are all taken: [`PendingSlot::wait`] for one, bounded; counted
/// among the backend's waiting requests while it lives.
pub struct PendingSlot {
    backend: Arc<BackendConnections>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.backend.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`ConnectionPool::slot`] found.
pub enum Checkout {
    /// A permit at once.
    Ready(Slot),
    /// Every permit is taken: wait for one.
    Wait(PendingSlot),
    /// Every permit is taken and `max_waiting` requests wait already: shed this one.
    Full,
}

impl PendingSlot {
    /// Wait up to the pool's `wait` for a permit; `Saturated` past it.
    pub async fn wait(self) -> Result<Slot, CheckoutError> {
        // Cloned, not moved: dropping `self` uncounts the wait.
        let backend = self.backend.clone();
        match tokio::time::timeout(backend.settings.wait, backend.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot { backend, permit }),
            _ => Err(CheckoutError::Saturated(backend.settings.max_per_backend)),
        }
    }
}

/// Connection pools of every backend, keyed by pool and address.
pub struct ConnectionPool<C: Connect> {
    connector: C,
    /// Where dials are reported (their duration and failures, for the metrics).
    events: Arc<crate::telemetry::Events>,
    /// Pool name, then backend address (looked up by `&str`: no allocation per request).
    backends: Mutex<HashMap<String, HashMap<String, Arc<BackendConnections>>>>,
}

impl<C: Connect> ConnectionPool<C> {
    /// The network the pools dial through.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// An empty pool dialling through `connector`, reporting dials to `events`.
    pub fn new(connector: C, events: Arc<crate::telemetry::Events>) -> Self {
        ConnectionPool {
            connector,
            events,
            backends: Mutex::new(HashMap::new()),
        }
    }

    fn backend(&self, address: &str, settings: &PoolSettings) -> Arc<BackendConnections> {
        let mut backends = self.backends.lock().expect("backends lock is never poisoned");
        if !backends.contains_key(settings.pool.as_str()) {
            backends.insert(settings.pool.clone(), HashMap::new());
        }
        let pool = backends
            .get_mut(settings.pool.as_str())
            .expect("inserted above if it was missing");
        if let Some(backend) = pool.get(address)
            && backend.settings.fingerprint == settings.fingerprint
        {
            return backend.clone();
        }
        let backend = Arc::new(BackendConnections {
            permits: Arc::new(Semaphore::new(settings.max_per_backend.max(1))),
            waiting: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            settings: settings.clone(),
        });
        pool.insert(address.to_owned(), backend.clone());
        backend
    }

    /// Forget the connection pools of pools no longer configured (after a reload); their
    /// idle connections close, leased ones when their exchanges end.
    pub fn retain_pools(&self, names: &[&str]) {
        self.backends
            .lock()
            .expect("backends lock is never poisoned")
            .retain(|name, _| names.contains(&name.as_str()));
    }

    /// A slot of `address`'s connections at once, or the wait for one (the caller reports the
    /// wait to core, then awaits [`PendingSlot::wait`]).
    pub fn slot(&self, address: &str, settings: &PoolSettings) -> Checkout {
        let backend = self.backend(address, settings);
        if let Ok(permit) = backend.permits.clone().try_acquire_owned() {
            return Checkout::Ready(Slot { backend, permit });
        }
        let admitted = backend
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < backend.settings.max_waiting).then_some(waiting + 1)
            })
            .is_ok();
        if admitted {
            Checkout::Wait(PendingSlot { backend })
        } else {
            Checkout::Full
        }
    }

    /// Lease an idle connection of the slot's backend, if one is ready; else hand the slot
    /// back for a dial.
    pub async fn reuse(&self, slot: Slot) -> Result<Lease, Slot> {
        let Slot { backend, permit } = slot;
        while let Some(mut sender) = take_idle(&backend) {
            if !sender.is_ready() {
                // Released a moment ago: give its connection task time to finish the previous
                // exchange. A connection the server closed meanwhile fails here and is dropped.
                match tokio::time::timeout(IDLE_READY_WAIT, sender.ready()).await {
                    Ok(Ok(())) => {}
                    _ => continue,
                }
            }
            return Ok(Lease {
                sender,
                backend,
                _permit: permit,
                reused: true,
            });
        }
        Err(Slot { backend, permit })
    }

    /// Open a new connection for the slot. No timeout of its own: core's connect deadline,
    /// which the caller arms around this call, bounds it.
    pub async fn dial(&self, slot: Slot, address: &str) -> Result<Lease, CheckoutError> {
        let Slot { backend, permit } = slot;
        let sender = self.handshake(address, &backend.settings).await?;
        Ok(Lease {
            sender,
            backend,
            _permit: permit,
            reused: false,
        })
    }

    /// Open a fresh connection to `address` outside an exchange's attempt (probes, and the
    /// replacement of a stale pooled connection), bounded by the pool's connect timeout.
    pub async fn open(
        &self,
        address: &str,
        settings: &PoolSettings,
    ) -> Result<http1::SendRequest<ForwardBody>, CheckoutError> {
        match tokio::time::timeout(settings.connect_timeout, self.handshake(address, settings)).await {
            Ok(result) => result,
            Err(_) => Err(CheckoutError::ConnectTimeout),
        }
    }

    /// Dial `address`, establish TLS if configured, and shake hands (HTTP/1.1); the dial's
    /// duration and result are reported (a dial abandoned at a deadline reports nothing: its
    /// attempt's timeout counts it).
    async fn handshake(
        &self,
        address: &str,
        settings: &PoolSettings,
    ) -> Result<http1::SendRequest<ForwardBody>, CheckoutError> {
        let started = tokio::time::Instant::now();
        let result = self.shake_hands(address, settings).await;
        self.events.runtime(crate::telemetry::RuntimeEvent::BackendDialled {
            pool: settings.pool.clone(),
            address: address.to_owned(),
            duration: started.elapsed(),
            error: result.as_ref().err().map(CheckoutError::kind),
        });
        result
    }

    async fn shake_hands(
        &self,
        address: &str,
        settings: &PoolSettings,
    ) -> Result<http1::SendRequest<ForwardBody>, CheckoutError> {
        let io = self.connector.connect(address).await.map_err(CheckoutError::Connect)?;
        let io = match &settings.tls {
            Some(tls) => tls
                .connect(address, io)
                .await
                .map(MaybeTls::Client)
                .map_err(CheckoutError::Tls)?,
            None => MaybeTls::Plain(io),
        };
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(CheckoutError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The connections of `address` in `pool` now.
    pub fn counts(&self, pool: &str, address: &str) -> ConnectionCounts {
        let backends = self.backends.lock().expect("backends lock is never poisoned");
        let Some(backend) = backends.get(pool).and_then(|pool| pool.get(address)) else {
            return ConnectionCounts::default();
        };
        let limit = backend.settings.max_per_backend.max(1);
        ConnectionCounts {
            in_use: limit.saturating_sub(backend.permits.available_permits()),
            idle: backend.idle.lock().expect("idle lock is never poisoned").len(),
            waiting: backend.waiting.load(Ordering::Acquire),
        }
    }

    /// How many connections to open now to bring `address` to `wanted` (in use, idle and being
    /// opened), at most `dials`; they count as being opened until [`ConnectionPool::warm_one`]
    /// has run once for each.
    pub fn warm_deficit(&self, address: &str, settings: &PoolSettings, wanted: usize, dials: usize) -> usize {
        let backend = self.backend(address, settings);
        let limit = backend.settings.max_per_backend.max(1);
        let in_use = limit.saturating_sub(backend.permits.available_permits());
        let idle = backend.idle.lock().expect("idle lock is never poisoned").len();
        let opening = backend.opening.load(Ordering::Acquire);
        let missing = wanted.min(limit).saturating_sub(in_use + idle + opening).min(dials);
        backend.opening.fetch_add(missing, Ordering::AcqRel);
        missing
    }

    /// Open one connection to `address` ahead of need and keep it idle (one of those
    /// [`ConnectionPool::warm_deficit`] counted). A failed dial is only logged: requests will
    /// meet the backend's state soon enough, and health counts their failures.
    pub async fn warm_one(&self, address: &str, settings: &PoolSettings) {
        let backend = self.backend(address, settings);
        let opened = self.open(address, settings).await;
        backend.opening.fetch_sub(1, Ordering::AcqRel);
        match opened {
            Ok(sender) => {
                let mut idle = backend.idle.lock().expect("idle lock is never poisoned");
                if idle.len() < backend.settings.max_per_backend {
                    idle.push(Idle {
                        sender,
                        since: tokio::time::Instant::now(),
                    });
                }
            }
            Err(error) => tracing::debug!(backend = %address, %error, "warming a connection failed"),
        }
    }

    /// Close idle connections past their idle timeout (called periodically).
    pub fn reap_idle(&self) {
        let backends: Vec<Arc<BackendConnections>> = self
            .backends
            .lock()
            .expect("backends lock is never poisoned")
            .values()
            .flat_map(|pool| pool.values().cloned())
            .collect();
        for backend in backends {
            let timeout = backend.settings.idle_timeout;
            backend
                .idle
                .lock()
                .expect("idle lock is never poisoned")
                .retain(|idle| idle.since.elapsed() < timeout && !idle.sender.is_closed());
        }
    }

    /// Close every idle connection (at shutdown, so backends see a clean close).
    pub fn close_idle(&self) {
        let backends = self.backends.lock().expect("backends lock is never poisoned");
        for backend in backends.values().flat_map(|pool| pool.values()) {
            backend.idle.lock().expect("idle lock is never poisoned").clear();
        }
    }

    /// Idle connections held, over all backends (for tests and the admin API).
    pub fn idle_count(&self) -> usize {
        let backends = self.backends.lock().expect("backends lock is never poisoned");
        backends
            .values()
            .flat_map(|pool| pool.values())
            .map(|backend| backend.idle.lock().expect("idle lock is never poisoned").len())
            .sum()
    }
}

/// The freshest idle connection not known to be closed, dropping stale ones.
fn take_idle(backend: &BackendConnections) -> Option<http1::SendRequest<ForwardBody>> {
    let mut idle = backend.idle.lock().expect("idle lock is never poisoned");
    while let Some(candidate) = idle.pop() {
        if candidate.since.elapsed() < backend.settings.idle_timeout && !candidate.sender.is_closed() {
            return Some(candidate.sender);
        }
    }
    None
}

/// How long checkout waits for a just-released connection to become ready before trying the
/// next one. Readiness follows the end of the previous response within microseconds; a
/// connection still not ready after this long is not worth waiting for.
const IDLE_READY_WAIT: Duration = Duration::from_millis(50);
