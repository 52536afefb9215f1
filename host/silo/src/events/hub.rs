//! This silo's client subscriptions by topic, and the fan-out of events to
//! them: each delivery is one frame queued on the subscriber's connection
//! (or one batch on an HTTP event stream) within a byte bound, never a wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rio_protocol::{Event, encode_events_frame};
use tokio::sync::mpsc;

use crate::message::connection::Connection;
use crate::observe::EventCounters;

/// One client subscription: where its events go and the id of the request
/// that made it.
pub(crate) struct Subscriber {
    id: u64,
    to: SubscriberTo,
    topics: Vec<String>,
    /// Events lost since the last frame that went out; held while a frame
    /// is made and queued, so frames and counts of one subscriber never
    /// interleave.
    missed: Mutex<u64>,
}

enum SubscriberTo {
    /// A wire connection: each delivery is an events frame on it.
    Wire(Arc<Connection>),
    /// An HTTP event stream (the gateway's `GET /v1/events`): each delivery
    /// is a batch for the task that writes the response.
    Stream {
        batches: mpsc::UnboundedSender<Batch>,
        queued_bytes: Arc<AtomicUsize>,
    },
}

/// Events for one subscriber, after `missed` it did not get.
pub(crate) struct Batch {
    pub(crate) missed: u64,
    pub(crate) events: Vec<Event>,
    bytes: usize,
}

/// The receiving end of a stream subscription: what the gateway writes out.
pub(crate) struct EventStream {
    batches: mpsc::UnboundedReceiver<Batch>,
    queued_bytes: Arc<AtomicUsize>,
}

impl EventStream {
    /// The next batch; `None` once the subscription ended.
    pub(crate) async fn next(&mut self) -> Option<Batch> {
        let batch = self.batches.recv().await?;
        self.queued_bytes.fetch_sub(batch.bytes, Ordering::Relaxed);
        Some(batch)
    }
}

impl Subscriber {
    pub(crate) fn topics(&self) -> &[String] {
        &self.topics
    }
}

pub(crate) struct Hub {
    topics: RwLock<HashMap<String, Vec<Arc<Subscriber>>>>,
    counters: Arc<EventCounters>,
    /// Bytes that may wait unsent on a subscriber's connection before its
    /// events are missed instead of queued.
    buffer_bytes: usize,
}

impl Hub {
    pub(crate) fn new(counters: Arc<EventCounters>, buffer_bytes: usize) -> Hub {
        Hub {
            topics: RwLock::default(),
            counters,
            buffer_bytes,
        }
    }

    /// Subscribes `connection` to `topics` under the request id `id`.
    pub(crate) fn subscribe(
        &self,
        id: u64,
        connection: Arc<Connection>,
        topics: Vec<String>,
    ) -> Arc<Subscriber> {
        self.add(id, SubscriberTo::Wire(connection), topics)
    }

