//! What waits in an activation's mailbox, and where its reply goes.

use std::sync::{Arc, Mutex, Weak};

use rio_protocol::{ReplyError, Response};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::ConnectionSink;
use crate::base::ObjectKey;
use crate::deadlock::{Refuse, WaitEdge};

/// The objects whose turns are waiting, directly or not, on this message:
/// the outermost caller first. A message to an object already in its own
/// chain would wait on itself, so it is refused as a cycle.
pub(crate) type CallChain = Arc<[ObjectKey]>;

/// The sending side of an activation's mailbox. Envelopes travel boxed: a
/// tokio channel allocates its first block of 32 slots when it is made, so
/// envelopes held in place cost every activation, idle or not, about 6 KiB
/// (a tenth of an idle Rust activation); boxed, a block is 32 pointers.
pub(crate) type MailboxSender = tokio::sync::mpsc::Sender<Box<Envelope>>;

/// The receiving side of an activation's mailbox (see [`MailboxSender`]).
pub(crate) type MailboxReceiver = tokio::sync::mpsc::Receiver<Box<Envelope>>;

/// One message for one object.
pub(crate) struct Envelope {
    pub(crate) message_type: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) call_chain: CallChain,
    pub(crate) reply: ReplyTo,
    /// How many silos passed this message on before it came here.
    pub(crate) hops: u8,
    /// When the caller stops waiting: the turn must end by then (and by the
    /// silo's turn deadline, counted from the turn's start).
    pub(crate) deadline: Instant,
    /// When the calling turn began waiting on this message (µs since the
    /// epoch), for choosing which call of a deadlock to refuse.
    pub(crate) waiting_since_us: Option<u64>,
    /// This message's edge in the silo's wait-for graph, for a message whose
    /// caller's turn waits on another silo; dropped with the message.
    pub(crate) wait_edge: Option<WaitEdge>,
    /// The call's idempotency key: its reply is committed under it, and a
    /// message whose key already has a reply gets that reply, unrun.
    pub(crate) idempotency_key: Option<Arc<str>>,
    /// Sent by the rerun of an interrupted keyed turn (see
    /// `activation::keyed`, where a callee lets such a message in first).
    pub(crate) from_rerun: bool,
}

impl Envelope {
    /// A message that starts its journey at this silo.
    pub(crate) fn new(
        message_type: String,
        payload: Vec<u8>,
        call_chain: CallChain,
        reply: ReplyTo,
        deadline: Instant,
    ) -> Envelope {
        Envelope {
            message_type,
            payload,
            call_chain,
            reply,
            hops: 0,
            deadline,
            waiting_since_us: None,
            wait_edge: None,
            idempotency_key: None,
            from_rerun: false,
        }
    }

    /// The object whose turn waits on this message, if a turn does.
    pub(crate) fn caller(&self) -> Option<&ObjectKey> {
        self.call_chain.last()
    }

    /// The caller's deadline has passed: nobody waits for this turn.
    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Where a turn's outcome goes: straight onto a client connection, or back
/// to a guest waiting in another turn.
pub(crate) enum ReplyTo {
    Caller(oneshot::Sender<Result<Vec<u8>, ReplyError>>),
    Connection {
        request_id: u64,
        sink: ConnectionSink,
        /// The client asked which silo owns the object (`RoutedCall`).
        report_owner: bool,
    },
    /// The reply of a message a turn waits on, shared with the silo's
    /// wait-for graph while the message waits: whoever takes it out first
    /// answers. The activation takes it when the turn starts and a forward
    /// when the message leaves; the deadlock breaker takes it to refuse a
    /// message that closes a cycle of waits (see `deadlock`).
    Refusable(Arc<Mutex<Option<ReplyTo>>>),
}

/// The deadlock breaker's hold on a waiting message's reply; it does not
/// keep the message alive.
pub(crate) struct Refusal(Weak<Mutex<Option<ReplyTo>>>);

impl Refuse for Refusal {
    /// Answers the message with `error` if nobody took its reply yet, so it
    /// will never run; false if it already runs, left, or was answered.
    fn refuse(&self, error: ReplyError) -> bool {
        let taken = self.0.upgrade().and_then(|slot| take(&slot));
        match taken {
            Some(reply) => {
                reply.send(Err(error));
                true
            }
            None => false,
        }
    }
}

fn take(slot: &Mutex<Option<ReplyTo>>) -> Option<ReplyTo> {
    // An `Option` swap cannot leave the slot inconsistent across a panic.
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl ReplyTo {
    /// Shares this reply with the deadlock breaker (once: a reply already
    /// shared stays as it is and gives no second hold).
    pub(crate) fn make_refusable(self) -> (ReplyTo, Option<Refusal>) {
        match self {
            ReplyTo::Refusable(_) => (self, None),
            other => {
                let slot = Arc::new(Mutex::new(Some(other)));
                let refusal = Refusal(Arc::downgrade(&slot));
                (ReplyTo::Refusable(slot), Some(refusal))
            }
        }
    }

    /// The reply, taken for good by the one who will answer: `None` if the
    /// message was refused as a deadlock meanwhile (it must not run).
    pub(crate) fn claim(self) -> Option<ReplyTo> {
        match self {
            ReplyTo::Refusable(slot) => take(&slot),
            other => Some(other),
        }
    }

    /// The calling turn stopped waiting (it ended, e.g. at its deadline):
    /// running the message now would be an effect nobody asked for any more.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            ReplyTo::Caller(sender) => sender.is_closed(),
            ReplyTo::Connection { .. } => false,
            ReplyTo::Refusable(slot) => slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(ReplyTo::abandoned),
        }
    }

    pub(crate) fn send(self, result: Result<Vec<u8>, ReplyError>) {
        self.send_from(result, None);
    }

    /// Sends the outcome of a turn that ran on the silo at `owner`.
    pub(crate) fn send_from(self, result: Result<Vec<u8>, ReplyError>, owner: Option<&str>) {
        match self {
            // A caller that gave up (its own turn trapped) no longer cares.
            ReplyTo::Caller(sender) => drop(sender.send(result)),
            ReplyTo::Connection {
                request_id,
                sink,
                report_owner,
            } => sink.reply(
                request_id,
                result.map(|bytes| match owner {
                    Some(owner) if report_owner => Response::Routed {
                        payload: ByteBuf::from(bytes),
                        owner: owner.to_string(),
                    },
                    _ => Response::Payload(ByteBuf::from(bytes)),
                }),
            ),
            ReplyTo::Refusable(slot) => {
                if let Some(reply) = take(&slot) {
                    reply.send_from(result, owner);
                }
            }
        }
    }
}
