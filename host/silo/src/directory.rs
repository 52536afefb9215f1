//! Which objects have an activation on this silo, and which are in the
//! middle of being deactivated.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch};

use crate::ObjectKey;
use crate::mailbox::Envelope;

/// One object's place in the directory.
pub(crate) enum Slot {
    /// Messages go into this mailbox.
    Active(mpsc::Sender<Envelope>),
    /// The activation is running its deactivation hook and committing; a new
    /// activation must wait for `true` here so it loads the final state.
    Deactivating(watch::Receiver<bool>),
    /// In a cluster: the placement store is being asked where the object
    /// lives; messages wait here meanwhile, in order.
    Placing(Vec<Envelope>),
}

/// A std mutex, not tokio's: it is held only for a map operation and a
/// non-blocking `try_send`, never across an await. Sending under the lock is
/// what lets an idle activation retire without losing a message: it checks
/// its mailbox is empty while holding the same lock.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) slots: Mutex<HashMap<ObjectKey, Slot>>,
}

impl Directory {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Slot>> {
        // A panic while holding this lock would be a bug in a few lines of map
        // code; the map itself stays consistent, so keep serving.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn live_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|slot| matches!(slot, Slot::Active(_)))
            .count()
    }
}
