//! Certificates for tests of TLS: a CA of their own and a silo
//! certificate it signed, written as PEM files.

use std::path::{Path, PathBuf};

pub fn file_with(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, as PEM
/// files in `dir`: (ca, certificate, key).
pub fn generated_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("rio test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let certificate = params.signed_by(&key, &ca, &ca_key).unwrap();
    (
        file_with(dir, &format!("{name}-ca.pem"), &ca.pem()),
        file_with(dir, &format!("{name}-silo.pem"), &certificate.pem()),
        file_with(dir, &format!("{name}-silo-key.pem"), &key.serialize_pem()),
    )
}

/// The `rio silo` flags that serve TLS with these files.
pub fn tls_flags<'a>(certificate: &'a Path, key: &'a Path, ca: &'a Path) -> Vec<&'a str> {
    vec![
        "--tls-cert",
        certificate.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-ca",
        ca.to_str().unwrap(),
    ]
}

/// A TLS connector that trusts `ca`, offering `alpn` (e.g. `h2`) if any.
pub fn connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
