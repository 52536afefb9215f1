//! Rank 3: a message on its way to an object and its reply on the way
//! back: the [`Envelope`], where its reply goes ([`ReplyTo`], a client
//! connection's reply side), and the [`Dispatch`] trait through which
//! everything below the router hands a message to the router.

pub(crate) mod connection;
pub(crate) mod envelope;
mod wire;

use std::sync::{Arc, LazyLock};

use crate::base::ObjectKey;

pub(crate) use self::envelope::{CallChain, Envelope, MailboxReceiver, MailboxSender, ReplyTo};

/// Delivers a message to an object wherever it lives. The router
/// implements it; activations, outboxes and wake-ups see only this, so
/// they cannot reach into placement or the directory, and a test can hand
/// them a fake that records what they send.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Puts `envelope` in the mailbox of `key`, activating it (here or on
    /// its owner) if needed. Never waits on a turn: failures go to the
    /// envelope's reply.
    fn dispatch(&self, key: ObjectKey, envelope: Envelope);
}

/// A message a turn sends one way, until the turn commits.
#[derive(Debug)]
pub(crate) struct PendingSend {
    pub(crate) receiver: ObjectKey,
    pub(crate) message_type: String,
    pub(crate) payload: Vec<u8>,
}

/// The chain of a message from outside the silo (nobody waits on it in a
/// turn), made once and shared so that such messages allocate none.
pub(crate) fn empty_chain() -> CallChain {
    static EMPTY: LazyLock<CallChain> = LazyLock::new(|| Arc::from(Vec::new()));
    EMPTY.clone()
}
