//! A durable transcript of topics: `Transcript/<id>` subscribes itself to
//! the topics it is told to follow (a room's `Room/<id>`, say) and keeps
//! the last events they carried, so what was said while no client watched
//! is still there to read. Each event takes effect here once and a
//! publisher's events come in their order, across restarts and failovers.
//!
//! - `follow {"topic": t}` subscribes to `t` from now on; `unfollow
//!   {"topic": t}` ends it; both answer `{"following": [topics]}`;
//! - `heard` is how events arrive (the subscription's message type): the
//!   event is kept, the oldest dropped past the last 100;
//! - `history` answers `{"events": [events, oldest first]}`.
//!
//! Build it with `rio build examples/transcript`; the same object is in
//! `examples/transcript-python` and `examples/transcript-js`.

use rio_sdk::CborValue;
use rio_sdk::prelude::*;

/// Events kept, at most.
const KEPT: usize = 100;

#[derive(Deserialize)]
struct Topic {
    topic: String,
}

#[derive(Serialize)]
struct Following {
    following: Vec<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct History {
    events: Vec<CborValue>,
}

/// The topics followed once this turn commits: the stored ones with this
/// turn's change.
fn following(change: &str, added: bool) -> Result<Following, Error> {
    let mut topics: Vec<String> = events::subscriptions()?
        .into_iter()
        .map(|(topic, _)| topic)
        .filter(|topic| topic != change)
        .collect();
    if added {
        topics.push(change.to_string());
        topics.sort();
    }
    Ok(Following { following: topics })
}

fn follow(message: Topic) -> Result<Following, Error> {
    events::subscribe(&message.topic, "heard")?;
    following(&message.topic, true)
}

fn unfollow(message: Topic) -> Result<Following, Error> {
    events::unsubscribe(&message.topic);
    following(&message.topic, false)
}

fn heard(event: CborValue) -> Result<Empty, Error> {
    let mut history: History = state::load("history")?.unwrap_or_default();
    history.events.push(event);
    let excess = history.events.len().saturating_sub(KEPT);
    history.events.drain(..excess);
    state::save("history", &history)?;
    Ok(Empty)
}

fn history() -> Result<History, Error> {
    Ok(state::load("history")?.unwrap_or_default())
}

rio_sdk::service! {
    "follow" => follow,
    "unfollow" => unfollow,
    "heard" => heard,
    "history" => history,
}
