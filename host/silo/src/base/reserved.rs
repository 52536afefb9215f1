//! Every name the silo reserves for itself, in one place: the message
//! types it sends its own objects and the state keys it keeps beside a
//! guest's. Everything under the `rio:` prefix is reserved, so names added
//! later (timers, reminders, events) cannot collide with a guest's.
//!
//! Each entry point checks here, once: a client's call and the message
//! inside a client's send ([`check_client_call`], [`check_message_type`]),
//! a guest's call and send ([`check_message_type`]), a guest's state keys
//! ([`is_reserved_state_key`]). A message is parsed into a
//! [`SystemMessage`] once, where an activation takes it.

use rio_protocol::ReplyError;

use super::ObjectKey;

/// The prefix of every reserved name.
pub(crate) const PREFIX: &str = "rio:";

/// The state key holding an object's interrupted keyed turn (see
/// `effects::resume`); loading hides it from the guest.
pub(crate) const INTENT_KEY: &str = "rio:interrupted-turn";

/// The state key marking an object that has sent one way, so that its
/// activations load its outbox (see `effects::outbox`).
pub(crate) const HAS_SENT_KEY: &str = "rio:has-sent";

/// The state key holding the sequence number of the last event its object
/// published (see `events`).
pub(crate) const PUBLISHED_SEQ_KEY: &str = "rio:published-seq";

/// Activates its object so that it delivers its outbox.
pub(crate) const WAKE_OUTBOX: &str = "rio:wake-outbox";

/// Activates its object so that it finishes an interrupted keyed turn.
pub(crate) const WAKE_INTERRUPTED: &str = "rio:wake-interrupted";

/// A client's one-way send, stored by its receiver (see
/// `effects::client_send`); the one reserved type a client may call.
pub(crate) const ENQUEUE: &str = rio_protocol::ENQUEUE_MESSAGE_TYPE;

/// A message the silo handles itself, without running the guest's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SystemMessage {
    /// Load the outbox and deliver what it holds.
    WakeOutbox,
    /// Finish an interrupted keyed turn.
    WakeInterrupted,
    /// Store a client's one-way send in the receiver's own outbox.
    Enqueue,
}

impl SystemMessage {
    /// The system message `message_type` names, `None` for a guest's own.
    pub(crate) fn parse(message_type: &str) -> Option<SystemMessage> {
        if !message_type.starts_with(PREFIX) {
            return None;
        }
        match message_type {
            WAKE_OUTBOX => Some(SystemMessage::WakeOutbox),
            WAKE_INTERRUPTED => Some(SystemMessage::WakeInterrupted),
            ENQUEUE => Some(SystemMessage::Enqueue),
            _ => None,
        }
    }

    /// Its message type on the wire (forwarded between silos as any other).
    pub(crate) fn message_type(self) -> &'static str {
        match self {
            SystemMessage::WakeOutbox => WAKE_OUTBOX,
            SystemMessage::WakeInterrupted => WAKE_INTERRUPTED,
            SystemMessage::Enqueue => ENQUEUE,
        }
    }
}

/// Refuses a reserved message type where a guest or a client names the
/// message: in a guest's call or send, and inside a client's send.
pub(crate) fn check_message_type(message_type: &str, to: &ObjectKey) -> Result<(), ReplyError> {
    if message_type.starts_with(PREFIX) {
        return Err(ReplyError::BadRequest(format!(
            "cannot send `{}` to {to}: message types starting with `{PREFIX}` are reserved to the silo",
            crate::base::text::one_line(message_type, 200)
        )));
    }
    Ok(())
}

/// A client's call: any type of its own, or [`ENQUEUE`] (a one-way send).
pub(crate) fn check_client_call(message_type: &str, to: &ObjectKey) -> Result<(), ReplyError> {
    if message_type == ENQUEUE {
        return Ok(());
    }
    check_message_type(message_type, to)
}

/// A state key a guest may neither read nor write.
pub(crate) fn is_reserved_state_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_parse_back_and_guest_types_are_none() {
        for message in [
            SystemMessage::WakeOutbox,
            SystemMessage::WakeInterrupted,
            SystemMessage::Enqueue,
        ] {
            assert_eq!(SystemMessage::parse(message.message_type()), Some(message));
        }
        assert_eq!(SystemMessage::parse("increment"), None);
        assert_eq!(SystemMessage::parse("rio:unknown"), None);
    }

    #[test]
    fn every_rio_name_is_reserved_but_a_client_may_enqueue() {
        let to = ObjectKey::new("C", "1");
        for name in [WAKE_OUTBOX, WAKE_INTERRUPTED, ENQUEUE, "rio:later"] {
            assert!(check_message_type(name, &to).is_err(), "{name}");
        }
        assert!(check_message_type("increment", &to).is_ok());
        assert!(check_client_call(ENQUEUE, &to).is_ok());
        assert!(check_client_call(WAKE_OUTBOX, &to).is_err());
        assert!(check_client_call("get", &to).is_ok());
        assert!(is_reserved_state_key(INTENT_KEY));
        assert!(is_reserved_state_key(HAS_SENT_KEY));
        assert!(!is_reserved_state_key("balance"));
    }
}