    /// Subscribes a stream to `topics`: its events come out of the
    /// returned `EventStream`, at most the buffer's bytes of them waiting.
    pub(crate) fn subscribe_stream(&self, topics: Vec<String>) -> (Arc<Subscriber>, EventStream) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let to = SubscriberTo::Stream {
            batches: sender,
            queued_bytes: queued_bytes.clone(),
        };
        let stream = EventStream {
            batches: receiver,
            queued_bytes,
        };
        (self.add(0, to, topics), stream)
    }

    fn add(&self, id: u64, to: SubscriberTo, mut topics: Vec<String>) -> Arc<Subscriber> {
        topics.sort();
        topics.dedup();
        let subscriber = Arc::new(Subscriber {
            id,
            to,
            topics,
            missed: Mutex::new(0),
        });
        let mut by_topic = self.topics.write().unwrap_or_else(|p| p.into_inner());
        for topic in &subscriber.topics {
            by_topic
                .entry(topic.clone())
                .or_default()
                .push(subscriber.clone());
        }
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        subscriber
    }

    /// Ends `subscriber`: no frame of it is queued after this returns.
    pub(crate) fn unsubscribe(&self, subscriber: &Arc<Subscriber>) {
        let mut by_topic = self.topics.write().unwrap_or_else(|p| p.into_inner());
        for topic in &subscriber.topics {
            if let Some(list) = by_topic.get_mut(topic) {
                list.retain(|other| !Arc::ptr_eq(other, subscriber));
                if list.is_empty() {
                    by_topic.remove(topic);
                }
            }
        }
        drop(by_topic);
        // A delivery that took the subscriber before the removal holds its
        // lock while it queues; waiting for the lock waits that out.
        drop(subscriber.missed.lock().unwrap_or_else(|p| p.into_inner()));
        self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tells the subscribers of `topic` that `count` of its events did not
    /// reach this silo: their next frames say so.
    pub(crate) fn note_missed(&self, topic: &str, count: u64) {
        let subscribers = {
            let by_topic = self.topics.read().unwrap_or_else(|p| p.into_inner());
            by_topic.get(topic).cloned().unwrap_or_default()
        };
        for subscriber in subscribers {
            *subscriber.missed.lock().unwrap_or_else(|p| p.into_inner()) += count;
            self.counters.missed.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Hands `events` to the subscribers of their topics, one frame per
    /// subscriber with its events in the order given.
    pub(crate) fn deliver(&self, events: &[Event]) {
        let batches = self.batches(events);
        for (subscriber, events) in batches {
            self.send(&subscriber, &events);
        }
    }

    /// The subscribers of `events`, each with its events in order.
    fn batches<'a>(&self, events: &'a [Event]) -> Vec<(Arc<Subscriber>, Vec<&'a Event>)> {
        let by_topic = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let mut batches: Vec<(Arc<Subscriber>, Vec<&Event>)> = Vec::new();
        // Most publishes are one event: no index needed then.
        let mut index: HashMap<*const Subscriber, usize> = HashMap::new();
        for event in events {
            let Some(subscribers) = by_topic.get(&event.topic) else {
                continue;
            };
            for subscriber in subscribers {
                if events.len() == 1 {
                    batches.push((subscriber.clone(), vec![event]));
                    continue;
                }
                let at = *index.entry(Arc::as_ptr(subscriber)).or_insert_with(|| {
                    batches.push((subscriber.clone(), Vec::new()));
                    batches.len() - 1
                });
                batches[at].1.push(event);
            }
        }
        batches
    }

    fn send(&self, subscriber: &Subscriber, events: &[&Event]) {
        let mut missed = subscriber.missed.lock().unwrap_or_else(|p| p.into_inner());
        let count = events.len() as u64;
        let queued = match &subscriber.to {
            SubscriberTo::Wire(connection) => {
                let mut frame = Vec::new();
                if let Err(error) = encode_events_frame(subscriber.id, *missed, events, &mut frame)
                {
                    tracing::error!(%error, "cannot encode an events frame");
                    return;
                }
                connection.send_event_frame(frame, self.buffer_bytes)
            }
            SubscriberTo::Stream {
                batches,
                queued_bytes,
            } => {
                let bytes = events.iter().map(|event| event.payload.len() + 64).sum();
                if batches.is_closed() {
                    None
                } else if queued_bytes.load(Ordering::Relaxed) + bytes > self.buffer_bytes {
                    Some(false)
                } else {
                    queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                    let batch = Batch {
                        missed: *missed,
                        events: events.iter().map(|&event| event.clone()).collect(),
                        bytes,
                    };
                    Some(batches.send(batch).is_ok())
                }
            }
        };
        match queued {
            Some(true) => {
                *missed = 0;
                self.counters.delivered.fetch_add(count, Ordering::Relaxed);
            }
            Some(false) => {
                *missed += count;
                self.counters.missed.fetch_add(count, Ordering::Relaxed);
            }
            // The connection (or stream) is closing; its owner ends the
            // subscription.
            None => {}
        }
    }
}
