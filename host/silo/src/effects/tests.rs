//! The outbox and the wake-up pass on a real embedded store, with the
//! router replaced by a fake `Dispatch` that records every message and
//! answers as each test scripts it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use super::Effects;
use super::committer::Committer;
use super::outbox::{GIVE_UP_AFTER, Outbox, delivery_key};
use super::wake::wake_pass;
use crate::base::ObjectKey;
use crate::base::reserved::{INTENT_KEY, WAKE_INTERRUPTED, WAKE_OUTBOX};
use crate::message::{Dispatch, Envelope};
use crate::storage::{Commit, Outgoing, SiloId, StateStore};

/// One message the fake router was handed.
#[derive(Debug, Clone)]
struct Seen {
    to: ObjectKey,
    message_type: String,
    payload: Vec<u8>,
    key: Option<Arc<str>>,
}

type Answer = dyn Fn(&Seen, usize) -> Result<Vec<u8>, ReplyError> + Send + Sync;

/// Records what it is handed and answers each message with `answer`,
/// given how often a message with the same idempotency key came before.
struct FakeRouter {
    seen: Mutex<Vec<Seen>>,
    answer: Box<Answer>,
    handed: Notify,
}

impl FakeRouter {
    fn new(
        answer: impl Fn(&Seen, usize) -> Result<Vec<u8>, ReplyError> + Send + Sync + 'static,
    ) -> Arc<FakeRouter> {
        Arc::new(FakeRouter {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(answer),
            handed: Notify::new(),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Dispatch for FakeRouter {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        let seen = Seen {
            to: key,
            message_type: envelope.message_type,
            payload: envelope.payload,
            key: envelope.idempotency_key,
        };
        let answer = {
            let mut all = self.seen.lock().unwrap();
            let before = all
                .iter()
                .filter(|s| s.key.is_some() && s.key == seen.key)
                .count();
            all.push(seen.clone());
            (self.answer)(&seen, before)
        };
        envelope.reply.send(answer);
        self.handed.notify_waiters();
    }
}

const GENERATION: i64 = 1;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    effects: Arc<Effects>,
    _stop: watch::Sender<bool>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::storage::embedded::open(
        &dir.path().join("rio.db"),
        64,
        GENERATION,
        Default::default(),
    )
    .await
    .unwrap();
    let (stop, stopping) = watch::channel(false);
    let effects = Arc::new(Effects {
        committer: Committer::new(store.clone(), None, GENERATION),
        tasks: TaskTracker::new(),
        stopping,
        turn_deadline: Duration::from_secs(5),
        reply_memory: crate::effects::idempotency::ReplyMemory::new(
            crate::effects::idempotency::RECENT_REPLIES_BUDGET_BYTES,
        ),
        outbox_counters: Default::default(),
    });
    Fixture {
        _dir: dir,
        store,
        effects,
        _stop: stop,
    }
}

fn owner() -> SiloId {
    SiloId {
        address: String::new(),
        generation: GENERATION,
    }
}

/// Commits `count` one-way messages from `sender` to `receiver`, seqs 1…
async fn commit_sends(
    store: &dyn StateStore,
    sender: &ObjectKey,
    receiver: &ObjectKey,
    count: i64,
) {
    let outbox = (1..=count)
        .map(|seq| Outgoing {
            seq,
            receiver: receiver.clone(),
            message_type: "deposit".into(),
            payload: vec![seq as u8],
            created_at_ms: 0,
        })
        .collect();
    let commit = Commit {
        outbox,
        ..Commit::default()
    };
    store.commit_turn(sender, commit, &owner()).await.unwrap();
}

/// Opens `sender`'s outbox, lets it deliver everything, and waits until
/// its deliverer and the deletes it started are done.
async fn deliver_all(fixture: &Fixture, router: &Arc<FakeRouter>, sender: &ObjectKey) {
    let dispatch: Arc<dyn Dispatch> = router.clone();
    let outbox = Outbox::open(&fixture.effects, &dispatch, sender)
        .await
        .unwrap();
    let drained = async {
        while !outbox.is_drained() {
            let handed = router.handed.notified();
            if outbox.is_drained() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), handed).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .expect("the outbox drained");
    // Dropping the outbox ends its deliverer; the tracker then empties.
    drop(outbox);
    fixture.effects.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), fixture.effects.tasks.wait())
        .await
        .expect("the deliverer and its deletes ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_delivers_in_seq_order_and_retries_a_lost_delivery_under_its_key() {
    let fixture = fixture().await;
    let (sender, receiver) = (ObjectKey::new("Bank", "a"), ObjectKey::new("Bank", "b"));
    commit_sends(&*fixture.store, &sender, &receiver, 5).await;
    // The third message's first two deliveries end `unavailable` (their
    // outcome unknown): it is sent again, under the same key, before the
    // fourth is sent at all.
    let third = delivery_key(&sender, 3);
    let router = FakeRouter::new(move |seen, before| match seen.key.as_ref() {
        Some(key) if *key == third && before < 2 => Err(ReplyError::Unavailable("lost".into())),
        _ => Ok(Vec::new()),
    });
    deliver_all(&fixture, &router, &sender).await;

    let seen = router.seen();
    let order: Vec<u8> = seen.iter().map(|s| s.payload[0]).collect();
    assert_eq!(
        order,
        [1, 2, 3, 3, 3, 4, 5],
        "in seq order, the lost one again first"
    );
    for s in &seen {
        assert_eq!(s.to, receiver);
        assert_eq!(s.message_type, "deposit");
        let seq = i64::from(s.payload[0]);
        assert_eq!(
            s.key.as_deref(),
            Some(&*delivery_key(&sender, seq)),
            "keyed by sender and seq"
        );
    }
    let pending = fixture.store.pending_outbox(&sender).await.unwrap();
    assert!(
        pending.messages.is_empty(),
        "delivered rows are removed: {:?}",
        pending.messages
    );
    assert_eq!(pending.next_seq, 6);
    let backlog = fixture
        .effects
        .outbox_counters
        .pending
        .load(Ordering::Relaxed);
    assert_eq!(backlog, 0, "nothing is left in the backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_counts_what_waits_and_drops_what_a_stopped_deliverer_leaves() {
    let fixture = fixture().await;
    let (sender, receiver) = (ObjectKey::new("Bank", "a"), ObjectKey::new("Bank", "b"));
    commit_sends(&*fixture.store, &sender, &receiver, 3).await;
    // The receiver is never reachable: everything stays pending.
    let router = FakeRouter::new(|_, _| Err(ReplyError::Unavailable("unreachable".into())));
    let dispatch: Arc<dyn Dispatch> = router.clone();
    let outbox = Outbox::open(&fixture.effects, &dispatch, &sender)
        .await
        .unwrap();
    let backlog = || {
        fixture
            .effects
            .outbox_counters
            .pending
            .load(Ordering::Relaxed)
    };
    assert_eq!(backlog(), 3, "the three committed messages wait");
    let tried = async {
        while router.seen().is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(20), router.handed.notified()).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), tried)
        .await
        .expect("a delivery was tried");
    assert_eq!(backlog(), 3, "a failed try leaves them waiting");

