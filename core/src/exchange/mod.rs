//! One request's life, as a state machine that the runtime drives.
//!
//! The exchange decides; the runtime does the IO. The call order:
//!
//! ```text
//! start(state, id, now, head, caller) ──> Reject(error)                             [terminal]
//!                                    └──> Forward(dispatch)
//! refuse(state, id, now, head, caller, error) ─> Reject(error)                      [terminal]
//!                                           (refused before core saw it: a bad signature)
//! serve_locally(state, id, now, caller)   the proxy answers itself (the token
//!     handle_served(now, status)          ─> Done exchange endpoint)                [terminal]
//! for each attempt (Forward or Retry):
//!     handle_connected(now)                 the backend connection is open
//!     handle_body_started(now)              the first request-body byte left the client
//!     handle_request_sent(now)              the whole request is written (bodyless: at once)
//!     then exactly one of:
//!       handle_response_head(.., status)   ─> Return | Retry(dispatch)
//!       handle_connect_failed(..)          ─> Retry(dispatch) | Fail(error)          [terminal]
//!       handle_backend_reset(..)           ─> Retry(dispatch) | Fail(error)          [terminal]
//!       handle_timeout(.., phase)          ─> Retry(dispatch) | Fail(error)          [terminal]
//!       handle_client_gone(..)             ─> Done                                   [terminal]
//!       handle_client_error(.., error)     ─> Fail(error)                            [terminal]
//!       handle_proxy_error(.., error)      ─> Fail(error)                            [terminal]
//!     and, any number of times before that:
//!       handle_stale_connection(now)        a pooled connection was found closed before the
//!                                           request went out; the runtime resent it on a new one
//! after Verify (a CompleteMultipartUpload answered 404: the runtime holds that answer and asks
//! the backend for the object's head with the dispatch's plan):
//!       handle_verified(now, etag, body)    ─> Answer(answer) [terminal] | Return
//!       handle_client_gone(..)             ─> Done                                   [terminal]
//!       handle_timeout(.., Total)          ─> Fail(error)                            [terminal]
//! while an attempt of a bodyless read awaits its head, `poll_hedge` may name an instant; once
//! it passed, handle_hedge_due(now) may answer Hedge(dispatch): send it too, and report it with
//!       handle_hedge_sent(now)              the hedge's request went out
//!       handle_hedge_head(now, status)     ─> Return (the hedge's response goes back; the
//!                                             attempt is dropped) | Continue (it failed;
//!                                             keep waiting) | Retry | Fail
//!       handle_hedge_failed(now, outcome)  ─> Continue | Retry(dispatch) | Fail(error)
//!     while the attempt's own events may answer Return (the hedge is dropped) or AwaitHedge
//!     (the attempt failed: keep waiting for the hedge alone).
//! after Return (the response head goes to the client, its body streams):
//!       handle_response_done(..)           ─> Done                                   [terminal]
//!       handle_backend_reset(..) / handle_timeout(..)  ─> Abort                     [terminal]
//!       handle_client_gone(..)             ─> Done                                   [terminal]
//! ```
//!
//! On `Retry`, the runtime discards whatever it had from the failed attempt (a 5xx body is
//! drained or the connection dropped) and dispatches again. On `Fail` and `Reject` it answers
//! the given S3 error. On `Abort` the response already started, so the only honest signal left
//! is to break the client connection (HTTP/1.1: close without the terminating chunk or before
//! Content-Length is reached; HTTP/2: RST_STREAM): a client must never take a short body for a
//! complete one. When the client goes away or stalls mid-upload, the runtime must drop the
//! backend connection instead of ending the request body, so the backend never commits a
//! truncated object.
//!
//! Every attempt is recorded exactly once in its pool's balancer and health machine, and
//! every exchange ends in exactly one terminal outcome ([`Exchange::outcome`]); after it,
//! further events change nothing. `now` must not go backwards. Once ended, the exchange yields
//! its [`ExchangeRecord`] once from [`Exchange::poll_event`]: the driver drains it after every
//! call (see [`crate::event`]). The runtime reports the bytes it moved with
//! [`Exchange::handle_transferred`] before the terminal event, so that the record carries them.
//!
//! Faults are attributed to the side that caused them, as Pingora's error source does: a
//! client that sends a bad chunk signature or a malformed body fails with its own error
//! (`handle_client_error`), the proxy failing to sign or build the backend request fails as the
//! proxy's (`handle_proxy_error`), and neither counts against the backend's health or latency.
//!
//! **Timers, one owner each.** Core owns the two deadlines of an exchange as a whole: the
//! backend's first byte (from the moment the request was sent whole) and the optional total
//! deadline. [`Exchange::poll_timeout`] says when the next one is due; the driver sleeps until
//! then (re-asking after every event, since events move it) and calls
//! [`Exchange::handle_deadline`], and core decides which deadline it was. The runtime owns the
//! per-IO timeouts, each armed around one IO operation with a duration from
//! [`ProxyState::timeouts`] and reported with `handle_timeout(phase)`: the backend connect (the
//! dial and TLS handshake, inside the connection pool, after any wait for a free connection
//! slot), the backend not taking request-body bytes (send idle), and the idle timeouts of the
//! client's body, the backend's response body and the client reading its response.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Caller, Decision};
use crate::balance::BackendId;
use crate::event::{AttemptRecord, Event, ExchangeRecord, HedgeResult};
use crate::forward::{self, ForwardPlan};
use crate::outcome::{AttemptOutcome, Phase, Side};
use crate::pool::Pool;
use crate::retry::{RetryContext, RetryVerdict};
use crate::route::{PoolId, RouteDecision};
use crate::s3::{ErrorCode, Operation, S3ErrorResponse, S3Request, classify};
use crate::state::{PoolCell, ProxyState, Snapshot, Timeouts};
use crate::time::Instant;
use crate::trace::TraceContext;

