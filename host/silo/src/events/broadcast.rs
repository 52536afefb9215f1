//! Passing committed events to the other active silos: one queue and one
//! task per peer, sending a batch at a time and waiting for its answer, so
//! a peer receives each publisher's events in commit order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::Event;
use tokio::sync::Notify;

use crate::observe::EventCounters;
use crate::cluster::Cluster;

/// Events that may wait for one peer; past it they are dropped (counted),
/// and that peer's subscribers see the gap.
const MAX_QUEUED: usize = 100_000;

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
    queues: Mutex<HashMap<String, Arc<PeerQueue>>>,
    counters: Arc<EventCounters>,
}

#[derive(Default)]
struct PeerQueue {
    events: Mutex<VecDeque<Event>>,
    wake: Notify,
    /// The peer left the active silos: the task ends.
    stop: AtomicBool,
}

impl Broadcast {
    pub(crate) fn new(cluster: Arc<Cluster>, counters: Arc<EventCounters>) -> Broadcast {
        Broadcast {
            cluster,
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
            if waiting.len() + events.len() > MAX_QUEUED {
                self.counters
                    .not_broadcast
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                continue;
            }
            waiting.extend(events.iter().cloned());
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
        let batch = take_batch(&queue);
        if batch.is_empty() {
            woken.await;
            continue;
        }
        let count = batch.len() as u64;
        if let Err(error) = cluster.peers.publish(&address, batch, SEND_TIMEOUT).await {
            counters.not_broadcast.fetch_add(count, Ordering::Relaxed);
            tracing::debug!(%address, %error, events = count, "events not passed on");
            tokio::time::sleep(AFTER_FAILURE).await;
        }
    }
}

fn take_batch(queue: &PeerQueue) -> Vec<Event> {
    let mut waiting = queue.events.lock().unwrap_or_else(|p| p.into_inner());
    let mut batch = Vec::new();
    let mut bytes = 0;
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        let Some(event) = waiting.pop_front() else {
            break;
        };
        bytes += event.payload.len() + event.topic.len() + event.publisher.len();
        batch.push(event);
    }
    batch
}
