//! One-way sends through a transactional outbox: the messages a turn sent
//! are stored in its commit (see `storage::Commit::outbox`), then its
//! sender's activation delivers them, one at a time in seq order, as calls
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
//! are woken by [`wake_senders`] (at a lone silo's start; in a cluster when
//! this silo declares another dead): a [`WAKE`] message activates the
//! sender, whose activation loads its outbox and delivers.
//!
//! A client's send (an [`ENQUEUE`] call, see `client_send`) is stored in
//! the receiver's own outbox, as a message from the receiver to itself, and
//! takes the same path from there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rio_protocol::{DeadLetterInfo, ReplyError};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ObjectKey;
use crate::host::PendingSend;
use crate::mailbox::{Envelope, ReplyTo};
use crate::router::Router;
use crate::storage::{DeadLetter, Outgoing, StorageError};

/// The message type that only activates its object so that it delivers
/// its outbox; the guest never sees it. Reserved: a guest message of this
/// type is taken for a wake-up.
pub(crate) const WAKE: &str = "rio:wake-outbox";

/// The state key marking an object that has sent one way: its activations
/// load its outbox. Reserved, like `resume::INTENT_KEY`: guests neither see
/// nor write it. Objects that never sent read no outbox when they activate;
/// those whose marker predates their undelivered messages (sent before the
/// marker existed) are reached by the wake-ups, which a restart runs.
pub(crate) const HAS_SENT_KEY: &str = "rio:has-sent";

/// The message type of a client's one-way send (see `client_send`): the
/// receiver stores the message in its own outbox, which delivers it to
/// the receiver itself. Reserved like [`WAKE`]: the guest never sees it.
pub(crate) const ENQUEUE: &str = rio_protocol::ENQUEUE_MESSAGE_TYPE;

/// Deliveries answered with the receiver's own error or a trap are given
/// up after this many attempts: such errors may pass (a trap from memory
/// pressure), but not forever.
pub(crate) const GIVE_UP_AFTER: u32 = 3;