/// Where to send an attempt, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// What to send: the backend head, the body's framing, the payload hash to sign (the same
    /// plan for every attempt of the exchange).
    pub plan: Arc<ForwardPlan>,
    /// The backend's pool.
    pub pool: PoolId,
    /// The backend.
    pub backend: BackendId,
    /// Its address (`host:port`).
    pub address: String,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
}

/// What the runtime must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the request to a backend (first attempt).
    Forward(Dispatch),
    /// Discard the failed attempt and send the request to another backend.
    Retry(Dispatch),
    /// Keep the current attempt waiting and send the same (bodyless) request to this other
    /// backend as well: a hedge. Report its progress with the `handle_hedge_*` calls; the
    /// first good response head wins and core says which ([`Exchange::handle_hedge_head`]).
    Hedge(Dispatch),
    /// The current attempt failed while a hedge was under way: discard it and keep waiting
    /// for the hedge, which now carries the exchange.
    AwaitHedge,
    /// Hand the backend's response to the client and stream its body.
    Return,
    /// Hold the backend's response (unread) and send this bodyless request (a HEAD of the
    /// object) to the same backend, then report what it answered with
    /// [`Exchange::handle_verified`].
    Verify(Dispatch),
    /// Answer this response, which the proxy made itself, instead of the backend's (dropped
    /// unread, its connection closed). Terminal.
    Answer(Answer),
    /// Answer this error without contacting any backend. Terminal.
    Reject(S3ErrorResponse),
    /// Answer this error: the attempts failed. Terminal.
    Fail(S3ErrorResponse),
    /// Break the client connection: the response started and cannot complete. Terminal.
    Abort,
    /// Nothing more to send. Terminal.
    Done,
    /// No action: the event does not apply in the current state (a driver bug, asserted in
    /// debug builds), or the exchange already ended.
    Continue,
}

impl Step {
    /// True for steps that end the exchange.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Step::Reject(_) | Step::Fail(_) | Step::Answer(_) | Step::Abort | Step::Done
        )
    }
}

/// A response the proxy makes itself in place of a backend's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body (S3 XML).
    pub body: String,
}

