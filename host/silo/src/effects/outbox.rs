//! One-way sends through a transactional outbox: the messages a turn sent
//! are stored in its commit (see `storage::Commit::outbox`), then its
//! sender's activation delivers them, up to [`WINDOW`] at once to
//! distinct receivers, each receiver's one at a time in seq order, as calls
//! keyed `outbox:{sender type}/{sender id}/{seq}`. The receiver commits
//! that key's reply record with its turn, so a message delivered again
//! (after a lost reply, a restart, a failover) answers the stored reply
//! instead of running twice: each message takes effect exactly once, and
//! those from one sender to one receiver in the order sent.
//!
//! A delivered message's row is removed; one the receiver refuses (its
//! handler's error or a trap, [`GIVE_UP_AFTER`] times; an unknown type or
//! message, or a malformed request, at once) moves to the dead letters.
//! Anything else (`unavailable`, `timeout`, `overloaded`, `deadlock`, a
//! store error) is retried with backoff until the silo stops.
//!
//! Senders whose silo died, or that were live when a lone silo stopped,
//! are woken by the wake-up pass (`wake`): a `rio:wake-outbox` message
//! activates the sender, whose activation loads its outbox and delivers.
//! The sender's state holds `rio:has-sent` once it has sent, so that its
//! later activations load its outbox (see `base::reserved`).
//!
//! A client's send (a `rio:enqueue` call, see `client_send`) is stored in
//! the receiver's own outbox, as a message from the receiver to itself, and
//! takes the same path from there.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rio_protocol::{DeadLetterInfo, ReplyError};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Effects;
use crate::base::ObjectKey;
use crate::base::pace::Backoff;
use crate::message::{Dispatch, Envelope, PendingSend, ReplyTo, empty_chain};
use crate::storage::{DeadLetter, Outgoing, StateStore, StorageError};

/// Deliveries answered with the receiver's own error or a trap are given
/// up after this many attempts: such errors may pass (a trap from memory
/// pressure), but not forever.
pub(crate) const GIVE_UP_AFTER: u32 = 3;

/// Deliveries one sender has in flight at most, each to another receiver.
const WINDOW: usize = 16;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The idempotency key a message's deliveries carry.
pub(crate) fn delivery_key(sender: &ObjectKey, seq: i64) -> Arc<str> {
    format!("outbox:{}/{}/{seq}", sender.service_type, sender.object_id).into()
}

/// One sender's outbox as its activation sees it: the seq its next message
/// gets, and the task delivering what was committed (started with the
/// first message, so an object that never sends costs no task).
pub(crate) struct Outbox {
    effects: Arc<Effects>,
    dispatch: Arc<dyn Dispatch>,
    sender: ObjectKey,
    next_seq: i64,
    queue: Option<mpsc::UnboundedSender<Outgoing>>,
    undelivered: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Outbox {
    /// Loads `sender`'s outbox and starts delivering what it holds.
    pub(crate) async fn open(
        effects: &Arc<Effects>,
        dispatch: &Arc<dyn Dispatch>,
        sender: &ObjectKey,
    ) -> Result<Outbox, StorageError> {
        let pending = effects.store().pending_outbox(sender).await?;
        let mut outbox = Outbox {
            effects: effects.clone(),
            dispatch: dispatch.clone(),
            sender: sender.clone(),
            next_seq: pending.next_seq,
            queue: None,
            undelivered: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        };
        if !pending.messages.is_empty() {
            tracing::info!(object = %sender, pending = pending.messages.len(), "delivering messages committed earlier");
        }
        outbox.enqueue(pending.messages);
        Ok(outbox)
    }

    /// Numbers a turn's sends for its commit, from the next seq on.
    pub(crate) fn number(&self, sends: Vec<PendingSend>, now_ms: i64) -> Vec<Outgoing> {
        sends
            .into_iter()
            .zip(self.next_seq..)
            .map(|(send, seq)| Outgoing {
                seq,
                receiver: send.receiver,
                message_type: send.message_type,
                payload: send.payload,
                created_at_ms: now_ms,
            })
            .collect()
    }

    /// The turn that sent `messages` committed: they go out.
    pub(crate) fn committed(&mut self, messages: Vec<Outgoing>) {
        if let Some(last) = messages.last() {
            self.next_seq = last.seq + 1;
        }
        self.enqueue(messages);
    }

    fn enqueue(&mut self, messages: Vec<Outgoing>) {
        if messages.is_empty() {
            return;
        }
        let queue = self.queue.get_or_insert_with(|| {
            let (queue, received) = mpsc::unbounded_channel();
            let deliverer = Arc::new(Deliverer {
                effects: self.effects.clone(),
                dispatch: self.dispatch.clone(),
                sender: self.sender.clone(),
                undelivered: self.undelivered.clone(),
                stop: self.stop.clone(),
            });
            self.effects.tasks.spawn(deliverer.run(received));
            queue
        });
        for message in messages {
            self.undelivered.fetch_add(1, Ordering::SeqCst);
            let counters = &self.effects.outbox_counters;
            counters.pending.fetch_add(1, Ordering::Relaxed);
            // The deliverer stops only with the silo or `stop`; a message
            // it can no longer take stays in the store for the next one.
            let _ = queue.send(message);
        }
    }

    /// Every committed message was delivered or given up.
    pub(crate) fn is_drained(&self) -> bool {
        self.undelivered.load(Ordering::SeqCst) == 0
    }

    /// Another silo owns the sender now: it delivers, this one stops.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

/// The task that delivers one sender's messages, in order per receiver. It outlives its
/// activation until its queue is empty (messages sent by `on-deactivate`
/// still go out), and stops with the silo or when the sender moved away.
struct Deliverer {
    effects: Arc<Effects>,
    dispatch: Arc<dyn Dispatch>,
    sender: ObjectKey,
    undelivered: Arc<AtomicUsize>,
    stop: CancellationToken,
}

/// How one delivery attempt ended.
enum Attempt {
    Delivered,
    Retry(ReplyError),
    Refused(ReplyError),
    GiveUp(ReplyError),
}

impl Deliverer {
    /// Delivers what comes on `messages` (see `deliver_all`), then takes
    /// what it could not deliver out of the silo's outbox backlog.
    async fn run(self: Arc<Self>, messages: mpsc::UnboundedReceiver<Outgoing>) {
        self.clone().deliver_all(messages).await;
        // What it leaves (the silo stops, the sender moved) is no longer
        // this silo's backlog; the store keeps it for the next deliverer.
        let left = self.undelivered.load(Ordering::SeqCst) as u64;
        let pending = &self.effects.outbox_counters.pending;
        let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            Some(now.saturating_sub(left))
        });
    }

