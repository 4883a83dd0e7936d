//! Where connections come from and go to: the server accepts through [`Accept`], the backend
//! client dials through [`Connect`]. Tokio implementations live here; the simulation supplies
//! turmoil ones, so the proxy code it runs is this code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// A stream of accepted client connections.
pub trait Accept: Send + 'static {
    /// A client connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

/// Opens connections to backends.
pub trait Connect: Clone + Send + Sync + 'static {
    /// A backend connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Connect to `address` (`host:port`).
    fn connect(&self, address: &str) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms on Linux).
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }
}

/// Dials backends over TCP (resolving names with the system resolver).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    type Io = tokio::net::TcpStream;

    async fn connect(&self, address: &str) -> io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
