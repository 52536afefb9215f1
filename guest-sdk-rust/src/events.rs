//! Pub/sub: events this object publishes to topics, for the clients that
//! subscribe to them on any silo of the cluster.
//!
//! ```no_run
//! # use rio_sdk::prelude::*;
//! # #[derive(Serialize)] struct Joined { member: String }
//! # fn join() -> Result<(), Error> {
//! // Clients watching `Room/lobby` (this object's own topic) see it once
//! // this turn commits.
//! events::publish_own(&Joined { member: "ada".into() })?;
//! # Ok(()) }
//! ```
//!
//! An event leaves only when the turn that published it commits, after
//! the turn's earlier events; a turn that fails publishes nothing. Every
//! event carries this object as its publisher and a sequence number that
//! counts its events from 1 (kept across restarts and moves), so a
//! subscriber sees a gap. Delivery to clients is at most once: nobody
//! subscribed, nobody receives it.

use serde::Serialize;

use crate::bindings::rio::service::events as host;
use crate::{Error, codec, identity};

/// Publishes `event` (CBOR) to `topic` once this turn commits.
pub fn publish<E: Serialize + ?Sized>(topic: &str, event: &E) -> Result<(), Error> {
    let payload = codec::encode(event)?;
    publish_raw(topic, &payload)
}

/// Publishes `event` to this object's own topic, its `Type/id`.
pub fn publish_own<E: Serialize + ?Sized>(event: &E) -> Result<(), Error> {
    publish(&own_topic(), event)
}

/// Like [`publish`], with the payload as raw bytes.
pub fn publish_raw(topic: &str, payload: &[u8]) -> Result<(), Error> {
    Ok(host::publish(topic, payload)?)
}

/// This object's own topic, its `Type/id` (e.g. `Room/lobby`).
pub fn own_topic() -> String {
    format!("{}/{}", identity::service_type(), identity::object_id())
}

/// Subscribes this object to `topic` once this turn commits: each event
/// published there afterwards, on any silo, arrives as a message of type
/// `message_type` carrying the event's payload, activating this object if
/// needed. Delivery is at least once with repeats skipped, so each event
/// takes effect once, and one publisher's events arrive in publish order.
/// Subscribing again replaces the message type.
///
/// ```no_run
/// # use rio_sdk::prelude::*;
/// # fn join() -> Result<(), Error> {
/// // Every event of the room `Room/lobby` arrives as a `room-event`.
/// events::subscribe("Room/lobby", "room-event")?;
/// # Ok(()) }
/// ```
pub fn subscribe(topic: &str, message_type: &str) -> Result<(), Error> {
    Ok(host::subscribe(topic, message_type)?)
}

/// Ends this object's subscription to `topic` once this turn commits.
pub fn unsubscribe(topic: &str) {
    host::unsubscribe(topic);
}

/// This object's subscriptions as last committed: (topic, message type),
/// by topic.
pub fn subscriptions() -> Result<Vec<(String, String)>, Error> {
    Ok(host::subscriptions()?)
}
