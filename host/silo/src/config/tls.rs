//! TLS for a silo: its certificate for the connections it accepts, and the
//! certificates it trusts when it connects to its peers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

/// A silo's TLS settings. Every silo of a cluster serves TLS or none does:
/// peers connect to each other the way clients do.
#[derive(Clone)]
pub struct SiloTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// The same certificate for the HTTP gateway, offering HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub(crate) http_acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) peers: rio_client::TlsConfig,
}

impl std::fmt::Debug for SiloTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloTls").finish_non_exhaustive()
    }
}

impl SiloTls {
    /// Serves the certificate chain in `certificate` (PEM, the silo's own
    /// certificate first) with the private key in `key` (PEM). Peers'
    /// certificates are checked against the CA certificates in `ca`, or,
    /// without one, against the certificates of `certificate` itself (a
    /// cluster sharing one self-signed certificate, or a chain ending in its
    /// CA).
    pub fn from_pem_files(
        certificate: &Path,
        key: &Path,
        ca: Option<&Path>,
    ) -> Result<SiloTls, ConfigError> {
        let tls_error =
            |path: &Path, what: String| ConfigError::Tls(format!("{}: {what}", path.display()));
        let chain_pem =
            std::fs::read(certificate).map_err(|e| tls_error(certificate, e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(certificate, format!("bad PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(tls_error(certificate, "no certificate in the file".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_error(key, format!("no usable private key: {e}")))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            tls_error(
                certificate,
                format!("the certificate and key do not fit: {e}"),
            )
        })?;
        let peers = match ca {
            Some(ca) => rio_client::TlsConfig::from_ca_file(ca),
            None => rio_client::TlsConfig::from_ca_pem(&chain_pem),
        }
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let mut http = server.clone();
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SiloTls {
            http_acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(http)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            peers,
        })
    }
}
