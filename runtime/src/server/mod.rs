//! The client-facing server: accept loop, connection limit, HTTP/1.1 and HTTP/2 via hyper,
//! header limits, the slow-reader timeout, graceful shutdown.

pub mod proxy_protocol;
pub mod tls;

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

use crate::request::{ConnState, Proxy};
use crate::server::proxy_protocol::{Rewind, read_header};
use crate::transport::MaybeTls;
use crate::transport::{Accept, Connect};

/// Server limits, from `[server]` and `[timeouts]`.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Client connections at once.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1 read buffer).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Reading a request head.
    pub header_read_timeout: Duration,
    /// A client not accepting response bytes.
    pub write_idle_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Load balancers that send a PROXY v2 header first.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// How long a client may take to complete the TLS handshake (bounded like the header read).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
/// in-flight requests up to the grace period.
pub async fn serve<A: Accept, C: Connect>(
    mut listener: A,
    proxy: Arc<Proxy<C>>,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            biased;
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (io, peer) = tokio::select! {
            biased;
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let from_load_balancer = limits
            .proxy_protocol_from
            .iter()
            .any(|network| network.contains(&peer.ip()));
        let conn = Arc::new(ConnState::default());
        let proxy = proxy.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A trusted load balancer says who the client is, before anything else (TLS too).
            let (io, peer) = if from_load_balancer {
                let mut io = io;
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, read_header(&mut io)).await {
                    Ok(Ok((source, rest))) => (Rewind::new(io, rest), source.unwrap_or(peer)),
                    Ok(Err(error)) => {
                        tracing::info!(%error, %peer, "closing a load balancer's connection");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "no PROXY header in time from a load balancer");
                        return;
                    }
                }
            } else {
                (Rewind::new(io, bytes::Bytes::new()), peer)
            };
            // The TLS handshake runs here, not in the accept loop: a slow client must not hold
            // up everyone else's accepts.
            let io = match acceptor {
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => MaybeTls::Server(stream),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                None => MaybeTls::Plain(io),
            };
            let io = TokioIo::new(WriteTimeoutIo::new(io, limits.write_idle_timeout, conn.clone()));
            let events = proxy.events.clone();
            let cut = conn.clone();
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, peer, conn).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
            let connection = builder.serve_connection(io, service).into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "client connection ended with an error");
            }
            if cut.write_timed_out.load(Ordering::Acquire) {
                events.runtime(crate::telemetry::RuntimeEvent::SlowReaderCut);
            }
            drop(permit);
        });
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "grace period over: closing remaining connections");
    }
}