    // Another silo owns the sender now: what this one leaves is not its
    // backlog any more (the store keeps it for the new owner).
    outbox.stop();
    fixture.effects.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), fixture.effects.tasks.wait())
        .await
        .expect("the deliverer stopped");
    assert_eq!(backlog(), 0);
    let stored = fixture.store.pending_outbox(&sender).await.unwrap();
    assert_eq!(stored.messages.len(), 3, "all still stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_its_receiver_keeps_refusing_is_buried_and_the_next_goes_out() {
    let fixture = fixture().await;
    let (sender, receiver) = (ObjectKey::new("Bank", "a"), ObjectKey::new("Shop", "s"));
    commit_sends(&*fixture.store, &sender, &receiver, 2).await;
    let first = delivery_key(&sender, 1);
    let router = FakeRouter::new(move |seen, _| match seen.key.as_ref() {
        Some(key) if *key == first => Err(ReplyError::Guest {
            kind: "closed".into(),
            message: "the shop is closed".into(),
        }),
        _ => Ok(Vec::new()),
    });
    deliver_all(&fixture, &router, &sender).await;

    let order: Vec<u8> = router.seen().iter().map(|s| s.payload[0]).collect();
    let mut expected = vec![1; GIVE_UP_AFTER as usize];
    expected.push(2);
    assert_eq!(
        order, expected,
        "refused {GIVE_UP_AFTER} times, then given up"
    );
    let letters = fixture.store.dead_letters(Some("Shop"), 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.seq, 1);
    assert!(
        letters[0].reason.contains("the shop is closed"),
        "{}",
        letters[0].reason
    );
    let pending = fixture.store.pending_outbox(&sender).await.unwrap();
    assert!(pending.messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_up_pass_wakes_each_object_for_the_work_it_has_left() {
    let fixture = fixture().await;
    let sender = ObjectKey::new("Bank", "sender");
    let interrupted = ObjectKey::new("Bank", "interrupted");
    commit_sends(&*fixture.store, &sender, &ObjectKey::new("Bank", "r"), 1).await;
    let intent = Commit {
        writes: vec![(INTENT_KEY.to_string(), Some(b"an intent".to_vec()))],
        ..Commit::default()
    };
    fixture
        .store
        .commit_turn(&interrupted, intent, &owner())
        .await
        .unwrap();
    let router = FakeRouter::new(|_, _| Ok(Vec::new()));

    wake_pass(&fixture.effects, &*router).await;

    let mut woken: Vec<(String, String)> = router
        .seen()
        .into_iter()
        .map(|s| {
            assert!(
                s.payload.is_empty() && s.key.is_none(),
                "a wake-up carries nothing"
            );
            (s.to.to_string(), s.message_type)
        })
        .collect();
    woken.sort();
    assert_eq!(
        woken,
        [
            ("Bank/interrupted".to_string(), WAKE_INTERRUPTED.to_string()),
            ("Bank/sender".to_string(), WAKE_OUTBOX.to_string()),
        ]
    );
}