    /// Delivers what comes on `messages`, up to [`WINDOW`] at once, each
    /// receiver's in the order sent: a message waits while an earlier one
    /// to its receiver is in flight, and starts before later ones to
    /// receivers that are free.
    async fn deliver_all(self: Arc<Self>, mut messages: mpsc::UnboundedReceiver<Outgoing>) {
        let mut stopping = self.effects.stopping.clone();
        let mut waiting: VecDeque<Outgoing> = VecDeque::new();
        let mut busy: HashSet<ObjectKey> = HashSet::new();
        let mut in_flight: JoinSet<(ObjectKey, bool)> = JoinSet::new();
        let mut open = true;
        loop {
            let mut index = 0;
            while in_flight.len() < WINDOW && index < waiting.len() {
                if busy.contains(&waiting[index].receiver) {
                    index += 1;
                    continue;
                }
                let Some(message) = waiting.remove(index) else {
                    break;
                };
                busy.insert(message.receiver.clone());
                let deliverer = self.clone();
                in_flight.spawn(async move {
                    let delivered = deliverer.deliver(&message).await;
                    (message.receiver, delivered)
                });
            }
            if !open && waiting.is_empty() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = stopping.wait_for(|stop| *stop) => return,
                message = messages.recv(), if open => match message {
                    Some(message) => waiting.push_back(message),
                    None => open = false,
                },
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Ok((receiver, true)) => {
                        busy.remove(&receiver);
                        self.undelivered.fetch_sub(1, Ordering::SeqCst);
                        let pending = &self.effects.outbox_counters.pending;
                        pending.fetch_sub(1, Ordering::Relaxed);
                    }
                    // The silo stops (or the task was lost): what is left
                    // stays in the store for the next deliverer.
                    Ok((_, false)) | Err(_) => return,
                },
            }
        }
    }

    /// Delivers `message` until it is delivered or given up; false if the
    /// silo stopped first.
    async fn deliver(&self, message: &Outgoing) -> bool {
        let key = delivery_key(&self.sender, message.seq);
        let mut refusals = 0;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            if self.stop.is_cancelled() || self.effects.is_stopping() {
                return false;
            }
            let attempt = match self.attempt(message, &key).await {
                Some(attempt) => attempt,
                None => return false,
            };
            let give_up = match attempt {
                Attempt::Delivered => {
                    let counters = &self.effects.outbox_counters;
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    // The next message need not wait for this row's delete.
                    let (store, sender) = (self.effects.store().clone(), self.sender.clone());
                    let seq = message.seq;
                    self.effects
                        .tasks
                        .spawn(async move { remove(&*store, &sender, seq).await });
                    return true;
                }
                Attempt::GiveUp(error) => Some(error),
                Attempt::Refused(error) => {
                    refusals += 1;
                    (refusals >= GIVE_UP_AFTER).then_some(error)
                }
                Attempt::Retry(error) => {
                    let counters = &self.effects.outbox_counters;
                    counters.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(sender = %self.sender, seq = message.seq, %error, "delivery failed; retrying");
                    None
                }
            };
            if let Some(error) = give_up {
                return self.bury(message, error).await;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One delivery as a keyed call; `None` if the silo stopped meanwhile.
    async fn attempt(&self, message: &Outgoing, key: &Arc<str>) -> Option<Attempt> {
        let (reply, replied) = oneshot::channel();
        let deadline = Instant::now() + self.effects.turn_deadline;
        let mut envelope = Envelope::new(
            message.message_type.clone(),
            message.payload.clone(),
            empty_chain(),
            ReplyTo::Caller(reply),
            deadline,
        );
        envelope.idempotency_key = Some(key.clone());
        self.dispatch.dispatch(message.receiver.clone(), envelope);
        let mut stopping = self.effects.stopping.clone();
        let result = tokio::select! {
            result = replied => result.unwrap_or_else(|_| {
                Err(ReplyError::Unavailable("the delivery was dropped".into()))
            }),
            _ = stopping.wait_for(|stop| *stop) => return None,
            _ = self.stop.cancelled() => return None,
        };
        Some(match result {
            Ok(_) => Attempt::Delivered,
            Err(error @ (ReplyError::Guest { .. } | ReplyError::Trap(_))) => {
                Attempt::Refused(error)
            }
            Err(
                error @ (ReplyError::UnknownType { .. }
                | ReplyError::UnknownMessage { .. }
                | ReplyError::BadRequest(_)
                | ReplyError::InvalidComponent(_)),
            ) => Attempt::GiveUp(error),
            Err(error) => Attempt::Retry(error),
        })
    }

    /// Moves a refused message to the dead letters; false if the silo
    /// stopped before it could.
    async fn bury(&self, message: &Outgoing, error: ReplyError) -> bool {
        let reason = format!("{}: {error}", error.kind());
        tracing::warn!(
            sender = %self.sender,
            seq = message.seq,
            receiver = %message.receiver,
            message_type = %message.message_type,
            %reason,
            "message given up: moved to the dead letters"
        );
        let letter = DeadLetter {
            sender: self.sender.clone(),
            message: message.clone(),
            reason,
            failed_at_ms: crate::base::clock::now_ms(),
        };
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            match self.effects.store().bury(&letter).await {
                Ok(()) => {
                    let counters = &self.effects.outbox_counters;
                    counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(error) => {
                    tracing::warn!(sender = %self.sender, seq = message.seq, %error, "cannot store a dead letter; retrying");
                }
            }
            if self.stop.is_cancelled() || self.effects.is_stopping() {
                return false;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Removes a delivered message's row. If that fails the row stays and the
/// message is delivered again later: the receiver answers its stored reply
/// then, so nothing is applied twice.
async fn remove(store: &dyn StateStore, sender: &ObjectKey, seq: i64) {
    for pause in [Duration::ZERO, FIRST_BACKOFF, MAX_BACKOFF] {
        tokio::time::sleep(pause).await;
        match store.remove_outgoing(sender, seq).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%sender, seq, %error, "cannot remove a delivered message");
            }
        }
    }
}

/// Dead letters listed at most at once, whatever a request asks.
const MAX_LISTED: u32 = 10_000;

/// The dead letters a `DeadLetters` request asks for, oldest first, as
/// many as fit in one reply (`payload-bytes`); the caller asks again for
/// more after handling those.
pub(crate) async fn dead_letters(
    store: &dyn StateStore,
    payload_limit: usize,
    receiver_type: Option<String>,
    limit: u32,
) -> Result<Vec<DeadLetterInfo>, ReplyError> {
    let letters = store
        .dead_letters(receiver_type.as_deref(), limit.min(MAX_LISTED) as usize)
        .await
        .map_err(|error| ReplyError::Internal(format!("cannot list the dead letters: {error}")))?;
    // A letter's payload is at most `payload-bytes` (sends are checked),
    // and its names and reason fit in half a frame's overhead.
    const LETTER_FIELDS_BYTES: usize = 256;
    let budget = payload_limit + rio_protocol::REPLY_FRAME_OVERHEAD_BYTES / 2;
    let mut listed_bytes = 0;
    Ok(letters
        .into_iter()
        .take_while(|letter| {
            let message = &letter.message;
            listed_bytes += message.payload.len()
                + letter.reason.len()
                + message.message_type.len()
                + LETTER_FIELDS_BYTES;
            listed_bytes <= budget
        })
        .map(|letter| DeadLetterInfo {
            sender: (
                letter.sender.service_type.to_string(),
                letter.sender.object_id.to_string(),
            ),
            seq: letter.message.seq,
            receiver: (
                letter.message.receiver.service_type.to_string(),
                letter.message.receiver.object_id.to_string(),
            ),
            message_type: letter.message.message_type,
            payload: ByteBuf::from(letter.message.payload),
            reason: letter.reason,
            created_at_ms: letter.message.created_at_ms,
            failed_at_ms: letter.failed_at_ms,
        })
        .collect())
}
