//! The request path: one [`Exchange`] per client request, driven over real IO.
//!
//! For each request the handler asks core to classify, authorise, route and pick
//! (`Exchange::start`), then performs each attempt core asks for: lease a backend connection,
//! rewrite and re-sign the head, stream the body, and report what happened. When core says
//! `Return`, the backend's response streams to the client through a [`ResponseBody`] that
//! reports the end of the exchange (done, backend broke, client gone or too slow) back to core.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use storefront_core::auth::cidr::CidrMap;
use storefront_core::auth::identify::{self, IdentityFacts};
use storefront_core::auth::policy::Policy;
use storefront_core::auth::{Authorize, Caller};
use storefront_core::config::{AuthSection, IdentitySource, StsSection};

use crate::events::Events;
use crate::pods::PodWatch;
use crate::sts::Sts;
use crate::verify::{ChunkVerifier, KeyStore, Rejection, Sessions};
use storefront_core::config::{AuthMode, Config};
use storefront_core::event::Event;
use storefront_core::exchange::{Dispatch, Exchange, Step};
use storefront_core::forward::{self, BodyFraming, ForwardPlan};
use storefront_core::outcome::{Phase, Side};
use storefront_core::s3::{self, ErrorCode, S3ErrorResponse};
use storefront_core::state::{ProxyState, Timeouts};

use crate::body::{BodyEnd, BodyMode, BodySource, Coalescing, ForwardBody};
use crate::clock::Clock;
use crate::pool::{ConnectionPool, Lease, PoolSettings};
use crate::settings::KeyPair;
use crate::sign::Signer;
use crate::tls::BackendTls;
use crate::transport::Connect;

/// Errors a response body may yield to hyper (which then breaks the client connection).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// One configuration generation: what the runtime derived from a configuration, over core's
/// state, which generations share (a reload reconfigures it in place).
pub struct Generation {
    /// The configuration.
    pub config: Arc<Config>,
    state: Arc<ProxyState>,
    signers: Vec<Signer>,
    pool_settings: Vec<PoolSettings>,
    timeouts: Timeouts,
    cidrs: CidrMap,
    keys: KeyStore,
    sts: Option<Arc<Sts>>,
    pods: Option<Arc<PodWatch>>,
    retired: AtomicBool,
    events: Arc<Events>,
}

/// The authoriser `config` asks for.
fn authorizer(config: &Config) -> Box<dyn Authorize> {
    match config.auth.mode {
        AuthMode::Trust => Box::new(storefront_core::auth::TrustAll),
        AuthMode::Deny => Box::new(storefront_core::auth::DenyAll),
        AuthMode::Policy => Box::new(Policy::new(&config.policy)),
    }
}

impl Generation {
    /// Build a first generation from a validated configuration and resolved pool
    /// credentials, with core's state fresh (its pools' RNGs derive from `seed`).
    pub fn new(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        clock: &Clock,
        seed: u64,
        events: Arc<Events>,
    ) -> Result<Self, String> {
        let state = ProxyState::from_config(&config, clock.now(), seed).map_err(|error| error.to_string())?;
        state.set_authorizer(authorizer(&config));
        Self::build(config, credentials, Arc::new(state), None, events)
    }

    /// The generation that follows this one for `config`: core's state is reconfigured in
    /// place (backends that stay keep their health, ejections, latency estimates, in-flight
    /// counts), and the pod watch carries over unless its settings changed. On error nothing
    /// changed and this generation stays in force.
    pub fn next(&self, config: Config, credentials: Vec<Option<KeyPair>>, clock: &Clock) -> Result<Self, String> {
        let pods = (config.auth.pods == self.config.auth.pods && config.auth.mode == self.config.auth.mode)
            .then(|| self.pods.clone())
            .flatten();
        let next = Self::build(config, credentials, self.state.clone(), pods, self.events.clone())?;
        // Last, once everything fallible on the runtime's side is built: reconfigure core.
        next.state
            .reconfigure(&next.config, authorizer(&next.config), clock.now())
            .map_err(|error| error.to_string())?;
        next.emit_state_events();
        Ok(next)
    }

