//! A test PKI: a CA and a certificate for 127.0.0.1 and localhost, as PEM.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// A CA, and a certificate with its key signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "storefront test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let cert = params.signed_by(&key, &issuer).expect("cert");
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// `pki`'s CA, certificate and key as `ca.pem`, `cert.pem` and `key.pem` in a fresh temporary
/// directory named after `name`: the directory and the CA's path.
pub fn pki_files(pki: &Pki, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let directory = std::env::temp_dir().join(format!("storefront-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let ca = directory.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("ca");
    std::fs::write(directory.join("cert.pem"), &pki.cert_pem).expect("cert");
    std::fs::write(directory.join("key.pem"), &pki.key_pem).expect("key");
    (directory, ca)
}

impl Pki {
    /// A rustls server configuration presenting the certificate.
    pub fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject as _;
        let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("cert")];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key");
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config")
    }
}
