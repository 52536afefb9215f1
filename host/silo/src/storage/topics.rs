//! Object subscriptions as the stores keep them: one row per topic and
//! subscribing object (with the message type it receives events as), and
//! a per-topic log of the events published while a topic has subscribers,
//! one row per event with its delivery's progress. A publish stores its
//! event once, whatever the number of subscribers; delivery walks the
//! subscribers in key order and records how far it got on the event.
//!
//! Both are parts of a turn's [`Commit`](super::Commit): a subscription in
//! the subscriber's, an event in its publisher's, stored only if its topic
//! has a subscriber at that moment (checked in the same transaction).

use crate::base::ObjectKey;

/// One change a turn makes to its object's subscriptions, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// Subscribes the object to `topic` (or changes the message type of
    /// its subscription), from `since_ms` on.
    Subscribe {
        /// The topic.
        topic: String,
        /// The message type each event is delivered as.
        message_type: String,
        /// When the subscribing turn committed, in ms since the Unix
        /// epoch: events published before it are not delivered.
        since_ms: i64,
    },
    /// Ends the object's subscription to `topic`, if it has one.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
}

impl SubscriptionChange {
    /// The topic it changes.
    pub fn topic(&self) -> &str {
        match self {
            SubscriptionChange::Subscribe { topic, .. }
            | SubscriptionChange::Unsubscribe { topic } => topic,
        }
    }

    /// About how many bytes it writes.
    pub fn bytes(&self) -> usize {
        match self {
            SubscriptionChange::Subscribe {
                topic,
                message_type,
                ..
            } => topic.len() + message_type.len() + 16,
            SubscriptionChange::Unsubscribe { topic } => topic.len(),
        }
    }
}

/// An event for the topic log: its publisher is the committing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicEvent {
    /// The topic.
    pub topic: String,
    /// The publisher's sequence number (see `events`).
    pub seq: i64,
    /// The event.
    pub payload: Vec<u8>,
    /// When its turn committed, in ms since the Unix epoch.
    pub published_ms: i64,
}

/// An event of the topic log not yet delivered to every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The event.
    pub event: TopicEvent,
    /// The last subscriber (in key order) it was delivered to, with every
    /// one before it; `None` before the first.
    pub delivered_through: Option<ObjectKey>,
}

/// One publisher's events on one topic: delivered in seq order, one event
/// after another, which keeps every subscriber's events of that publisher
/// in publish order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The topic.
    pub topic: String,
    /// The publisher.
    pub publisher: ObjectKey,
}

/// An object's subscription to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscribing object.
    pub object: ObjectKey,
    /// The message type it receives events as.
    pub message_type: String,
}
