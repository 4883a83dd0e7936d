//! TLS on the client-facing listener, with rustls and the ring provider.

use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use storefront_core::config::ServerTlsSection;

use crate::backend::tls::{certificates, provider};

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
