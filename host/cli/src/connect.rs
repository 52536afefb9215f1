//! How every client command reaches its silo: the address, the token and
//! TLS, shared as one set of flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rio_client::{Client, ConnectOptions, TlsConfig};

#[derive(Args, Clone)]
pub(crate) struct SiloAddress {
    /// The silo to talk to (host:port).
    #[arg(long, default_value = crate::DEFAULT_SILO, env = "RIO_SILO")]
    pub(crate) silo: String,
    /// The token the silo requires: a call token, or the admin token for
    /// deploy, undeploy, members and dead letters.
    #[arg(
        long,
        env = "RIO_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the token (its first line).
    #[arg(long, env = "RIO_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Connect over TLS, trusting the certificates (PEM) in this file: the
    /// CA that signed the silo's certificate, or the silo's own.
    #[arg(long, env = "RIO_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the silo's certificate must carry [default: the host part
    /// of --silo].
    #[arg(long, env = "RIO_TLS_SERVER_NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl SiloAddress {
    /// Connects to the silo as these flags say.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let options = self.options()?;
        Ok(Client::connect_with(&self.silo, &options).await?)
    }

    pub(crate) fn options(&self) -> anyhow::Result<ConnectOptions> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(read_secret_file(path)?),
            (None, None) => None,
        };
        let tls = match &self.tls_ca {
            None => None,
            Some(ca) => {
                let tls = TlsConfig::from_ca_file(ca)?;
                Some(match &self.tls_server_name {
                    Some(name) => tls.with_server_name(name)?,
                    None => tls,
                })
            }
        };
        Ok(ConnectOptions {
            token,
            tls,
            ..ConnectOptions::default()
        })
    }
}

/// The first line of a token or secret file, without its line ending.
pub(crate) fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !line.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(line)
}
