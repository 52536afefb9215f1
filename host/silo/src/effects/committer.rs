//! Every fenced write of the silo goes through one [`Committer`]: a turn's
//! commit, a keyed turn's intent before its first call, and the intent's
//! deletion. It knows who commits (a cluster member's id from placement, a
//! lone silo's process generation, which holds its data directory's lease)
//! and turns the store's refusal into the one answer a caller gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rio_protocol::ReplyError;

use crate::base::ObjectKey;
use crate::base::reserved::INTENT_KEY;
use crate::cluster::Cluster;
use crate::storage::{Commit, SiloId, StateStore, StorageError};

/// Writes an object's commits as its owner; the store refuses them from
/// any other silo (fencing).
pub(crate) struct Committer {
    store: Arc<dyn StateStore>,
    /// `None` for a silo on its own.
    cluster: Option<Arc<Cluster>>,
    /// This process's generation: when it started, in ms since the epoch.
    generation: i64,
    /// Set when the cluster declared this silo dead: another silo may own
    /// its objects by now, so nothing more is written.
    evicted: AtomicBool,
}

/// Why a commit was not stored.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// Another silo owns the object now: nothing was stored.
    Moved,
    /// This silo cannot say who it is yet (it has not joined its cluster).
    NoIdentity(ReplyError),
    /// The store failed: the commit may or may not have been stored.
    Store(StorageError),
}

impl CommitFailure {
    /// What the caller of a turn hears: `unavailable` when the object
    /// moved (`then` says what became of the turn), `internal` naming
    /// `what` could not be written otherwise.
    pub(crate) fn reply(self, object: &ObjectKey, then: &str, what: &str) -> ReplyError {
        match self {
            CommitFailure::Moved => {
                ReplyError::Unavailable(format!("{object} moved to another silo; {then}"))
            }
            CommitFailure::NoIdentity(error) => error,
            CommitFailure::Store(error) => ReplyError::Internal(format!("cannot {what}: {error}")),
        }
    }
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitFailure::Moved => f.write_str("the object moved to another silo"),
            CommitFailure::NoIdentity(error) => error.fmt(f),
            CommitFailure::Store(error) => error.fmt(f),
        }
    }
}

impl Committer {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        cluster: Option<Arc<Cluster>>,
        generation: i64,
    ) -> Committer {
        Committer {
            store,
            cluster,
            generation,
            evicted: AtomicBool::new(false),
        }
    }

    /// The store every commit goes to, for reads.
    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// This process's generation (ms since the epoch when it started).
    pub(crate) fn generation(&self) -> i64 {
        self.generation
    }

    /// Who commits for this silo's activations.
    pub(crate) fn owner(&self) -> Result<SiloId, ReplyError> {
        match &self.cluster {
            Some(cluster) => cluster.me().cloned(),
            None => Ok(SiloId {
                address: String::new(),
                generation: self.generation,
            }),
        }
    }

    /// The cluster declared this silo dead: it writes nothing more.
    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Stores a keyed turn's `intent` (an encoded `resume::Intent`) before
    /// its first call, fenced like a commit (see `effects::resume`).
    pub(crate) async fn record_intent(
        &self,
        object: &ObjectKey,
        intent: Vec<u8>,
    ) -> Result<(), ReplyError> {
        let commit = Commit {
            writes: vec![(INTENT_KEY.to_string(), Some(intent))],
            ..Commit::default()
        };
        self.commit(object, commit).await.map_err(|failure| {
            failure.reply(
                object,
                "its turn was stopped before its first call",
                &format!("store the keyed turn of {object} before its first call"),
            )
        })
    }

    /// Stores `commit` for `object` if this silo owns it.
    pub(crate) async fn commit(
        &self,
        object: &ObjectKey,
        commit: Commit,
    ) -> Result<(), CommitFailure> {
        let owner = self.owner().map_err(CommitFailure::NoIdentity)?;
        match self.store.commit_turn(object, commit, &owner).await {
            Ok(()) => Ok(()),
            Err(StorageError::Fenced { .. }) => Err(CommitFailure::Moved),
            Err(error) => Err(CommitFailure::Store(error)),
        }
    }
}
