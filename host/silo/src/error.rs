//! Errors of the silo as a library: what can stop it from starting or serving.

/// Why a silo could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SiloError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The wasmtime engine could not be built with this configuration.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The state store failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The configuration was refused (TLS files, missing tokens).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listener failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
}
