//! turmoil sockets behind the transport traits of the runtime and of s3-mock, so that the
//! simulation runs their real code (newtypes: both the traits and turmoil's types are foreign
//! to this crate).

use std::io;
use std::net::SocketAddr;

use turmoil::net::{TcpListener, TcpStream};

/// Accepts client connections for a simulated proxy.
pub struct ProxyListener(pub TcpListener);

impl storefront::transport::Accept for ProxyListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.0.accept().await
    }
}

/// Dials simulated backends by `host:port`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector;

impl storefront::transport::Connect for SimConnector {
    type Io = TcpStream;

    async fn connect(&self, address: &str) -> io::Result<TcpStream> {
        TcpStream::connect(address).await
    }
}

/// Binds a simulated storage node's listener on a port of its host.
#[derive(Clone, Copy, Debug)]
pub struct NodeBind(pub u16);

/// A simulated storage node's listener.
pub struct NodeListener(TcpListener);

impl s3_mock::transport::Bind for NodeBind {
    type Listener = NodeListener;

    async fn bind(&self) -> io::Result<NodeListener> {
        TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, self.0))
            .await
            .map(NodeListener)
    }
}

impl s3_mock::transport::Listener for NodeListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
