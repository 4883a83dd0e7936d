//! One node of the mock cluster: its HTTP service (fault injection, capacity model, counters
//! around the s3s service) and its accept loop (with crash and restart).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use s3s::service::S3Service;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::capacity::{Capacity, CapacityConfig};
use crate::fault::{ErrorKind, Faults, FaultyBody};
use crate::stats::{InFlight, NodeStats, StatsSnapshot};
use crate::transport::{Bind, Listener, hyper_io};

/// The response body type every node sends.
pub type NodeBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Shared state of one node, behind its handle and its service.
#[derive(Debug)]
pub(crate) struct NodeShared {
    pub(crate) index: usize,
    pub(crate) stats: Arc<NodeStats>,
    pub(crate) capacity: Capacity,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    crashed: watch::Sender<bool>,
    address: Mutex<Option<SocketAddr>>,
    request_ids: std::sync::atomic::AtomicU64,
}

/// Control and observation of one running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    shared: Arc<NodeShared>,
}

impl NodeHandle {
    /// The node's index in its cluster (0-based).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// Where the node listens (known once it has bound).
    pub fn address(&self) -> Option<SocketAddr> {
        *self.shared.address.lock().expect("address lock is never poisoned")
    }

    /// The node's counters now.
    pub fn stats(&self) -> StatsSnapshot {
        let mut snapshot = self.shared.stats.snapshot();
        snapshot.in_flight = snapshot.in_flight.min(snapshot.requests_total);
        snapshot
    }

    /// The `traceparent` headers of the last requests that carried one (at most
    /// [`TRACED_KEPT`](crate::stats::TRACED_KEPT)), oldest first, each with the status the node
    /// answered (a request whose signature did not verify got 403).
    pub fn traced(&self) -> Vec<(String, u16)> {
        self.shared.stats.traced_requests()
    }

    /// Requests waiting for a service slot now.
    pub fn queue_len(&self) -> usize {
        self.shared.capacity.queue_len()
    }

    /// The node's fault settings.
    pub fn faults(&self) -> Faults {
        *self.shared.faults.lock().expect("faults lock is never poisoned")
    }

    /// Replace the node's fault settings (takes effect for new requests).
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock is never poisoned") = faults;
    }

    /// Change only the slow factor.
    pub fn set_slow_factor(&self, slow_factor: f64) {
        self.shared
            .faults
            .lock()
            .expect("faults lock is never poisoned")
            .slow_factor = slow_factor;
    }

    /// Change only the stalls: a share `rate` of requests take `factor` times longer.
    pub fn set_stalls(&self, rate: f64, factor: f64) {
        let mut faults = self.shared.faults.lock().expect("faults lock is never poisoned");
        faults.stall_rate = rate;
        faults.stall_factor = factor;
    }

    /// Crash: stop listening (new connections are refused) and drop every open connection.
    pub fn crash(&self) {
        self.shared.crashed.send_replace(true);
    }

    /// Restart after a crash: listen again on the same address.
    pub fn restart(&self) {
        self.shared.crashed.send_replace(false);
    }

    /// True while crashed.
    pub fn is_crashed(&self) -> bool {
        *self.shared.crashed.borrow()
    }
}

/// A browser form upload (`POST /bucket`, `multipart/form-data`) with `${filename}` in its
/// key resolved, as S3 resolves it (s3s does not); other requests as they are. The form is
/// read whole first, as s3s reads it anyway; a body that breaks off is answered 400.
async fn resolve_form_key(
    request: http::Request<s3s::Body>,
) -> Result<http::Request<s3s::Body>, http::Response<s3s::Body>> {
    let boundary = (request.method() == http::Method::POST && request.uri().query().is_none())
        .then(|| request.headers().get(http::header::CONTENT_TYPE))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(crate::form::boundary)
        .map(str::to_owned);
    let Some(boundary) = boundary else {
        return Ok(request);
    };
    let (mut parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, crate::s3::BODY_LENGTH_MAX)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            let mut refused = http::Response::new(s3s::Body::empty());
            *refused.status_mut() = http::StatusCode::BAD_REQUEST;
            return Err(refused);
        }
    };
    let body = match crate::form::resolve_filename(&body, &boundary) {
        Some(resolved) => {
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(resolved.len()));
            Bytes::from(resolved)
        }
        None => body,
    };
    // In pieces of the size a socket read gives: s3s's form parser buffers a piece whole while
    // it looks for the fields (refusing one above 20 MB) and, in the file, while it looks for
    // a delimiter across pieces (refusing more than 64 KiB).
    let pieces: Vec<Result<http_body::Frame<Bytes>, Infallible>> = (0..body.len())
        .step_by(FORM_PIECE)
        .map(|start| {
            Ok(http_body::Frame::data(
                body.slice(start..body.len().min(start + FORM_PIECE)),
            ))
        })
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(pieces));
    Ok(http::Request::from_parts(parts, s3s::Body::http_body(body)))
}

