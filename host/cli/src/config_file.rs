//! The optional TOML file of `rio silo --config FILE`; flags win over it.
//!
//! ```toml
//! listen = "127.0.0.1:7700"
//! data_dir = "./rio-data"
//! idle_timeout_secs = 600
//! turn_deadline_ms = 5000
//! memory_limit_mib = 64
//! mailbox_capacity = 4096
//! max_frame_mib = 64
//! pooling_allocator = false
//! memory_images = false                          # true: wasmtime's copy-on-write images
//! max_activations = 100000                        # absent: no limit
//! memory_budget_mib = 8192                        # absent: 3/4 of memory; 0: none
//! sqlite_durability = "full"                      # or "normal": no sync per commit
//! idempotency_retention_secs = 86400              # replies kept under keys
//! idempotency_sweep_secs = 60                     # how often expired ones go
//! handshake_timeout_ms = 10000
//! connection_idle_secs = 600
//! max_connections = 1024                         # fitted to the open-files limit
//! max_connections_before_hello = 256
//! failed_hello_delay_ms = 500
//! max_unfinished_frame_mib = 256
//! frame_timeout_secs = 60
//! max_unread_reply_mib = 16
//! peer_event_queue = 100000
//! max_requests_in_flight = 1024
//! cluster = "postgres://postgres@127.0.0.1/rio"   # absent: no cluster
//! advertise = "10.0.0.5:7700"
//! placement = "random"                           # or prefer-local, hash
//! call_token_file = "/etc/rio/call-token"         # tokens only from files here
//! admin_token_file = "/etc/rio/admin-token"
//! cluster_secret_file = "/etc/rio/cluster-secret"
//! tls_cert = "/etc/rio/silo.pem"                  # absent: plain TCP
//! tls_key = "/etc/rio/silo-key.pem"
//! tls_ca = "/etc/rio/ca.pem"                      # peers' CA; default: tls_cert
//! allow_unauthenticated = false                   # non-loopback without tokens
//!
//! [limits]                                        # see README, "Security and limits"
//! turn-write-bytes = 8388608
//! call-depth = 16
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub(crate) listen: Option<String>,
    pub(crate) http: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) idle_timeout_secs: Option<u64>,
    pub(crate) turn_deadline_ms: Option<u64>,
    pub(crate) memory_limit_mib: Option<usize>,
    pub(crate) mailbox_capacity: Option<usize>,
    pub(crate) max_frame_mib: Option<usize>,
    pub(crate) pooling_allocator: Option<bool>,
    pub(crate) memory_images: Option<bool>,
    pub(crate) max_activations: Option<usize>,
    pub(crate) memory_budget_mib: Option<u64>,
    pub(crate) idempotency_retention_secs: Option<u64>,
    pub(crate) sqlite_durability: Option<String>,
    pub(crate) idempotency_sweep_secs: Option<u64>,
    pub(crate) handshake_timeout_ms: Option<u64>,
    pub(crate) connection_idle_secs: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_before_hello: Option<usize>,
    pub(crate) failed_hello_delay_ms: Option<u64>,
    pub(crate) max_unfinished_frame_mib: Option<usize>,
    pub(crate) frame_timeout_secs: Option<u64>,
    pub(crate) max_unread_reply_mib: Option<usize>,
    pub(crate) peer_event_queue: Option<usize>,
    pub(crate) max_requests_in_flight: Option<usize>,
    pub(crate) cluster: Option<String>,
    pub(crate) advertise: Option<String>,
    pub(crate) placement: Option<String>,
    pub(crate) call_token_file: Option<PathBuf>,
    pub(crate) admin_token_file: Option<PathBuf>,
    pub(crate) cluster_secret_file: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) allow_unauthenticated: Option<bool>,
    /// Limit name → value, as `--limit NAME=VALUE` takes them.
    #[serde(default)]
    pub(crate) limits: std::collections::BTreeMap<String, u64>,
}

impl ConfigFile {
    pub(crate) fn read(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid rio config", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_refuses_unknown_ones() {
        let config: ConfigFile =
            toml::from_str("listen = \"0.0.0.0:1\"\nmemory_limit_mib = 8").unwrap();
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(config.memory_limit_mib, Some(8));
        assert!(toml::from_str::<ConfigFile>("lisen = \"x\"").is_err());
    }
}
