//! Calls to other objects, typed with serde.
//!
//! The calling object's turn stays open while it waits: no other message
//! reaches it meanwhile. A call that would come back to an object waiting
//! in the chain fails with the kind `cycle` instead of hanging, and one that
//! would close a loop of turns waiting on each other fails with `deadlock`.
//! `unavailable` means the callee may or may not have run the message.

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
