//! The placement directory: which silo owns each object's one activation in
//! the cluster.
//!
//! Invariant: every change is atomic in the store (insert-if-absent or
//! compare-and-set), so of silos racing for one object exactly one wins,
//! and all of them learn which.

use async_trait::async_trait;

use super::StorageError;
use super::membership::SiloId;
use crate::base::ObjectKey;

/// Object → owning silo.
#[async_trait]
pub trait PlacementStore: Send + Sync + 'static {
    /// The silo that owns `object`, if any.
    async fn owner(&self, object: &ObjectKey) -> Result<Option<SiloId>, StorageError>;
    /// Makes `silo` the owner of `object` unless it has one; returns the
    /// owner afterwards (`silo` if it won).
    async fn claim(&self, object: &ObjectKey, silo: &SiloId) -> Result<SiloId, StorageError>;
    /// Moves `object` from `from` (a silo known dead or gone) to `to`, only if
    /// `from` still owns it; returns the owner afterwards, `None` if the
    /// entry vanished meanwhile (then the caller may claim).
    async fn take_over(
        &self,
        object: &ObjectKey,
        from: &SiloId,
        to: &SiloId,
    ) -> Result<Option<SiloId>, StorageError>;
    /// Removes the entry of `object` if `silo` owns it.
    async fn release(&self, object: &ObjectKey, silo: &SiloId) -> Result<(), StorageError>;
    /// Removes every entry `silo` owns (it is dead); returns how many.
    async fn release_all(&self, silo: &SiloId) -> Result<u64, StorageError>;
}
