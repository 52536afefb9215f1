//! Rank 3: a message on its way to an object and its reply on the way
//! back: the [`Envelope`], where its reply goes ([`ReplyTo`], a client
//! connection's reply side), and the [`Dispatch`] trait through which
//! everything below the router hands a message to the router.

pub(crate) mod connection;
pub(crate) mod envelope;
mod wire;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio::sync::oneshot;

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

/// How a message the silo sent one of its objects itself ended (a
/// reminder's fire, an event's delivery), which decides whether to send it
/// again.
#[derive(Debug)]
pub(crate) enum Ending {
    /// It took effect.
    Done,
    /// Its handler ran and failed (an error, a trap), or it can never run
    /// (no such type or message, a bad component): sending it again would
    /// end the same way.
    Failed(ReplyError),
    /// It did not run (unavailable, timed out, overloaded): worth another try.
    NotRun(ReplyError),
}

/// Waits up to `wait` for the answer to a message sent with
/// `ReplyTo::Caller`, and tells how it ended.
pub(crate) async fn ending(
    replied: oneshot::Receiver<Result<Vec<u8>, ReplyError>>,
    wait: Duration,
) -> Ending {
    let answer = match tokio::time::timeout(wait, replied).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(ReplyError::Unavailable("the message was dropped".into())),
        Err(_) => Err(ReplyError::Timeout("no answer in time".into())),
    };
    match answer {
        Ok(_) => Ending::Done,
        Err(
            error @ (ReplyError::Guest { .. }
            | ReplyError::Trap(_)
            | ReplyError::UnknownType { .. }
            | ReplyError::UnknownMessage { .. }
            | ReplyError::BadRequest(_)
            | ReplyError::InvalidComponent(_)),
        ) => Ending::Failed(error),
        Err(error) => Ending::NotRun(error),
    }
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
