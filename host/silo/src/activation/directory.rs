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
//!
//! Capacity: when the router says the silo is full, opening an activation
//! first asks the least recently used idle one to deactivate (one for one;
//! victims are picked in batches so that the scan is rare), and refuses with
//! `overloaded` only when no activation is idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use rio_protocol::ReplyError;
use tokio::sync::mpsc;

use crate::base::ObjectKey;
use crate::message::{Envelope, MailboxReceiver, MailboxSender};
use crate::observe::metrics::TypeCensus;

/// One object's place in the directory.
enum Slot {
    /// Messages go into this mailbox.
    Active(Active),
    /// The activation is running its deactivation hook and committing;
    /// messages wait here, in order, and are re-sent once it is done, so the
    /// next activation loads the final state.
    Deactivating(Vec<Envelope>),
    /// In a cluster: the placement store is being asked where the object
    /// lives; messages wait here meanwhile, in order.
    Placing(Vec<Envelope>),
}

/// An activation as the directory sees it.
struct Active {
    mailbox: MailboxSender,
    /// The directory's tick at the last message delivered: orders
    /// activations from least to most recently used.
    used: u64,
    handle: Arc<ActivationHandle>,
}

/// What an activation and the directory share, for deactivating the least
/// recently used idle activation when the silo is full.
#[derive(Default)]
pub(crate) struct ActivationHandle {
    /// A turn (or the activation itself) is running.
    busy: AtomicBool,
    /// Asked to deactivate; not asked twice, not counted as room twice.
    evicted: AtomicBool,
    /// Wakes the activation when it is asked to deactivate.
    evict: Notify,
}

impl ActivationHandle {
    /// Marks the activation busy (a turn is starting) or idle.
    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Resolves when the directory asks the activation to deactivate.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// How many least recently used idle activations one scan of the
/// directory lines up for deactivation.
const VICTIM_BATCH: usize = 64;

/// What an object without a slot gets, decided by the router under the lock.
pub(crate) enum Vacancy {
    /// Activate it here: a mailbox is opened with the message in it. When
    /// `full`, an idle activation must be deactivated to make room, or
    /// the message is refused with `overloaded` (that error).
    Activate { full: Option<ReplyError> },
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
    Activate(MailboxReceiver, Arc<ActivationHandle>),
    /// A new `Placing` slot holds the message: the caller starts placement.
    Place,
}

/// How a placement ended, for the messages that waited on it.
pub(crate) enum Settled {
    /// The object's new mailbox, holding them: start the activation.
    Here(MailboxReceiver, Arc<ActivationHandle>),
    /// They go elsewhere (or fail).
    Elsewhere(Vec<Envelope>),
}

/// A std mutex, not tokio's: it is held only for a map operation and a
/// non-blocking `try_send`, never across an await.
pub(crate) struct Directory {
    inner: Mutex<Inner>,
    /// How many messages a mailbox or a waiting slot holds.
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<ObjectKey, Slot>,
    /// Counts deliveries: the clock of `Active::used`.
    tick: u64,
    /// The least recently used idle activations of the last scan, most
    /// recently used first, with their tick then: popped one per
    /// activation opened at capacity while still unused since.
    victims: Vec<(ObjectKey, u64)>,
    /// `Active` slots.
    active: usize,
    /// `Active` slots asked to deactivate: the room they free is promised.
    evicting: usize,
}

impl Inner {
    /// Makes `key` active, used at `tick`, with a new mailbox of
    /// `capacity` (or more, to hold them all) holding `waiting` in order;
    /// answers the mailbox's receiver and the activation's handle, for
    /// the caller to start the activation with.
    fn activate(
        &mut self,
        key: &ObjectKey,
        tick: u64,
        capacity: usize,
        waiting: Vec<Envelope>,
    ) -> (MailboxReceiver, Arc<ActivationHandle>) {
        let (mailbox, inbox) = mpsc::channel(capacity.max(waiting.len()).max(1));
        for envelope in waiting {
            // A new mailbox with room for them all and a live receiver
            // takes every one; should it not, the caller hears why.
            if let Err(refused) = mailbox.try_send(Box::new(envelope)) {
                refused.into_inner().reply.send(Err(ReplyError::Overloaded(
                    "a new mailbox refused a message".into(),
                )));
            }
        }
        let handle = Arc::new(ActivationHandle::default());
        let active = Active {
            mailbox,
            used: tick,
            handle: handle.clone(),
        };
        self.set(key, Slot::Active(active));
        (inbox, handle)
    }

    /// Puts `slot` in place of what `key` had, keeping the counts.
    fn set(&mut self, key: &ObjectKey, slot: Slot) {
        if matches!(slot, Slot::Active(_)) {
            self.active += 1;
        }
        if let Some(old) = self.slots.insert(key.clone(), slot) {
            self.left(&old);
        }
    }

