//! Where the silo keeps what must outlive it: object state, components and
//! deployments. One trait per concern; one module per backend.
//!
//! - [`sqlite`]: the embedded default, a file in the silo's data directory.
//!
//! Invariant: a commit either writes all of a turn's changes or none.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::ObjectKey;

pub mod sqlite;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend reported an error (unreachable, full, corrupt, …).
    #[error("state store error: {0}")]
    Backend(String),
    /// The store is shutting down and takes no more writes.
    #[error("state store is closed")]
    Closed,
}

/// One change to a key of an object's state; `None` deletes the key.
pub type StateWrite = (String, Option<Vec<u8>>);

/// Objects' keys and values.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Every key and value of `object`.
    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError>;
    /// Applies `writes` to `object` atomically and durably.
    async fn commit(&self, object: &ObjectKey, writes: Vec<StateWrite>)
    -> Result<(), StorageError>;
}

/// Component bytes (content-addressed) and which type names point at them.
#[async_trait]
pub trait ComponentStore: Send + Sync + 'static {
    /// Stores a component under its content hash (a no-op if present).
    async fn put_component(&self, content_hash: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// The bytes stored under `content_hash`.
    async fn component(&self, content_hash: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Points `service_type` at a stored component.
    async fn set_deployment(
        &self,
        service_type: &str,
        content_hash: &str,
    ) -> Result<(), StorageError>;
    /// Every (service type, content hash) deployed.
    async fn deployments(&self) -> Result<Vec<(String, String)>, StorageError>;
}
