//! A client's one-way send, stored by its receiver. The client calls the
//! receiver with the reserved type `rio:enqueue` and an [`EnqueueRequest`];
//! the receiver's activation, without running its guest, commits the
//! message to its own outbox as a message from itself to itself (with the
//! call's reply record when the call is keyed, so a retried send is stored
//! once) and answers an empty payload once it is stored. Its outbox then
//! delivers the message like any one-way send, as a keyed call to the
//! receiver: it takes effect exactly once, after the acknowledgement, and
//! one client's sends to one receiver take effect in the order they were
//! acknowledged.

use rio_protocol::{EnqueueRequest, ReplyError};

use super::outbox::Outbox;
use crate::base::limits::Limits;
use crate::base::{ObjectKey, reserved};
use crate::message::PendingSend;
use crate::storage::{Commit, ReplyRecord};

/// The message an enqueue call to `receiver` carries, checked as a guest's
/// send is: its payload within `turn-write-bytes`, its type not reserved.
pub(crate) fn decode(
    receiver: &ObjectKey,
    payload: &[u8],
    limits: &Limits,
) -> Result<PendingSend, ReplyError> {
    let request: EnqueueRequest = ciborium::from_reader(payload).map_err(|error| {
        ReplyError::BadRequest(format!(
            "the message sent to {receiver} is not a CBOR enqueue request: {error}"
        ))
    })?;
    limits
        .check_message_type(&request.message_type, receiver)
        .map_err(ReplyError::BadRequest)?;
    reserved::check_message_type(&request.message_type, receiver)?;
    if request.payload.len() > limits.turn_write_bytes {
        return Err(ReplyError::BadRequest(format!(
            "the message sent to {receiver} is {} bytes, over the silo's limit `turn-write-bytes` of {}",
            request.payload.len(),
            limits.turn_write_bytes
        )));
    }
    Ok(PendingSend {
        receiver: receiver.clone(),
        message_type: request.message_type,
        payload: request.payload.into_vec(),
    })
}

/// The commit that stores `message` in its receiver's `outbox`, with the
/// empty reply under `idempotency_key` when the enqueue call had one.
pub(crate) fn commit(
    outbox: &Outbox,
    message: PendingSend,
    idempotency_key: Option<&str>,
    now_ms: i64,
) -> Commit {
    Commit {
        writes: Vec::new(),
        reply: idempotency_key.map(|key| ReplyRecord {
            key: key.to_string(),
            reply: Vec::new(),
            stored_at_ms: now_ms,
        }),
        outbox: outbox.number(vec![message], now_ms),
        reminders: Vec::new(),
        ..Commit::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::base::reserved::{ENQUEUE, WAKE_INTERRUPTED, WAKE_OUTBOX};

    fn encoded(message_type: &str, payload: &[u8]) -> Vec<u8> {
        let request = EnqueueRequest {
            message_type: message_type.to_string(),
            payload: ByteBuf::from(payload.to_vec()),
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&request, &mut bytes).unwrap();
        bytes
    }

    fn check(payload: &[u8], limits: &Limits, expected: Result<(&str, &[u8]), &str>) {
        let receiver = ObjectKey::new("Counter", "r");
        let decoded = decode(&receiver, payload, limits);
        match (decoded, expected) {
            (Ok(send), Ok((message_type, bytes))) => {
                assert_eq!(send.receiver, receiver, "a client's send is to itself");
                assert_eq!(send.message_type, message_type);
                assert_eq!(send.payload, bytes);
            }
            (Err(ReplyError::BadRequest(message)), Err(needle)) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
            (decoded, expected) => panic!("decoded {decoded:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn decodes_the_message_and_refuses_what_a_guest_could_not_send() {
        let limits = Limits::default();
        check(
            &encoded("increment", b"\xa1bby\x01"),
            &limits,
            Ok(("increment", b"\xa1bby\x01")),
        );
        check(&encoded("get", b""), &limits, Ok(("get", b"")));
        let long = "m".repeat(limits.message_type_bytes + 1);
        check(&encoded(&long, b""), &limits, Err("message-type-bytes"));
        check(b"\xff not cbor", &limits, Err("not a CBOR enqueue request"));
        check(&[], &limits, Err("not a CBOR enqueue request"));
        check(&encoded(ENQUEUE, b""), &limits, Err("reserved"));
        check(&encoded(WAKE_OUTBOX, b""), &limits, Err("reserved"));
        check(&encoded(WAKE_INTERRUPTED, b""), &limits, Err("reserved"));
        let small = Limits {
            turn_write_bytes: 4,
            ..Limits::default()
        };
        check(&encoded("append", b"1234"), &small, Ok(("append", b"1234")));
        check(
            &encoded("append", b"12345"),
            &small,
            Err("turn-write-bytes"),
        );
    }
}
