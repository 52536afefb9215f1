//! What the [`service!`](crate::service) macro expands to call: decode the
//! message, run the handler, encode the reply. Not for direct use.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::rio::service::types::HandlerError;
use crate::{Error, codec};

/// Runs one message handler on a raw payload.
pub fn handle<M, R, F>(payload: &[u8], handler: F) -> Result<Vec<u8>, HandlerError>
where
    M: DeserializeOwned,
    R: Serialize,
    F: FnOnce(M) -> Result<R, Error>,
{
    let message = codec::decode_message(payload)?;
    let reply = handler(message)?;
    Ok(codec::encode(&reply)?)
}

/// Runs a lifecycle hook.
pub fn hook(hook: fn() -> Result<(), Error>) -> Result<(), HandlerError> {
    Ok(hook()?)
}
