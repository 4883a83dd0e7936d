//! One attempt of an exchange against one backend: a connection slot, a connection (reused or
//! dialled), the planned head re-signed, the body streamed, the response head; every wait
//! bounded by core's deadlines or one of the runtime's per-IO timeouts, every outcome
//! reported to core.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use storefront_core::exchange::{Dispatch, Exchange, Step};
use storefront_core::forward::{self, BodyFraming, ForwardPlan};
use storefront_core::outcome::{Phase, Side};
use storefront_core::s3::{ErrorCode, S3ErrorResponse};

use crate::backend::pool::{Checkout, Lease};
use crate::request::body::{BodyEnd, BodySource, Coalescing, ForwardBody};
use crate::request::form::FormUpload;
use crate::request::generation::Generation;
use crate::request::hedge::{self, HedgeEnd, HedgeHead};
use crate::request::response::{ProxyBody, ResponseBody, error_response};
use crate::request::{ConnState, Proxy};
use crate::transport::Connect;

/// What expired while an attempt waited on its backend.
enum Expiry {
    /// A timeout the runtime owns (per IO operation).
    Phase(Phase),
    /// The deadline core reported (`Exchange::poll_timeout`).
    Core,
}

/// What woke an attempt waiting for its response head.
enum Woke<T> {
    /// The attempt's own answer (or failure).
    Answer(T),
    /// The hedge beside it ended.
    Hedge(HedgeEnd),
    /// Core's next deadline (or the hedge delay) came.
    Due,
}

/// Sleep until `due`, or forever when there is no deadline.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// How an attempt ended for the handler: the next step, or a response to send.
pub(crate) enum AttemptResult {
    Next(Step),
    Respond(http::Response<ProxyBody>),
}

/// One attempt's context: the exchange it belongs to and the IO it drives.
pub(crate) struct Attempt<'a, C: Connect> {
    pub(crate) proxy: &'a Arc<Proxy<C>>,
    pub(crate) generation: &'a Arc<Generation>,
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) source: &'a Arc<BodySource>,
    pub(crate) conn: &'a Arc<ConnState>,
    pub(crate) exchange: Option<Exchange>,
    pub(crate) request_id: &'a str,
    /// A form upload's fields, re-signed per attempt.
    pub(crate) form: Option<&'a FormUpload>,
}

impl<C: Connect> Drop for Attempt<'_, C> {
    fn drop(&mut self) {
        // hyper drops the handler when the client's connection closes before the response
        // head: an attempt still open then must end (its in-flight count, its backend's
        // health), or the balancer would count it forever.
        if self
            .exchange
            .as_ref()
            .is_some_and(|exchange| exchange.outcome().is_none())
        {
            tracing::debug!("client left before the response head; attempt abandoned");
            self.step(|exchange, now| exchange.handle_client_gone(now));
        }
    }
}