    fn build(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        state: Arc<ProxyState>,
        pods: Option<Arc<PodWatch>>,
        events: Arc<Events>,
    ) -> Result<Self, String> {
        let cidrs = CidrMap::new(&config.auth.cidrs);
        let mut keys = load_keys(&config.auth)?;
        let sts = match &config.auth.sts {
            Some(section) => {
                let sessions = Sessions::new(master_key(section)?)?;
                keys = keys.with_sessions(sessions.clone());
                Some(Arc::new(Sts::new(section, sessions)?))
            }
            None => None,
        };
        let pods = match (&config.auth.pods, pods) {
            (Some(_), Some(kept)) => Some(kept),
            (Some(section), None) if config.auth.mode == AuthMode::Policy => Some(Arc::new(PodWatch::start(section)?)),
            _ => None,
        };
        let timeouts = Timeouts::from_config(&config);
        let signers = config
            .pools
            .iter()
            .zip(credentials)
            .map(|(pool, credentials)| Signer::new(pool.region.clone(), credentials))
            .collect();
        let mut pool_settings = Vec::with_capacity(config.pools.len());
        for (index, pool) in config.pools.iter().enumerate() {
            let tls = match &pool.tls {
                Some(section) => {
                    Some(BackendTls::new(section).map_err(|error| format!("pools[{index}].tls: {error}"))?)
                }
                None => None,
            };
            pool_settings.push(PoolSettings {
                max_per_backend: pool.connections.max_per_backend,
                wait: pool.connections.wait.get(),
                idle_timeout: pool.connections.idle_timeout.get(),
                connect_timeout: timeouts.backend_connect,
                tls,
            });
        }
        Ok(Generation {
            config: Arc::new(config),
            state,
            signers,
            pool_settings,
            timeouts,
            cidrs,
            keys,
            sts,
            pods,
            retired: AtomicBool::new(false),
            events,
        })
    }

    /// Who the caller of `parts` from `peer` is: the runtime looks up what the configured
    /// identity sources say (verifying a signature, asking the pod table and the CIDR map) and
    /// core decides (`auth::identify`). A signed upload that won by its signature comes with
    /// the verifier of its chunk signatures.
    pub fn identify(
        &self,
        parts: &http::request::Parts,
        peer: std::net::IpAddr,
    ) -> Result<(Caller, Option<ChunkVerifier>), Rejection> {
        let auth = &self.config.auth;
        let mut facts = IdentityFacts::default();
        let mut chunks = None;
        for source in identify::consulted(auth.mode, &auth.sources) {
            match source {
                IdentitySource::Sigv4 => {
                    facts.signature = match self.keys.verify(parts, SystemTime::now(), auth.max_clock_skew.get()) {
                        Ok(Some(verified)) => {
                            chunks = verified.chunks;
                            Some(Ok(verified.principal))
                        }
                        Ok(None) => None,
                        Err(rejection) => Some(Err(S3ErrorResponse::new(rejection.code, rejection.message))),
                    }
                }
                IdentitySource::Pods => facts.pod = self.pods.as_ref().map(|pods| pods.lookup(peer)),
                IdentitySource::Cidrs => facts.cidr = self.cidrs.lookup(peer),
            }
        }
        let identified = identify::identify(auth.mode, &auth.sources, peer, facts).map_err(|error| Rejection {
            code: error.code,
            message: error.message.into_owned(),
        })?;
        let chunks = chunks.filter(|_| identified.source == Some(IdentitySource::Sigv4));
        Ok((identified.caller, chunks))
    }

    /// Core's state (shared with the generations before and after this one). Drain its
    /// events with [`Generation::emit_state_events`] after calling into it.
    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// Hand the events core's state queued to the observers.
    pub fn emit_state_events(&self) {
        let events: Vec<Event> = std::iter::from_fn(|| self.state.poll_event()).collect();
        self.events.emit(events);
    }

    /// Run one step of `exchange` (core locks its pool for the call), then hand what the
    /// exchange queued (its pool's events, and its record once it has ended) to the observers.
    pub fn step(&self, exchange: &mut Exchange, f: impl FnOnce(&mut Exchange) -> Step) -> Step {
        let step = f(exchange);
        self.drain(exchange);
        step
    }

    /// Hand what an exchange queued to the observers.
    fn drain(&self, exchange: &mut Exchange) {
        let events: Vec<Event> = std::iter::from_fn(|| exchange.poll_event()).collect();
        self.events.emit(events);
    }

