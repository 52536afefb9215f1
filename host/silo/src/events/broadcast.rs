//! Passing committed events to the other active silos: one queue and one
//! task per peer, sending a batch at a time and waiting for its answer, so
//! a peer receives each publisher's events in commit order. What does not
//! get through is counted by topic and the count goes with the next batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::Event;
use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::observe::EventCounters;

/// The most events sent to a peer in one request, and about the most
/// bytes.
const MAX_BATCH: usize = 2_000;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long a peer may take to take a batch; a frozen peer's events are
/// dropped rather than held.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a queue waits after a failed send before it tries the next batch.
const AFTER_FAILURE: Duration = Duration::from_millis(200);

pub(crate) struct Broadcast {
    cluster: Arc<Cluster>,
    /// Events that may wait for one peer; past it they are dropped
    /// (counted, and told to that peer's subscribers with the next batch).
    max_queued: usize,
    queues: Mutex<HashMap<String, Arc<PeerQueue>>>,
    counters: Arc<EventCounters>,
}

#[derive(Default)]
struct PeerQueue {
    events: Mutex<Waiting>,
    wake: Notify,
    /// The peer left the active silos: the task ends.
    stop: AtomicBool,
}

/// What waits for one peer. Events dropped for it are counted by topic at
/// their place in the order: the count rides on the next event queued
/// after them (a batch never carries one past its first event), so a
/// subscriber is told of a gap exactly where it is.
#[derive(Default)]
struct Waiting {
    events: VecDeque<Queued>,
    /// Dropped after the last event queued, not yet attached to one.
    dropped: HashMap<String, u64>,
}

struct Queued {
    event: Event,
    /// Events dropped just before this one, by topic.
    missed_before: HashMap<String, u64>,
}

impl Waiting {
    fn queue(&mut self, events: &[Event]) {
        for event in events {
            self.events.push_back(Queued {
                event: event.clone(),
                missed_before: std::mem::take(&mut self.dropped),
            });
        }
    }

    /// Counts `missed` (by topic) as missed before whatever is queued now,
    /// or else before the next event queued.
    fn drop_before_front(&mut self, missed: impl IntoIterator<Item = (String, u64)>) {
        let target = match self.events.front_mut() {
            Some(front) => &mut front.missed_before,
            None => &mut self.dropped,
        };
        add(target, missed);
    }

    /// Counts `events` as missed after everything queued.
    fn drop_at_back(&mut self, events: &[Event]) -> u64 {
        add(&mut self.dropped, by_topic(events));
        events.len() as u64
    }
}

/// How many of `events` each topic has.
fn by_topic(events: &[Event]) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for event in events {
        match counts.get_mut(&event.topic) {
            Some(count) => *count += 1,
            None => {
                counts.insert(event.topic.clone(), 1);
            }
        }
    }
    counts
}

fn add(into: &mut HashMap<String, u64>, counts: impl IntoIterator<Item = (String, u64)>) {
    for (topic, count) in counts {
        *into.entry(topic).or_default() += count;
    }
}

impl Broadcast {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        max_queued: usize,
        counters: Arc<EventCounters>,
    ) -> Broadcast {
        Broadcast {
            cluster,
            max_queued,
            queues: Mutex::default(),
            counters,
        }
    }

    /// Queues `events` for every other active silo.
    pub(crate) fn send(&self, events: Vec<Event>) {
        let Ok(me) = self.cluster.me() else { return };
        let active = self.cluster.active_silos();
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|address, queue| {
            let keep = active.iter().any(|silo| &silo.address == address);
            if !keep {
                queue.stop.store(true, Ordering::Relaxed);
                queue.wake.notify_one();
            }
            keep
        });
        for silo in active.iter().filter(|silo| silo.address != me.address) {
            let queue = queues.entry(silo.address.clone()).or_insert_with(|| {
                let queue = Arc::new(PeerQueue::default());
                let task = run(
                    self.cluster.clone(),
                    silo.address.clone(),
                    queue.clone(),
                    self.counters.clone(),
                );
                tokio::spawn(task);
                queue
            });
            let mut waiting = queue.events.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.events.len() + events.len() > self.max_queued {
                let dropped = waiting.drop_at_back(&events);
                self.counters
                    .not_broadcast
                    .fetch_add(dropped, Ordering::Relaxed);
                continue;
            }
            waiting.queue(&events);
            drop(waiting);
            queue.wake.notify_one();
        }
    }
}

