//! Pub/sub to objects: delivery of the topic log (see `storage::topics`)
//! to the subscribed objects, each event as a keyed turn of each
//! subscriber.
//!
//! A publisher's events on one topic form a *chain*, delivered one event
//! after another in seq order; an event goes to its topic's subscribers a
//! page at a time in key order (the page's calls in flight together, as
//! they go to distinct objects), and the log records the last subscriber
//! of each finished page, so a delivery taken up again starts there. Once
//! every subscriber has it the event leaves the log.
//!
//! Invariants:
//! - Exactly-once effect: a delivery is a call under the key
//!   [`delivery_key`], the same for every attempt, so a delivery repeated
//!   (after a failover, or by two silos at once) runs once.
//! - Per publisher, a subscriber gets the events in publish order: one
//!   chain delivers an event to a subscriber only after the previous one
//!   reached it; a second deliverer of the same chain keeps the same order.
//! - Nothing waits on a subscriber but its own chain: the publisher's
//!   commit only stored the event. A subscriber that cannot be reached
//!   (`unavailable`, `timeout`) holds up its chain and is tried again; one
//!   whose handler fails (an error, a trap, a type not deployed) counts as
//!   delivered, as a reminder's failed fire does, so it cannot stop the
//!   chain for good.
//! - Who delivers: the publisher's silo, as soon as its turn committed;
//!   and, for an event still in the log [`SWEEP_AFTER`] after its publish
//!   (its silo died, or a subscriber was unreachable), the silo holding its
//!   publisher's shard, found by a sweep every [`SWEEP_INTERVAL`], unless a
//!   deliverer touched the chain within that time (it does so for each
//!   event it starts that is over [`TOUCH_AFTER`] old: a backlog).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::base::ObjectKey;
use crate::base::clock::Clock;
use crate::base::log_summary::LogSummary;
use crate::base::pace::Backoff;
use crate::message::{Dispatch, Ending, Envelope, ReplyTo, empty_chain, ending};
use crate::observe::EventCounters;
use crate::storage::{Chain, LoggedEvent, ShardSlice, StateStore, Subscriber};

/// Subscribers one page of a delivery reads, and calls in flight at most.
const PAGE: usize = 64;

/// Events of a chain read at once.
const EVENTS_READ: usize = 100;

/// How long a silo trusts what it read of whether a topic has subscribers:
/// a subscription made on another silo is seen this late at most by a
/// publisher here (the sweep delivers what that left behind).
const TOPIC_CACHE: Duration = Duration::from_secs(1);

/// Topics whose subscribers a silo remembers at most.
const TOPICS_KNOWN: usize = 10_000;

/// How old an event still in the log is when the sweep takes it up.
pub(crate) const SWEEP_AFTER: Duration = Duration::from_secs(3);

/// How old an event is when its deliverer marks it as being worked on.
const TOUCH_AFTER: Duration = Duration::from_secs(1);

/// How often a silo sweeps its shards' chains.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Chains one sweep takes up at most.
const SWEEP_CHAINS: usize = 1000;

static FAILED_DELIVERIES: LogSummary = LogSummary::new();
static STORE_ERRORS: LogSummary = LogSummary::new();

/// What every delivery key starts with.
pub(crate) const DELIVERY_KEY_PREFIX: &str = "rio:event:";

