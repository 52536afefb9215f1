//! Where the silo keeps what must outlive it: object state, components and
//! deployments. One trait per concern; one module per backend.
//!
//! - [`sqlite`]: the embedded default of a silo on its own, a file in its
//!   data directory (state and components only: a lone silo needs no
//!   membership or placement).
//! - [`sql`]: every concern on PostgreSQL, MySQL/MariaDB or a SQLite file
//!   shared by the silos of one machine.
//! - [`redis`]: every concern on Redis.
//!
//! Invariants: a commit either writes all of a turn's changes or none; and
//! it writes them only if the committing silo owns the object at that
//! moment, checked in the same transaction (or script) as the write, so a
//! silo that lost an object while frozen cannot overwrite the new owner's
//! writes (fencing).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ObjectKey;

pub mod membership;
pub mod placement;
pub mod redis;
pub mod sql;
pub mod sqlite;

pub use membership::{Member, MembershipStore, SiloId, SiloStatus};
pub use placement::PlacementStore;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend reported an error (unreachable, full, corrupt, …).
    #[error("state store error: {0}")]
    Backend(String),
    /// The store is shutting down and takes no more writes.
    #[error("state store is closed")]
    Closed,
    /// The committing silo does not own the object (any more): the commit
    /// changed nothing.
    #[error("commit refused: {object} is not owned by {silo}")]
    Fenced {
        /// The object whose commit was refused.
        object: String,
        /// The silo that tried to commit.
        silo: String,
    },
    /// The cluster URL names no backend this silo has, or is malformed.
    #[error("bad cluster store URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given (without its password).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StorageError {
    /// The refusal of a commit to `object` by `silo`, which does not own it.
    pub fn fenced(object: &ObjectKey, silo: &SiloId) -> StorageError {
        StorageError::Fenced {
            object: object.to_string(),
            silo: silo.to_string(),
        }
    }
}

/// One change to a key of an object's state; `None` deletes the key.
pub type StateWrite = (String, Option<Vec<u8>>);

/// Objects' keys and values.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Every key and value of `object`.
    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError>;
    /// Applies `writes` to `object` atomically and durably, if `owner` owns
    /// `object` when the commit is applied; otherwise changes nothing and
    /// answers [`StorageError::Fenced`]. In a cluster store the placement
    /// entry must name exactly `owner` (address and generation; no entry
    /// refuses too); the embedded store checks `owner`'s generation against
    /// the lease of the process that opened the file last. Commits batched
    /// together fail or succeed each on their own ownership.
    async fn commit(
        &self,
        object: &ObjectKey,
        writes: Vec<StateWrite>,
        owner: &SiloId,
    ) -> Result<(), StorageError>;
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

/// Every concern of a cluster, each behind its trait; one backend usually
/// serves all four.
#[derive(Clone)]
pub struct ClusterStore {
    /// Objects' state.
    pub state: Arc<dyn StateStore>,
    /// Components and deployments, shared by every silo.
    pub components: Arc<dyn ComponentStore>,
    /// Which silos exist and whether they are alive.
    pub membership: Arc<dyn MembershipStore>,
    /// Which silo owns which object.
    pub placement: Arc<dyn PlacementStore>,
}

impl ClusterStore {
    /// One backend for all four concerns.
    pub fn from_backend<B>(backend: Arc<B>) -> ClusterStore
    where
        B: StateStore + ComponentStore + MembershipStore + PlacementStore,
    {
        ClusterStore {
            state: backend.clone(),
            components: backend.clone(),
            membership: backend.clone(),
            placement: backend,
        }
    }

    /// Opens (and migrates) the store a cluster URL names: `sqlite:PATH`,
    /// `postgres://…`, `mysql://…` (or `mariadb://…`), `redis://…`.
    pub async fn open(url: &str, group_commit_max: usize) -> Result<ClusterStore, StorageError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => {
                sql::open_cluster(url, group_commit_max).await
            }
            "redis" | "rediss" => redis::open_cluster(url).await,
            _ => Err(StorageError::BadUrl {
                url: redact(url),
                reason: "expected sqlite:PATH, postgres://, mysql://, mariadb:// or redis://"
                    .into(),
            }),
        }
    }
}

/// `url` with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}