impl<C: Connect> Attempt<'_, C> {
    /// Run `f` on the exchange with the cluster locked and the current time.
    pub(crate) fn step(&mut self, f: impl FnOnce(&mut Exchange, storefront_core::time::Instant) -> Step) -> Step {
        let now = self.proxy.clock.now();
        let exchange = self
            .exchange
            .as_mut()
            .expect("the exchange lives until the response is handed over");
        exchange.handle_transferred(self.source.received(), 0);
        self.generation.step(exchange, |exchange| f(exchange, now))
    }

    pub(crate) async fn run(&mut self, dispatch: Dispatch) -> AttemptResult {
        let settings = self
            .generation
            .pool_settings(dispatch.pool.0)
            .expect("dispatch names a configured pool");
        // A connection slot: at once, or after a bounded wait (the proxy's own limit, during
        // which core runs no connect deadline).
        let slot = match self.proxy.connections.slot(&dispatch.address, settings) {
            Checkout::Ready(slot) => slot,
            Checkout::Full => {
                tracing::debug!(backend = %dispatch.address, "backend connection limit and wait queue full: shedding");
                return AttemptResult::Next(self.step(|exchange, now| exchange.handle_local_limit(now)));
            }
            Checkout::Wait(pending) => {
                self.step(|exchange, now| {
                    exchange.handle_waiting_for_connection(now);
                    Step::Continue
                });
                let due = self.due();
                let waited = tokio::select! {
                    biased;
                    waited = pending.wait() => Some(waited),
                    () = sleep_until_due(due) => None,
                };
                match waited {
                    Some(Ok(slot)) => slot,
                    Some(Err(error)) => {
                        tracing::warn!(backend = %dispatch.address, %error, "backend connection limit reached");
                        return AttemptResult::Next(self.step(|exchange, now| exchange.handle_local_limit(now)));
                    }
                    None => return AttemptResult::Next(self.deadline()),
                }
            }
        };
        // An idle connection, or a new one under core's connect deadline.
        let mut lease = match self.proxy.connections.reuse(slot).await {
            Ok(lease) => lease,
            Err(slot) => {
                self.step(|exchange, now| {
                    exchange.handle_dialing(now);
                    Step::Continue
                });
                let due = self.due();
                let dialled = tokio::select! {
                    biased;
                    // Boxed: a TLS handshake's future is kilobytes, and a request that reuses a
                    // connection (most) would move them with every step.
                    dialled = Box::pin(self.proxy.connections.dial(slot, &dispatch.address)) => Some(dialled),
                    () = sleep_until_due(due) => None,
                };
                match dialled {
                    Some(Ok(lease)) => lease,
                    Some(Err(error)) => {
                        tracing::info!(backend = %dispatch.address, %error, "backend connect failed");
                        return AttemptResult::Next(self.step(|exchange, now| exchange.handle_connect_failed(now)));
                    }
                    None => {
                        tracing::info!(backend = %dispatch.address, "backend connect timed out");
                        return AttemptResult::Next(self.deadline());
                    }
                }
            }
        };
        let connected_at = tokio::time::Instant::now();
        self.step(|exchange, now| {
            exchange.handle_connected(now);
            Step::Continue
        });
        let signer = self
            .generation
            .signer(dispatch.pool.0)
            .expect("every pool has a signer");
        let prefix = match (dispatch.plan.body, self.form) {
            (BodyFraming::Form, Some(form)) => Some(form.prefix(signer, self.proxy.clock.wall())),
            _ => None,
        };
        let mut request = match backend_request(&dispatch.plan, &dispatch.address, self.source.clone(), prefix) {
            Ok(request) => request,
            Err(error) => return self.unforwardable(Side::Proxy, error),
        };
        {
            let (mut head, body) = request.into_parts();
            // The trace context goes in before signing: the backend's signature check covers it.
            if let (Some(tracer), Some(trace)) = (
                &self.proxy.tracer,
                self.exchange.as_ref().and_then(|exchange| exchange.trace()),
            ) {
                tracer.inject(trace, dispatch.attempt, &mut head.headers);
            }
            if let Err(error) = signer.sign(&mut head, &dispatch.plan.payload_hash, self.proxy.clock.wall()) {
                tracing::error!(%error, "re-signing failed");
                // The proxy's own failure: it never counts against the backend.
                return self.unforwardable(
                    Side::Proxy,
                    S3ErrorResponse::new(
                        ErrorCode::InternalError,
                        "the proxy could not sign the request for the storage node",
                    ),
                );
            }
            request = http::Request::from_parts(head, body);
        }
        let send_idle = self.generation.timeouts().backend_send_idle;
        let mut pending = Some(request);
        // A hedge of this request, once core asks for one (bodyless reads only).
        let mut hedging = None;
        let outcome = loop {
            let request = pending.take().expect("a request to send");
            let send = lease.sender().try_send_request(request);
            tokio::pin!(send);
            // Until the body is sent whole, only the total deadline of core's runs, and the
            // runtime's send-idle timeout: a backend that stops taking the body would otherwise
            // hold the upload forever.
            let due = self.due();
            let sending = tokio::select! {
                biased;
                result = &mut send => Ok(result),
                () = self.source.sent() => Err(None),
                () = self.source.stalled(send_idle) => Err(Some(Expiry::Phase(Phase::BackendSendIdle))),
                () = sleep_until_due(due) => Err(Some(Expiry::Core)),
            };
            let result = match sending {
                Ok(result) => Ok(result),
                Err(Some(expiry)) => Err(expiry),
                Err(None) => {
                    // Sent whole: core's first-byte deadline runs from here, and the hedge
                    // delay of a bodyless read.
                    self.report_sent(connected_at);
                    loop {
                        let due = self.due();
                        let woke = tokio::select! {
                            biased;
                            result = &mut send => Woke::Answer(result),
                            end = hedge::ended(&mut hedging) => Woke::Hedge(end),
                            () = sleep_until_due(due) => Woke::Due,
                        };
                        match woke {
                            Woke::Answer(result) => break Ok(result),
                            Woke::Hedge(end) => {
                                hedging = None;
                                if let Some(result) = self.hedge_ended(end) {
                                    return result;
                                }
                            }
                            // The hedge delay, handled here; any other deadline once this
                            // attempt's progress has all been reported (below).
                            Woke::Due if self.hedge_due() => {
                                if let Step::Hedge(dispatch) = self.step(|exchange, now| exchange.handle_hedge_due(now))
                                {
                                    let trace = self.exchange.as_ref().and_then(|exchange| exchange.trace().cloned());
                                    hedging = Some(Box::pin(hedge::run(
                                        self.proxy.clone(),
                                        self.generation.clone(),
                                        dispatch,
                                        self.source.clone(),
                                        trace,
                                    )));
                                }
                            }
                            Woke::Due => break Err(Expiry::Core),
                        }
                    }
                }
            };
            match result {
                Ok(Err(mut error)) if lease.reused => match error.take_message() {
                    // The pooled connection was closed by the server before our request went
                    // out: nothing was sent, so send it on a fresh connection.
                    Some(unsent) => {
                        let due = self.due();
                        let opened = tokio::select! {
                            biased;
                            opened = Box::pin(self.proxy.connections.open(&dispatch.address, settings)) => Some(opened),
                            () = sleep_until_due(due) => None,
                        };
                        match opened {
                            Some(Ok(sender)) => {
                                self.step(|exchange, now| {
                                    exchange.handle_stale_connection(now);
                                    Step::Continue
                                });
                                lease.replace(sender);
                                pending = Some(unsent);
                            }
                            Some(Err(_)) => break Err(()),
                            None => break Ok(Err(Expiry::Core)),
                        }
                    }
                    None => break Ok(Ok(Err(error))),
                },
                other => break Ok(other),
            }
        };
        let now = self.proxy.clock.now();
        if self.source.started() {
            self.step(|exchange, _| {
                exchange.handle_body_started(now);
                Step::Continue
            });
        }
        self.report_sent(connected_at);
        let result = match outcome {
            Err(_) => {
                return AttemptResult::Next(self.step(|exchange, now| exchange.handle_connect_failed(now)));
            }
            Ok(result) => result,
        };
        let ended = match result {
            Err(Expiry::Phase(phase)) => {
                AttemptResult::Next(self.step(|exchange, now| exchange.handle_timeout(now, phase)))
            }
            Err(Expiry::Core) => AttemptResult::Next(self.deadline()),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let step = self.step(|exchange, now| exchange.handle_response_head(now, status));
                match step {
                    Step::Return => AttemptResult::Respond(self.respond(response, lease)),
                    Step::Verify(check) => Box::pin(self.verify(check, response, lease)).await,
                    other => AttemptResult::Next(other),
                }
            }
            Ok(Err(error)) => match self.source.end() {
                Some(BodyEnd::ClientGone) => {
                    tracing::debug!(error = %error.error(), "client left mid-upload; backend request aborted");
                    AttemptResult::Next(self.step(|exchange, now| exchange.handle_client_gone(now)))
                }
                Some(BodyEnd::BadSignature) => {
                    tracing::info!("a chunk signature did not verify: upload aborted");
                    self.unforwardable(
                        Side::Client,
                        S3ErrorResponse::new(
                            ErrorCode::SignatureDoesNotMatch,
                            "a chunk signature of the upload does not match",
                        ),
                    )
                }
                Some(BodyEnd::OutOfRange(code)) => {
                    tracing::info!(
                        code = code.as_str(),
                        "a form upload's file is outside its policy's size range: upload aborted"
                    );
                    self.unforwardable(
                        Side::Client,
                        S3ErrorResponse::new(code, "the file is outside the size range the form's policy allows"),
                    )
                }
                Some(BodyEnd::Malformed) => self.unforwardable(
                    Side::Client,
                    S3ErrorResponse::new(ErrorCode::InvalidRequest, "malformed aws-chunked request body"),
                ),
                Some(BodyEnd::IdleTimeout) => {
                    AttemptResult::Next(self.step(|exchange, now| exchange.handle_timeout(now, Phase::ClientBodyIdle)))
                }
                _ => {
                    tracing::info!(backend = %dispatch.address, error = %error.error(), "backend request failed");
                    AttemptResult::Next(self.step(|exchange, now| exchange.handle_backend_reset(now)))
                }
            },
        };
        // The attempt failed while its hedge was under way: the hedge carries on alone.
        match (ended, hedging) {
            (AttemptResult::Next(Step::AwaitHedge), Some(hedge)) => self.await_hedge(hedge).await,
            (ended, _) => ended,
        }
    }

    /// The hedge beside this attempt ended with `end`: tell core. `Some` when that decided
    /// the exchange (the hedge's response goes back, or a step follows); `None` when the
    /// hedge failed and this attempt carries on.
    fn hedge_ended(&mut self, end: HedgeEnd) -> Option<AttemptResult> {
        match end {
            HedgeEnd::Head(head) => {
                let HedgeHead {
                    response,
                    lease,
                    sent_at,
                } = *head;
                let status = response.status().as_u16();
                let step = self.step(|exchange, now| {
                    exchange.handle_hedge_sent(sent_at);
                    exchange.handle_hedge_head(now, status)
                });
                match step {
                    Step::Return => Some(AttemptResult::Respond(self.respond(response, lease))),
                    // Its answer is dropped unread, and its connection with it.
                    Step::Continue => None,
                    other => Some(AttemptResult::Next(other)),
                }
            }
            HedgeEnd::Failed { outcome, sent_at } => {
                let step = self.step(|exchange, now| {
                    if let Some(sent_at) = sent_at {
                        exchange.handle_hedge_sent(sent_at);
                    }
                    exchange.handle_hedge_failed(now, outcome)
                });
                match step {
                    Step::Continue => None,
                    other => Some(AttemptResult::Next(other)),
                }
            }
        }
    }

    /// This attempt failed and core handed the exchange to its hedge: wait for the hedge
    /// alone, under core's deadlines (now the hedge's).
    async fn await_hedge<F: std::future::Future<Output = HedgeEnd> + Unpin>(&mut self, mut hedge: F) -> AttemptResult {
        loop {
            let due = self.due();
            let woke = tokio::select! {
                biased;
                end = &mut hedge => Some(end),
                () = sleep_until_due(due) => None,
            };
            match woke {
                Some(end) => {
                    return self
                        .hedge_ended(end)
                        .unwrap_or_else(|| AttemptResult::Next(Step::Continue));
                }
                None => match self.deadline() {
                    Step::Continue => {}
                    step => return AttemptResult::Next(step),
                },
            }
        }
    }

    /// When core's next deadline (or the hedge delay) is due, on tokio's clock (`None`: no
    /// deadline runs).
    pub(crate) fn due(&self) -> Option<tokio::time::Instant> {
        let exchange = self.exchange.as_ref()?;
        let deadline = exchange.poll_timeout().map(|(due, _)| due);
        let due = match (deadline, exchange.poll_hedge()) {
            (Some(deadline), Some(hedge)) => Some(deadline.min(hedge)),
            (one, other) => one.or(other),
        };
        due.map(|due| self.proxy.clock.to_tokio(due))
    }

    /// True when the hedge delay has passed (on the clock core's instants are read from).
    fn hedge_due(&self) -> bool {
        let now = self.proxy.clock.now();
        self.exchange
            .as_ref()
            .and_then(Exchange::poll_hedge)
            .is_some_and(|due| due <= now)
    }

    /// Core's deadline came: core decides which one it was.
    fn deadline(&mut self) -> Step {
        self.step(|exchange, now| exchange.handle_deadline(now))
    }

    /// Tell core the request was written whole, once it was. Sent on an open connection: a new
    /// connection's setup is a one-off cost, not the node's latency, and must not leave a peak
    /// in its estimate.
    fn report_sent(&mut self, connected_at: tokio::time::Instant) {
        if let Some(completed) = self.source.completed_at() {
            let sent_at = self.proxy.clock.at(completed.max(connected_at));
            self.step(|exchange, _| {
                exchange.handle_request_sent(sent_at);
                Step::Continue
            });
        }
    }

    /// An attempt that failed on this side of the backend (`side` is the client or the proxy):
    /// end it without blaming the backend and answer `error`, closing the connection (the
    /// request body may be left unread).
    fn unforwardable(&mut self, side: Side, error: S3ErrorResponse) -> AttemptResult {
        let step = self.step(|exchange, now| match side {
            Side::Proxy => exchange.handle_proxy_error(now, error),
            _ => exchange.handle_client_error(now, error),
        });
        match step {
            Step::Fail(error) => {
                AttemptResult::Respond(error_response(&error, self.parts.uri.path(), self.request_id, true))
            }
            other => AttemptResult::Next(other),
        }
    }

    /// Hand the backend's response to the client, streaming its body.
    pub(crate) fn respond(&mut self, response: http::Response<Incoming>, lease: Lease) -> http::Response<ProxyBody> {
        let exchange = self.exchange.take().expect("the exchange is handed over once");
        // While the body streams, only core's total deadline runs.
        let deadline = exchange
            .poll_timeout()
            .map(|(due, _)| Box::pin(tokio::time::sleep_until(self.proxy.clock.to_tokio(due))));
        let (mut head, incoming) = response.into_parts();
        forward::strip_hop_by_hop(&mut head.headers);
        if let Ok(value) = HeaderValue::from_str(self.request_id) {
            head.headers.insert(crate::request::response::PROXY_REQUEST_ID, value);
        }
        let body = ResponseBody {
            incoming: Coalescing::new(incoming),
            request_bytes: self.source.received(),
            response_bytes: 0,
            exchange: Some(exchange),
            lease: Some(lease),
            generation: self.generation.clone(),
            clock: self.proxy.clock,
            conn: self.conn.clone(),
            idle_timeout: self.generation.timeouts().backend_body_idle,
            idle: None,
            deadline,
        };
        if body.incoming.is_end_stream() {
            let mut body = body;
            body.complete();
            return http::Response::from_parts(head, Empty::new().map_err(|never| match never {}).boxed_unsync());
        }
        http::Response::from_parts(head, body.boxed_unsync())
    }
}

