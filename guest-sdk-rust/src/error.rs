//! [`Error`]: what a handler returns on failure, and how failures of the
//! SDK's own helpers map onto it.

use std::fmt;

use crate::bindings::rio::service::types::{CallError, HandlerError};

/// A handler's failure: a short machine-readable `kind` (e.g.
/// `insufficient-funds`) and a human-readable `message`. The caller receives
/// both. Returning an error discards the turn's state writes.
///
/// Kinds the SDK itself produces:
///
/// | kind | when |
/// |---|---|
/// | `bad-request` | the payload does not decode into the handler's message type |
/// | `unknown-message` | no handler is listed for the message type |
/// | `bad-data` | a stored state value or a callee's reply does not decode into the type asked for |
/// | `internal` | a value cannot be encoded, or the platform failed a call |
/// | the callee's kind | a [`call`](crate::call()) whose callee returned an error |
/// | `unknown-type`, `trap`, `timeout`, `overloaded`, `cycle`, `deadlock`, `unavailable` | a [`call`](crate::call()) the platform could not complete |
///
/// A panic is not an `Error`: it traps the instance, and the caller gets the
/// kind `trap`. The table shared by every SDK is in the repository's
/// ARCHITECTURE.md ("Error kinds").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Machine-readable word.
    pub kind: String,
    /// Text for humans.
    pub message: String,
}

impl Error {
    /// An error of your own kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// The message could not be decoded into the handler's message type.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new("bad-request", message)
    }

    /// No handler for this message type (the kind the silo reports as
    /// `unknown-message`).
    pub fn unknown_message(message_type: &str) -> Error {
        Error::new(
            "unknown-message",
            format!("no handler for message `{message_type}`"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for HandlerError {
    fn from(error: Error) -> HandlerError {
        HandlerError {
            kind: error.kind,
            message: error.message,
        }
    }
}

/// A failed call to another object. The callee's own error keeps its kind,
/// so `?` passes e.g. `insufficient-funds` through to this handler's caller;
/// platform failures get the kinds `unknown-type`, `trap`, `timeout`,
/// `overloaded`, `cycle`, `deadlock`, `unavailable` (the call may have run)
/// and `internal`.
impl From<CallError> for Error {
    fn from(error: CallError) -> Error {
        match error {
            CallError::Guest(inner) => Error {
                kind: inner.kind,
                message: inner.message,
            },
            CallError::UnknownType(message) => Error::new("unknown-type", message),
            CallError::Trap(message) => Error::new("trap", message),
            CallError::Timeout(message) => Error::new("timeout", message),
            CallError::Overloaded(message) => Error::new("overloaded", message),
            CallError::Cycle(message) => Error::new("cycle", message),
            CallError::Deadlock(message) => Error::new("deadlock", message),
            CallError::Unavailable(message) => Error::new("unavailable", message),
            CallError::Internal(message) => Error::new("internal", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_keep_the_callee_kind_or_name_the_platform_failure() {
        let guest = CallError::Guest(HandlerError {
            kind: "insufficient-funds".into(),
            message: "no".into(),
        });
        assert_eq!(Error::from(guest), Error::new("insufficient-funds", "no"));
        let platform = [
            (CallError::UnknownType("m".into()), "unknown-type"),
            (CallError::Trap("m".into()), "trap"),
            (CallError::Timeout("m".into()), "timeout"),
            (CallError::Overloaded("m".into()), "overloaded"),
            (CallError::Cycle("m".into()), "cycle"),
            (CallError::Deadlock("m".into()), "deadlock"),
            (CallError::Unavailable("m".into()), "unavailable"),
            (CallError::Internal("m".into()), "internal"),
        ];
        for (error, kind) in platform {
            assert_eq!(Error::from(error), Error::new(kind, "m"));
        }
    }

    #[test]
    fn errors_reach_the_wire_unchanged() {
        let wire: HandlerError = Error::new("refused", "this guest refuses").into();
        assert_eq!(
            (wire.kind.as_str(), wire.message.as_str()),
            ("refused", "this guest refuses")
        );
        let wire: HandlerError = Error::unknown_message("frob").into();
        assert_eq!(wire.kind, "unknown-message");
        assert!(wire.message.contains("frob"));
    }
}
