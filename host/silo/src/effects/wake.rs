//! The wake-up pass: activates (here or on their owners) the objects that
//! have work a dead or stopped silo left, each with a system message that
//! makes it do that work without waiting for a caller: senders with
//! undelivered messages (`outbox`), objects with an interrupted keyed turn
//! (`resume`). It runs once when a silo starts and again each time this
//! silo declares another dead.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Effects;
use crate::base::ObjectKey;
use crate::base::reserved::SystemMessage;
use crate::message::{Dispatch, Envelope, ReplyTo, empty_chain};

/// Objects of one kind one pass activates at most; more wait for the next.
pub(crate) const WAKE_BATCH: usize = 10_000;

/// One kind of left-over work and the system message that resumes it.
struct Kind {
    message: SystemMessage,
    /// What the objects have, for the log.
    what: &'static str,
    /// What an error answer to the wake-up means, for the log.
    failed: &'static str,
}

const SENDERS: Kind = Kind {
    message: SystemMessage::WakeOutbox,
    what: "senders with undelivered messages",
    failed: "cannot wake a sender with undelivered messages",
};

const INTERRUPTED: Kind = Kind {
    message: SystemMessage::WakeInterrupted,
    what: "objects with interrupted keyed turns",
    failed: "an interrupted keyed turn is not finished yet; its next message tries again",
};

/// Sends `object` the system message `message`, without payload, and logs
/// its answer if it is an error, as `failed`.
pub(crate) fn wake(
    effects: &Effects,
    dispatch: &dyn Dispatch,
    object: ObjectKey,
    message: SystemMessage,
    failed: &'static str,
) {
    let (reply, replied) = oneshot::channel();
    let deadline = Instant::now() + effects.turn_deadline * 2;
    let envelope = Envelope::new(
        message.message_type().to_string(),
        Vec::new(),
        empty_chain(),
        ReplyTo::Caller(reply),
        deadline,
    );
    dispatch.dispatch(object.clone(), envelope);
    effects.tasks.spawn(async move {
        if let Ok(Err(error)) = replied.await {
            tracing::info!(%object, %error, "{failed}");
        }
    });
}

/// Wakes, at most [`WAKE_BATCH`] of each kind, the objects the store lists.
pub(crate) async fn wake_pass(effects: &Effects, dispatch: &dyn Dispatch) {
    for kind in [SENDERS, INTERRUPTED] {
        let store = effects.store();
        let listed = match kind.message {
            SystemMessage::WakeOutbox => store.senders_with_pending(WAKE_BATCH).await,
            _ => store.interrupted_objects(WAKE_BATCH).await,
        };
        let objects = match listed {
            Ok(objects) => objects,
            Err(error) => {
                tracing::warn!(%error, "cannot list the {}", kind.what);
                continue;
            }
        };
        if objects.is_empty() {
            continue;
        }
        tracing::info!(objects = objects.len(), "waking {}", kind.what);
        for object in objects {
            wake(effects, dispatch, object, kind.message, kind.failed);
        }
    }
}

/// Runs [`wake_pass`] once at the start (a lone silo's own work from
/// before it stopped; a cluster's, whose owners may all be gone), then each
/// time this silo declares another dead, until it stops.
pub(crate) async fn run_wake_ups(
    effects: Arc<Effects>,
    dispatch: Arc<dyn Dispatch>,
    deaths: Option<watch::Receiver<u64>>,
) {
    let mut stopping = effects.stopping.clone();
    wake_pass(&effects, &*dispatch).await;
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
        wake_pass(&effects, &*dispatch).await;
    }
}
