//! `rio:service/messaging`: a guest calls another object and awaits its
//! reply, within its own turn's deadline, unless the call would deadlock.
//! A turn running under an idempotency key gives each call a derived key.
//! A one-way `send` only joins the turn's pending sends: the activation
//! stores them with the turn's writes and delivers them afterwards (see
//! `outbox`).

use rio_protocol::ReplyError;

use crate::ObjectKey;
use crate::bindings::legacy;
use crate::bindings::messaging::Host;
use crate::bindings::types::{CallError, HandlerError};
use crate::deadlock::Deadlock;
use crate::host::{ActivationData, PendingSend, TurnCall};
use crate::idempotency::derived_key;

/// Sends one turn may make: they are held in the silo's memory until the
/// turn commits, and all go into its one commit.
const MAX_SENDS_PER_TURN: usize = 1000;

impl Host for ActivationData {
    async fn call(
        &mut self,
        service_type: String,
        object_id: String,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        self.call_object(&service_type, &object_id, message_type, payload)
            .await
            .map_err(to_call_error)
    }

    fn send(
        &mut self,
        service_type: String,
        object_id: String,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<(), CallError> {
        if service_type.is_empty() || object_id.is_empty() {
            return Err(CallError::Internal(format!(
                "cannot send `{message_type}` to `{service_type}/{object_id}`: the service type and object id must not be empty"
            )));
        }
        if self.sends.len() >= MAX_SENDS_PER_TURN {
            return Err(CallError::Internal(format!(
                "a turn may send at most {MAX_SENDS_PER_TURN} messages"
            )));
        }
        self.sends.push(PendingSend {
            receiver: ObjectKey::new(&service_type, &object_id),
            message_type,
            payload,
        });
        Ok(())
    }
}

/// Components built against 0.1.0 make the same calls; their contract has no
/// `deadlock` or `unavailable`, so those reach them as `internal`.
impl legacy::messaging::Host for ActivationData {
    async fn call(
        &mut self,
        service_type: String,
        object_id: String,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, legacy::types::CallError> {
        use legacy::types::{CallError as Legacy, HandlerError as LegacyHandlerError};
        let result = self
            .call_object(&service_type, &object_id, message_type, payload)
            .await;
        result.map_err(|error| match to_call_error(error) {
            CallError::Guest(HandlerError { kind, message }) => {
                Legacy::Guest(LegacyHandlerError { kind, message })
            }
            CallError::UnknownType(message) => Legacy::UnknownType(message),
            CallError::Trap(message) => Legacy::Trap(message),
            CallError::Timeout(message) => Legacy::Timeout(message),
            CallError::Overloaded(message) => Legacy::Overloaded(message),
            CallError::Cycle(message) => Legacy::Cycle(message),
            CallError::Deadlock(message) => Legacy::Internal(format!("deadlock: {message}")),
            CallError::Unavailable(message) => {
                Legacy::Internal(format!("unavailable (it may have run): {message}"))
            }
            CallError::Internal(message) => Legacy::Internal(message),
        })
    }
}

impl ActivationData {
    /// Sends the message and waits for the reply, as long as this turn may
    /// run. The wait is recorded in the silo's wait-for graph while it lasts.
    async fn call_object(
        &mut self,
        service_type: &str,
        object_id: &str,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, ReplyError> {
        let target = ObjectKey::new(service_type, object_id);
        // Every call counts, refused ones too, so a retried turn making the
        // same calls numbers them the same way.
        let index = self.calls_made;
        self.calls_made = self.calls_made.saturating_add(1);
        let idempotency_key = self
            .turn_key
            .as_deref()
            .map(|turn_key| derived_key(turn_key, &self.key, index, &target, &message_type));
        // A call back into this call chain is a `cycle`, which the router
        // answers; it is not a wait between chains.
        let same_chain = target == self.key || self.incoming_chain.contains(&target);
        let waiting = if same_chain {
            None
        } else {
            let edge = self
                .messenger
                .wait(&self.key, &target)
                .map_err(|Deadlock(message)| ReplyError::Deadlock(message))?;
            Some(edge)
        };
        let chain = self
            .incoming_chain
            .iter()
            .cloned()
            .chain([self.key.clone()])
            .collect();
        let call = TurnCall {
            callee: target,
            message_type,
            payload,
            call_chain: chain,
            deadline: self.turn_deadline,
            idempotency_key,
        };
        let result = self.messenger.clone().call(call, waiting.as_ref()).await;
        if let Err(error @ ReplyError::UnknownMessage { .. }) = &result {
            self.callee_unknown_message = Some(error.clone());
        }
        result
    }
}

/// How a failed call looks to the calling guest.
fn to_call_error(error: ReplyError) -> CallError {
    match error {
        ReplyError::Guest { kind, message } => CallError::Guest(HandlerError { kind, message }),
        // The callee's, named in the text; see `ActivationData::callee_unknown_message`.
        ReplyError::UnknownMessage { .. } => CallError::Guest(HandlerError {
            kind: "unknown-message".into(),
            message: error.to_string(),
        }),
        ReplyError::UnknownType { .. } => CallError::UnknownType(error.to_string()),
        ReplyError::Trap(message) => CallError::Trap(message),
        ReplyError::Timeout(message) => CallError::Timeout(message),
        ReplyError::Overloaded(message) => CallError::Overloaded(message),
        ReplyError::Unavailable(message) => CallError::Unavailable(message),
        ReplyError::Cycle(message) => CallError::Cycle(message),
        ReplyError::Deadlock(message) => CallError::Deadlock(message),
        ReplyError::BadRequest(_) | ReplyError::InvalidComponent(_) | ReplyError::Internal(_) => {
            CallError::Internal(error.to_string())
        }
    }
}
