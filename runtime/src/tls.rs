//! TLS on the client-facing listener and to backends, with rustls and the ring provider.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use storefront_core::config::{BackendTlsSection, ServerTlsSection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(|error| format!("cannot read certificates from `{file}`: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("bad certificate in `{file}`: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("`{file}` holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The listener's TLS configuration (ALPN: h2, http/1.1).
pub fn server_config(section: &ServerTlsSection) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certificates(&section.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&section.key_file)
        .map_err(|error| format!("cannot read a private key from `{}`: {error}", section.key_file))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            format!(
                "`{}` and `{}` do not make a certificate: {error}",
                section.cert_file, section.key_file
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS settings for one pool's backend connections.
#[derive(Clone, Debug)]
pub struct BackendTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl BackendTls {
    /// From `pools[].tls`: trust only the given CA.
    pub fn new(section: &BackendTlsSection) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(&section.ca_file)? {
            roots
                .add(certificate)
                .map_err(|error| format!("unusable CA certificate in `{}`: {error}", section.ca_file))?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(BackendTls {
            config: Arc::new(config),
            server_name: section.server_name.clone(),
        })
    }

    /// Wrap a connection to `address` (`host:port`) in TLS.
    pub async fn connect<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        address: &str,
        io: T,
    ) -> io::Result<tokio_rustls::client::TlsStream<T>> {
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(address).to_owned(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a TLS server name"),
            )
        })?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, io)
            .await
    }
}

/// The host part of `host:port` (without IPv6 brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
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
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        // Proves the default server name is the address's host, IPv6 brackets removed.
        assert_eq!(host_of("s3.example.com:443"), "s3.example.com");
        assert_eq!(host_of("10.0.0.1:9000"), "10.0.0.1");
        assert_eq!(host_of("[::1]:9000"), "::1");
    }
}
