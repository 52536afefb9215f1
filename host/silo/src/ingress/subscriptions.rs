//! One connection's client subscriptions: made and ended by its requests,
//! and all ended with the connection.

use std::collections::HashMap;
use std::sync::Arc;

use rio_protocol::{MAX_TOPICS_PER_CONNECTION, ReplyError, Response};

use crate::events::Events;
use crate::events::hub::Subscriber;
use crate::events::topic_problem;
use crate::message::connection::{Connection, ConnectionSink};

pub(super) struct ConnectionSubscriptions {
    events: Arc<Events>,
    connection: Arc<Connection>,
    open: HashMap<u64, Arc<Subscriber>>,
    topics: usize,
}

impl ConnectionSubscriptions {
    pub(super) fn new(events: Arc<Events>, connection: Arc<Connection>) -> ConnectionSubscriptions {
        ConnectionSubscriptions {
            events,
            connection,
            open: HashMap::new(),
            topics: 0,
        }
    }

    /// Answers the `Subscribe` request `id`, then (if it is accepted)
    /// starts its events, so none can come before the answer.
    pub(super) fn subscribe(&mut self, id: u64, topics: Vec<String>, sink: ConnectionSink) {
        if let Err(refused) = self.check(id, &topics) {
            return sink.reply(id, Err(refused));
        }
        sink.reply(id, Ok(Response::Subscribed));
        let subscriber = self
            .events
            .hub
            .subscribe(id, self.connection.clone(), topics);
        self.topics += subscriber.topics().len();
        self.connection.note_subscription(true);
        self.open.insert(id, subscriber);
    }

    fn check(&self, id: u64, topics: &[String]) -> Result<(), ReplyError> {
        if self.open.contains_key(&id) {
            return Err(ReplyError::BadRequest(format!(
                "this connection already has a subscription of request id {id}"
            )));
        }
        check_topics(self.topics, topics)
    }

    /// Ends the subscription of request `subscription`.
    pub(super) fn unsubscribe(&mut self, subscription: u64) -> Result<Response, ReplyError> {
        let Some(subscriber) = self.open.remove(&subscription) else {
            return Err(ReplyError::BadRequest(format!(
                "this connection has no subscription of request id {subscription}"
            )));
        };
        self.end(&subscriber);
        Ok(Response::Noted)
    }

    fn end(&mut self, subscriber: &Arc<Subscriber>) {
        self.events.hub.unsubscribe(subscriber);
        self.topics -= subscriber.topics().len();
        self.connection.note_subscription(false);
    }
}

/// Whether `topics` may be subscribed to by a connection (or an HTTP event
/// stream) that has `already` topics.
pub(super) fn check_topics(already: usize, topics: &[String]) -> Result<(), ReplyError> {
    if topics.is_empty() {
        return Err(ReplyError::BadRequest(
            "subscribe to at least one topic".into(),
        ));
    }
    if let Some(problem) = topics.iter().find_map(|topic| topic_problem(topic)) {
        return Err(ReplyError::BadRequest(format!(
            "cannot subscribe: {problem}"
        )));
    }
    if already + topics.len() > MAX_TOPICS_PER_CONNECTION {
        return Err(ReplyError::BadRequest(format!(
            "a connection subscribes to at most {MAX_TOPICS_PER_CONNECTION} topics; it has {already} and asks for {} more",
            topics.len()
        )));
    }
    Ok(())
}

impl Drop for ConnectionSubscriptions {
    fn drop(&mut self) {
        let open: Vec<_> = self
            .open
            .drain()
            .map(|(_, subscriber)| subscriber)
            .collect();
        for subscriber in &open {
            self.end(subscriber);
        }
    }
}
