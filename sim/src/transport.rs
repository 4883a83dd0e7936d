//! turmoil sockets behind the transport traits of the runtime and of s3-mock, so that the
//! simulation runs their real code (newtypes: both the traits and turmoil's types are foreign
//! to this crate).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use turmoil::net::{TcpListener, TcpStream};

/// Accepts client connections for a simulated proxy.
pub struct ProxyListener(pub TcpListener);

impl storefront::transport::Accept for ProxyListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.0.accept().await
    }
}

/// Dials simulated backends by `host:port`, and resolves the simulation's DNS names (each
/// name stands for a list of simulated hosts, as a cluster's name stands for its nodes).
#[derive(Clone, Debug, Default)]
pub struct SimConnector {
    names: Arc<BTreeMap<String, Vec<String>>>,
}

impl SimConnector {
    /// A connector whose DNS answers `name` with the addresses of the hosts `names` lists.
    pub fn with_names(names: BTreeMap<String, Vec<String>>) -> Self {
        SimConnector { names: Arc::new(names) }
    }
}

impl storefront::transport::Kubernetes for SimConnector {
    /// The simulated API server (the only one there is), through a turmoil socket.
    fn kubernetes(
        &self,
        url: Option<&str>,
        section: &str,
    ) -> Result<kube::Client, storefront::transport::KubernetesError> {
        let expected = crate::kubernetes::url();
        if url != Some(expected.as_str()) {
            return Err(storefront::transport::KubernetesError::Unreachable {
                section: section.to_owned(),
                reason: format!("the simulation's API server is `{expected}`, not {url:?}"),
            });
        }
        Ok(crate::kubernetes::client())
    }
}

impl storefront::transport::Connect for SimConnector {
    type Io = TcpStream;

    async fn connect(&self, address: &str) -> io::Result<TcpStream> {
        TcpStream::connect(address).await
    }

    async fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let hosts = self
            .names
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no simulated DNS name `{name}`")))?;
        Ok(hosts
            .iter()
            .map(|host| SocketAddr::new(turmoil::lookup(host.as_str()), port))
            .collect())
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
