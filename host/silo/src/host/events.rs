//! `rio:service/events`: a turn publishes events; they wait in the turn's
//! scope until it commits (see `events`).

use super::ActivationData;
use super::bindings::events::Host;
use super::bindings::types::CallError;
use crate::events::{MAX_EVENTS_PER_TURN, Pending, topic_problem};

impl Host for ActivationData {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), CallError> {
        if let Some(problem) = topic_problem(&topic) {
            return Err(CallError::Internal(format!(
                "{} cannot publish: {problem}",
                self.key
            )));
        }
        let published = &mut self.turn.published;
        if published.len() >= MAX_EVENTS_PER_TURN {
            return Err(CallError::Internal(format!(
                "{} cannot publish more than {MAX_EVENTS_PER_TURN} events in one turn",
                self.key
            )));
        }
        let bytes: usize = published.iter().map(|event| event.payload.len()).sum();
        let limit = self.limits.payload_bytes;
        if bytes + payload.len() > limit {
            return Err(CallError::Internal(format!(
                "{} cannot publish {} more bytes: a turn's events are at most the silo's limit `payload-bytes` of {limit} bytes together",
                self.key,
                payload.len()
            )));
        }
        published.push(Pending { topic, payload });
        Ok(())
    }
}