    /// Keeps the counts when `slot` leaves the directory.
    fn left(&mut self, slot: &Slot) {
        if let Slot::Active(active) = slot {
            self.active -= 1;
            if active.handle.evicted.load(Ordering::Relaxed) {
                self.evicting -= 1;
            }
        }
    }

    /// Activations that are not on their way out.
    fn occupancy(&self) -> usize {
        self.active - self.evicting
    }

    /// Asks the least recently used idle activation to deactivate; false
    /// if no activation is idle.
    fn evict_one(&mut self) -> bool {
        for _ in 0..2 {
            while let Some((key, used)) = self.victims.pop() {
                if let Some(Slot::Active(active)) = self.slots.get(&key)
                    && active.used == used
                    && active.mailbox.capacity() == active.mailbox.max_capacity()
                    && !active.handle.busy.load(Ordering::Relaxed)
                    && !active.handle.evicted.swap(true, Ordering::Relaxed)
                {
                    active.handle.evict.notify_one();
                    self.evicting += 1;
                    return true;
                }
            }
            // Rare: one scan lines up a batch.
            let mut idle: Vec<(ObjectKey, u64)> = self
                .slots
                .iter()
                .filter_map(|(key, slot)| match slot {
                    Slot::Active(active)
                        if !active.handle.busy.load(Ordering::Relaxed)
                            && !active.handle.evicted.load(Ordering::Relaxed) =>
                    {
                        Some((key.clone(), active.used))
                    }
                    _ => None,
                })
                .collect();
            if idle.is_empty() {
                return false;
            }
            if idle.len() > VICTIM_BATCH {
                idle.select_nth_unstable_by_key(VICTIM_BATCH, |(_, used)| *used);
                idle.truncate(VICTIM_BATCH);
            }
            idle.sort_unstable_by_key(|(_, used)| std::cmp::Reverse(*used));
            self.victims = idle;
        }
        false
    }
}

impl Directory {
    pub(crate) fn new(capacity: usize) -> Directory {
        Directory {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in a few lines of map
        // code; the map itself stays consistent, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `envelope` where the object's messages go; for an object with no
    /// slot, `vacancy` says what to do (called under the lock).
    pub(crate) fn deliver(
        &self,
        key: &ObjectKey,
        mut envelope: Envelope,
        vacancy: impl FnOnce(usize) -> Vacancy,
    ) -> Delivery {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let slots = &mut inner.slots;
        if let Some(Slot::Active(active)) = slots.get_mut(key) {
            match active.mailbox.try_send(Box::new(envelope)) {
                Ok(()) => {
                    active.used = tick;
                    return Delivery::Queued;
                }
                Err(mpsc::error::TrySendError::Full(refused)) => {
                    let message = format!("the mailbox of {key} is full");
                    return Delivery::Refused(refused, ReplyError::Overloaded(message));
                }
                Err(mpsc::error::TrySendError::Closed(refused)) => {
                    // The activation ended without clearing its slot (it
                    // cannot, but a stale slot must not wedge the object).
                    if let Some(stale) = slots.remove(key) {
                        inner.left(&stale);
                    }
                    envelope = *refused;
                }
            }
        }
        let occupancy = inner.occupancy();
        let slots = &mut inner.slots;
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
            None => match vacancy(occupancy) {
                Vacancy::Refuse(error) => Delivery::Refused(Box::new(envelope), error),
                Vacancy::Place => {
                    slots.insert(key.clone(), Slot::Placing(vec![envelope]));
                    Delivery::Place
                }
                Vacancy::Activate { full } => {
                    if let Some(error) = full
                        && !inner.evict_one()
                    {
                        return Delivery::Refused(Box::new(envelope), error);
                    }
                    let (inbox, handle) = inner.activate(key, tick, self.capacity, vec![envelope]);
                    Delivery::Activate(inbox, handle)
                }
            },
        }
    }

    /// Ends the `Placing` slot of `key` (only its placement task calls
    /// this). Placed here: the slot becomes `Active` with the waiting
    /// messages in a new mailbox, in one step, so no message can start a
    /// second placement in between. Otherwise the slot goes and its messages
    /// are handed back, to be forwarded or refused.
    /// Placed here at capacity (`full`), the least recently used idle
    /// activation is asked to make room, but the object is not refused: the
    /// cluster names this silo its owner already.
    pub(crate) fn settle_placement(&self, key: &ObjectKey, here: bool, full: bool) -> Settled {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if here && full {
            inner.evict_one();
        }
        let waiting = match inner.slots.remove(key) {
            Some(Slot::Placing(waiting)) => waiting,
            other => {
                if let Some(other) = other {
                    inner.slots.insert(key.clone(), other);
                }
                tracing::error!(object = %key, "placement slot vanished");
                return Settled::Elsewhere(Vec::new());
            }
        };
        if !here {
            return Settled::Elsewhere(waiting);
        }
        let (inbox, handle) = inner.activate(key, tick, self.capacity, waiting);
        Settled::Here(inbox, handle)
    }

    /// Marks the object deactivating if no message waits in `mailbox`, and
    /// closes the mailbox; false if a message came in first.
    pub(crate) fn retire_if_idle(&self, key: &ObjectKey, mailbox: &mut MailboxReceiver) -> bool {
        let mut inner = self.lock();
        if !mailbox.is_empty() {
            return false;
        }
        inner.set(key, Slot::Deactivating(Vec::new()));
        drop(inner);
        mailbox.close();
        true
    }

    /// Marks the object deactivating whatever waits (the silo is stopping),
    /// and closes the mailbox; what is already in it is still served.
    pub(crate) fn start_deactivating(&self, key: &ObjectKey, mailbox: &mut MailboxReceiver) {
        self.lock().set(key, Slot::Deactivating(Vec::new()));
        mailbox.close();
    }

    /// Frees the slot of a deactivated object, returning the messages that
    /// came for it meanwhile, in order, to be sent again.
    pub(crate) fn finish_deactivation(&self, key: &ObjectKey) -> Vec<Envelope> {
        let mut inner = self.lock();
        let slots = &mut inner.slots;
        match slots.remove(key) {
            Some(Slot::Deactivating(waiting)) => waiting,
            Some(other) => {
                slots.insert(key.clone(), other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Activations that are not on their way out.
    pub(crate) fn occupancy(&self) -> usize {
        self.lock().occupancy()
    }

    /// The activations and waiting messages of each service type, for the
    /// metrics: one pass over the directory under its lock, so it costs a
    /// scrape about a millisecond per 100,000 slots.
    pub(crate) fn census(&self) -> Vec<TypeCensus> {
        let inner = self.lock();
        let mut by_type: HashMap<&str, TypeCensus> = HashMap::new();
        for (key, slot) in &inner.slots {
            let census = by_type
                .entry(&key.service_type)
                .or_insert_with(|| TypeCensus {
                    service_type: key.service_type.to_string(),
                    ..TypeCensus::default()
                });
            match slot {
                Slot::Active(active) => {
                    census.activations += 1;
                    let free = active.mailbox.capacity();
                    census.queued += (active.mailbox.max_capacity() - free) as u64;
                }
                Slot::Deactivating(waiting) | Slot::Placing(waiting) => {
                    census.queued += waiting.len() as u64;
                }
            }
        }
        by_type.into_values().collect()
    }

    /// An activation asked to deactivate could not (a message came, its
    /// outbox still delivers): it counts again, and may be asked again.
    pub(crate) fn keep(&self, handle: &ActivationHandle) {
        let mut inner = self.lock();
        if handle.evicted.swap(false, Ordering::Relaxed) {
            inner.evicting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Active` slot last used at `used`, and its activation's handle.
    fn active(inner: &mut Inner, id: &str, used: u64) -> Arc<ActivationHandle> {
        let (mailbox, inbox) = mpsc::channel(4);
        // The receiver must live for the mailbox to count as open.
        std::mem::forget(inbox);
        let handle = Arc::new(ActivationHandle::default());
        let slot = Slot::Active(Active {
            mailbox,
            used,
            handle: handle.clone(),
        });
        inner.set(&ObjectKey::new("T", id), slot);
        handle
    }

    #[test]
    fn the_least_recently_used_idle_activation_is_asked_first_and_once() {
        let mut inner = Inner::default();
        let oldest_busy = active(&mut inner, "oldest-busy", 1);
        let old = active(&mut inner, "old", 2);
        let newer = active(&mut inner, "newer", 3);
        oldest_busy.set_busy(true);
        assert_eq!(inner.occupancy(), 3);

        assert!(inner.evict_one());
        assert!(old.evicted.load(Ordering::Relaxed), "the oldest idle one");
        assert!(
            !oldest_busy.evicted.load(Ordering::Relaxed),
            "busy: skipped"
        );
        assert_eq!(inner.occupancy(), 2, "the room it frees counts at once");

        assert!(inner.evict_one());
        assert!(newer.evicted.load(Ordering::Relaxed));
        assert!(!inner.evict_one(), "nothing idle is left");

        // `old` retires: it leaves the counts once.
        inner.set(&ObjectKey::new("T", "old"), Slot::Deactivating(Vec::new()));
        assert_eq!((inner.active, inner.evicting), (2, 1));
    }

    #[test]
    fn the_census_counts_activations_and_waiting_messages_by_type() {
        let directory = Directory::new(4);
        let mut inner = directory.lock();
        active(&mut inner, "a", 1);
        active(&mut inner, "b", 2);
        inner.set(&ObjectKey::new("U", "placing"), Slot::Placing(Vec::new()));
        drop(inner);
        let mut census = directory.census();
        census.sort_by(|a, b| a.service_type.cmp(&b.service_type));
        let counts: Vec<(&str, u64, u64)> = census
            .iter()
            .map(|c| (c.service_type.as_str(), c.activations, c.queued))
            .collect();
        assert_eq!(counts, [("T", 2, 0), ("U", 0, 0)]);
    }
}
