//! Delivers a message to an object on this silo, activating it if needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rio_protocol::ReplyError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::activation;
use crate::deployments::Deployments;
use crate::directory::{Directory, Slot};
use crate::mailbox::{CallChain, Envelope, ReplyTo};
use crate::storage::StateStore;
use crate::{ObjectKey, SiloConfig};

/// Counters for `Stats` requests and benchmarks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) activations_total: AtomicU64,
    pub(crate) activation_nanos_total: AtomicU64,
    pub(crate) deactivations_total: AtomicU64,
}

pub(crate) struct Router {
    pub(crate) config: SiloConfig,
    pub(crate) deployments: Deployments,
    pub(crate) directory: Directory,
    pub(crate) state_store: Arc<dyn StateStore>,
    pub(crate) counters: Counters,
    /// Flips to `true` once when the silo stops; every activation watches it.
    pub(crate) stopping: watch::Receiver<bool>,
    closing: AtomicBool,
    empty_chain: CallChain,
}

impl Router {
    pub(crate) fn new(
        config: SiloConfig,
        deployments: Deployments,
        state_store: Arc<dyn StateStore>,
        stopping: watch::Receiver<bool>,
    ) -> Router {
        Router {
            config,
            deployments,
            directory: Directory::default(),
            state_store,
            counters: Counters::default(),
            stopping,
            closing: AtomicBool::new(false),
            empty_chain: Arc::from(Vec::new()),
        }
    }

    /// The chain of a message from outside the silo: nobody is waiting in a turn.
    pub(crate) fn empty_chain(&self) -> CallChain {
        self.empty_chain.clone()
    }

    /// Refuse new messages from now on; used when the silo stops.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Sends a message from a guest and waits for the reply.
    pub(crate) async fn call(
        self: &Arc<Self>,
        key: ObjectKey,
        message_type: String,
        payload: Vec<u8>,
        call_chain: CallChain,
    ) -> Result<Vec<u8>, ReplyError> {
        let (reply, reply_received) = oneshot::channel();
        let envelope = Envelope {
            message_type,
            payload,
            call_chain,
            reply: ReplyTo::Caller(reply),
        };
        self.dispatch(key, envelope);
        reply_received.await.unwrap_or_else(|_| {
            Err(ReplyError::Internal(
                "the callee dropped the message".into(),
            ))
        })
    }

    /// Puts `envelope` in the mailbox of `key`, activating the object if it
    /// has no activation. Never waits on a turn: failures go to the envelope's
    /// reply, and a message for an object being deactivated is re-sent by a
    /// task of its own once the deactivation is done.
    pub(crate) fn dispatch(self: &Arc<Self>, key: ObjectKey, mut envelope: Envelope) {
        if self.closing.load(Ordering::Relaxed) {
            return envelope.reply.send(Err(ReplyError::Overloaded(
                "the silo is shutting down".into(),
            )));
        }
        if envelope.call_chain.contains(&key) {
            let chain: Vec<String> = envelope
                .call_chain
                .iter()
                .map(ToString::to_string)
                .collect();
            let message = format!("{} -> {key}", chain.join(" -> "));
            return envelope.reply.send(Err(ReplyError::Cycle(message)));
        }
        loop {
            let mut slots = self.directory.lock();
            match slots.get(&key) {
                Some(Slot::Active(mailbox)) => match mailbox.try_send(envelope) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(refused)) => {
                        drop(slots);
                        let message = format!("the mailbox of {key} is full");
                        return refused.reply.send(Err(ReplyError::Overloaded(message)));
                    }
                    Err(mpsc::error::TrySendError::Closed(refused)) => {
                        // The activation ended without clearing its slot
                        // (it cannot, but a stale slot must not wedge the object).
                        slots.remove(&key);
                        envelope = refused;
                    }
                },
                Some(Slot::Deactivating(done)) => {
                    let mut done = done.clone();
                    drop(slots);
                    let router = self.clone();
                    tokio::spawn(async move {
                        let _ = done.wait_for(|finished| *finished).await;
                        router.dispatch(key, envelope);
                    });
                    return;
                }
                None => {
                    // Looked up only here: a live activation implies its type.
                    let Some(deployed) = self.deployments.get(&key.service_type) else {
                        drop(slots);
                        let service_type = key.service_type.to_string();
                        return envelope
                            .reply
                            .send(Err(ReplyError::UnknownType { service_type }));
                    };
                    let (mailbox, inbox) = mpsc::channel(self.config.mailbox_capacity.max(1));
                    // A fresh mailbox with a live receiver always has room;
                    // should that ever change, the caller hears it.
                    if let Err(refused) = mailbox.try_send(envelope) {
                        drop(slots);
                        return refused.into_inner().reply.send(Err(ReplyError::Overloaded(
                            "a new mailbox refused its first message".into(),
                        )));
                    }
                    slots.insert(key.clone(), Slot::Active(mailbox));
                    drop(slots);
                    activation::spawn(self.clone(), key, deployed, inbox);
                    return;
                }
            }
        }
    }
}
