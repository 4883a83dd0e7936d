//! TLS to backends (and the certificate loading the listener shares), with rustls and the
//! ring provider.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use storefront_core::config::BackendTlsSection;

use tokio::io::{AsyncRead, AsyncWrite};

/// The crypto provider of every TLS configuration: ring (never aws-lc; see CRATES.md).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM certificates of `file`, at least one.
pub(crate) fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(|error| format!("cannot read certificates from `{file}`: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("bad certificate in `{file}`: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("`{file}` holds no PEM certificate"));
    }
    Ok(certificates)
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
