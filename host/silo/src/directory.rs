//! Which objects have an activation on this silo, which are being
//! deactivated, and (in a cluster) which are being placed; and the messages
//! waiting on each.
//!
//! ```text
//!            deliver (no slot)            placed here
//!   absent ──────────────────► Placing ─────────────► Active ◄─┐
//!     ▲  └─────────── deliver (lone silo) ──────────────┘      │ deliver: into the mailbox
//!     │                                                 │ retire_if_idle / start_deactivating
//!     └────── finish_deactivation (queued re-sent) ◄ Deactivating (messages queue here)
//! ```
//!
//! Every transition happens under one lock, which is also held while a
//! message is put into a mailbox: that is what lets an idle activation
//! retire without losing a message (it checks its mailbox is empty under the
//! same lock). The lock is never held across an await.

use std::collections::HashMap;
use std::sync::Mutex;

use rio_protocol::ReplyError;
use tokio::sync::mpsc;

use crate::ObjectKey;
use crate::mailbox::Envelope;

/// One object's place in the directory.
enum Slot {
    /// Messages go into this mailbox.
    Active(mpsc::Sender<Envelope>),
    /// The activation is running its deactivation hook and committing;
    /// messages wait here, in order, and are re-sent once it is done, so the
    /// next activation loads the final state.
    Deactivating(Vec<Envelope>),
    /// In a cluster: the placement store is being asked where the object
    /// lives; messages wait here meanwhile, in order.
    Placing(Vec<Envelope>),
}

/// What an object without a slot gets, decided by the router under the lock.
pub(crate) enum Vacancy {
    /// Activate it here: a mailbox is opened with the message in it.
    Activate,
    /// Ask the cluster where it lives; the message waits meanwhile.
    Place,
    /// Refuse the message.
    Refuse(ReplyError),
}

/// What became of a message offered to the directory.
pub(crate) enum Delivery {
    /// In the object's mailbox, or waiting in its slot.
    Queued,
    /// Refused; the envelope's caller must hear why.
    /// Boxed: a refusal is rare, and the common `Queued` stays small.
    Refused(Box<Envelope>, ReplyError),
    /// A new mailbox holds the message: the caller starts the activation.
    Activate(mpsc::Receiver<Envelope>),
    /// A new `Placing` slot holds the message: the caller starts placement.
    Place,
}

/// How a placement ended, for the messages that waited on it.
pub(crate) enum Settled {
    /// The object's new mailbox, holding them: start the activation.
    Here(mpsc::Receiver<Envelope>),
    /// They go elsewhere (or fail).
    Elsewhere(Vec<Envelope>),
}

/// A std mutex, not tokio's: it is held only for a map operation and a
/// non-blocking `try_send`, never across an await.
pub(crate) struct Directory {
    slots: Mutex<HashMap<ObjectKey, Slot>>,
    /// How many messages a mailbox or a waiting slot holds.
    capacity: usize,
}

