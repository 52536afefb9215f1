//! `rio:service/events`: a turn publishes events and changes its object's
//! subscriptions; both wait in the turn's scope until it commits (see
//! `events`).

use super::ActivationData;
use super::bindings::events::Host;
use super::bindings::types::CallError;
use crate::events::{MAX_EVENTS_PER_TURN, Pending, topic_problem};
use crate::storage::SubscriptionChange;

/// Subscription changes one turn may make.
pub(crate) const MAX_SUBSCRIPTION_CHANGES_PER_TURN: usize = 64;

/// A message type, at most (the stores key it like an object id).
const MAX_MESSAGE_TYPE_BYTES: usize = 255;

impl ActivationData {
    fn change_subscriptions(&mut self, change: SubscriptionChange) -> Result<(), String> {
        if self.turn.subscriptions.len() >= MAX_SUBSCRIPTION_CHANGES_PER_TURN {
            return Err(format!(
                "{}: a turn may make at most {MAX_SUBSCRIPTION_CHANGES_PER_TURN} subscription changes",
                self.key
            ));
        }
        self.turn.subscriptions.push(change);
        Ok(())
    }
}

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

    fn subscribe(&mut self, topic: String, message_type: String) -> Result<(), CallError> {
        let problem = topic_problem(&topic).or_else(|| {
            if message_type.is_empty() {
                Some("the message type to deliver as cannot be empty".into())
            } else if message_type.len() > MAX_MESSAGE_TYPE_BYTES {
                Some(format!(
                    "the message type to deliver as is at most {MAX_MESSAGE_TYPE_BYTES} bytes"
                ))
            } else if message_type.starts_with(crate::base::reserved::PREFIX) {
                Some(format!(
                    "message types starting with `{}` are reserved to the silo",
                    crate::base::reserved::PREFIX
                ))
            } else {
                None
            }
        });
        if let Some(problem) = problem {
            return Err(CallError::Internal(format!(
                "{} cannot subscribe: {problem}",
                self.key
            )));
        }
        let change = SubscriptionChange::Subscribe {
            topic,
            message_type,
            // The commit's time is what counts; the turn's start is close
            // enough and never later.
            since_ms: crate::base::clock::now_ms(),
        };
        self.change_subscriptions(change)
            .map_err(CallError::Internal)
    }

    /// Past the turn's limit of changes the guest is stopped here (a
    /// trap): an unsubscribe it believes done must not be dropped. A topic
    /// no subscription can have has nothing to end.
    fn unsubscribe(&mut self, topic: String) -> wasmtime::Result<()> {
        if topic_problem(&topic).is_some() {
            return Ok(());
        }
        self.change_subscriptions(SubscriptionChange::Unsubscribe { topic })
            .map_err(wasmtime::Error::msg)
    }

    async fn subscriptions(&mut self) -> Result<Vec<(String, String)>, CallError> {
        let Some(store) = self.reminder_store.clone() else {
            return Ok(Vec::new());
        };
        store.subscriptions_of(&self.key).await.map_err(|error| {
            CallError::Internal(format!(
                "cannot list the subscriptions of {}: {error}",
                self.key
            ))
        })
    }
}
