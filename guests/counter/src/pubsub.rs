//! The counter's pub/sub handlers: `publish` numbers its events per
//! publisher, `subscribe` / `unsubscribe` / `subscriptions` manage this
//! object's subscriptions, `heard` records each event delivered and `echo`
//! also answers it with one of its own.

use rio_sdk::prelude::*;

use super::Value;

#[derive(Deserialize)]
pub(crate) struct Publish {
    /// The topic; this object's own when absent.
    #[serde(default)]
    topic: Option<String>,
    /// How many events: numbered `{"i": k}` on from this object's earlier
    /// ones (from 1), so `i` is what the silo's sequence number must be.
    #[serde(default = "one")]
    n: u64,
    #[serde(default)]
    fail: bool,
    /// Carried in the events; an `echo` subscriber answers each event it
    /// hears with one of its own until it has published this many.
    #[serde(default)]
    until: Option<u64>,
}

fn one() -> u64 {
    1
}

#[derive(Serialize)]
pub(crate) struct Numbered {
    i: u64,
    /// The publishing object's id.
    from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct Published {
    published: u64,
}

/// Publishes `n` events, then fails if asked (and then publishes none);
/// answers how many this object has published in all.
pub(crate) fn publish(message: Publish) -> Result<Published, Error> {
    let topic = message.topic.unwrap_or_else(events::own_topic);
    let before: u64 = state::load("published")?.unwrap_or(0);
    let from = identity::object_id();
    for k in 1..=message.n {
        let event = Numbered {
            i: before + k,
            from: from.clone(),
            until: message.until,
        };
        events::publish(&topic, &event)?;
    }
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after publishing",
        ));
    }
    state::save("published", &(before + message.n))?;
    Ok(Published {
        published: before + message.n,
    })
}

pub(crate) fn published(_: Empty) -> Result<Published, Error> {
    Ok(Published {
        published: state::load("published")?.unwrap_or(0),
    })
}

#[derive(Deserialize)]
pub(crate) struct Subscribe {
    topic: String,
    /// The message type events arrive as; `heard` when absent.
    #[serde(default, rename = "as")]
    as_type: Option<String>,
    #[serde(default)]
    fail: bool,
}

/// Subscribes this object to a topic (and fails after, if asked: then it
/// subscribes to nothing).
pub(crate) fn subscribe(message: Subscribe) -> Result<Value, Error> {
    let as_type = message.as_type.unwrap_or_else(|| "heard".into());
    events::subscribe(&message.topic, &as_type)?;
    if message.fail {
        return Err(Error::new(
            "failed-on-purpose",
            "the turn fails after subscribing",
        ));
    }
    Ok(Value { value: 0 })
}

#[derive(Deserialize)]
pub(crate) struct Unsubscribe {
    topic: String,
}

pub(crate) fn unsubscribe(message: Unsubscribe) -> Result<Empty, Error> {
    events::unsubscribe(&message.topic);
    Ok(Empty)
}

#[derive(Serialize)]
pub(crate) struct Subscriptions {
    subscriptions: Vec<(String, String)>,
}

pub(crate) fn subscriptions(_: Empty) -> Result<Subscriptions, Error> {
    Ok(Subscriptions {
        subscriptions: events::subscriptions()?,
    })
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Heard {
    /// The `i` of every event delivered, in the order they took effect.
    heard: Vec<u64>,
    /// When each took effect, by the silo's clock (ms since the epoch).
    #[serde(default)]
    heard_ms: Vec<u64>,
    /// Who published each.
    #[serde(default)]
    from: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct Event {
    i: u64,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: Option<u64>,
}

/// An event of a subscribed topic: its number and publisher are recorded.
pub(crate) fn heard(event: Event) -> Result<Empty, Error> {
    let mut heard: Heard = state::load("heard")?.unwrap_or_default();
    heard.heard.push(event.i);
    heard.heard_ms.push(reminders::now_ms());
    heard.from.push(event.from);
    state::save("heard", &heard)?;
    Ok(Empty)
}

/// Records an event as `heard` does, then answers it with one event on
/// this object's own topic, until this object has published the event's
/// `until`: two objects subscribed to each other's topics this way keep
/// delivering to each other in both directions at once.
pub(crate) fn echo(event: Event) -> Result<Empty, Error> {
    let until = event.until;
    heard(event)?;
    let published: u64 = state::load("published")?.unwrap_or(0);
    if let Some(until) = until
        && published < until
    {
        publish(Publish {
            topic: None,
            n: 1,
            fail: false,
            until: Some(until),
        })?;
    }
    Ok(Empty)
}

pub(crate) fn heard_list(_: Empty) -> Result<Heard, Error> {
    Ok(state::load("heard")?.unwrap_or_default())
}