impl Directory {
    pub(crate) fn new(capacity: usize) -> Directory {
        Directory {
            slots: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Slot>> {
        // A panic while holding this lock would be a bug in a few lines of map
        // code; the map itself stays consistent, so keep serving.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `envelope` where the object's messages go; for an object with no
    /// slot, `vacancy` says what to do (called under the lock).
    pub(crate) fn deliver(
        &self,
        key: &ObjectKey,
        mut envelope: Envelope,
        vacancy: impl FnOnce() -> Vacancy,
    ) -> Delivery {
        let mut slots = self.lock();
        if let Some(Slot::Active(mailbox)) = slots.get(key) {
            match mailbox.try_send(envelope) {
                Ok(()) => return Delivery::Queued,
                Err(mpsc::error::TrySendError::Full(refused)) => {
                    let message = format!("the mailbox of {key} is full");
                    return Delivery::Refused(Box::new(refused), ReplyError::Overloaded(message));
                }
                Err(mpsc::error::TrySendError::Closed(refused)) => {
                    // The activation ended without clearing its slot (it
                    // cannot, but a stale slot must not wedge the object).
                    slots.remove(key);
                    envelope = refused;
                }
            }
        }
        match slots.get_mut(key) {
            Some(Slot::Active(_)) => unreachable!("handled above"),
            Some(Slot::Deactivating(waiting) | Slot::Placing(waiting)) => {
                if waiting.len() >= self.capacity {
                    let message = format!("too many messages wait for {key} to be ready");
                    return Delivery::Refused(Box::new(envelope), ReplyError::Overloaded(message));
                }
                waiting.push(envelope);
                Delivery::Queued
            }
            None => match vacancy() {
                Vacancy::Refuse(error) => Delivery::Refused(Box::new(envelope), error),
                Vacancy::Place => {
                    slots.insert(key.clone(), Slot::Placing(vec![envelope]));
                    Delivery::Place
                }
                Vacancy::Activate => {
                    let (mailbox, inbox) = mpsc::channel(self.capacity);
                    // A fresh mailbox with a live receiver always has room.
                    if let Err(refused) = mailbox.try_send(envelope) {
                        let error =
                            ReplyError::Overloaded("a new mailbox refused a message".into());
                        return Delivery::Refused(Box::new(refused.into_inner()), error);
                    }
                    slots.insert(key.clone(), Slot::Active(mailbox));
                    Delivery::Activate(inbox)
                }
            },
        }
    }

    /// Ends the `Placing` slot of `key` (only its placement task calls
    /// this). Placed here: the slot becomes `Active` with the waiting
    /// messages in a new mailbox, in one step, so no message can start a
    /// second placement in between. Otherwise the slot goes and its messages
    /// are handed back, to be forwarded or refused.
    pub(crate) fn settle_placement(&self, key: &ObjectKey, here: bool) -> Settled {
        let mut slots = self.lock();
        let waiting = match slots.remove(key) {
            Some(Slot::Placing(waiting)) => waiting,
            other => {
                if let Some(other) = other {
                    slots.insert(key.clone(), other);
                }
                tracing::error!(object = %key, "placement slot vanished");
                return Settled::Elsewhere(Vec::new());
            }
        };
        if !here {
            return Settled::Elsewhere(waiting);
        }
        let (mailbox, inbox) = mpsc::channel(self.capacity.max(waiting.len()));
        for envelope in waiting {
            // Room for every waiting message was made above.
            if let Err(refused) = mailbox.try_send(envelope) {
                refused.into_inner().reply.send(Err(ReplyError::Overloaded(
                    "a new mailbox refused a message".into(),
                )));
            }
        }
        slots.insert(key.clone(), Slot::Active(mailbox));
        Settled::Here(inbox)
    }

    /// Marks the object deactivating if no message waits in `mailbox`, and
    /// closes the mailbox; false if a message came in first.
    pub(crate) fn retire_if_idle(
        &self,
        key: &ObjectKey,
        mailbox: &mut mpsc::Receiver<Envelope>,
    ) -> bool {
        let mut slots = self.lock();
        if !mailbox.is_empty() {
            return false;
        }
        slots.insert(key.clone(), Slot::Deactivating(Vec::new()));
        drop(slots);
        mailbox.close();
        true
    }

    /// Marks the object deactivating whatever waits (the silo is stopping),
    /// and closes the mailbox; what is already in it is still served.
    pub(crate) fn start_deactivating(
        &self,
        key: &ObjectKey,
        mailbox: &mut mpsc::Receiver<Envelope>,
    ) {
        self.lock()
            .insert(key.clone(), Slot::Deactivating(Vec::new()));
        mailbox.close();
    }

    /// Frees the slot of a deactivated object, returning the messages that
    /// came for it meanwhile, in order, to be sent again.
    pub(crate) fn finish_deactivation(&self, key: &ObjectKey) -> Vec<Envelope> {
        let mut slots = self.lock();
        match slots.remove(key) {
            Some(Slot::Deactivating(waiting)) => waiting,
            Some(other) => {
                slots.insert(key.clone(), other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    pub(crate) fn live_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|slot| matches!(slot, Slot::Active(_)))
            .count()
    }
}
