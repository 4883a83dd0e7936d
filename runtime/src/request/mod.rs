//! The request path: one [`Exchange`] per client request, driven over real IO, from the head
//! to the record.
//!
//! - [`generation`]: what a configuration generation derived (signers, key stores, pod watch)
//!   over core's state, and who the caller is;
//! - this module: the handler: identify, ask core to start the exchange (classify,
//!   authorise, plan, route, pick), answer `100 Continue` where core says so, then run the
//!   attempts core asks for;
//! - [`attempt`]: one attempt: a connection slot, a connection, the planned head re-signed,
//!   the body streamed, every wait bounded by core's deadlines or a per-IO timeout;
//! - [`response`]: the backend's response streamed to the client, reporting its end;
//! - [`body`]: the client's request body as the plan frames it;
//! - [`form`]: browser form uploads, whose credential and key are in the body.

pub mod attempt;
pub mod body;
pub mod form;
pub mod generation;
mod hedge;
pub mod response;
mod verify;

pub use generation::{ConfigureError, Generation};
pub use response::{BoxError, ProxyBody, ResponseBody, error_response};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use storefront_core::auth::Caller;
use storefront_core::exchange::{Exchange, Step};
use storefront_core::forward::BodyFraming;
use storefront_core::s3::{self, ErrorCode, S3ErrorResponse};

use crate::backend::pool::ConnectionPool;
use crate::clock::Clock;
use crate::request::attempt::{Attempt, AttemptResult};
use crate::request::body::{BodyMode, BodySource};
use crate::telemetry::Events;
use crate::telemetry::trace::Tracer;
use crate::transport::Connect;

/// Per-client-connection state shared with the IO wrapper.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Set when the client stopped reading for longer than the write-idle timeout.
    pub write_timed_out: AtomicBool,
    /// Requests in progress and the last bytes heard, for the connection's deadlines.
    pub activity: Arc<crate::server::watchdog::Activity>,
    /// The connection speaks HTTP/2 (a drain sends it GOAWAY; HTTP/1 gets `Connection: close`).
    pub http2: AtomicBool,
}

/// Exchange ids: one space per process, kept across reloads. The top 24 bits are drawn from
/// the process's seed, so that the request ids of a fleet's replicas do not collide in a log
/// that gathers them all; the low 40 bits count requests (a trillion before they wrap).
#[derive(Debug)]
pub struct ExchangeIds {
    tag: u64,
    next: AtomicU64,
}

impl ExchangeIds {
    /// Ids tagged from `seed`.
    pub fn new(seed: u64) -> Self {
        ExchangeIds {
            tag: (seed >> 40) << 40,
            next: AtomicU64::new(1),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        self.tag | (self.next.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1))
    }
}

/// The request id a client sees (`x-amz-request-id`, the S3 error XML) for exchange `id`:
/// the same id as in core's record and the logs, as S3 spells its ids.
pub fn request_id(id: u64) -> String {
    format!("{id:016X}")
}

/// The proxy: the current generation, the backend connections, the clock.
pub struct Proxy<C: Connect> {
    generation: RwLock<Arc<Generation>>,
    /// Backend connection pools.
    pub connections: ConnectionPool<C>,
    /// The clock core sees.
    pub clock: Clock,
    ids: ExchangeIds,
    /// The observers of core's and the runtime's events.
    pub events: Arc<Events>,
    /// The tracer, when traces are on (it observes the records through `events` too).
    pub tracer: Option<Arc<Tracer>>,
}

impl<C: Connect> Proxy<C> {
    /// A proxy serving `generation`, dialling backends through `connector`; its exchange ids
    /// are tagged from `seed`; `events` is what the generations report to; `tracer` places
    /// requests in traces (none: traces are off, a caller's trace context passes untouched).
    pub fn new(
        generation: Generation,
        connector: C,
        clock: Clock,
        seed: u64,
        events: Arc<Events>,
        tracer: Option<Arc<Tracer>>,
    ) -> Self {
        Proxy {
            generation: RwLock::new(Arc::new(generation)),
            connections: ConnectionPool::new(connector, events.clone()),
            clock,
            ids: ExchangeIds::new(seed),
            events,
            tracer,
        }
    }

    /// Place `exchange` in the trace its request's `headers` name (or a new one), when
    /// traces are on. Before its record is drained.
    fn trace(&self, exchange: &mut Exchange, headers: &http::HeaderMap) {
        if let Some(tracer) = &self.tracer {
            exchange.handle_trace(tracer.begin(headers));
        }
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.generation
            .read()
            .expect("generation lock is never poisoned")
            .clone()
    }

    /// Replace the generation atomically; requests in flight finish on the old one.
    pub fn swap(&self, next: Generation) -> Arc<Generation> {
        let next = Arc::new(next);
        let previous = std::mem::replace(
            &mut *self.generation.write().expect("generation lock is never poisoned"),
            next.clone(),
        );
        previous.retired.store(true, Ordering::Release);
        next
    }

