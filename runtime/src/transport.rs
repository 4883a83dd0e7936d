//! Where connections come from and go to: the server accepts through [`Accept`], the backend
//! client dials through [`Connect`], and the pod watch and the token exchange reach the
//! Kubernetes API through [`Kubernetes`]. Tokio implementations live here; the simulation
//! supplies turmoil ones, so the proxy code it runs is this code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream of accepted client connections.
pub trait Accept: Send + 'static {
    /// A client connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

/// Builds the clients the pod watch and the token exchange reach the Kubernetes API with.
pub trait Kubernetes: Send + Sync {
    /// A client of the API server at `url` (none: the in-cluster service account's), for the
    /// configuration section `section` (`auth.pods`), which errors name. The default is
    /// kube-rs's own client over TCP (TLS, bearer token and CA from the URL or the service
    /// account).
    fn kubernetes(&self, url: Option<&str>, section: &str) -> Result<kube::Client, KubernetesError> {
        let config = match url {
            Some(url) => kube::Config::new(url.parse().map_err(|source| KubernetesError::Url {
                section: section.to_owned(),
                url: url.to_owned(),
                source,
            })?),
            None => {
                let variable = |name: &str| {
                    std::env::var(name).map_err(|_| KubernetesError::NotInCluster {
                        section: section.to_owned(),
                        reason: format!("{name} is not set"),
                    })
                };
                let (host, port) = (
                    variable("KUBERNETES_SERVICE_HOST")?,
                    variable("KUBERNETES_SERVICE_PORT")?,
                );
                in_cluster_config(&host, &port, std::path::Path::new(SERVICE_ACCOUNT_DIR)).map_err(|reason| {
                    KubernetesError::NotInCluster {
                        section: section.to_owned(),
                        reason,
                    }
                })?
            }
        };
        kube::Client::try_from(config).map_err(|source| KubernetesError::Client {
            section: section.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Where Kubernetes mounts a pod's service account: `token`, `ca.crt`, `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The client configuration of a pod's service account: the API server at `host`:`port` (as
/// `KUBERNETES_SERVICE_HOST` and `_PORT` give them) over TLS, trusting the CA in `account`'s
/// `ca.crt`, sending the bearer token of its `token` file, which kube-rs re-reads at least
/// once a minute (the kubelet rotates projected tokens in place); its `namespace` is the
/// default one. `Err` says what is missing or unreadable.
pub fn in_cluster_config(host: &str, port: &str, account: &std::path::Path) -> Result<kube::Config, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("https://{host}:{port}");
    let mut config = kube::Config::new(
        url.parse()
            .map_err(|error| format!("`{url}` (from KUBERNETES_SERVICE_HOST/PORT) is not a URL: {error}"))?,
    );
    let ca = account.join("ca.crt");
    let roots = CertificateDer::pem_file_iter(&ca)
        .map_err(|error| format!("cannot read `{}`: {error}", ca.display()))?
        .map(|certificate| certificate.map(|certificate| certificate.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("bad certificate in `{}`: {error}", ca.display()))?;
    if roots.is_empty() {
        return Err(format!("`{}` holds no certificate", ca.display()));
    }
    config.root_cert = Some(roots);
    let token = account.join("token");
    std::fs::metadata(&token).map_err(|error| format!("cannot read `{}`: {error}", token.display()))?;
    config.auth_info.token_file = Some(token.display().to_string());
    if let Ok(namespace) = std::fs::read_to_string(account.join("namespace")) {
        config.default_namespace = namespace.trim().to_owned();
    }
    Ok(config)
}

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The configured URL does not parse.
    #[error("{section}.kubernetes_url `{url}`: {source}")]
    Url {
        /// The configuration section (`auth.pods`).
        section: String,
        /// The URL given.
        url: String,
        /// Why it does not parse.
        source: http::uri::InvalidUri,
    },
    /// No URL was given and the proxy does not run in a Kubernetes pod.
    #[error("{section}: not in a Kubernetes cluster ({reason}); set {section}.kubernetes_url")]
    NotInCluster {
        /// The configuration section.
        section: String,
        /// What the in-cluster configuration lacked.
        reason: String,
    },
    /// kube-rs refused the configuration (TLS, credentials).
    #[error("{section}: Kubernetes client: {source}")]
    Client {
        /// The configuration section.
        section: String,
        /// kube-rs's error.
        source: Box<kube::Error>,
    },
    /// The network the proxy runs on has no such API server (the simulation's).
    #[error("{section}.kubernetes_url: {reason}")]
    Unreachable {
        /// The configuration section.
        section: String,
        /// Why.
        reason: String,
    },
}

/// The network the backends are on: dials them, and resolves the names of DNS pools.
pub trait Connect: Kubernetes + Clone + Send + Sync + 'static {
    /// A backend connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Connect to `address` (`host:port`).
    fn connect(&self, address: &str) -> impl Future<Output = io::Result<Self::Io>> + Send;
    /// Every address `name` resolves to (A and AAAA records), with `port`.
    fn resolve(&self, name: &str, port: u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
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

impl Kubernetes for TcpConnector {}

impl Connect for TcpConnector {
    type Io = tokio::net::TcpStream;

    async fn connect(&self, address: &str) -> io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((name, port)).await?.collect())
    }
}

/// A connection that may be TLS (either side).
#[allow(clippy::large_enum_variant)]
pub enum MaybeTls<T> {
    /// Plain TCP (or whatever the transport is).
    Plain(T),
    /// TLS accepted by the listener.
    Server(tokio_rustls::server::TlsStream<T>),
    /// TLS opened to a backend.
    Client(tokio_rustls::client::TlsStream<T>),
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Server(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Client(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, data),
            MaybeTls::Server(io) => Pin::new(io).poll_write(cx, data),
            MaybeTls::Client(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Server(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Client(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Server(io) => io.is_write_vectored(),
            MaybeTls::Client(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Server(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Client(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Server(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Client(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod kubernetes_tests {
    use super::{Kubernetes, TcpConnector};

    #[test]
    fn a_kubernetes_client_that_cannot_be_built_names_the_setting() {
        // Proves the errors of the pod watch's and token exchange's client: a URL that does
        // not parse, and no URL outside a cluster, each name the setting to fix.
        let Err(error) = TcpConnector.kubernetes(Some("http://bad host"), "auth.pods") else {
            panic!("not a URL, yet a client");
        };
        assert!(
            error
                .to_string()
                .starts_with("auth.pods.kubernetes_url `http://bad host`: "),
            "{error}"
        );
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            let Err(error) = TcpConnector.kubernetes(None, "auth.sts") else {
                panic!("not in a cluster, yet a client");
            };
            let text = error.to_string();
            assert!(text.starts_with("auth.sts: not in a Kubernetes cluster"), "{text}");
            assert!(text.ends_with("set auth.sts.kubernetes_url"), "{text}");
        }
    }
}