/// How an exchange ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// The backend's response was delivered whole.
    Completed {
        /// Its status.
        status: u16,
    },
    /// Refused before any backend was contacted.
    Rejected {
        /// The error answered.
        code: ErrorCode,
    },
    /// Every attempt failed (or the client stalled mid-upload); the proxy answered an error.
    Failed {
        /// The error answered.
        code: ErrorCode,
    },
    /// The response started and then broke; the client connection was cut.
    Aborted {
        /// What broke it.
        outcome: AttemptOutcome,
    },
    /// The client went away.
    ClientGone,
    /// A CompleteMultipartUpload that the backend had committed but whose success the client
    /// never heard (its retry found the upload gone): the object carries exactly the parts
    /// listed, so the proxy answered the success (`200`) itself.
    Recovered,
    /// The proxy answered the request itself (the token exchange endpoint).
    Served {
        /// The status answered.
        status: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptPhase {
    /// No connection slot of the backend was free: waiting for one (a local limit the runtime
    /// bounds; no connect deadline runs meanwhile).
    WaitingSlot,
    /// Opening the connection since `since` (the dispatch, or the dial after a wait).
    Connecting {
        since: Instant,
    },
    Sending,
    AwaitingHead {
        since: Instant,
    },
}

impl AttemptPhase {
    /// Since when the node has had the whole request (`started_at`, the dispatch, before it
    /// was sent): the node's latency is the wait for its answer from there; time spent
    /// uploading the body measures the object and the client, not the node.
    fn waited_since(self, started_at: Instant) -> Instant {
        match self {
            AttemptPhase::AwaitingHead { since } => since.max(started_at),
            AttemptPhase::WaitingSlot | AttemptPhase::Connecting { .. } | AttemptPhase::Sending => started_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Inside `start`, before the first decision.
    Starting,
    /// Served by the proxy itself, awaiting its answer.
    Local,
    Attempt {
        backend: BackendId,
        started_at: Instant,
        phase: AttemptPhase,
    },
    /// A CompleteMultipartUpload answered `status` (404): the runtime asks the backend whether
    /// the object exists, complete, before core decides what the client gets.
    Verifying {
        backend: BackendId,
        status: u16,
        first_byte: Duration,
    },
    Responding {
        backend: BackendId,
        status: u16,
        first_byte: Duration,
    },
    Finished(ExchangeOutcome),
}

/// The attempt in progress, as it will be recorded.
#[derive(Clone, Debug)]
struct OpenAttempt {
    record: AttemptRecord,
}

/// Whose fault an answered `status` is: `server`'s (the backend, or the proxy for what it
/// serves itself) when `server_failed` says the status is the server failing, any other error
/// (a 4xx, or a `501` a node answers to a request it cannot do) the client's, a success
/// nobody's.
fn fault_of(status: u16, server: Side, server_failed: bool) -> Option<Side> {
    match status {
        _ if server_failed => Some(server),
        400..=599 => Some(Side::Client),
        _ => None,
    }
}

/// One request's life. See the module docs for the call order.
#[derive(Debug)]
pub struct Exchange {
    id: u64,
    /// The request's method (none for an exchange the proxy serves itself).
    method: Option<http::Method>,
    /// The configuration the exchange started under (its settings and pools).
    snapshot: Arc<Snapshot>,
    /// The index, in that snapshot, of the pool it was routed to.
    pool: Option<usize>,
    /// Events its calls made the pool queue, for [`Exchange::poll_event`].
    pending: VecDeque<Event>,
    caller: Caller,
    attempt_records: Vec<AttemptRecord>,
    open: Option<OpenAttempt>,
    continued_locally: bool,
    request_body_bytes: u64,
    response_body_bytes: u64,
    record: Option<Box<ExchangeRecord>>,
    request: Option<S3Request>,
    plan: Option<Arc<ForwardPlan>>,
    decision: Option<Decision>,
    route: Option<RouteDecision>,
    timeouts: Timeouts,
    max_attempts: u32,
    started_at: Instant,
    state: State,
    attempts: u32,
    tried: Vec<BackendId>,
    body_started: bool,
    last_retry_verdict: Option<RetryVerdict>,
    retry_budget_exhausted: bool,
    trace: Option<TraceContext>,
    hedging: HedgeState,
}

/// An exchange's hedge: whether one may still be sent, after what delay, and the one open.
#[derive(Clone, Debug, Default)]
struct HedgeState {
    /// How long the first attempt may wait for its head before a hedge (none: no hedge).
    delay: Option<Duration>,
    /// A hedge was sent or refused: at most one per exchange.
    spent: bool,
    /// The first attempt failed and the hedge became the exchange's attempt; the runtime
    /// still reports it with the `handle_hedge_*` calls.
    promoted: bool,
    result: Option<HedgeResult>,
    /// The hedge while the first attempt is still open beside it.
    open: Option<Box<HedgeAttempt>>,
}

/// A hedge under way beside the exchange's attempt.
#[derive(Clone, Debug)]
struct HedgeAttempt {
    backend: BackendId,
    started_at: Instant,
    sent_at: Option<Instant>,
    open: OpenAttempt,
}

impl Exchange {
    /// Begin exchange `id` for the request head `head` from `caller`: classify, authorise,
    /// route and pick the first backend. Ids are the driver's (one space per process, so that
    /// the record, the logs and the client's request id agree across reloads).
    pub fn start(
        state: &ProxyState,
        id: u64,
        now: Instant,
        head: &http::request::Parts,
        caller: &Caller,
    ) -> (Exchange, Step) {
        Exchange::start_in(state.snapshot(), id, now, head, caller)
    }

    /// [`Exchange::start`] under a given configuration `snapshot`: the driver's, when what it
    /// derived from a configuration (signers, connection settings per pool) must match the
    /// pools the exchange is routed among, across a reload that happens meanwhile.
    pub fn start_in(
        snapshot: Arc<Snapshot>,
        id: u64,
        now: Instant,
        head: &http::request::Parts,
        caller: &Caller,
    ) -> (Exchange, Step) {
        let exchange = Exchange::new(snapshot, id, now, caller, Some(&head.method));
        let request = match classify(head, exchange.snapshot.settings().classify_config()) {
            Ok(request) => request,
            Err(error) => return exchange.reject(now, error.to_response(), Side::Client),
        };
        exchange.admit(now, head, request, caller, forward::plan)
    }

    /// [`Exchange::start_in`] for a browser form upload (PostObject) whose fields the runtime
    /// read before the file: the object is `key` (the form's, `${filename}` replaced), which
    /// is what the upload is authorised for, like a PutObject of that key; the plan re-signs
    /// the form ([`forward::plan_form`]).
    pub fn start_form(
        snapshot: Arc<Snapshot>,
        id: u64,
        now: Instant,
        head: &http::request::Parts,
        caller: &Caller,
        key: String,
    ) -> (Exchange, Step) {
        let exchange = Exchange::new(snapshot, id, now, caller, Some(&head.method));
        let mut request = match classify(head, exchange.snapshot.settings().classify_config()) {
            Ok(request) if request.operation == Operation::PostObject => request,
            Ok(_) => {
                return exchange.reject(
                    now,
                    S3ErrorResponse::new(ErrorCode::InvalidRequest, "not a browser form upload"),
                    Side::Client,
                );
            }
            Err(error) => return exchange.reject(now, error.to_response(), Side::Client),
        };
        if key.len() > crate::s3::KEY_LENGTH_MAX {
            return exchange.reject(
                now,
                S3ErrorResponse::new(ErrorCode::KeyTooLongError, "Your key is too long"),
                Side::Client,
            );
        }
        request.key = Some(key);
        exchange.admit(now, head, request, caller, forward::plan_form)
    }

    /// Exchange `id`, refused with `error` before core could decide anything (its signature
    /// did not verify): it ends at once, as the client's fault, and is recorded like any other.
    pub fn refuse(
        state: &ProxyState,
        id: u64,
        now: Instant,
        head: &http::request::Parts,
        caller: &Caller,
        error: S3ErrorResponse,
    ) -> (Exchange, Step) {
        let mut exchange = Exchange::new(state.snapshot(), id, now, caller, Some(&head.method));
        exchange.request = classify(head, exchange.snapshot.settings().classify_config()).ok();
        exchange.reject(now, error, Side::Client)
    }

    /// Exchange `id`, which the proxy serves itself (the token exchange): no backend is
    /// involved. The driver answers, then reports the status with [`Exchange::handle_served`].
    pub fn serve_locally(state: &ProxyState, id: u64, now: Instant, caller: &Caller) -> Exchange {
        let mut exchange = Exchange::new(state.snapshot(), id, now, caller, None);
        exchange.state = State::Local;
        exchange
    }

    /// The proxy answered a locally served exchange with `status`.
    pub fn handle_served(&mut self, now: Instant, status: u16) -> Step {
        match self.state {
            State::Local => {
                self.finish(
                    now,
                    ExchangeOutcome::Served { status },
                    fault_of(status, Side::Proxy, status >= 500),
                );
                Step::Done
            }
            State::Finished(_) => Step::Continue,
            _ => self.contract_violation("served, but not a local exchange"),
        }
    }

    fn new(snapshot: Arc<Snapshot>, id: u64, now: Instant, caller: &Caller, method: Option<&http::Method>) -> Exchange {
        Exchange {
            id,
            method: method.cloned(),
            timeouts: *snapshot.settings().timeouts(),
            max_attempts: snapshot.settings().retry_policy().max_attempts,
            snapshot,
            pool: None,
            pending: VecDeque::new(),
            caller: caller.clone(),
            attempt_records: Vec::new(),
            open: None,
            continued_locally: false,
            request_body_bytes: 0,
            response_body_bytes: 0,
            record: None,
            request: None,
            plan: None,
            decision: None,
            route: None,
            started_at: now,
            state: State::Starting,
            attempts: 0,
            tried: Vec::new(),
            body_started: false,
            last_retry_verdict: None,
            retry_budget_exhausted: false,
            trace: None,
            hedging: HedgeState::default(),
        }
    }

    /// Authorise, route and dispatch a classified request.
    fn admit(
        self,
        now: Instant,
        head: &http::request::Parts,
        request: S3Request,
        caller: &Caller,
        plan: fn(&http::request::Parts, &S3Request) -> Result<ForwardPlan, S3ErrorResponse>,
    ) -> (Exchange, Step) {
        let mut exchange = self;
        let decision = exchange.snapshot.settings().authorizer().decide(caller, &request);
        let denied = match &decision {
            Decision::Deny { reason } => Some(reason.clone()),
            Decision::Allow { reason } => {
                tracing::debug!(exchange = exchange.id, identity = %caller.identity, %reason, "allowed");
                None
            }
        };
        exchange.request = Some(request);
        exchange.decision = Some(decision);
        if let Some(reason) = denied {
            tracing::info!(exchange = exchange.id, identity = %caller.identity, %reason, "denied");
            return exchange.reject(
                now,
                S3ErrorResponse::new(ErrorCode::AccessDenied, "Access Denied"),
                Side::Client,
            );
        }
        let request = exchange.request.as_ref().expect("set above");
        match plan(head, request) {
            Ok(plan) => exchange.plan = Some(Arc::new(plan)),
            Err(error) => return exchange.reject(now, error, Side::Client),
        }
        let request = exchange.request.as_ref().expect("set above");
        let snapshot = &exchange.snapshot;
        let route = snapshot
            .settings()
            .router()
            .route(request, caller.zone.as_deref(), |pool| {
                snapshot.pools().get(pool.0).is_some_and(|cell| cell.has_available())
            });
        exchange.route = Some(route);
        if route.pool.0 >= snapshot.pools().len() {
            return exchange.reject(
                now,
                S3ErrorResponse::new(ErrorCode::ServiceUnavailable, "no pool serves this request"),
                Side::Proxy,
            );
        }
        exchange.pool = Some(route.pool.0);
        match exchange.dispatch_first(now) {
            Some(dispatch) => {
                // Authorised from the head alone: the proxy answers `100 Continue` itself
                // instead of paying a backend round trip for the handshake.
                exchange.continued_locally = exchange.request.as_ref().is_some_and(|request| request.expect_continue);
                (exchange, Step::Forward(dispatch))
            }
            None => exchange.reject(
                now,
                S3ErrorResponse::new(ErrorCode::ServiceUnavailable, "no backend is available; please retry"),
                Side::Backend,
            ),
        }
    }

    /// The exchange's record, once it has ended; `None` before, and after it was taken once.
    /// Drain it after every call: before the record it yields the pool events the exchange's
    /// own calls caused (health changes, panic mode, refused retries).
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        self.record.take().map(Event::Exchange)
    }

    /// How much of the request body the runtime must keep a copy of, as sent (`None`: none).
    /// A CompleteMultipartUpload's part list is kept, for [`Exchange::handle_verified`].
    pub fn keeps_request_body(&self) -> Option<usize> {
        self.request
            .as_ref()
            .filter(|request| request.operation == Operation::CompleteMultipartUpload)
            .map(|_| crate::s3::completion::COMPLETION_BODY_MAX)
    }

    /// True when the runtime must answer the client's `Expect: 100-continue` itself, now,
    /// before any backend is contacted (the request was authorised from its head).
    pub fn continues_locally(&self) -> bool {
        self.continued_locally
    }

    /// The bytes moved so far: request body bytes taken from the client and response body
    /// bytes handed to it (totals, not increments). Report them before the terminal event so
    /// that the record carries them; this decides nothing.
    pub fn handle_transferred(&mut self, request_body_bytes: u64, response_body_bytes: u64) {
        self.request_body_bytes = self.request_body_bytes.max(request_body_bytes);
        self.response_body_bytes = self.response_body_bytes.max(response_body_bytes);
    }

    /// A pooled backend connection turned out to be closed by the backend before the request
    /// went out, and the runtime is resending on a fresh one within the same attempt (nothing
    /// was sent, so nothing is repeated). Counted in the attempt's record; decides nothing.
    pub fn handle_stale_connection(&mut self, _now: Instant) {
        if let Some(open) = self.open.as_mut() {
            open.record.stale_connections += 1;
        }
    }

    /// The client's request turned out to be bad after it was forwarded (a chunk signature
    /// that does not verify, a malformed aws-chunked body): the attempt ends as the client's
    /// doing, never the backend's, and the client gets `error`. The runtime drops the backend
    /// connection, so the backend commits nothing.
    pub fn handle_client_error(&mut self, now: Instant, error: S3ErrorResponse) -> Step {
        self.local_failure(now, error, AttemptOutcome::Abandoned, Side::Client)
    }

    /// The proxy itself failed the attempt (it could not sign or build the backend request):
    /// the attempt ends as the proxy's fault, never the backend's, and is not retried (another
    /// backend would meet the same failure). The client gets `error`.
    pub fn handle_proxy_error(&mut self, now: Instant, error: S3ErrorResponse) -> Step {
        self.local_failure(now, error, AttemptOutcome::ProxyFault, Side::Proxy)
    }

    fn local_failure(&mut self, now: Instant, error: S3ErrorResponse, outcome: AttemptOutcome, side: Side) -> Step {
        let State::Attempt {
            backend, started_at, ..
        } = self.state
        else {
            return match self.state {
                State::Starting | State::Local | State::Finished(_) => Step::Continue,
                _ => self.contract_violation("a local failure while responding"),
            };
        };
        self.end_attempt(backend, outcome, now - started_at, now);
        self.finish(now, ExchangeOutcome::Failed { code: error.code }, Some(side));
        Step::Fail(error)
    }

    /// The exchange's id (the driver's, unique within its process), for logs and S3 request ids.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Place the exchange in a distributed trace (the runtime's reading of the caller's
    /// `traceparent` and its sampling decision); its record carries it. Call it before the
    /// record is drained: an exchange refused at its start has its record made already, and
    /// gets the context there too. Decides nothing.
    pub fn handle_trace(&mut self, trace: TraceContext) {
        if let Some(record) = self.record.as_mut() {
            record.trace = Some(trace.clone());
        }
        self.trace = Some(trace);
    }
    /// The exchange's trace context, when it has one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
    /// The classified request (absent only when classification failed).
    pub fn request(&self) -> Option<&S3Request> {
        self.request.as_ref()
    }
    /// The forwarding plan, once the request was authorised.
    pub fn plan(&self) -> Option<&Arc<ForwardPlan>> {
        self.plan.as_ref()
    }
    /// The authorisation decision, once made.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }
    /// The routing decision, once made.
    pub fn route(&self) -> Option<&RouteDecision> {
        self.route.as_ref()
    }
    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// Backends tried, in order.
    pub fn tried(&self) -> &[BackendId] {
        &self.tried
    }
    /// The last retry verdict (why the last failure was or was not retried).
    pub fn last_retry_verdict(&self) -> Option<RetryVerdict> {
        self.last_retry_verdict
    }
    /// True when a safe retry was refused by the retry budget.
    pub fn retry_budget_exhausted(&self) -> bool {
        self.retry_budget_exhausted
    }
    /// When the exchange started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }
    /// How the exchange ended, once it has.
    pub fn outcome(&self) -> Option<&ExchangeOutcome> {
        match &self.state {
            State::Finished(outcome) => Some(outcome),
            _ => None,
        }
    }
    /// The backend of the current attempt, or of the response being streamed.
    pub fn backend(&self) -> Option<BackendId> {
        match self.state {
            State::Attempt { backend, .. } | State::Verifying { backend, .. } | State::Responding { backend, .. } => {
                Some(backend)
            }
            State::Starting | State::Local | State::Finished(_) => None,
        }
    }
}

mod handle;
mod hedge;
mod internal;

#[cfg(test)]
mod tests;
