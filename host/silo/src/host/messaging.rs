//! `rio:service/messaging`: a guest calls another object and awaits its
//! reply, within its own turn's deadline, unless the call would deadlock.
//! A turn running under an idempotency key gives each call a derived key.
//! A one-way `send` only joins the turn's pending sends: the activation
//! stores them with the turn's writes and delivers them afterwards (see
//! `outbox`).

use rio_protocol::ReplyError;

use super::bindings::legacy;
use super::bindings::messaging::Host;
use super::bindings::types::{CallError, HandlerError};
use super::{ActivationData, TurnCall};
use crate::base::{ObjectKey, reserved};
use crate::deadlock::Deadlock;
use crate::effects::idempotency::derived_key;
use crate::effects::resume::{NOT_RUN, surely_not_run};
use crate::message::PendingSend;

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
        let limits = &self.limits;
        if service_type.len() > limits.service_type_bytes
            || object_id.len() > limits.object_id_bytes
        {
            return Err(CallError::Internal(format!(
                "cannot send to an object whose type or id is longer than the silo's limits `service-type-bytes` ({}) and `object-id-bytes` ({})",
                limits.service_type_bytes, limits.object_id_bytes
            )));
        }
        // Sends wait in the silo's memory until the turn commits, and all
        // go into its one commit: they count like calls.
        if self.turn.sends.len() >= limits.calls_per_turn {
            return Err(CallError::Internal(format!(
                "{} sent more messages in one turn than the silo's limit `calls-per-turn` of {}",
                self.key, limits.calls_per_turn
            )));
        }
        if payload.len() > limits.payload_bytes {
            return Err(CallError::Internal(format!(
                "cannot send a message of {} bytes: over the silo's limit `payload-bytes` of {}",
                payload.len(),
                limits.payload_bytes
            )));
        }
        let receiver = ObjectKey::new(&service_type, &object_id);
        limits
            .check_message_type(&message_type, &receiver)
            .map_err(CallError::Internal)?;
        reserved::check_message_type(&message_type, &receiver).map_err(to_call_error)?;
        let pending_bytes: usize = self.turn.sends.iter().map(|send| send.payload.len()).sum();
        if pending_bytes + payload.len() > limits.turn_write_bytes {
            return Err(CallError::Internal(format!(
                "{} sent more bytes in one turn than the silo's limit `turn-write-bytes` of {}",
                self.key, limits.turn_write_bytes
            )));
        }
        self.turn.sends.push(PendingSend {
            receiver,
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
        let index = self.turn.calls_made;
        self.turn.calls_made = self.turn.calls_made.saturating_add(1);
        self.within_call_limits(index)?;
        reserved::check_message_type(&message_type, &target)?;
        let idempotency_key = self
            .turn
            .key
            .as_deref()
            .map(|turn_key| derived_key(turn_key, &self.key, index, &target, &message_type));
        self.store_intent_before_calling().await?;
        // A call back into this call chain is a `cycle`, which the router
        // answers; it is not a wait between chains.
        let same_chain = target == self.key || self.turn.incoming_chain.contains(&target);
        let waiting = if same_chain {
            None
        } else {
            let edge = self
                .messenger
                .wait(&self.key, &target, self.turn.rerun)
                .map_err(|Deadlock(message)| ReplyError::Deadlock(message))?;
            Some(edge)
        };
        let chain = self
            .turn
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
            deadline: self.turn.deadline,
            idempotency_key,
            from_rerun: self.turn.rerun,
        };
        // Taken as run until its answer says otherwise: a turn stopped at
        // its deadline while the call is out cannot know.
        let may_have_run = self.turn.calls_may_have_run;
        self.turn.calls_may_have_run = true;
        let result = self.messenger.clone().call(call, waiting.as_ref()).await;
        if let Err(error) = &result
            && surely_not_run(error)
        {
            self.turn.calls_may_have_run = may_have_run;
        }
        if let Err(error @ ReplyError::UnknownMessage { .. }) = &result {
            self.turn.callee_unknown_message = Some(error.clone());
        }
        result
    }
}

impl ActivationData {
    /// A keyed turn's first call may take effect even if the turn never
    /// commits: its request is stored first, so the object runs it again
    /// before any other turn (see `resume`).
    async fn store_intent_before_calling(&mut self) -> Result<(), ReplyError> {
        let Some(intent) = &self.turn.intent else {
            return Ok(());
        };
        match &self.intent_stored {
            Some(stored) if *stored == intent.key => return Ok(()),
            // Another turn's intent is pending: this turn was let in before
            // its rerun (see `activation::keyed`) and may not call out, or
            // its intent would take the other's place.
            Some(stored) if !stored.is_empty() => {
                return Err(ReplyError::Unavailable(format!(
                    "{} is finishing an interrupted keyed turn; a turn let in before it cannot call \
                     other objects ({NOT_RUN}; retry it)",
                    self.key
                )));
            }
            _ => {}
        }
        let (encoded, key) = (intent.encode(), intent.key.clone());
        let recorded = self
            .messenger
            .clone()
            .record_intent(self.key.clone(), encoded)
            .await;
        // A store error may hide a write that happened: taken as stored, the
        // intent is deleted by the turn's commit or run again if it fails
        // (its caller hears `internal`, "it may have run"). Only a refusal
        // (the object moved) surely wrote nothing.
        if !matches!(recorded, Err(ReplyError::Unavailable(_))) {
            self.intent_stored = Some(key);
        }
        recorded
    }

    /// Refuses the turn's call number `index` (from 0) if it is one too
    /// many, or if it would make the chain of waiting turns too deep.
    fn within_call_limits(&self, index: u32) -> Result<(), ReplyError> {
        let limits = &self.limits;
        if index as usize >= limits.calls_per_turn {
            return Err(ReplyError::BadRequest(format!(
                "{} made more calls in one turn than the silo's limit `calls-per-turn` of {}",
                self.key, limits.calls_per_turn
            )));
        }
        // The turns of the chain: the incoming ones, this one, the callee's.
        let depth = self.turn.incoming_chain.len() + 2;
        if depth > limits.call_depth {
            return Err(ReplyError::BadRequest(format!(
                "a call from {} would make a chain of {depth} turns, over the silo's limit `call-depth` of {}",
                self.key, limits.call_depth
            )));
        }
        Ok(())
    }
}

/// How a failed call looks to the calling guest.
fn to_call_error(error: ReplyError) -> CallError {
    match error {
        ReplyError::Guest { kind, message } => CallError::Guest(HandlerError { kind, message }),
        // The callee's, named in the text; see `TurnScope::callee_unknown_message`.
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
        // A peer refusing this silo's cluster secret is a misconfiguration
        // the guest cannot act on.
        ReplyError::BadRequest(_)
        | ReplyError::InvalidComponent(_)
        | ReplyError::Internal(_)
        | ReplyError::Unauthorized(_) => CallError::Internal(error.to_string()),
    }
}