/// Senders one wake-up pass activates at most; more wait for the next pass.
pub(crate) const WAKE_BATCH: usize = 10_000;

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
    router: Arc<Router>,
    sender: ObjectKey,
    next_seq: i64,
    queue: Option<mpsc::UnboundedSender<Outgoing>>,
    undelivered: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Outbox {
    /// Loads `sender`'s outbox and starts delivering what it holds.
    pub(crate) async fn open(
        router: &Arc<Router>,
        sender: &ObjectKey,
    ) -> Result<Outbox, StorageError> {
        let pending = router.state_store.pending_outbox(sender).await?;
        let mut outbox = Outbox {
            router: router.clone(),
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
            let deliverer = Deliverer {
                router: self.router.clone(),
                sender: self.sender.clone(),
                undelivered: self.undelivered.clone(),
                stop: self.stop.clone(),
            };
            self.router.tasks.spawn(deliverer.run(received));
            queue
        });
        for message in messages {
            self.undelivered.fetch_add(1, Ordering::SeqCst);
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

/// The task that delivers one sender's messages in order. It outlives its
/// activation until its queue is empty (messages sent by `on-deactivate`
/// still go out), and stops with the silo or when the sender moved away.
struct Deliverer {
    router: Arc<Router>,
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
    async fn run(self, mut messages: mpsc::UnboundedReceiver<Outgoing>) {
        let mut stopping = self.router.stopping.clone();
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = stopping.wait_for(|stop| *stop) => return,
                message = messages.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            if !self.deliver(&message).await {
                return;
            }
            self.undelivered.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Delivers `message` until it is delivered or given up; false if the
    /// silo stopped first.
    async fn deliver(&self, message: &Outgoing) -> bool {
        let key = delivery_key(&self.sender, message.seq);
        let mut refusals = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.stop.is_cancelled() || *self.router.stopping.borrow() {
                return false;
            }
            let attempt = match self.attempt(message, &key).await {
                Some(attempt) => attempt,
                None => return false,
            };
            let give_up = match attempt {
                Attempt::Delivered => {
                    // The next message need not wait for this row's delete.
                    let (router, sender) = (self.router.clone(), self.sender.clone());
                    let seq = message.seq;
                    self.router
                        .tasks
                        .spawn(async move { remove(&router, &sender, seq).await });
                    return true;
                }
                Attempt::GiveUp(error) => Some(error),
                Attempt::Refused(error) => {
                    refusals += 1;
                    (refusals >= GIVE_UP_AFTER).then_some(error)
                }
                Attempt::Retry(error) => {
                    tracing::debug!(sender = %self.sender, seq = message.seq, %error, "delivery failed; retrying");
                    None
                }
            };
            if let Some(error) = give_up {
                return self.bury(message, error).await;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One delivery as a keyed call; `None` if the silo stopped meanwhile.
    async fn attempt(&self, message: &Outgoing, key: &Arc<str>) -> Option<Attempt> {
        let (reply, replied) = oneshot::channel();
        let deadline = Instant::now() + self.router.config.turn_deadline;
        let mut envelope = Envelope::new(
            message.message_type.clone(),
            message.payload.clone(),
            self.router.empty_chain(),
            ReplyTo::Caller(reply),
            deadline,
        );
        envelope.idempotency_key = Some(key.clone());
        self.router.dispatch(message.receiver.clone(), envelope);
        let mut stopping = self.router.stopping.clone();
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
            failed_at_ms: crate::cluster::now_ms(),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.router.state_store.bury(&letter).await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(sender = %self.sender, seq = message.seq, %error, "cannot store a dead letter; retrying");
                }
            }
            if self.stop.is_cancelled() || *self.router.stopping.borrow() {
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Removes a delivered message's row. If that fails the row stays and the
/// message is delivered again later: the receiver answers its stored reply
/// then, so nothing is applied twice.
async fn remove(router: &Router, sender: &ObjectKey, seq: i64) {
    let store = &router.state_store;
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

/// Activates (here or on their owners) the senders that have undelivered
/// messages, at most [`WAKE_BATCH`] of them: each delivers its own.
pub(crate) async fn wake_senders(router: &Arc<Router>) {
    let senders = match router.state_store.senders_with_pending(WAKE_BATCH).await {
        Ok(senders) => senders,
        Err(error) => {
            tracing::warn!(%error, "cannot list the senders with undelivered messages");
            return;
        }
    };
    if senders.is_empty() {
        return;
    }
    tracing::info!(
        senders = senders.len(),
        "waking senders with undelivered messages"
    );
    for sender in senders {
        router.wake(
            sender,
            WAKE,
            "cannot wake a sender with undelivered messages",
        );
    }
}

/// Wakes the senders with undelivered messages, and the objects with an
/// interrupted keyed turn (`resume::wake_interrupted`), once at the start
/// (a lone silo's own from before it stopped; a cluster's, whose owners
/// may all be gone), then each time this silo declares another dead, until
/// it stops: what a dead silo left half done is finished without waiting
/// for callers.
pub(crate) async fn run_wake_ups(
    router: Arc<Router>,
    deaths: Option<watch::Receiver<u64>>,
    mut stopping: watch::Receiver<bool>,
) {
    wake_senders(&router).await;
    crate::resume::wake_interrupted(&router).await;
    let Some(mut deaths) = deaths else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            changed = deaths.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        wake_senders(&router).await;
        crate::resume::wake_interrupted(&router).await;
    }
}

/// Dead letters listed at most at once, whatever a request asks.
const MAX_LISTED: u32 = 10_000;

/// The dead letters a `DeadLetters` request asks for, oldest first, as
/// many as fit in one reply (`payload-bytes`); the caller asks again for
/// more after handling those.
pub(crate) async fn dead_letters(
    router: &Router,
    receiver_type: Option<String>,
    limit: u32,
) -> Result<Vec<DeadLetterInfo>, ReplyError> {
    let letters = router
        .state_store
        .dead_letters(receiver_type.as_deref(), limit.min(MAX_LISTED) as usize)
        .await
        .map_err(|error| ReplyError::Internal(format!("cannot list the dead letters: {error}")))?;
    // A letter's payload is at most `payload-bytes` (sends are checked),
    // and its names and reason fit in half a frame's overhead.
    const LETTER_FIELDS_BYTES: usize = 256;
    let budget = router.config.limits.payload_bytes + rio_protocol::REPLY_FRAME_OVERHEAD_BYTES / 2;
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
