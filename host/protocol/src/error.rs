//! The typed errors a silo replies with, shared by every client.

use serde::{Deserialize, Serialize};

/// The kinds of the table every SDK and the silo share (ARCHITECTURE.md,
/// "Error kinds"). A handler that passes on a callee's error returns one of
/// these as its own kind; the CLI's exit codes and the HTTP gateway's
/// statuses class it as that kind, since what a caller should do about a
/// `deadlock` does not depend on which object met it.
pub const SHARED_KINDS: &[&str] = &[
    "unknown-type",
    "unknown-message",
    "bad-request",
    "bad-data",
    "unauthorized",
    "trap",
    "timeout",
    "overloaded",
    "cycle",
    "deadlock",
    "unavailable",
    "invalid-component",
    "internal",
];

/// Why a request failed, as the silo reports it to the caller.
///
/// A caller can tell "the guest said no" ([`ReplyError::Guest`]) from "the
/// guest crashed" ([`ReplyError::Trap`]) from "the platform refused"
/// (the other variants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplyError {
    /// No component is deployed under this service type.
    #[error("unknown service type `{service_type}`")]
    UnknownType {
        /// The type that was asked for.
        service_type: String,
    },
    /// The object's handler does not know this message type.
    #[error("unknown message `{message_type}` for service type `{service_type}`")]
    UnknownMessage {
        /// The object's type.
        service_type: String,
        /// The message type that was sent.
        message_type: String,
    },
    /// The handler returned an error of its own.
    #[error("guest error `{kind}`: {message}")]
    Guest {
        /// Machine-readable word chosen by the guest.
        kind: String,
        /// Human-readable text chosen by the guest.
        message: String,
    },
    /// The guest trapped (panic, abort, out of its memory limit); the turn's
    /// writes were discarded and the instance was dropped.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest ran past its deadline; the turn's writes were discarded.
    #[error("guest timed out: {0}")]
    Timeout(String),
    /// The object's mailbox, or the silo, is full; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The call would wait on an object that is waiting on this call chain.
    #[error("call cycle: {0}")]
    Cycle(String),
    /// The call would close a cycle of turns of different call chains that
    /// wait on each other; it was refused (nothing ran in the callee) so the
    /// other turns can go on.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// The request could not be understood (bad frame, bad arguments).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A deploy was refused: the file is not a component of the rio world.
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// A failure inside the silo, such as an unreachable state store.
    #[error("internal error: {0}")]
    Internal(String),
    /// The connection's token does not allow this request (or it has none
    /// and the silo requires one); nothing was done.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The call may or may not have taken effect: the silo that owns the
    /// object could not be reached, the connection broke after the message
    /// was sent, or the turn's silo no longer owned the object when it
    /// committed (its writes were refused). If the message was never sent the
    /// text says so and a retry is safe; otherwise its outcome is unknown.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ReplyError {
    /// A short stable word for this error's variant, for scripts and logs:
    /// a guest's error is its own kind.
    pub fn kind(&self) -> &str {
        match self {
            ReplyError::Guest { kind, .. } => kind,
            other => other.platform_kind().unwrap_or_default(),
        }
    }

    /// The kind of an error the platform raised; `None` for a guest's own
    /// error, whose kind the guest chose (a metric's label must not be).
    pub fn platform_kind(&self) -> Option<&'static str> {
        Some(match self {
            ReplyError::Guest { .. } => return None,
            ReplyError::UnknownType { .. } => "unknown-type",
            ReplyError::UnknownMessage { .. } => "unknown-message",
            ReplyError::Trap(_) => "trap",
            ReplyError::Timeout(_) => "timeout",
            ReplyError::Overloaded(_) => "overloaded",
            ReplyError::Cycle(_) => "cycle",
            ReplyError::Deadlock(_) => "deadlock",
            ReplyError::BadRequest(_) => "bad-request",
            ReplyError::InvalidComponent(_) => "invalid-component",
            ReplyError::Internal(_) => "internal",
            ReplyError::Unavailable(_) => "unavailable",
            ReplyError::Unauthorized(_) => "unauthorized",
        })
    }
}
