//! The event seam: core's events (exchange records, health changes, panic mode, probes,
//! refused retries, configurations applied) and the few the runtime adds from what only it
//! sees (connections), handed to every observer of the proxy.
//!
//! The runtime drains core's queues after every call into core (see `proxy::Generation`) and
//! emits what it drained once the pool lock is released, so an observer never runs under a
//! lock the request path needs. Observers are the simulation's report, the metrics
//! ([`metrics`]), the access log ([`access_log`]) and the tracer ([`trace`]); none of them
//! reaches into core's state.

pub mod access_log;
pub mod metrics;
pub mod otlp;
pub mod trace;

use std::sync::{Arc, RwLock};

use storefront_core::event::Event;

/// What the runtime saw that core cannot: core has no notion of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeEvent {
    /// A client connection was closed because the client stopped reading its response for
    /// longer than the write-idle timeout.
    SlowReaderCut,
    /// A new client connection was refused at once (`max_connections` reached, or the client
    /// address holds `max_connections_per_client`).
    ConnectionRefused(Refusal),
    /// A client connection was closed for sending no request in time (no complete head within
    /// `client_header`, idle past `client_idle`, no TLS handshake or PROXY header in time).
    ConnectionExpired(Expiry),
    /// A reloaded configuration was refused; the running one stays.
    ConfigRefused,
    /// A request head arrived: its exchange begins (and ends with exactly one record).
    RequestStarted,
    /// A client connection was accepted (and holds a slot of `max_connections`).
    ConnectionOpened,
    /// A client connection accepted before closed.
    ConnectionClosed,
    /// A backend connection was dialled (TCP, TLS where configured, the HTTP handshake).
    BackendDialled {
        /// The backend's pool.
        pool: String,
        /// The backend.
        address: String,
        /// How long the dial took.
        duration: std::time::Duration,
        /// Why it failed (`connect_failed`, `tls_failed`, `handshake_failed`, `timeout`);
        /// none for a connection made.
        error: Option<&'static str>,
    },
}

/// Why a client connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The proxy holds `server.max_connections`.
    AtCapacity,
    /// The client address holds `server.max_connections_per_client`.
    PerClient,
}

/// Which deadline a client connection missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within `timeouts.client_header`.
    Header,
    /// Idle between requests past `timeouts.client_idle`.
    Idle,
    /// No TLS handshake (or PROXY header) within `timeouts.tls_handshake`.
    Handshake,
}

/// A reader of the proxy's events. Called on the request path: keep it short, never block.
pub trait Observer: Send + Sync {
    /// One of core's events.
    fn core_event(&self, event: &Event);
    /// One of the runtime's own.
    fn runtime_event(&self, _event: &RuntimeEvent) {}
}

/// The observers of one proxy.
#[derive(Default)]
pub struct Events {
    observers: RwLock<Vec<Arc<dyn Observer>>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Add an observer; it sees every event from now on.
    pub fn subscribe(&self, observer: Arc<dyn Observer>) {
        self.observers
            .write()
            .expect("the observer list is never poisoned: observers do not panic")
            .push(observer);
    }

    /// Hand core's `events` to every observer, in order.
    pub fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let observers = self.read();
        for event in &events {
            for observer in observers.iter() {
                observer.core_event(event);
            }
        }
    }

    /// Hand one of the runtime's own events to every observer.
    pub fn runtime(&self, event: RuntimeEvent) {
        for observer in self.read().iter() {
            observer.runtime_event(&event);
        }
    }

    /// The observers, read-locked: subscribing is rare (at start), so readers never wait.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<dyn Observer>>> {
        self.observers
            .read()
            .expect("the observer list is never poisoned: observers do not panic")
    }
}
