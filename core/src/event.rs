//! What happened inside core, as records its driver drains: the seam that telemetry (metrics,
//! traces, the access log) and the simulation's report are built on.
//!
//! After quinn-proto's `Connection::poll_event`: core never calls out. Each machine queues what
//! it did, and the driver, after every call into it, drains [`Exchange::poll_event`] and
//! [`Cluster::poll_event`] until `None` and hands the events to its readers. Nothing a metric
//! or a log line needs should require reaching into core's state: when a figure cannot be
//! computed from these records, the record is missing a field.
//!
//! - An exchange yields exactly one [`ExchangeRecord`] when it ends, whatever ended it (a
//!   rejection, a completed response, a failure, a client that went away), with every attempt
//!   it made in order.
//! - A pool queues its backends' health changes, panic mode entered and left, active-probe
//!   results and retries its budget refused. The queue is bounded ([`POOL_EVENTS_MAX`]): a
//!   driver that stops draining loses the oldest events, counted in
//!   [`ProxyState::events_dropped`], never memory.
//!
//! [`Exchange::poll_event`]: crate::exchange::Exchange::poll_event
//! [`ProxyState::poll_event`]: crate::state::ProxyState::poll_event
//! [`ProxyState::events_dropped`]: crate::state::ProxyState::events_dropped

use std::time::Duration;

use crate::auth::{Caller, Decision};
use crate::balance::BackendId;
use crate::exchange::ExchangeOutcome;
use crate::health::TransitionReason;
use crate::outcome::{AttemptOutcome, Side};
use crate::route::{PoolId, RouteDecision};
use crate::s3::Operation;
use crate::time::Instant;

/// Events a pool holds before the oldest are dropped. A driver drains after every call, so the
/// queue holds a handful at a time; the bound only matters when nobody drains (a test, a
/// stalled telemetry reader), where a health flap must not grow memory without limit. 1,024
/// covers every backend of a large pool changing state several times over.
pub const POOL_EVENTS_MAX: usize = 1024;

/// Something core did or decided.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An exchange ended.
    Exchange(Box<ExchangeRecord>),
    /// A backend became available or unavailable.
    Health(HealthChange),
    /// A pool's balancer entered panic mode (no backend available: it spreads over all of
    /// them rather than refuse every request) or left it.
    PanicMode {
        /// The pool.
        pool: PoolId,
        /// True when entered, false when left.
        entered: bool,
    },
    /// An active probe's result was counted.
    Probe {
        /// The pool.
        pool: PoolId,
        /// The probed backend.
        backend: BackendId,
        /// Its address.
        address: String,
        /// What the probe found.
        healthy: bool,
    },
    /// A backend was due a passive ejection that the pool's ejection cap
    /// (`max_ejected_percent`) refused: as many backends as may be are ejected already.
    EjectionRefused {
        /// The pool.
        pool: PoolId,
        /// The backend that stays available.
        backend: BackendId,
        /// Its address.
        address: String,
    },
    /// A retry that the retry policy allowed was refused by the pool's retry budget.
    RetryRefused {
        /// The pool whose budget was empty.
        pool: PoolId,
        /// The exchange that could not retry.
        exchange: u64,
    },
    /// A configuration was applied.
    ConfigApplied {
        /// Pools configured.
        pools: usize,
        /// Static backends across them (DNS pools fill in later).
        backends: usize,
    },
}

/// A backend's availability changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChange {
    /// The backend's pool.
    pub pool: PoolId,
    /// The backend.
    pub backend: BackendId,
    /// Its address.
    pub address: String,
    /// Available after the change.
    pub available: bool,
    /// Why (an ejection carries its end).
    pub reason: TransitionReason,
}