    /// Whether this generation can serve what it is configured for (the `/readyz` rule): the
    /// pod table has its first listing where pods are an identity source, and every pool has
    /// an available backend (which a DNS pool has only once its name first resolved). `Err`
    /// says what is missing.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.pods.as_ref().is_some_and(|pods| !pods.is_synced()) {
            return Err("the pod table has not listed the cluster's pods yet");
        }
        if !self.state.is_ready() {
            return Err("a pool has no available backend");
        }
        Ok(())
    }

    /// The per-phase timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The signer of a pool.
    pub fn signer(&self, pool: usize) -> Option<&Signer> {
        self.signers.get(pool)
    }

    /// The pool settings of a pool.
    pub fn pool_settings(&self, pool: usize) -> Option<&PoolSettings> {
        self.pool_settings.get(pool)
    }

    /// True once a newer generation replaced this one.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// Per-client-connection state shared with the IO wrapper.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Set when the client stopped reading for longer than the write-idle timeout.
    pub write_timed_out: AtomicBool,
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
}

impl<C: Connect> Proxy<C> {
    /// A proxy serving `generation`, dialling backends through `connector`; its exchange ids
    /// are tagged from `seed`; `events` is what the generations report to.
    pub fn new(generation: Generation, connector: C, clock: Clock, seed: u64, events: Arc<Events>) -> Self {
        Proxy {
            generation: RwLock::new(Arc::new(generation)),
            connections: ConnectionPool::new(connector),
            clock,
            ids: ExchangeIds::new(seed),
            events,
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
        let request_id = request_id(id);
        let (parts, incoming) = request.into_parts();
        if let Some(sts) = generation.sts.clone()
            && crate::sts::is_sts_request(&parts)
        {
            let mut exchange = Exchange::serve_locally(
                generation.state(),
                id,
                self.clock.now(),
                &Caller::anonymous(Some(peer.ip())),
            );
            let body = match http_body_util::Limited::new(incoming, crate::sts::BODY_MAX)
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
            let answer = sts.handle(parts.uri.query(), &body, &request_id).await;
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
        let (caller, chunks) = match generation.identify(&parts, peer.ip()) {
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
                generation.drain(&mut exchange);
                return error_response(&error, parts.uri.path(), &request_id, has_body);
            }
        };
        let now = self.clock.now();
        let (mut exchange, step) = Exchange::start(generation.state(), id, now, &parts, &caller);
        // A rejected exchange has ended already: its record goes out now.
        generation.drain(&mut exchange);
        let (empty, length, mode) = body_framing(&exchange);
        let source = BodySource::new(incoming, empty, length, mode, generation.timeouts().client_body_idle);
        if let Some(chunks) = chunks {
            source.verify_chunks(chunks);
        }
        if exchange.continues_locally() {
            // Decided from the head alone: let hyper answer 100 Continue now, before any
            // backend round trip.
            source.prime().await;
        }
        let mut attempt = Attempt {
            proxy: &self,
            generation: &generation,
            parts: &parts,
            source: &source,
            conn: &conn,
            exchange: Some(exchange),
            request_id: &request_id,
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
                    return error_response(&error, parts.uri.path(), &request_id, !source.started() && !empty);
                }
                Step::Return | Step::Abort | Step::Done | Step::Continue => {
                    // The client is gone (Done) or nothing more can be sent.
                    return error_response(
                        &S3ErrorResponse::new(ErrorCode::RequestTimeout, "the exchange ended"),
                        parts.uri.path(),
                        &request_id,
                        true,
                    );
                }
            };
        }
    }
}

/// What expired while an attempt waited on its backend.
enum Expiry {
    /// A timeout the runtime owns (per IO operation).
    Phase(Phase),
    /// The deadline core reported (`Exchange::poll_timeout`).
    Core,
}

/// Sleep until `due`, or forever when there is no deadline.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

enum AttemptResult {
    Next(Step),
    Respond(http::Response<ProxyBody>),
}

