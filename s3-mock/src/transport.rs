//! Where a node's connections come from: a listener trait with a tokio implementation here and
//! a turmoil one in the simulation, so the same node code runs in both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bound listener that yields accepted connections.
pub trait Listener: Send + 'static {
    /// The connection type (tokio IO; wrapped in `TokioIo` for hyper).
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Wait for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Something that can (re)bind a listener: a node binds at start and again after a restart.
pub trait Bind: Send + Sync + 'static {
    /// The listener it produces.
    type Listener: Listener;
    /// Bind, on the same address every time.
    fn bind(&self) -> impl Future<Output = io::Result<Self::Listener>> + Send;
}

/// Binds a tokio TCP listener. Port 0 picks a free port at the first bind and keeps it for
/// rebinds, so a restarted node comes back where clients expect it.
#[derive(Debug)]
pub struct TcpBind {
    address: Mutex<SocketAddr>,
    /// A listener bound ahead ([`TcpBind::bind_now`]), handed out by the next bind.
    held: Mutex<Option<tokio::net::TcpListener>>,
}

impl TcpBind {
    /// Bind to `address` (port 0 for any free port).
    pub fn new(address: SocketAddr) -> Self {
        TcpBind {
            address: Mutex::new(address),
            held: Mutex::new(None),
        }
    }

    /// Bind now, so that a taken port is the caller's error at once, and keep the listener for
    /// the next [`Bind::bind`]: closing it and binding again would leave the port free for a
    /// moment, for any other process to take.
    pub async fn bind_now(&self) -> io::Result<()> {
        let listener = Bind::bind(self).await?;
        *self.held.lock().expect("held lock is never poisoned") = Some(listener);
        Ok(())
    }
}

impl Bind for TcpBind {
    type Listener = tokio::net::TcpListener;

    async fn bind(&self) -> io::Result<tokio::net::TcpListener> {
        if let Some(listener) = self.held.lock().expect("held lock is never poisoned").take() {
            return Ok(listener);
        }
        let address = *self.address.lock().expect("address lock is never poisoned");
        let listener = tokio::net::TcpListener::bind(address).await?;
        *self.address.lock().expect("address lock is never poisoned") = listener.local_addr()?;
        Ok(listener)
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms on Linux).
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Wrap a tokio stream for hyper.
pub fn hyper_io<T>(io: T) -> TokioIo<T> {
    TokioIo::new(io)
}
