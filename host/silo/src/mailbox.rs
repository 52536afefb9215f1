//! What waits in an activation's mailbox, and where its reply goes.

use std::sync::Arc;

use rio_protocol::{ReplyError, Response};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ObjectKey;
pub(crate) use crate::connection::ConnectionSink;
use crate::deadlock::WaitEdge;

/// The objects whose turns are waiting, directly or not, on this message:
/// the outermost caller first. A message to an object already in its own
/// chain would wait on itself, so it is refused as a cycle.
pub(crate) type CallChain = Arc<[ObjectKey]>;

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
}

impl ReplyTo {
    /// The calling turn stopped waiting (it ended, e.g. at its deadline):
    /// running the message now would be an effect nobody asked for any more.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            ReplyTo::Caller(sender) => sender.is_closed(),
            ReplyTo::Connection { .. } => false,
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
        }
    }
}
