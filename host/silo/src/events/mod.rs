//! Pub/sub: the events turns publish, numbered per publisher at commit,
//! handed to this silo's client subscriptions (`hub`), passed to every
//! other active silo for theirs (`broadcast`), and delivered to subscribed
//! objects from the topic log (`objects`).
//!
//! Invariants:
//! - An event exists only once its turn committed: the activation hands
//!   [`Events::committed`] the turn's events after its commit, never before,
//!   and a failed turn's are dropped with its writes.
//! - A publisher's events carry its sequence numbers from 1 on, stored in
//!   the commit (`SEQ_KEY`), so the numbering goes on across restarts and
//!   moves and a subscriber sees a gap as a skipped number.
//! - Per publisher, every subscriber receives events in commit order: one
//!   object commits one turn at a time and hands its events over before the
//!   next; each peer gets them through one queue sent one batch at a time.
//! - A publisher never waits for a subscriber: delivery only queues bytes
//!   on a connection within a bound, and past it the subscription counts
//!   the events it missed and is told so in its next frame. A peer queue
//!   past its bound, or a batch a peer did not take, drops events
//!   (counted); the next batch to that peer carries their counts by topic,
//!   and its subscribers of those topics are told they missed them.
//! - Deliberately absent: durability of client deliveries (an event
//!   published while nobody subscribes reaches nobody) and replay. Object
//!   subscriptions are durable instead (see `objects`).

pub(crate) mod broadcast;
pub(crate) mod hub;
#[cfg(test)]
mod object_tests;
pub(crate) mod objects;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rio_protocol::Event;

use self::broadcast::Broadcast;
use self::hub::Hub;
use self::objects::ObjectDelivery;
use crate::base::ObjectKey;
use crate::observe::EventCounters;

/// The reserved state key holding a publisher's last sequence number.
pub(crate) const SEQ_KEY: &str = crate::base::reserved::PUBLISHED_SEQ_KEY;

/// The longest topic, in bytes.
pub(crate) const MAX_TOPIC_BYTES: usize = 200;

/// The most events one turn may publish.
pub(crate) const MAX_EVENTS_PER_TURN: usize = 1000;

/// An event a turn published, waiting for the turn's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// Why a topic cannot be published or subscribed to; `None` if it can.
pub(crate) fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("a topic cannot be empty".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Some(format!(
            "a topic is at most {MAX_TOPIC_BYTES} bytes; this one has {}",
            topic.len()
        ));
    }
    if topic.chars().any(char::is_control) {
        return Some(format!(
            "topic `{}` has control characters",
            crate::base::text::one_line(topic, 100)
        ));
    }
    if topic.starts_with(crate::base::reserved::PREFIX) {
        return Some(format!(
            "topics starting with `{}` are reserved to the silo",
            crate::base::reserved::PREFIX
        ));
    }
    None
}

/// The sequence number stored after `last`, as the state holds it.
pub(crate) fn encode_seq(last: u64) -> Vec<u8> {
    last.to_be_bytes().to_vec()
}

/// The sequence number a publisher's state holds; an unreadable value
/// counts as none (numbering starts again, which subscribers see as a jump).
pub(crate) fn decode_seq(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

/// Numbers a committed turn's events, after `last` (the publisher's last
/// number, which it becomes).
pub(crate) fn number(
    publisher: &ObjectKey,
    pending: Vec<Pending>,
    last: &mut u64,
    now_ms: i64,
) -> Vec<Event> {
    // Most turns publish nothing: no name made for them.
    if pending.is_empty() {
        return Vec::new();
    }
    let publisher = publisher.to_string();
    pending
        .into_iter()
        .map(|event| {
            *last += 1;
            Event {
                topic: event.topic,
                publisher: publisher.clone(),
                seq: *last,
                payload: event.payload.into(),
                published_at_ms: now_ms,
            }
        })
        .collect()
}

/// `event` as the topic log keeps it (its publisher is the commit's).
pub(crate) fn for_log(event: &Event) -> crate::storage::TopicEvent {
    crate::storage::TopicEvent {
        topic: event.topic.clone(),
        seq: i64::try_from(event.seq).unwrap_or(i64::MAX),
        payload: event.payload.to_vec(),
        published_ms: event.published_at_ms,
    }
}

/// The silo's pub/sub: its subscriptions and, in a cluster, its queues to
/// the other silos.
pub(crate) struct Events {
    pub(crate) hub: Hub,
    broadcast: Option<Broadcast>,
    pub(crate) counters: Arc<EventCounters>,
    /// Delivery of the topic log to subscribed objects.
    pub(crate) objects: Arc<ObjectDelivery>,
}

impl Events {
    /// Pub/sub for a silo; `broadcast` is `None` for a silo on its own.
    pub(crate) fn new(
        counters: Arc<EventCounters>,
        subscription_buffer_bytes: usize,
        broadcast: Option<Broadcast>,
        objects: Arc<ObjectDelivery>,
    ) -> Events {
        Events {
            hub: Hub::new(counters.clone(), subscription_buffer_bytes),
            broadcast,
            counters,
            objects,
        }
    }

    /// A turn of `publisher` on this silo committed `events`: to this
    /// silo's client subscribers, to every other active silo for theirs,
    /// and from the topic log to subscribed objects.
    pub(crate) fn committed(&self, publisher: &ObjectKey, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.objects
            .committed(publisher, events.iter().map(|event| event.topic.as_str()));
        self.counters
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.hub.deliver(&events);
        if let Some(broadcast) = &self.broadcast {
            broadcast.send(events);
        }
    }

    /// Events another silo's turns committed, for this silo's subscribers,
    /// and the counts by topic of those that did not get here.
    pub(crate) fn arrived_from_peer(&self, events: &[Event], missed: &[(String, u64)]) {
        for (topic, count) in missed {
            self.hub.note_missed(topic, *count);
        }
        self.hub.deliver(events);
    }
}
