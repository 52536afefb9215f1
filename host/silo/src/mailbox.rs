//! What waits in an activation's mailbox, and where its reply goes.

use std::sync::Arc;

use rio_protocol::{FrameWriter, ReplyError, Response, ServerFrame, encode_frame};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

use crate::ObjectKey;

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
    /// How many times this silo re-sent it after a peer could not be reached.
    pub(crate) redeliveries: u8,
}

impl Envelope {
    /// A message that starts its journey at this silo.
    pub(crate) fn new(
        message_type: String,
        payload: Vec<u8>,
        call_chain: CallChain,
        reply: ReplyTo,
    ) -> Envelope {
        Envelope {
            message_type,
            payload,
            call_chain,
            reply,
            hops: 0,
            redeliveries: 0,
        }
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

/// The write side of one client connection. A turn's reply is written by the
/// activation task itself when the socket is idle (see `FrameWriter`).
#[derive(Clone)]
pub(crate) struct ConnectionSink(Arc<FrameWriter>);

impl ConnectionSink {
    pub(crate) fn new(writer: Arc<FrameWriter>) -> ConnectionSink {
        ConnectionSink(writer)
    }

    /// Takes no more frames; what is queued still goes out.
    pub(crate) fn close(&self) {
        self.0.close();
    }

    pub(crate) fn reply(&self, id: u64, result: Result<Response, ReplyError>) {
        self.send_frame(&ServerFrame::Reply { id, result });
    }

    pub(crate) fn send_frame(&self, frame: &ServerFrame) {
        let mut encoded = Vec::new();
        match encode_frame(frame, &mut encoded) {
            // A closed connection drops replies to requests it no longer awaits.
            Ok(()) => drop(self.0.send(&encoded)),
            Err(error) => tracing::error!(%error, "cannot encode a reply frame"),
        }
    }
}
