//! Rank 4: what a turn leaves behind and how the silo sees it through:
//! the [`committer`] (every fenced write), replies kept under idempotency
//! keys, the transactional outbox, a client's one-way sends, interrupted
//! keyed turns, and the wake-up pass that finishes what a dead silo left.

pub(crate) mod client_send;
pub(crate) mod committer;
pub(crate) mod idempotency;
pub(crate) mod outbox;
pub(crate) mod resume;
pub(crate) mod wake;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use self::committer::Committer;
use crate::storage::StateStore;

/// What the effects need of the silo, made once by the silo and shared:
/// the committer (and through it the store), the task tracker a stopping
/// silo waits on, its stop signal, and how long a turn may run.
pub(crate) struct Effects {
    pub(crate) committer: Committer,
    /// Every task of the silo's message path, which a stopping silo waits for.
    pub(crate) tasks: TaskTracker,
    /// Flips to `true` once when the silo stops.
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) turn_deadline: Duration,
    /// What the activations keep of keyed replies in memory, in bytes.
    pub(crate) reply_memory: Arc<idempotency::ReplyMemory>,
    /// Where the outboxes count their deliveries.
    pub(crate) outbox_counters: Arc<crate::observe::OutboxCounters>,
}

impl Effects {
    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        self.committer.store()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

#[cfg(test)]
mod tests;