struct Attempt<'a, C: Connect> {
    proxy: &'a Arc<Proxy<C>>,
    generation: &'a Arc<Generation>,
    parts: &'a http::request::Parts,
    source: &'a Arc<BodySource>,
    conn: &'a Arc<ConnState>,
    exchange: Option<Exchange>,
    request_id: &'a str,
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
    fn step(&mut self, f: impl FnOnce(&mut Exchange, storefront_core::time::Instant) -> Step) -> Step {
        let now = self.proxy.clock.now();
        let exchange = self
            .exchange
            .as_mut()
            .expect("the exchange lives until the response is handed over");
        exchange.handle_transferred(self.source.received(), 0);
        self.generation.step(exchange, |exchange| f(exchange, now))
    }

    async fn run(&mut self, dispatch: Dispatch) -> AttemptResult {
        let pool = dispatch.pool.0;
        let settings = self
            .generation
            .pool_settings(pool)
            .expect("dispatch names a configured pool");
        // A connection slot: at once, or after a bounded wait (the proxy's own limit, during
        // which core runs no connect deadline).
        let slot = match self.proxy.connections.slot(pool, &dispatch.address, settings) {
            Ok(slot) => slot,
            Err(pending) => {
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
                    dialled = self.proxy.connections.dial(slot, &dispatch.address) => Some(dialled),
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
        let mut request = match backend_request(&dispatch.plan, &dispatch.address, self.source.clone()) {
            Ok(request) => request,
            Err(error) => return self.unforwardable(Side::Proxy, error),
        };
        let signer = self.generation.signer(pool).expect("every pool has a signer");
        {
            let (mut head, body) = request.into_parts();
            if let Err(error) = signer.sign(&mut head, &dispatch.plan.payload_hash, SystemTime::now()) {
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
                    // Sent whole: core's first-byte deadline runs from here.
                    self.report_sent(connected_at);
                    let due = self.due();
                    tokio::select! {
                        biased;
                        result = &mut send => Ok(result),
                        () = sleep_until_due(due) => Err(Expiry::Core),
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
                            opened = self.proxy.connections.open(&dispatch.address, settings) => Some(opened),
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
        match result {
            Err(Expiry::Phase(phase)) => {
                AttemptResult::Next(self.step(|exchange, now| exchange.handle_timeout(now, phase)))
            }
            Err(Expiry::Core) => AttemptResult::Next(self.deadline()),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let step = self.step(|exchange, now| exchange.handle_response_head(now, status));
                match step {
                    Step::Return => AttemptResult::Respond(self.respond(response, lease)),
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
        }
    }

    /// When core's next deadline is due, on tokio's clock (`None`: no deadline runs).
    fn due(&self) -> Option<tokio::time::Instant> {
        self.exchange
            .as_ref()
            .and_then(Exchange::poll_timeout)
            .map(|(due, _)| self.proxy.clock.to_tokio(due))
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
    fn respond(&mut self, response: http::Response<Incoming>, lease: Lease) -> http::Response<ProxyBody> {
        let exchange = self.exchange.take().expect("the exchange is handed over once");
        // While the body streams, only core's total deadline runs.
        let deadline = exchange
            .poll_timeout()
            .map(|(due, _)| Box::pin(tokio::time::sleep_until(self.proxy.clock.to_tokio(due))));
        let (mut head, incoming) = response.into_parts();
        forward::strip_hop_by_hop(&mut head.headers);
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

/// The backend's response body on its way to the client. Reports the exchange's end to core:
/// done, backend broke (`Abort`: the client connection is broken too, never a short body
/// passed off as whole), backend idle, or, when dropped early, client gone or too slow.
pub struct ResponseBody {
    incoming: Coalescing<Incoming>,
    /// Request body bytes the client sent (for the record).
    request_bytes: u64,
    /// Response body bytes handed to hyper so far.
    response_bytes: u64,
    exchange: Option<Exchange>,
    lease: Option<Lease>,
    generation: Arc<Generation>,
    clock: Clock,
    conn: Arc<ConnState>,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The exchange's total deadline, if configured.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The backend's connection broke mid-body.
    #[error("storage node broke off the response: {0}")]
    Backend(hyper::Error),
    /// The backend sent nothing for the body-idle timeout.
    #[error("storage node idle for {0:?} mid-response")]
    BackendIdle(Duration),
    /// The exchange's total deadline passed mid-response.
    #[error("the request's total deadline passed mid-response")]
    Deadline,
}

impl ResponseBody {
    fn finish(&mut self, f: impl FnOnce(&mut Exchange, storefront_core::time::Instant) -> Step) {
        if let Some(mut exchange) = self.exchange.take() {
            let now = self.clock.now();
            exchange.handle_transferred(self.request_bytes, self.response_bytes);
            self.generation.step(&mut exchange, |exchange| f(exchange, now));
        }
    }

    fn complete(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        self.finish(|exchange, now| exchange.handle_response_done(now));
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.exchange.is_none() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.lease = None;
            this.finish(|exchange, now| exchange.handle_timeout(now, Phase::Total));
            return Poll::Ready(Some(Err(Box::new(ResponseError::Deadline))));
        }
        match this.incoming.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle = None;
                if let Some(data) = frame.data_ref() {
                    this.response_bytes += data.len() as u64;
                }
                if this.incoming.is_end_stream() {
                    // The last frame: hyper will not poll again once `is_end_stream` says so,
                    // so the exchange completes (and the connection goes back to the pool) now.
                    this.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.lease = None;
                this.finish(|exchange, now| exchange.handle_backend_reset(now));
                Poll::Ready(Some(Err(Box::new(ResponseError::Backend(error)))))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let sleep = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.lease = None;
                    this.finish(|exchange, now| exchange.handle_timeout(now, Phase::BackendBodyIdle));
                    return Poll::Ready(Some(Err(Box::new(ResponseError::BackendIdle(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            // Dropped before the end: the client went away, or stopped reading until the write
            // timeout closed its connection. The lease drops with us: that backend connection
            // is closed, never pooled.
            self.lease = None;
            if self.conn.write_timed_out.load(Ordering::Acquire) {
                self.finish(|exchange, now| exchange.handle_timeout(now, Phase::ResponseWriteIdle));
            } else {
                self.finish(|exchange, now| exchange.handle_client_gone(now));
            }
        }
    }
}

/// The backend request `plan` describes, to the backend at `address` (its `Host`), with the
/// client's body from `source`. Only the proxy's own failure (an address that is no header
/// value) can make this fail: everything the client sent was checked when core planned it.
fn backend_request(
    plan: &ForwardPlan,
    address: &str,
    source: Arc<BodySource>,
) -> Result<http::Request<ForwardBody>, S3ErrorResponse> {
    let mut headers = plan.headers.clone();
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
        .body(ForwardBody::new(source))
        .map_err(|_| S3ErrorResponse::new(ErrorCode::InternalError, "cannot build the backend request"))
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
        None => match exchange.request().map(|request| request.body) {
            Some(s3::Body::Length(length)) => (false, Some(length), BodyMode::Raw),
            Some(s3::Body::Chunked) => (false, None, BodyMode::Raw),
            Some(s3::Body::Empty) | None => (true, Some(0), BodyMode::Raw),
        },
    }
}

/// An S3 XML error response from the proxy itself. `close` asks the client to drop the
/// connection (used when a request body was left unread).
pub fn error_response(
    error: &S3ErrorResponse,
    resource: &str,
    request_id: &str,
    close: bool,
) -> http::Response<ProxyBody> {
    let xml = error.to_xml(resource, request_id);
    let mut response = http::Response::new(
        Full::new(Bytes::from(xml))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        http::StatusCode::from_u16(error.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amz-request-id", value);
    }
    if error.code == ErrorCode::SlowDown || error.code == ErrorCode::ServiceUnavailable {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The access keys of `auth`: inline ones, then those of its keys file.
fn load_keys(auth: &AuthSection) -> Result<KeyStore, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KeysFile {
        #[serde(default)]
        keys: Vec<storefront_core::config::AccessKey>,
    }
    let mut keys = auth.keys.clone();
    if let Some(path) = &auth.keys_file {
        let text = std::fs::read_to_string(path).map_err(|error| format!("auth.keys_file `{path}`: {error}"))?;
        let file: KeysFile = toml::from_str(&text).map_err(|error| format!("auth.keys_file `{path}`: {error}"))?;
        keys.extend(file.keys);
    }
    Ok(KeyStore::new(keys))
}

/// The session master key of `section`: its file's bytes (surrounding whitespace trimmed) or
/// the inline key.
fn master_key(section: &StsSection) -> Result<Vec<u8>, String> {
    match (&section.master_key_file, &section.master_key) {
        (Some(path), _) => std::fs::read(path)
            .map(|bytes| bytes.trim_ascii().to_vec())
            .map_err(|error| format!("auth.sts.master_key_file `{path}`: {error}")),
        (None, Some(key)) => Ok(key.as_bytes().to_vec()),
        (None, None) => Err("auth.sts needs master_key_file or master_key".to_owned()),
    }
}
