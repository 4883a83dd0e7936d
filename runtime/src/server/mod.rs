//! The client-facing server: accept loop, connection limits (in all, and per client
//! address), HTTP/1.1 and HTTP/2 via hyper, header limits, the deadlines of a connection
//! between requests, the slow-reader timeout, graceful shutdown.

pub mod proxy_protocol;
pub mod tls;
pub mod watchdog;

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

use crate::request::{ConnState, Proxy};
use crate::server::proxy_protocol::{Rewind, read_header};
use crate::telemetry::{Expiry, Refusal, RuntimeEvent};
use crate::transport::MaybeTls;
use crate::transport::{Accept, Connect};

/// Server limits, from `[server]` and `[timeouts]`.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Client connections at once.
    pub max_connections: usize,
    /// Client connections one address may hold (0: no bound).
    pub max_connections_per_client: usize,
    /// Largest request head (HTTP/1.1 read buffer).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Reading a request head.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing arriving after a response.
    pub idle_timeout: Duration,
    /// A TLS handshake, or a load balancer's PROXY header.
    pub handshake_timeout: Duration,
    /// A client not accepting response bytes.
    pub write_idle_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Load balancers that send a PROXY v2 header first.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// What a refused plain-HTTP client is told (as a busy S3 endpoint says it), before the close.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/xml\r\n\
Content-Length: 126\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

/// Refuse a connection at once: plain HTTP gets [`BUSY`] if its socket takes it without
/// waiting, TLS nothing (a handshake costs what a proxy at its limit cannot spare); then the
/// connection closes. Never waits.
fn refuse<T: AsyncWrite + Unpin>(mut io: T, plain: bool) {
    use futures::FutureExt as _;
    use tokio::io::AsyncWriteExt as _;
    if plain {
        let _ = io.write_all(BUSY).now_or_never();
        let _ = io.shutdown().now_or_never();
    }
}

/// A client connection whose writes time out: if the client stops reading and a write stays
/// blocked for `timeout`, the write fails, hyper drops the connection and everything it was
/// sending (the backend connection behind it is closed, never pooled).
pub struct WriteTimeoutIo<T> {
    inner: T,
    timeout: Duration,
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
    conn: Arc<ConnState>,
}

impl<T> WriteTimeoutIo<T> {
    /// Wrap `inner`.
    pub fn new(inner: T, timeout: Duration, conn: Arc<ConnState>) -> Self {
        WriteTimeoutIo {
            inner,
            timeout,
            blocked: None,
            conn,
        }
    }

