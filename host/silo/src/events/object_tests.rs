//! Delivery to subscribed objects on a real embedded store and an injected
//! clock, with the router replaced by a fake `Dispatch` that answers each
//! delivery as the test says per subscriber: every subscriber (more than a
//! page of them) gets each event once, under the event's one key, in seq
//! order, and the event then leaves the log; the sweep takes up only an
//! event 3 s old whose chain nobody touched; a subscriber whose handler
//! fails counts as delivered and one that cannot be reached is tried again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::objects::{ObjectDelivery, SWEEP_AFTER, Wiring, delivery_key};
use crate::base::ObjectKey;
use crate::base::clock::{Clock, ManualClock};
use crate::message::{Dispatch, Envelope, ReplyTo};
use crate::observe::EventCounters;
use crate::storage::{
    Chain, Commit, ShardSlice, SiloId, StateStore, SubscriptionChange, TopicEvent,
};

const GENERATION: i64 = 1;
const TOPIC: &str = "Room/lobby";

/// How the fake router answers a subscriber.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    /// The handler failed.
    Fails,
    /// Unreachable this many more times, then `Ok`.
    AwayFor(u32),
}

#[derive(Default)]
struct FakeRouter {
    answers: Mutex<HashMap<String, Answer>>,
    /// (subscriber id, key, payload) of every delivery, in dispatch order.
    delivered: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl Dispatch for FakeRouter {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        let id = key.object_id.to_string();
        let mut answers = self.answers.lock().unwrap();
        let answer = answers.get(&id).copied().unwrap_or(Answer::Ok);
        let result = match answer {
            Answer::Ok => Ok(Vec::new()),
            Answer::Fails => Err(ReplyError::Guest {
                kind: "no".into(),
                message: "refused".into(),
            }),
            Answer::AwayFor(0) => Ok(Vec::new()),
            Answer::AwayFor(n) => {
                answers.insert(id.clone(), Answer::AwayFor(n - 1));
                Err(ReplyError::Unavailable("away".into()))
            }
        };
        drop(answers);
        self.delivered.lock().unwrap().push((
            id,
            envelope
                .idempotency_key
                .as_deref()
                .unwrap_or_default()
                .into(),
            envelope.payload.clone(),
        ));
        if let ReplyTo::Caller(reply) = envelope.reply {
            let _ = reply.send(result);
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    router: Arc<FakeRouter>,
    clock: Arc<ManualClock>,
    counters: Arc<EventCounters>,
    delivery: Arc<ObjectDelivery>,
    _stop: watch::Sender<bool>,
    publisher: ObjectKey,
}

fn owner() -> SiloId {
    SiloId {
        address: String::new(),
        generation: GENERATION,
    }
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::storage::embedded::open(
        &dir.path().join("rio.db"),
        64,
        GENERATION,
        Default::default(),
    )
    .await
    .unwrap();
    let router = Arc::new(FakeRouter::default());
    let clock = ManualClock::new();
    let counters = Arc::new(EventCounters::default());
    let delivery = ObjectDelivery::new(
        store.clone(),
        clock.clone(),
        counters.clone(),
        TaskTracker::new(),
        Duration::from_secs(5),
    );
    let (stop, stopping) = watch::channel(false);
    let sweep = delivery.start(Wiring {
        dispatch: router.clone(),
        slice: Arc::new(|| Some(ShardSlice::ALL)),
        stopping,
    });
    tokio::spawn(sweep);
    Harness {
        _dir: dir,
        store,
        router,
        clock,
        counters,
        delivery,
        _stop: stop,
        publisher: ObjectKey::new("Room", "lobby"),
    }
}

impl Harness {
    async fn subscribe(&self, ids: &[String]) {
        for id in ids {
            let commit = Commit {
                subscriptions: vec![SubscriptionChange::Subscribe {
                    topic: TOPIC.into(),
                    message_type: "heard".into(),
                    since_ms: self.clock.now_ms() - 1,
                }],
                ..Commit::default()
            };
            let object = ObjectKey::new("Member", id);
            self.store
                .commit_turn(&object, commit, &owner())
                .await
                .unwrap();
        }
    }

    /// Commits events `seqs` of the publisher, as its turn would.
    async fn publish(&self, seqs: &[i64]) {
        let events = seqs
            .iter()
            .map(|seq| TopicEvent {
                topic: TOPIC.into(),
                seq: *seq,
                payload: vec![*seq as u8],
                published_ms: self.clock.now_ms(),
            })
            .collect();
        let commit = Commit {
            events,
            ..Commit::default()
        };
        self.store
            .commit_turn(&self.publisher, commit, &owner())
            .await
            .unwrap();
    }

    fn chain(&self) -> Chain {
        Chain {
            topic: TOPIC.into(),
            publisher: self.publisher.clone(),
        }
    }

    fn delivered(&self) -> Vec<(String, String, Vec<u8>)> {
        self.router.delivered.lock().unwrap().clone()
    }

    /// Waits (in real time: the store's work is real) until `count`
    /// deliveries were made and the log is empty.
    async fn settled(&self, count: usize) {
        for _ in 0..500 {
            let logged = self.store.logged_events(&self.chain(), 10).await.unwrap();
            if self.delivered().len() >= count && logged.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{} deliveries, not {count}, or the log is not empty",
            self.delivered().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_event_once_with_its_key_in_order() {
    let h = harness().await;
    let ids: Vec<String> = (0..70).map(|n| format!("m{n:02}")).collect();
    h.subscribe(&ids).await;
    h.publish(&[1, 2]).await;
    h.delivery.committed(&h.publisher, [TOPIC].into_iter());
    h.settled(140).await;

    let delivered = h.delivered();
    assert_eq!(delivered.len(), 140, "each once");
    let (first, second) = (delivery_key(&h.chain(), 1), delivery_key(&h.chain(), 2));
    for id in &ids {
        let theirs: Vec<(&str, &[u8])> = delivered
            .iter()
            .filter(|(to, _, _)| to == id)
            .map(|(_, key, payload)| (key.as_str(), payload.as_slice()))
            .collect();
        assert_eq!(
            theirs,
            [(first.as_str(), &[1u8][..]), (second.as_str(), &[2u8][..])],
            "{id}"
        );
    }
    assert_eq!(h.counters.object_deliveries.load(Ordering::Relaxed), 140);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_takes_up_only_an_old_untouched_event() {
    let h = harness().await;
    h.subscribe(&["a".to_string(), "b".to_string()]).await;
    // Committed, but its silo died before delivering: nobody was told.
    h.publish(&[1]).await;
    for _ in 0..2 {
        h.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.delivered().is_empty(), "swept before {SWEEP_AFTER:?}");
    // Touched by a deliverer (of another silo) just now: still left alone.
    let now_ms = h.clock.now_ms();
    h.store
        .touch_logged_event(&h.chain(), 1, now_ms)
        .await
        .unwrap();
    for _ in 0..2 {
        h.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.delivered().is_empty(), "a touched chain was swept");
    for _ in 0..2 {
        h.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.settled(2).await;
    // A page's calls go out together, in no set order.
    let mut to: Vec<String> = h.delivered().into_iter().map(|(to, _, _)| to).collect();
    to.sort();
    assert_eq!(to, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscriber_counts_as_delivered_an_unreachable_one_is_tried_again() {
    let h = harness().await;
    let ids = ["fails", "away", "fine"].map(String::from);
    h.subscribe(&ids).await;
    {
        let mut answers = h.router.answers.lock().unwrap();
        answers.insert("fails".into(), Answer::Fails);
        answers.insert("away".into(), Answer::AwayFor(2));
    }
    h.publish(&[1]).await;
    h.publish(&[2]).await;
    h.delivery.committed(&h.publisher, [TOPIC].into_iter());
    // fails: 2; away: 2 refused, then 2; fine: 2.
    h.settled(8).await;
    let counters = &h.counters;
    assert_eq!(counters.object_deliveries.load(Ordering::Relaxed), 4);
    assert_eq!(counters.object_deliveries_failed.load(Ordering::Relaxed), 2);
    assert_eq!(counters.object_delivery_retries.load(Ordering::Relaxed), 2);
    // The unreachable one held up its chain: event 2 went to nobody before
    // event 1 reached `away`.
    let delivered = h.delivered();
    let second = delivery_key(&h.chain(), 2);
    let first_of_second = delivered
        .iter()
        .position(|(_, key, _)| *key == second)
        .unwrap();
    let away_first = delivered
        .iter()
        .rposition(|(to, key, _)| to == "away" && *key != second)
        .unwrap();
    assert!(away_first < first_of_second, "{delivered:?}");
}
