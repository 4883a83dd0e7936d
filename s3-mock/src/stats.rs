//! Per-node counters, readable through the handle and as JSON on the stats port.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// A node's live counters.
#[derive(Debug, Default)]
pub struct NodeStats {
    requests_total: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    busy_nanos: AtomicU64,
    slow_downs: AtomicU64,
    errors_injected: AtomicU64,
    stalls_injected: AtomicU64,
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    by_operation: Mutex<BTreeMap<&'static str, u64>>,
    traced: Mutex<VecDeque<(String, u16)>>,
}

/// How many traced requests a node remembers.
pub const TRACED_KEPT: usize = 64;

/// A copy of a node's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests received (including rejected ones).
    pub requests_total: u64,
    /// Requests whose response has not finished.
    pub in_flight: u64,
    /// The most requests ever in flight at once.
    pub in_flight_max: u64,
    /// Request body bytes (by Content-Length).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Total modelled service time, in milliseconds.
    pub busy_ms: u64,
    /// `503 SlowDown` answers from the capacity model's queue bound.
    pub slow_downs: u64,
    /// Errors answered by fault injection.
    pub errors_injected: u64,
    /// Requests stalled by fault injection (`Faults::stall_rate`).
    pub stalls_injected: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Requests that reached the S3 layer, by operation.
    pub requests_by_operation: BTreeMap<String, u64>,
}

/// Counts one request in flight from its start until dropped, however the request ends
/// (response body finished, connection dropped, or the client gone while it queued).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<NodeStats>);

impl InFlight {
    pub(crate) fn start(stats: &Arc<NodeStats>, bytes_in: u64) -> InFlight {
        stats.requests_total.fetch_add(1, Ordering::Relaxed);
        stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.in_flight_max.fetch_max(now, Ordering::Relaxed);
        InFlight(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "in-flight underflow");
    }
}

impl NodeStats {
    pub(crate) fn bytes_sent(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn busy(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn slow_down(&self) {
        self.slow_downs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error_injected(&self) {
        self.errors_injected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stalled(&self) {
        self.stalls_injected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn operation(&self, name: &'static str) {
        let mut map = self
            .by_operation
            .lock()
            .expect("stats lock is never poisoned: no panics under it");
        *map.entry(name).or_default() += 1;
    }

    /// A request carried `traceparent` and was answered `status`.
    pub(crate) fn traced(&self, traceparent: String, status: u16) {
        let mut traced = self
            .traced
            .lock()
            .expect("stats lock is never poisoned: no panics under it");
        if traced.len() == TRACED_KEPT {
            traced.pop_front();
        }
        traced.push_back((traceparent, status));
    }

    /// The traced requests remembered, oldest first.
    pub fn traced_requests(&self) -> Vec<(String, u16)> {
        let traced = self
            .traced
            .lock()
            .expect("stats lock is never poisoned: no panics under it");
        traced.iter().cloned().collect()
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let by_operation = self
            .by_operation
            .lock()
            .expect("stats lock is never poisoned: no panics under it");
        StatsSnapshot {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            in_flight_max: self.in_flight_max.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            busy_ms: self.busy_nanos.load(Ordering::Relaxed) / 1_000_000,
            slow_downs: self.slow_downs.load(Ordering::Relaxed),
            errors_injected: self.errors_injected.load(Ordering::Relaxed),
            stalls_injected: self.stalls_injected.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            requests_by_operation: by_operation
                .iter()
                .map(|(name, count)| ((*name).to_owned(), *count))
                .collect(),
        }
    }
}