/// The backend request `plan` describes, to the backend at `address` (its `Host`), with the
/// client's body from `source` (after `prefix`, a re-signed form's fields, with the length of
/// the whole when known). Only the proxy's own failure (an address that is no header value)
/// can make this fail: everything the client sent was checked when core planned it.
pub(super) fn backend_request(
    plan: &ForwardPlan,
    address: &str,
    source: Arc<BodySource>,
    prefix: Option<(bytes::Bytes, Option<u64>)>,
) -> Result<http::Request<ForwardBody>, S3ErrorResponse> {
    let mut headers = plan.headers.clone();
    let body = match prefix {
        Some((prefix, length)) => {
            if let Some(length) = length {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            ForwardBody::with_prefix(source, prefix, length)
        }
        None => ForwardBody::new(source),
    };
    headers.insert(
        header::HOST,
        HeaderValue::from_str(address)
            .map_err(|_| S3ErrorResponse::new(ErrorCode::InternalError, "invalid backend address"))?,
    );
    let mut builder = http::Request::builder()
        .method(plan.method.clone())
        .uri(plan.uri.clone())
        .version(http::Version::HTTP_11);
    *builder.headers_mut().expect("builder is valid") = headers;
    builder
        .body(body)
        .map_err(|_| S3ErrorResponse::new(ErrorCode::InternalError, "cannot build the backend request"))
}