/// One finished exchange: everything the access log, the request metrics and a trace span
/// need, with no reference into core's state.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeRecord {
    /// The exchange's id; the runtime's request id (`x-amz-request-id`) is derived from it.
    pub id: u64,
    /// The request's method (none for one the proxy served itself without a head).
    pub method: Option<http::Method>,
    /// When the request head reached core.
    pub started_at: Instant,
    /// When the exchange ended.
    pub ended_at: Instant,
    /// The S3 operation, when the head classified.
    pub operation: Option<Operation>,
    /// The bucket, when the request names one.
    pub bucket: Option<String>,
    /// The object key, when the request names one.
    pub key: Option<String>,
    /// Who called (peer, zone, identity).
    pub caller: Caller,
    /// The authorisation decision and its reason, once made.
    pub decision: Option<Decision>,
    /// The pool chosen and why, once routed.
    pub route: Option<RouteDecision>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// How it ended.
    pub outcome: ExchangeOutcome,
    /// The status the client got, when it got one (none when it went away first).
    pub status: Option<u16>,
    /// Whose doing a failure was; `None` for a success.
    pub fault: Option<Side>,
    /// A retry that policy allowed was refused by the retry budget.
    pub retry_budget_exhausted: bool,
    /// The proxy answered `100 Continue` itself, from the head alone.
    pub continued_locally: bool,
    /// Request body bytes taken from the client.
    pub request_body_bytes: u64,
    /// Response body bytes handed to the client.
    pub response_body_bytes: u64,
    /// Its place in a distributed trace, when the runtime traces.
    pub trace: Option<crate::trace::TraceContext>,
    /// What became of its hedge, when the request was hedged or the budget refused one.
    pub hedge: Option<HedgeResult>,
}

/// What became of an exchange's hedge (see [`crate::hedge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HedgeResult {
    /// The delay passed but the hedge budget (or the retry budget) refused the hedge.
    Refused,
    /// The hedge carried the exchange: its answer came first, or the first attempt failed
    /// while it was under way.
    Won,
    /// The first attempt answered first; the hedge was cancelled.
    Lost,
    /// The hedge failed (no connection, a reset, a transient error status); the first
    /// attempt carried on.
    Failed,
}

impl HedgeResult {
    /// A stable name for logs and metric attributes.
    pub const fn name(self) -> &'static str {
        match self {
            HedgeResult::Refused => "refused",
            HedgeResult::Won => "won",
            HedgeResult::Lost => "lost",
            HedgeResult::Failed => "failed",
        }
    }
}

impl ExchangeRecord {
    /// The attempts that were retries: after the first, and not hedges (in the order they
    /// were recorded, which a hedge can make differ from the order they were sent).
    pub fn retried_attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts
            .iter()
            .filter(|attempt| !attempt.hedge && attempt.number > 1)
    }

    /// How many attempts were retries (see [`ExchangeRecord::retried_attempts`]).
    pub fn retries(&self) -> usize {
        self.retried_attempts().count()
    }

    /// How long the exchange took.
    pub fn duration(&self) -> Duration {
        self.ended_at - self.started_at
    }
}

/// One attempt of an exchange against one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The backend's pool.
    pub pool: PoolId,
    /// The backend.
    pub backend: BackendId,
    /// Its address.
    pub address: String,
    /// Attempt number, 1 for the first.
    pub number: u32,
    /// When it was dispatched.
    pub started_at: Instant,
    /// When the backend connection was open.
    pub connected_at: Option<Instant>,
    /// When the whole request was written.
    pub sent_at: Option<Instant>,
    /// The backend's latency to the response head, once it arrived.
    pub first_byte: Option<Duration>,
    /// When the attempt ended.
    pub ended_at: Instant,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Pooled connections found closed by the backend before the request went out, each
    /// replaced by a fresh connection within this attempt (nothing had been sent, so nothing
    /// was repeated).
    pub stale_connections: u32,
    /// Health marked the backend unavailable when it was picked (only in panic mode).
    pub dispatched_unavailable: bool,
    /// The pool was in panic mode when the backend was picked.
    pub panic_mode: bool,
    /// A hedge: sent beside a slow first attempt, not after a failed one.
    pub hedge: bool,
}