/// The pieces a buffered form is handed to s3s in.
const FORM_PIECE: usize = 16 * 1024;

/// The HTTP service of a node: faults, then capacity, then s3s.
#[derive(Clone)]
pub struct NodeService {
    shared: Arc<NodeShared>,
    s3: S3Service,
}

impl NodeService {
    /// Serve one request.
    pub async fn call(&self, request: http::Request<s3s::Body>) -> http::Response<NodeBody> {
        let shared = &self.shared;
        let bytes_in = declared_length(request.headers());
        let in_flight = InFlight::start(&shared.stats, bytes_in);
        let faults = *shared.faults.lock().expect("faults lock is never poisoned");
        let request_id = shared.request_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("mock-{}-{request_id}", shared.index);

        let inject = self.draw(faults.error_rate);
        if inject {
            shared.stats.error_injected();
            let (status, code) = match faults.error_kind {
                ErrorKind::InternalError => (500, "InternalError"),
                ErrorKind::SlowDown => (503, "SlowDown"),
            };
            return self.finish(
                error_response(status, code, "injected by s3-mock", &request_id),
                faults,
                in_flight,
                None,
            );
        }

        let Ok(slot) = shared.capacity.admit().await else {
            shared.stats.slow_down();
            return self.finish(
                error_response(503, "SlowDown", "Please reduce your request rate.", &request_id),
                faults,
                in_flight,
                None,
            );
        };
        // `HEAD /` is the node's health answer (what a proxy's active probe asks by default):
        // answered here, after faults and capacity like any request, not by s3s, which has
        // no such operation and would log an error for every probe.
        let traceparent = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let completes = request.method() == http::Method::POST
            && request
                .uri()
                .query()
                .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("uploadId=")));
        let answered = if request.method() == http::Method::HEAD && request.uri().path() == "/" {
            Ok(http::Response::new(s3s::Body::empty()))
        } else {
            match resolve_form_key(request).await {
                Ok(request) => self.s3.call(request).await,
                Err(response) => Ok(response),
            }
        };
        let response = match answered {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(node = shared.index, ?error, "s3s refused the request");
                drop(slot);
                return self.finish(
                    error_response(400, "BadRequest", "malformed request", &request_id),
                    faults,
                    in_flight,
                    None,
                );
            }
        };
        if faults.lose_completions && completes && response.status() == http::StatusCode::OK {
            tracing::info!(node = shared.index, "completion committed; its answer is lost (fault)");
            shared.stats.error_injected();
            let mut lost = self.finish(
                http::Response::new(
                    s3s::Body::empty()
                        .map_err(|error| -> Box<dyn std::error::Error + Send + Sync> { error })
                        .boxed_unsync(),
                ),
                faults,
                in_flight,
                None,
            );
            lost.extensions_mut().insert(LostAnswer);
            return lost;
        }
        if let Some(traceparent) = traceparent {
            shared.stats.traced(traceparent, response.status().as_u16());
        }
        let bytes_out = response.body().size_hint().exact().unwrap_or(0);
        let stalled = self.draw(faults.stall_rate);
        let factor = if stalled {
            shared.stats.stalled();
            faults.slow_factor * faults.stall_factor
        } else {
            faults.slow_factor
        };
        let service = shared.capacity.config().service_time(bytes_in + bytes_out, factor);
        tokio::time::sleep(service).await;
        shared.stats.busy(service);
        let held = shared.capacity.config().hold_while_sending.then_some(slot);
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(
            "x-amz-request-id",
            http::HeaderValue::from_str(&request_id).expect("request ids are ASCII"),
        );
        let body = body
            .map_err(|error| -> Box<dyn std::error::Error + Send + Sync> { error })
            .boxed_unsync();
        self.finish(http::Response::from_parts(parts, body), faults, in_flight, held)
    }

    /// True with probability `rate` (never for 0, without drawing: a node with no fault keeps
    /// its RNG's sequence).
    fn draw(&self, rate: f64) -> bool {
        rate > 0.0
            && self
                .shared
                .rng
                .lock()
                .expect("rng lock is never poisoned")
                .random_bool(rate.min(1.0))
    }

    /// Attach the body fault and the in-flight accounting to a response.
    fn finish(
        &self,
        response: http::Response<NodeBody>,
        faults: Faults,
        in_flight: InFlight,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> http::Response<NodeBody> {
        let stats = self.shared.stats.clone();
        response.map(|body| FaultyBody::new(body, faults.body, stats, in_flight, slot).boxed_unsync())
    }
}

