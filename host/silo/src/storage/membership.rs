//! The membership store: which silos form the cluster, their status, their
//! heartbeats, and who suspects whom.
//!
//! Invariant: a silo's status only moves forward, `active` to `left` or
//! `dead`, never back; a restarted process joins under a new generation.

use async_trait::async_trait;

use super::StorageError;

/// One silo process: its address and the generation it joined with. A
/// process restarted on the same address is a different silo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiloId {
    /// `host:port` where the silo serves the wire protocol.
    pub address: String,
    /// Chosen at start (milliseconds since the Unix epoch), unique per address.
    pub generation: i64,
}

impl std::fmt::Display for SiloId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.address, self.generation)
    }
}

/// Where a silo is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiloStatus {
    /// Serving; may own objects.
    Active,
    /// Stopped gracefully; owns nothing once its objects are deactivated.
    Left,
    /// Declared dead by the others; its objects may be taken over.
    Dead,
}

impl SiloStatus {
    /// The text stored for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            SiloStatus::Active => "active",
            SiloStatus::Left => "left",
            SiloStatus::Dead => "dead",
        }
    }

    /// The status stored as `text`; unknown text reads as dead, the safe side.
    pub fn parse(text: &str) -> SiloStatus {
        match text {
            "active" => SiloStatus::Active,
            "left" => SiloStatus::Left,
            _ => SiloStatus::Dead,
        }
    }
}

/// One row of the membership table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Which silo.
    pub silo: SiloId,
    /// Its status.
    pub status: SiloStatus,
    /// When it last wrote its heartbeat, in milliseconds since the Unix epoch.
    pub heartbeat_ms: i64,
}

/// Silos of the cluster and what they think of each other.
#[async_trait]
pub trait MembershipStore: Send + Sync + 'static {
    /// Adds `silo` as active with a heartbeat at `now_ms`.
    async fn join(&self, silo: &SiloId, now_ms: i64) -> Result<(), StorageError>;
    /// Records that `silo` is alive at `now_ms` (also while it is leaving)
    /// and returns its status as stored, so a silo learns when the others
    /// declared it dead. A silo that is not in the table reads as dead.
    async fn heartbeat(&self, silo: &SiloId, now_ms: i64) -> Result<SiloStatus, StorageError>;
    /// Moves `silo` from active to `status`; a silo already left or dead
    /// stays as it is.
    async fn set_status(&self, silo: &SiloId, status: SiloStatus) -> Result<(), StorageError>;
    /// Every silo that ever joined (and was not cleaned up), any status.
    async fn members(&self) -> Result<Vec<Member>, StorageError>;
    /// Records that `by` could not reach `target` at `now_ms`; of one
    /// suspector's suspicions of one target the latest counts, whatever
    /// order they arrive in.
    async fn suspect(&self, target: &SiloId, by: &SiloId, now_ms: i64) -> Result<(), StorageError>;
    /// How many distinct silos suspected `target` at or after `since_ms`.
    async fn suspicions(&self, target: &SiloId, since_ms: i64) -> Result<usize, StorageError>;
}
