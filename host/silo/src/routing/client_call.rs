//! A client's call as every way in takes it (the wire protocol and the HTTP
//! gateway alike): its names and idempotency key checked, its deadline set
//! from what the caller said, then routed.

use std::sync::Arc;
use std::time::Duration;

use rio_protocol::{CallRequest, MAX_IDEMPOTENCY_KEY_BYTES, ReplyError};
use tokio::time::Instant;

use super::Router;
use crate::base::{ObjectKey, reserved};
use crate::message::{Envelope, ReplyTo};

impl Router {
    /// Routes a client's `call`, or answers `reply` with why it may not be
    /// made (a reserved name, a bad idempotency key); nothing runs then.
    pub(crate) fn route_client_call(
        &self,
        mut call: CallRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let key = ObjectKey::new(&call.service_type, &call.object_id);
        let checked = reserved::check_client_call(&call.message_type, &key)
            .and_then(|()| checked_idempotency_key(call.idempotency_key.take(), false));
        match checked {
            Ok(idempotency_key) => self.route(
                key,
                Envelope::from_call(call, idempotency_key, reply, deadline),
            ),
            Err(error) => reply.send(Err(error)),
        }
    }
}

/// A call's idempotency key, if it is one the stores can index and, unless
/// it comes `from_peer`, not one of the silo's own (a client naming a
/// reminder's fire would run it early and hide the real one).
pub(crate) fn checked_idempotency_key(
    key: Option<String>,
    from_peer: bool,
) -> Result<Option<Arc<str>>, ReplyError> {
    match key {
        None => Ok(None),
        Some(key) if key.is_empty() => Err(ReplyError::BadRequest(
            "the idempotency key is empty".into(),
        )),
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => Err(ReplyError::BadRequest(format!(
            "the idempotency key is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed",
            key.len()
        ))),
        Some(key) if !from_peer && key.starts_with(reserved::PREFIX) => {
            Err(ReplyError::BadRequest(format!(
                "idempotency keys starting with `{}` are reserved to the silo",
                reserved::PREFIX
            )))
        }
        Some(key) => Ok(Some(key.into())),
    }
}

/// When the caller of a call stops waiting: what it said, or as long as
/// `rio-client` waits by default when it said nothing (an older client).
pub(crate) fn call_deadline(timeout_ms: Option<u64>) -> Instant {
    let wait = timeout_ms.map_or(rio_client::DEFAULT_TIMEOUT, Duration::from_millis);
    // A far-off deadline (u64::MAX ms) must not overflow the clock.
    Instant::now()
        .checked_add(wait)
        .unwrap_or_else(|| Instant::now() + rio_client::DEFAULT_TIMEOUT * 1000)
}
