//! TLS for connections to silos: which certificates a client trusts, and
//! the name it expects the silo's certificate to carry.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::ClientError;

/// A client's TLS settings: the certificate authorities whose certificates
/// it accepts from silos. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trusts the certificates (PEM) in the file at `path`: the CA that
    /// signed the silos' certificates, or a silo's self-signed certificate.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<TlsConfig, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
        TlsConfig::from_ca_pem(&pem)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))
    }

    /// Trusts the certificates in `pem`.
    pub fn from_ca_pem(pem: &[u8]) -> Result<TlsConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate =
                certificate.map_err(|e| ClientError::Tls(format!("bad PEM certificate: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| ClientError::Tls(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("no certificate in the CA file".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsConfig {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Expects silos' certificates to name `name` instead of the host part
    /// of the address connected to.
    pub fn with_server_name(mut self, name: &str) -> Result<TlsConfig, ClientError> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| ClientError::Tls(format!("bad server name `{name}`: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Starts TLS on `stream`, checking the silo's certificate for `address`.
    pub(crate) async fn connect(
        &self,
        address: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host_of(address);
                ServerName::try_from(host.to_string()).map_err(|e| {
                    ClientError::Tls(format!("`{host}` cannot name a TLS server: {e}"))
                })?
            }
        };
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| ClientError::Tls(format!("TLS handshake with {address} failed: {e}")))
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address_drops_the_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_of("silo.example:7700"), "silo.example");
        assert_eq!(host_of("[::1]:7700"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
