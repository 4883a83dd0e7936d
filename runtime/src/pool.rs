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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::ForwardBody;
use crate::tls::{BackendTls, MaybeTls};
use crate::transport::Connect;

/// Pool limits for one pool of backends.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Concurrent requests (and so connections in use) per backend.
    pub max_per_backend: usize,
    /// Longest wait for a lease before giving up.
    pub wait: Duration,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
    /// Longest wait for a TCP connection to open (and TLS to be established).
    pub connect_timeout: Duration,
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

struct Idle {
    sender: http1::SendRequest<ForwardBody>,
    since: tokio::time::Instant,
}

struct BackendConnections {
    permits: Arc<Semaphore>,
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

/// Connection pools of every backend, keyed by pool and address.
pub struct ConnectionPool<C: Connect> {
    connector: C,
    /// Pool index, then backend address (looked up by `&str`: no allocation per request).
    backends: Mutex<HashMap<usize, HashMap<String, Arc<BackendConnections>>>>,
}

impl<C: Connect> ConnectionPool<C> {
    /// An empty pool dialling through `connector`.
    pub fn new(connector: C) -> Self {
        ConnectionPool {
            connector,
            backends: Mutex::new(HashMap::new()),
        }
    }

    fn backend(&self, pool: usize, address: &str, settings: &PoolSettings) -> Arc<BackendConnections> {
        let mut backends = self.backends.lock().expect("backends lock is never poisoned");
        let pool = backends.entry(pool).or_default();
        if let Some(backend) = pool.get(address) {
            return backend.clone();
        }
        let backend = Arc::new(BackendConnections {
            permits: Arc::new(Semaphore::new(settings.max_per_backend.max(1))),
            idle: Mutex::new(Vec::new()),
            settings: settings.clone(),
        });
        pool.insert(address.to_owned(), backend.clone());
        backend
    }

    /// Lease a connection to `address`: wait (bounded) for a permit, then reuse an idle
    /// connection or open a new one.
    pub async fn checkout(&self, pool: usize, address: &str, settings: &PoolSettings) -> Result<Lease, CheckoutError> {
        let backend = self.backend(pool, address, settings);
        // A free permit is taken at once; only a saturated backend arms the bounded wait.
        let permit = match backend.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout(settings.wait, backend.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(CheckoutError::Saturated(settings.max_per_backend)),
            },
        };
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
        let sender = self.open(address, settings).await?;
        Ok(Lease {
            sender,
            backend,
            _permit: permit,
            reused: false,
        })
    }

    /// Open a fresh connection to `address` (also used to replace a stale pooled one).
    pub async fn open(
        &self,
        address: &str,
        settings: &PoolSettings,
    ) -> Result<http1::SendRequest<ForwardBody>, CheckoutError> {
        let connect = async {
            let io = self.connector.connect(address).await.map_err(CheckoutError::Connect)?;
            match &settings.tls {
                Some(tls) => tls
                    .connect(address, io)
                    .await
                    .map(MaybeTls::Client)
                    .map_err(CheckoutError::Tls),
                None => Ok(MaybeTls::Plain(io)),
            }
        };
        let io = match tokio::time::timeout(settings.connect_timeout, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(CheckoutError::ConnectTimeout),
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