/// The idempotency key of the delivery of `seq` of `chain`: the same for
/// every attempt at any subscriber. A hash, since a topic and a publisher
/// together can be longer than a key may be.
pub(crate) fn delivery_key(chain: &Chain, seq: i64) -> String {
    let mut hash = Sha256::new();
    for part in [
        chain.topic.as_bytes(),
        chain.publisher.service_type.as_bytes(),
        chain.publisher.object_id.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(seq.to_be_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DELIVERY_KEY_PREFIX}{hex}")
}

/// Which shards this silo sweeps, asked at each sweep (`None`: none yet).
pub(crate) type Slice = Arc<dyn Fn() -> Option<ShardSlice> + Send + Sync>;

/// What delivery needs of the silo, given once it serves.
pub(crate) struct Wiring {
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) slice: Slice,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A silo's delivery of the topic log to objects.
pub(crate) struct ObjectDelivery {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    counters: Arc<EventCounters>,
    tasks: TaskTracker,
    turn_deadline: Duration,
    /// Set when the silo starts serving, taken when it stops (the router
    /// holds this, so holding the router for good would be a cycle).
    wiring: Mutex<Option<Arc<Wiring>>>,
    /// The chains being delivered here, each with whether more was
    /// committed since its deliverer last read the log.
    running: Mutex<HashMap<Chain, bool>>,
    /// Whether a topic has object subscribers, and when that was read.
    topics: Mutex<HashMap<String, (bool, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ObjectDelivery {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        counters: Arc<EventCounters>,
        tasks: TaskTracker,
        turn_deadline: Duration,
    ) -> Arc<ObjectDelivery> {
        Arc::new(ObjectDelivery {
            store,
            clock,
            counters,
            tasks,
            turn_deadline,
            wiring: Mutex::new(None),
            running: Mutex::default(),
            topics: Mutex::default(),
        })
    }

    /// Starts delivering: the sweep runs until the silo stops.
    pub(crate) fn start(self: &Arc<Self>, wiring: Wiring) -> impl Future<Output = ()> + use<> {
        let wiring = Arc::new(wiring);
        *lock(&self.wiring) = Some(wiring.clone());
        let delivery = self.clone();
        async move {
            let mut stopping = wiring.stopping.clone();
            loop {
                let next = delivery.clock.now() + SWEEP_INTERVAL;
                tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => break,
                    () = delivery.clock.sleep_until(next) => {}
                }
                delivery.sweep(&wiring).await;
            }
            lock(&delivery.wiring).take();
        }
    }

    /// `publisher`'s turn committed events to `topics`: delivers their
    /// chains, unless a topic is known to have no object subscriber.
    pub(crate) fn committed<'a>(
        self: &Arc<Self>,
        publisher: &ObjectKey,
        topics: impl Iterator<Item = &'a str>,
    ) {
        let mut seen: Vec<&str> = Vec::new();
        for topic in topics {
            if seen.contains(&topic) {
                continue;
            }
            seen.push(topic);
            if self.known(topic) == Some(false) {
                continue;
            }
            self.take_up(Chain {
                topic: topic.to_string(),
                publisher: publisher.clone(),
            });
        }
    }

    /// A turn here changed `object`'s subscription to `topic`: what this
    /// silo knew of the topic is stale.
    pub(crate) fn subscribed(&self, topic: &str) {
        lock(&self.topics).remove(topic);
    }

    /// What this silo read lately of whether `topic` has subscribers.
    fn known(&self, topic: &str) -> Option<bool> {
        let topics = lock(&self.topics);
        let (has, read_at) = topics.get(topic)?;
        (read_at.elapsed() < TOPIC_CACHE).then_some(*has)
    }

    /// Remembers whether `topic` has subscribers, keeping at most
    /// [`TOPICS_KNOWN`] topics: past it, what is stale goes (and if all is
    /// fresh, everything: it is only a cache).
    fn learned(&self, topic: &str, has: bool) {
        let mut topics = lock(&self.topics);
        if topics.len() >= TOPICS_KNOWN {
            topics.retain(|_, (_, read_at)| read_at.elapsed() < TOPIC_CACHE);
            if topics.len() >= TOPICS_KNOWN {
                topics.clear();
            }
        }
        topics.insert(topic.to_string(), (has, Instant::now()));
    }

    /// Delivers `chain` here, unless a deliverer here has it already (it
    /// reads the log again before it ends).
    fn take_up(self: &Arc<Self>, chain: Chain) {
        let Some(wiring) = lock(&self.wiring).clone() else {
            return;
        };
        {
            let mut running = lock(&self.running);
            if let Some(more) = running.get_mut(&chain) {
                *more = true;
                return;
            }
            running.insert(chain.clone(), false);
        }
        let delivery = self.clone();
        self.tasks.spawn(async move {
            delivery.deliver_chain(&wiring, &chain).await;
        });
    }

    async fn sweep(self: &Arc<Self>, wiring: &Wiring) {
        let Some(slice) = (wiring.slice)() else {
            return;
        };
        let before = self.clock.now_ms() - SWEEP_AFTER.as_millis() as i64;
        match self.store.chains_waiting(slice, before, SWEEP_CHAINS).await {
            Ok(chains) => {
                for chain in chains {
                    self.take_up(chain);
                }
            }
            Err(error) => {
                if let Some(count) = STORE_ERRORS.note() {
                    tracing::warn!(%error, count, "cannot read the topic log; the next sweep tries again");
                }
            }
        }
    }

    /// Delivers `chain`'s logged events until the log has none left and
    /// nothing was committed meanwhile.
    async fn deliver_chain(self: &Arc<Self>, wiring: &Arc<Wiring>, chain: &Chain) {
        let mut stopping = wiring.stopping.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            lock(&self.running).insert(chain.clone(), false);
            if *stopping.borrow() {
                break;
            }
            // What the next publishes here skip reading the log for. The
            // log is read anyway: a swept chain's topic may have lost its
            // subscribers since, and its events must still leave the log.
            if self.known(&chain.topic).is_none()
                && let Ok(has) = self.store.has_subscribers(&chain.topic).await
            {
                self.learned(&chain.topic, has);
            }
            let logged = match self.store.logged_events(chain, EVENTS_READ).await {
                Ok(logged) => logged,
                Err(error) => {
                    if let Some(count) = STORE_ERRORS.note() {
                        tracing::warn!(%error, count, "cannot read the topic log; trying again");
                    }
                    if !crate::base::pace::pause(backoff.next_delay(), &mut stopping).await {
                        break;
                    }
                    continue;
                }
            };
            if logged.is_empty() {
                let mut running = lock(&self.running);
                if running.get(chain) == Some(&false) {
                    running.remove(chain);
                    return;
                }
                continue;
            }
            for event in logged {
                if !self.deliver_event(wiring, chain, event).await {
                    break;
                }
            }
        }
        lock(&self.running).remove(chain);
    }

    /// Delivers one event to every subscriber from where its delivery got
    /// to, then removes it from the log; false if the silo stopped first.
    async fn deliver_event(
        self: &Arc<Self>,
        wiring: &Arc<Wiring>,
        chain: &Chain,
        logged: LoggedEvent,
    ) -> bool {
        let mut stopping = wiring.stopping.clone();
        let event = &logged.event;
        let key = delivery_key(chain, event.seq);
        let mut after = logged.delivered_through;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        // An event this old was waiting behind others, or is taken up
        // again: marked as being worked on, so the sweep of another silo
        // does not deliver its chain too. Fresh ones (nearly all) are not
        // worth the write.
        let now_ms = self.clock.now_ms();
        if now_ms - event.published_ms > TOUCH_AFTER.as_millis() as i64
            && let Err(error) = self
                .store
                .touch_logged_event(chain, event.seq, now_ms)
                .await
            && let Some(count) = STORE_ERRORS.note()
        {
            tracing::warn!(%error, count, "cannot mark a logged event as being delivered");
        }
        loop {
            let page = self
                .store
                .subscribers(&chain.topic, after.as_ref(), event.published_ms, PAGE)
                .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    if let Some(count) = STORE_ERRORS.note() {
                        tracing::warn!(%error, count, "cannot read a topic's subscribers; trying again");
                    }
                    if !crate::base::pace::pause(backoff.next_delay(), &mut stopping).await {
                        return false;
                    }
                    continue;
                }
            };
            let last_page = page.len() < PAGE;
            let last = page.last().map(|subscriber| subscriber.object.clone());
            let mut deliveries = tokio::task::JoinSet::new();
            let payload: Arc<[u8]> = Arc::from(event.payload.as_slice());
            for subscriber in page {
                let (delivery, wiring) = (self.clone(), wiring.clone());
                let (key, payload) = (key.clone(), payload.clone());
                deliveries.spawn(async move {
                    delivery
                        .deliver_one(&wiring, &key, &payload, subscriber)
                        .await
                });
            }
            let done = deliveries.join_all().await;
            if done.contains(&false) {
                return false;
            }
            // The last page removes the event; any other records progress.
            let through = if last_page { None } else { last.clone() };
            loop {
                match self
                    .store
                    .event_delivered(chain, event.seq, through.as_ref())
                    .await
                {
                    Ok(()) => break,
                    Err(error) => {
                        if let Some(count) = STORE_ERRORS.note() {
                            tracing::warn!(%error, count, "cannot record an event's delivery; trying again");
                        }
                        if !crate::base::pace::pause(backoff.next_delay(), &mut stopping).await {
                            return false;
                        }
                    }
                }
            }
            if last_page {
                return true;
            }
            after = last;
        }
    }

    /// Delivers an event to one subscriber until it took effect or failed
    /// for good; false if the silo stopped first.
    async fn deliver_one(
        &self,
        wiring: &Wiring,
        key: &str,
        payload: &[u8],
        subscriber: Subscriber,
    ) -> bool {
        let mut stopping = wiring.stopping.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let (reply, replied) = oneshot::channel();
            let wait = self.turn_deadline * 2;
            let mut envelope = Envelope::new(
                subscriber.message_type.clone(),
                payload.to_vec(),
                empty_chain(),
                ReplyTo::Caller(reply),
                Instant::now() + wait,
            );
            envelope.idempotency_key = Some(key.into());
            wiring
                .dispatch
                .dispatch(subscriber.object.clone(), envelope);
            let ending = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return false,
                ending = ending(replied, wait + Duration::from_secs(1)) => ending,
            };
            match ending {
                Ending::Done => {
                    self.counters
                        .object_deliveries
                        .fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Ending::Failed(error) => {
                    self.counters
                        .object_deliveries_failed
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(count) = FAILED_DELIVERIES.note() {
                        tracing::warn!(subscriber = %subscriber.object, %error, count, "an event's delivery failed in its subscriber; it counts as delivered");
                    }
                    return true;
                }
                Ending::NotRun(_) => {
                    self.counters
                        .object_delivery_retries
                        .fetch_add(1, Ordering::Relaxed);
                    if !crate::base::pace::pause(backoff.next_delay(), &mut stopping).await {
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_keys_tell_events_apart_and_fit_a_key() {
        let chain = |topic: &str, id: &str| Chain {
            topic: topic.into(),
            publisher: ObjectKey::new("Room", id),
        };
        let one = delivery_key(&chain("t", "a"), 1);
        assert_eq!(one, delivery_key(&chain("t", "a"), 1));
        assert_ne!(one, delivery_key(&chain("t", "a"), 2));
        assert_ne!(one, delivery_key(&chain("ta", ""), 1));
        assert_ne!(one, delivery_key(&chain("t", "b"), 1));
        let long = delivery_key(&chain(&"x".repeat(200), &"y".repeat(255)), i64::MAX);
        assert!(long.len() <= rio_protocol::MAX_IDEMPOTENCY_KEY_BYTES);
        assert!(long.starts_with(crate::base::reserved::PREFIX));
    }
}
