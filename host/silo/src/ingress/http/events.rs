//! `GET /v1/events?topic=T&topic=U`: a client subscription as
//! Server-Sent Events, for browsers and anything without `rio-client`.
//!
//! The stream opens with an `event: subscribed` (from then on every event
//! published on any silo of the cluster reaches it); each event's data is
//! the JSON `rio subscribe` prints and its id `PUBLISHER#SEQ`, so a gap in
//! one publisher's numbers is visible; events a slow reader lost are told
//! by an `event: missed` with their count, as the wire protocol's frames
//! tell them. No replay: `Last-Event-ID` is not read (client deliveries
//! are not durable, see `events`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use rio_protocol::Request;
use rio_protocol::json::event_to_json;
use serde_json::json;

use super::status::HttpError;
use super::{Peer, Shared};
use crate::events::Events;
use crate::events::hub::{EventStream, Subscriber};
use crate::ingress::subscriptions::check_topics;

/// Ends the subscription when the response (its stream) is dropped: the
/// client went away or the silo stops.
struct Subscribed {
    events: Arc<Events>,
    subscriber: Arc<Subscriber>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.events.hub.unsubscribe(&self.subscriber);
    }
}

pub(super) async fn events(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, HttpError> {
    let topics: Vec<String> = pairs
        .into_iter()
        .filter(|(name, _)| name == "topic")
        .map(|(_, topic)| topic)
        .collect();
    let request = Request::Subscribe {
        topics: topics.clone(),
    };
    gateway.authorize(&headers, peer, &request).await?;
    check_topics(0, &topics)?;
    let events = gateway.router.ctx.events.clone();
    let (subscriber, stream) = events.hub.subscribe_stream(topics.clone());
    let subscribed = Subscribed { events, subscriber };
    let first = SseEvent::default()
        .event("subscribed")
        .data(json!({ "topics": topics }).to_string());
    let state = (stream, subscribed, VecDeque::from([first]));
    let stream =
        futures_util::stream::unfold(state, |(mut stream, subscribed, mut ready)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok(event), (stream, subscribed, ready)));
                }
                refill(&mut stream, &mut ready).await?;
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Waits for the stream's next batch and turns it into SSE events; `None`
/// once the subscription ended.
async fn refill(stream: &mut EventStream, ready: &mut VecDeque<SseEvent>) -> Option<()> {
    let batch = stream.next().await?;
    if batch.missed > 0 {
        ready.push_back(
            SseEvent::default()
                .event("missed")
                .data(json!({ "missed": batch.missed }).to_string()),
        );
    }
    for event in &batch.events {
        ready.push_back(
            SseEvent::default()
                .id(format!("{}#{}", event.publisher, event.seq))
                .data(event_to_json(event).to_string()),
        );
    }
    Some(())
}
