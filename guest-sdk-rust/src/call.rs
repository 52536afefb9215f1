//! Calls to other objects, typed with serde, and one-way sends.
//!
//! The calling object's turn stays open while it waits: no other message
//! reaches it meanwhile. A call that would come back to an object waiting
//! in the chain fails with the kind `cycle` instead of hanging, and one that
//! would close a loop of turns waiting on each other fails with `deadlock`.
//! `unavailable` means the callee may or may not have run the message.
//!
//! A [`send`] does not wait: the message is stored with this turn's writes
//! when the handler returns `ok` (and dropped if it fails), then delivered
//! until the receiver commits it, exactly once and after the earlier
//! messages this object sent it. Use `call` when the answer is needed now,
//! `send` for an effect that must happen once the turn committed.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::rio::service::messaging;
use crate::{Error, codec};

/// Sends `message` as `message_type` to `service_type/object_id` and decodes
/// its reply. The callee's own error comes back with its kind, so `?` passes
/// it on.
pub fn call<M: Serialize + ?Sized, R: DeserializeOwned>(
    service_type: &str,
    object_id: &str,
    message_type: &str,
    message: &M,
) -> Result<R, Error> {
    let payload = codec::encode(message)?;
    let reply = call_raw(service_type, object_id, message_type, &payload)?;
    codec::decode(&reply, &format!("the reply of {service_type}/{object_id}"))
}

/// Like [`call`], with payloads as raw bytes.
pub fn call_raw(
    service_type: &str,
    object_id: &str,
    message_type: &str,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    Ok(messaging::call(
        service_type,
        object_id,
        message_type,
        payload,
    )?)
}

/// Sends `message` as `message_type` to `service_type/object_id` one way:
/// it goes out only if this turn commits, and takes effect exactly once.
/// A receiver that refuses it (its error, an unknown type or message) makes
/// it a dead letter, listed by `rio dead-letters`; this turn never learns.
pub fn send<M: Serialize + ?Sized>(
    service_type: &str,
    object_id: &str,
    message_type: &str,
    message: &M,
) -> Result<(), Error> {
    let payload = codec::encode(message)?;
    send_raw(service_type, object_id, message_type, &payload)
}

/// Like [`send`], with the payload as raw bytes.
pub fn send_raw(
    service_type: &str,
    object_id: &str,
    message_type: &str,
    payload: &[u8],
) -> Result<(), Error> {
    Ok(messaging::send(
        service_type,
        object_id,
        message_type,
        payload,
    )?)
}