    /// Serve one client request.
    pub async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        peer: SocketAddr,
        conn: Arc<ConnState>,
    ) -> http::Response<ProxyBody> {
        let generation = self.current();
        let id = self.ids.next();
        self.events.runtime(crate::telemetry::RuntimeEvent::RequestStarted);
        let request_id = request_id(id);
        let (parts, incoming) = request.into_parts();
        if let Some(sts) = generation.sts.clone()
            && crate::auth::sts::is_sts_request(&parts)
        {
            let mut exchange = Exchange::serve_locally(
                generation.state(),
                id,
                self.clock.now(),
                &Caller::anonymous(Some(peer.ip())),
            );
            self.trace(&mut exchange, &parts.headers);
            let body = match http_body_util::Limited::new(incoming, crate::auth::sts::BODY_MAX)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let error =
                        S3ErrorResponse::new(ErrorCode::InvalidRequest, "the token exchange request is too large");
                    exchange.handle_served(self.clock.now(), error.status());
                    generation.drain(&mut exchange);
                    return error_response(&error, "/", &request_id, true);
                }
            };
            // Boxed, as every rare branch of a request's future is: a future holds its largest
            // branch inline, and hyper moves the whole of it for every request.
            let answer = Box::pin(sts.handle(parts.uri.query(), &body, &request_id, self.clock.wall())).await;
            exchange.handle_transferred(body.len() as u64, answer.body.len() as u64);
            exchange.handle_served(self.clock.now(), answer.status);
            generation.drain(&mut exchange);
            let mut response =
                http::Response::new(Full::new(answer.body).map_err(|never| match never {}).boxed_unsync());
            *response.status_mut() = http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::BAD_REQUEST);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            return response;
        }
        if form::is_form_upload(&parts, &generation) {
            return Box::pin(self.handle_form(generation, id, request_id, parts, incoming, peer, conn)).await;
        }
        let (caller, chunks) = match generation.identify(&parts, peer.ip(), self.clock.wall()) {
            Ok(identified) => identified,
            Err(rejection) => {
                tracing::info!(%peer, code = rejection.code.as_str(), message = %rejection.message, "signature refused");
                let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
                    || parts.headers.contains_key(header::TRANSFER_ENCODING);
                let now = self.clock.now();
                let error = S3ErrorResponse::new(rejection.code, rejection.message);
                let (mut exchange, _) = Exchange::refuse(
                    generation.state(),
                    id,
                    now,
                    &parts,
                    &Caller::anonymous(Some(peer.ip())),
                    error.clone(),
                );
                self.trace(&mut exchange, &parts.headers);
                generation.drain(&mut exchange);
                return error_response(&error, parts.uri.path(), &request_id, has_body);
            }
        };
        let now = self.clock.now();
        let (mut exchange, step) = Exchange::start_in(generation.snapshot.clone(), id, now, &parts, &caller);
        self.trace(&mut exchange, &parts.headers);
        // A rejected exchange has ended already: its record goes out now.
        generation.drain(&mut exchange);
        let (empty, length, mode) = body_framing(&exchange);
        let source = BodySource::new(incoming, empty, length, mode, generation.timeouts().client_body_idle);
        if let Some(chunks) = chunks {
            source.verify_chunks(chunks);
        }
        if let Some(limit) = exchange.keeps_request_body() {
            source.keep(limit);
        }
        if exchange.continues_locally() {
            // Decided from the head alone: let hyper answer 100 Continue now, before any
            // backend round trip.
            source.prime().await;
        }
        self.drive(&generation, &parts, &source, &conn, exchange, step, &request_id, None)
            .await
    }

    /// Run the attempts of `exchange` from its first `step` until a response goes back.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        self: &Arc<Self>,
        generation: &Arc<Generation>,
        parts: &http::request::Parts,
        source: &Arc<BodySource>,
        conn: &Arc<ConnState>,
        exchange: Exchange,
        step: Step,
        request_id: &str,
        form: Option<&form::FormUpload>,
    ) -> http::Response<ProxyBody> {
        let empty = source.is_empty();
        let mut attempt = Attempt {
            proxy: self,
            generation,
            parts,
            source,
            conn,
            exchange: Some(exchange),
            request_id,
            form,
        };
        let mut step = step;
        loop {
            step = match step {
                // Every wait inside an attempt is bounded by core's deadlines (connect, first
                // byte, total) or by a per-IO timeout of the runtime's.
                Step::Forward(dispatch) | Step::Retry(dispatch) => match attempt.run(dispatch).await {
                    AttemptResult::Next(next) => next,
                    AttemptResult::Respond(response) => return response,
                },
                Step::Reject(error) | Step::Fail(error) => {
                    return error_response(&error, parts.uri.path(), request_id, !source.started() && !empty);
                }
                // A verification and its answer happen inside an attempt.
                Step::Verify(_)
                | Step::Answer(_)
                | Step::Hedge(_)
                | Step::AwaitHedge
                | Step::Return
                | Step::Abort
                | Step::Done
                | Step::Continue => {
                    // The client is gone (Done) or nothing more can be sent.
                    return error_response(
                        &S3ErrorResponse::new(ErrorCode::RequestTimeout, "the exchange ended"),
                        parts.uri.path(),
                        request_id,
                        true,
                    );
                }
            };
        }
    }
}

/// How the client's body is read: whether there is one, the length the backend gets, and the
/// transformation, as core's plan frames it. An exchange refused before planning still tells
/// whether a body is left unread (then its connection closes).
fn body_framing(exchange: &Exchange) -> (bool, Option<u64>, BodyMode) {
    match exchange.plan().map(|plan| plan.body) {
        Some(BodyFraming::Empty) => (true, Some(0), BodyMode::Raw),
        Some(BodyFraming::Raw { length }) => (false, length, BodyMode::Raw),
        Some(BodyFraming::DecodeSigned { decoded_length }) => (false, Some(decoded_length), BodyMode::DecodeSigned),
        Some(BodyFraming::ReframeSigned) => (false, None, BodyMode::ReframeSigned),
        Some(BodyFraming::Form) => (false, None, BodyMode::Raw),
        None => match exchange.request().map(|request| request.body) {
            Some(s3::Body::Length(length)) => (false, Some(length), BodyMode::Raw),
            Some(s3::Body::Chunked) => (false, None, BodyMode::Raw),
            Some(s3::Body::Empty) | None => (true, Some(0), BodyMode::Raw),
        },
    }
}
