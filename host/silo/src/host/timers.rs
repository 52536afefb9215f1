//! `rio:service/timers`: a turn sets and cancels its object's timers; the
//! changes wait in the turn's scope until it commits (see `time::timers`).

use std::time::Duration;

use super::ActivationData;
use super::bindings::timers::{Host, Timer};
use super::bindings::types::CallError;
use crate::time::timers::TimerSpec;

impl Host for ActivationData {
    fn set(&mut self, name: String, timer: Timer) -> Result<(), CallError> {
        if timer.payload.len() > self.limits.payload_bytes {
            return Err(CallError::Internal(format!(
                "cannot set timer `{}` with a payload of {} bytes: over the silo's limit `payload-bytes` of {}",
                crate::base::text::one_line(&name, 200),
                timer.payload.len(),
                self.limits.payload_bytes
            )));
        }
        self.limits
            .check_message_type(&timer.message_type, &self.key)
            .map_err(CallError::Internal)?;
        let spec = TimerSpec {
            after: Duration::from_millis(timer.after_ms),
            every: timer.every_ms.map(Duration::from_millis),
            message_type: timer.message_type,
            payload: timer.payload,
            keep_active: timer.keep_active,
        };
        self.timers
            .set(&mut self.turn.timers, name, spec)
            .map_err(|error| CallError::Internal(format!("{}: {error}", self.key)))
    }

    fn cancel(&mut self, name: String) {
        self.timers.cancel(&mut self.turn.timers, name);
    }
}