/// Marks a response whose answer the node loses (`Faults::lose_completions`): the connection
/// closes instead of carrying it.
#[derive(Clone, Copy, Debug)]
pub struct LostAnswer;

/// The connection was closed instead of answering (a lost answer).
#[derive(Debug, thiserror::Error)]
#[error("the answer was lost (fault injected)")]
pub struct AnswerLost;

impl hyper::service::Service<http::Request<Incoming>> for NodeService {
    type Response = http::Response<NodeBody>;
    type Error = AnswerLost;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, AnswerLost>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let response = service.call(request.map(s3s::Body::from)).await;
            if response.extensions().get::<LostAnswer>().is_some() {
                return Err(AnswerLost);
            }
            Ok(response)
        })
    }
}

/// The body length a request declares (the decoded length for aws-chunked uploads).
fn declared_length(headers: &http::HeaderMap) -> u64 {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    read("x-amz-decoded-content-length")
        .or_else(|| read("content-length"))
        .unwrap_or(0)
}

/// An S3 XML error response.
fn error_response(status: u16, code: &str, message: &str, request_id: &str) -> http::Response<NodeBody> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
    );
    let mut response = http::Response::new(
        Full::new(Bytes::from(xml))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::from_u16(status).expect("valid status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response.headers_mut().insert(
        "x-amz-request-id",
        http::HeaderValue::from_str(request_id).expect("request ids are ASCII"),
    );
    response
}

/// Build a node: its shared state, handle and service.
pub(crate) fn build_node(
    index: usize,
    s3: S3Service,
    stats: Arc<NodeStats>,
    capacity: CapacityConfig,
    faults: Faults,
    seed: u64,
) -> (NodeHandle, NodeService) {
    let (crashed, _) = watch::channel(false);
    let shared = Arc::new(NodeShared {
        index,
        stats,
        capacity: Capacity::new(capacity),
        faults: Mutex::new(faults),
        rng: Mutex::new(StdRng::seed_from_u64(seed.wrapping_add(index as u64))),
        crashed,
        address: Mutex::new(None),
        request_ids: std::sync::atomic::AtomicU64::new(1),
    });
    (NodeHandle { shared: shared.clone() }, NodeService { shared, s3 })
}

/// Counts a connection as open until its task ends (normally or aborted by a crash).
struct ConnectionOpen(Arc<NodeStats>);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Run a node's accept loop forever: bind, serve connections, and on a crash drop the
/// listener and every connection until restarted. Returns only if binding fails.
pub async fn run_node<B: Bind>(bind: B, service: NodeService) -> std::io::Result<()> {
    let shared = service.shared.clone();
    let mut crashed = shared.crashed.subscribe();
    loop {
        while *crashed.borrow_and_update() {
            if crashed.changed().await.is_err() {
                return Ok(());
            }
        }
        let mut listener = bind.bind().await?;
        *shared.address.lock().expect("address lock is never poisoned") = Some(listener.local_addr()?);
        let mut connections = JoinSet::new();
        loop {
            // Biased (deterministic polling order, for the simulation), crash first: a crash is
            // never postponed behind another accept.
            tokio::select! {
                biased;
                changed = crashed.changed() => {
                    if changed.is_err() || *crashed.borrow() {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let (io, _peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::debug!(node = shared.index, %error, "accept failed");
                            continue;
                        }
                    };
                    shared.stats.connection_accepted();
                    let service = service.clone();
                    let idle_timeout = shared.capacity.config().idle_timeout;
                    let open = ConnectionOpen(shared.stats.clone());
                    connections.spawn(async move {
                        let _open = open;
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        // hyper's header timeout runs from the end of one request to the next
                        // request's head: an idle keep-alive timeout.
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(idle_timeout);
                        if let Err(error) = builder.serve_connection(hyper_io(io), service).await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!(
            node = shared.index,
            connections = connections.len(),
            "node crashed: dropping listener and connections"
        );
        drop(listener);
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}