    fn check_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.timeout;
        let sleep = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.conn.write_timed_out.store(true, Ordering::Release);
            tracing::info!(?timeout, "client stopped reading: closing its connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read the response in time",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeoutIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeoutIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => match self.check_blocked(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => match self.check_blocked(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => match self.check_blocked(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
            ready => {
                self.blocked = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve clients from `listener` until `shutdown` turns true, then stop accepting and give
/// in-flight requests up to the grace period (idle connections close at once). Once `drain`
/// turns true, every HTTP/1 response says `Connection: close` and its connection closes after
/// it (an idle one is left for its next request: closing it could race a request the client
/// is sending), HTTP/2 connections are sent GOAWAY, and connections accepted from then on
/// serve one request each.
pub async fn serve<A: Accept, C: Connect>(
    mut listener: A,
    proxy: Arc<Proxy<C>>,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut drain: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let plain = acceptor.is_none();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = watchdog::PerClient::new(limits.max_connections_per_client);
    // Whether the proxy drains: HTTP/1 responses say `Connection: close` (no request of a
    // client can race the close, as it would an idle connection closed under it), HTTP/2
    // connections are sent GOAWAY, idle HTTP/1 connections wait for their next request or
    // the shutdown.
    let draining = Arc::new(AtomicBool::new(*drain.borrow_and_update()));
    loop {
        let (io, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            changed = drain.changed(), if !draining.load(Ordering::Relaxed) => {
                if changed.is_err() || *drain.borrow_and_update() {
                    draining.store(true, Ordering::Relaxed);
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // At the limit a new connection is refused at once, not left in the accept backlog:
        // its client can tell a busy proxy from a dead one, and silent connections cannot
        // queue everyone else behind them.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: max_connections reached");
            refuse(io, plain);
            proxy
                .events
                .runtime(RuntimeEvent::ConnectionRefused(Refusal::AtCapacity));
            continue;
        };
        let permit = OpenConnection::new(permit, proxy.events.clone());
        let from_load_balancer = limits
            .proxy_protocol_from
            .iter()
            .any(|network| network.contains(&peer.ip()));
        let conn = Arc::new(ConnState::default());
        let proxy = proxy.clone();
        let acceptor = acceptor.clone();
        let per_client = per_client.clone();
        let draining = draining.clone();
        let mut drain = drain.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let events = proxy.events.clone();
            // A trusted load balancer says who the client is, before anything else (TLS too).
            let (io, peer) = if from_load_balancer {
                let mut io = io;
                match tokio::time::timeout(limits.handshake_timeout, read_header(&mut io)).await {
                    Ok(Ok((source, rest))) => (Rewind::new(io, rest), source.unwrap_or(peer)),
                    Ok(Err(error)) => {
                        tracing::info!(%error, %peer, "closing a load balancer's connection");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "no PROXY header in time from a load balancer");
                        events.runtime(RuntimeEvent::ConnectionExpired(Expiry::Handshake));
                        return;
                    }
                }
            } else {
                (Rewind::new(io, bytes::Bytes::new()), peer)
            };
            // One address holds at most its share (the TLS handshake counts already).
            let Some(_client_slot) = per_client.admit(peer.ip()) else {
                tracing::debug!(%peer, "connection refused: the client holds max_connections_per_client");
                refuse(io, plain);
                events.runtime(RuntimeEvent::ConnectionRefused(Refusal::PerClient));
                return;
            };
            // The TLS handshake runs here, not in the accept loop: a slow client must not hold
            // up everyone else's accepts.
            let io = match acceptor {
                Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => MaybeTls::Server(stream),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        events.runtime(RuntimeEvent::ConnectionExpired(Expiry::Handshake));
                        return;
                    }
                },
                None => MaybeTls::Plain(io),
            };
            let io = TokioIo::new(WriteTimeoutIo::new(io, limits.write_idle_timeout, conn.clone()));
            let cut = conn.clone();
            let draining_now = draining.load(Ordering::Relaxed);
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let proxy = proxy.clone();
                let conn = conn.clone();
                let draining = draining.clone();
                async move {
                    // In progress from its head until hyper is done with its response body.
                    let guard = conn.activity.begin();
                    let http2 = request.version() == http::Version::HTTP_2;
                    if http2 {
                        conn.http2.store(true, Ordering::Relaxed);
                    }
                    // Boxed: the request's future is kilobytes, and hyper would move it (inside this
                    // block) into its per-connection slot for every request.
                    let mut response = Box::pin(proxy.handle(request, peer, conn)).await;
                    if !http2 && draining.load(Ordering::Relaxed) {
                        // hyper closes the connection after this response.
                        response
                            .headers_mut()
                            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response.map(|body| watchdog::Guarded::new(body, guard)))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .keep_alive(!draining_now)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let connection = builder.serve_connection(io, service).into_owned();
            tokio::pin!(connection);
            let expiry = cut.activity.expired(limits.header_read_timeout, limits.idle_timeout);
            tokio::pin!(expiry);
            // Whether the connection was asked to end gracefully (idle: closed now; busy: after
            // its responses in progress; HTTP/2: GOAWAY).
            let mut ending = false;
            loop {
                tokio::select! {
                    biased;
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            tracing::debug!(%error, "client connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|stopped| *stopped), if !ending => {
                        ending = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = drain.wait_for(|draining| *draining), if !ending && cut.http2.load(Ordering::Relaxed) => {
                        ending = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    expired = &mut expiry => {
                        // Dropping the connection closes it: no request was in progress.
                        tracing::debug!(%peer, ?expired, "closing a connection that sent no request in time");
                        events.runtime(RuntimeEvent::ConnectionExpired(match expired {
                            watchdog::Expired::Header => Expiry::Header,
                            watchdog::Expired::Idle => Expiry::Idle,
                        }));
                        break;
                    }
                }
            }
            if cut.write_timed_out.load(Ordering::Acquire) {
                events.runtime(RuntimeEvent::SlowReaderCut);
            }
            drop(permit);
        });
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    // Every connection task holds a slot until it ends: all slots back, all connections gone.
    let every_slot = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(every_slot))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "grace period over: closing remaining connections");
    }
}

/// A client connection's slot under `max_connections`, counted open from accept to close
/// (`RuntimeEvent::ConnectionOpened`, `ConnectionClosed`).
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    events: Arc<crate::telemetry::Events>,
}

impl OpenConnection {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, events: Arc<crate::telemetry::Events>) -> Self {
        events.runtime(RuntimeEvent::ConnectionOpened);
        OpenConnection {
            _permit: permit,
            events,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.events.runtime(RuntimeEvent::ConnectionClosed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_answer_is_well_framed() {
        // Proves the refusal's framing: its Content-Length is its body's length, its body S3 XML.
        let text = std::str::from_utf8(super::BUSY).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    }
}