/// Sends what `queue` holds to the silo at `address`, a batch at a time,
/// until the silo leaves the active ones.
async fn run(
    cluster: Arc<Cluster>,
    address: String,
    queue: Arc<PeerQueue>,
    counters: Arc<EventCounters>,
) {
    loop {
        let woken = queue.wake.notified();
        if queue.stop.load(Ordering::Relaxed) {
            return;
        }
        let (batch, missed) = take_batch(&queue);
        if batch.is_empty() && missed.is_empty() {
            woken.await;
            continue;
        }
        // Kept to count, by topic, if the peer does not take the batch (it
        // may have delivered some: its subscribers may hear of a miss that
        // was not one, never of none that was).
        let (count, topics) = (batch.len() as u64, by_topic(&batch));
        let sent = cluster
            .peers
            .publish(&address, batch, missed.clone(), SEND_TIMEOUT)
            .await;
        if let Err(error) = sent {
            {
                let mut waiting = queue.events.lock().unwrap_or_else(|p| p.into_inner());
                waiting.drop_before_front(topics.into_iter().chain(missed));
            }
            counters.not_broadcast.fetch_add(count, Ordering::Relaxed);
            tracing::debug!(%address, %error, events = count, "events not passed on");
            tokio::time::sleep(AFTER_FAILURE).await;
        }
    }
}

/// The next events to send, and the counts by topic of those dropped
/// before them; only the first event may have drops before it, so the
/// counts go first.
fn take_batch(queue: &PeerQueue) -> (Vec<Event>, Vec<(String, u64)>) {
    let mut waiting = queue.events.lock().unwrap_or_else(|p| p.into_inner());
    let mut batch = Vec::new();
    let mut missed = Vec::new();
    let mut bytes = 0;
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        let starts_after_a_drop = waiting
            .events
            .front()
            .is_some_and(|queued| !queued.missed_before.is_empty());
        if starts_after_a_drop && !batch.is_empty() {
            break;
        }
        let Some(queued) = waiting.events.pop_front() else {
            break;
        };
        missed.extend(queued.missed_before);
        let event = queued.event;
        bytes += event.payload.len() + event.topic.len() + event.publisher.len();
        batch.push(event);
    }
    if batch.is_empty() {
        // Drops with nothing after them yet: told now.
        missed.extend(waiting.dropped.drain());
    }
    (batch, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            topic: "t".into(),
            publisher: "P/p".into(),
            seq,
            payload: Default::default(),
            published_at_ms: 0,
        }
    }

    fn queue_of(waiting: Waiting) -> PeerQueue {
        PeerQueue {
            events: Mutex::new(waiting),
            ..PeerQueue::default()
        }
    }

    /// What a receiver would see, batch by batch: (missed, first seq, last seq).
    fn drain(queue: &PeerQueue) -> Vec<(u64, u64, u64)> {
        let mut seen = Vec::new();
        loop {
            let (batch, missed) = take_batch(queue);
            let missed: u64 = missed.iter().map(|(_, count)| count).sum();
            match (batch.first(), batch.last()) {
                (Some(first), Some(last)) => seen.push((missed, first.seq, last.seq)),
                _ if missed > 0 => seen.push((missed, 0, 0)),
                _ => return seen,
            }
        }
    }

    #[test]
    fn a_drop_is_told_where_it_happened_not_before_the_events_queued_earlier() {
        let mut waiting = Waiting::default();
        waiting.queue(&[event(1), event(2)]);
        waiting.drop_at_back(&[event(3), event(4), event(5)]);
        waiting.queue(&[event(6), event(7)]);
        let queue = queue_of(waiting);
        assert_eq!(drain(&queue), vec![(0, 1, 2), (3, 6, 7)]);
    }

    #[test]
    fn a_batch_not_taken_counts_before_what_follows_it() {
        let mut waiting = Waiting::default();
        waiting.queue(&[event(3), event(4)]);
        // Events 1 and 2 were sent and not taken, with a drop before them.
        waiting.drop_before_front(
            by_topic(&[event(1), event(2)])
                .into_iter()
                .chain([("t".into(), 5)]),
        );
        let queue = queue_of(waiting);
        assert_eq!(drain(&queue), vec![(7, 3, 4)]);
        // With nothing queued, the count goes out on its own.
        let mut waiting = Waiting::default();
        waiting.drop_before_front(by_topic(&[event(1)]));
        assert_eq!(drain(&queue_of(waiting)), vec![(1, 0, 0)]);
    }
}
