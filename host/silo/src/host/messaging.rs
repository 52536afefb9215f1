//! `rio:service/messaging`: a guest calls another object and awaits its reply.

use rio_protocol::ReplyError;

use crate::ObjectKey;
use crate::bindings::messaging::Host;
use crate::bindings::types::{CallError, HandlerError};
use crate::host::ActivationData;

impl Host for ActivationData {
    async fn call(
        &mut self,
        service_type: String,
        object_id: String,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let target = ObjectKey::new(&service_type, &object_id);
        let chain = self
            .incoming_chain
            .iter()
            .cloned()
            .chain([self.key.clone()])
            .collect();
        self.router
            .call(target, message_type, payload, chain)
            .await
            .map_err(to_call_error)
    }
}

/// How a failed call looks to the calling guest.
fn to_call_error(error: ReplyError) -> CallError {
    match error {
        ReplyError::Guest { kind, message } => CallError::Guest(HandlerError { kind, message }),
        ReplyError::UnknownMessage { .. } => CallError::Guest(HandlerError {
            kind: "unknown-message".into(),
            message: error.to_string(),
        }),
        ReplyError::UnknownType { .. } => CallError::UnknownType(error.to_string()),
        ReplyError::Trap(message) => CallError::Trap(message),
        ReplyError::Timeout(message) => CallError::Timeout(message),
        ReplyError::Overloaded(message) => CallError::Overloaded(message),
        // The guest's contract has no such case; like overload, it passes.
        ReplyError::Unavailable(message) => CallError::Overloaded(message),
        ReplyError::Cycle(message) => CallError::Cycle(message),
        ReplyError::BadRequest(_) | ReplyError::InvalidComponent(_) | ReplyError::Internal(_) => {
            CallError::Internal(error.to_string())
        }
    }
}
