//! The reminder scan on a real embedded store and an injected clock, with
//! the router replaced by a fake `Dispatch` that holds each fire until the
//! test answers it: what is due fires once with its key, nothing fires
//! early, a missed periodic time skips or fires once, a fire in flight is
//! not dispatched again, one that could not run is tried again a second
//! later, and one whose handler failed moves its reminder on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio_util::task::TaskTracker;

use super::firing::Firing;
use super::reminders::fire_key;
use crate::base::ObjectKey;
use crate::base::clock::{Clock, ManualClock};
use crate::message::{Dispatch, Envelope, ReplyTo};
use crate::observe::Counters;
use crate::storage::reminders::shard_of;
use crate::storage::{Commit, Missed, Reminder, ReminderChange, ShardSlice, SiloId, StateStore};

/// A fire the fake router holds: to whom, under which key, and its reply.
struct Held {
    to: ObjectKey,
    key: String,
    message_type: String,
    reply: ReplyTo,
}

#[derive(Default)]
struct FakeRouter {
    held: Mutex<Vec<Held>>,
}

impl Dispatch for FakeRouter {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        self.held.lock().unwrap().push(Held {
            to: key,
            key: envelope
                .idempotency_key
                .as_deref()
                .unwrap_or_default()
                .to_string(),
            message_type: envelope.message_type,
            reply: envelope.reply,
        });
    }
}

impl FakeRouter {
    fn take(&self) -> Vec<Held> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    router: Arc<FakeRouter>,
    clock: Arc<ManualClock>,
    counters: Arc<Counters>,
    firing: Arc<Firing>,
    object: ObjectKey,
}

const GENERATION: i64 = 1;

async fn harness(slice: ShardSlice) -> Harness {
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
    let counters = Arc::new(Counters::default());
    let firing = Firing::new(
        store.clone(),
        router.clone(),
        clock.clone(),
        counters.clone(),
        TaskTracker::new(),
        Arc::new(move || Some(slice)),
        Duration::from_secs(5),
    );
    Harness {
        _dir: dir,
        store,
        router,
        clock,
        counters,
        firing,
        object: ObjectKey::new("Session", "alice"),
    }
}

impl Harness {
    /// Sets `name` on the object as a turn's commit would.
    async fn set(&self, name: &str, due_in_ms: i64, every_ms: Option<i64>, missed: Missed) -> i64 {
        let due_ms = self.clock.now_ms() + due_in_ms;
        let reminder = Reminder {
            due_ms,
            every_ms,
            missed,
            message_type: "expire".into(),
            payload: vec![7],
        };
        let commit = Commit {
            reminders: vec![ReminderChange::Set {
                name: name.into(),
                reminder,
            }],
            ..Commit::default()
        };
        let owner = SiloId {
            address: String::new(),
            generation: GENERATION,
        };
        self.store
            .commit_turn(&self.object, commit, &owner)
            .await
            .unwrap();
        due_ms
    }

    fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    async fn due_of(&self, name: &str) -> Option<i64> {
        let listed = self.store.reminders_of(&self.object).await.unwrap();
        listed
            .into_iter()
            .find(|(listed, _)| listed == name)
            .map(|(_, reminder)| reminder.due_ms)
    }

    /// Waits (in real time, bounded) until `name` is due at `due`: the
    /// scan's settling runs in a task of its own.
    async fn wait_due(&self, name: &str, due: Option<i64>) {
        for _ in 0..1000 {
            if self.due_of(name).await == due {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{name} is due at {:?}, not {due:?}",
            self.due_of(name).await
        );
    }

    fn counter(&self, read: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        read(&self.counters).load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_reminder_fires_once_with_its_key_and_never_early() {
    let h = harness(ShardSlice::ALL).await;
    let due = h.set("expire", 1_000, None, Missed::Skip).await;
    h.firing.scan().await;
    assert!(h.router.take().is_empty(), "fired early");
    h.advance(999);
    h.firing.scan().await;
    assert!(h.router.take().is_empty(), "fired early");
    h.advance(1);
    h.firing.scan().await;
    let fired = h.router.take();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].to, h.object);
    assert_eq!(fired[0].message_type, "expire");
    assert_eq!(fired[0].key, fire_key("expire", due, None));
    // In flight: a scan meanwhile does not dispatch it again.
    h.firing.scan().await;
    assert!(
        h.router.take().is_empty(),
        "dispatched twice while in flight"
    );
    // Its handler failed: it counts as fired, and the one-shot ends.
    let reply = fired.into_iter().next().unwrap().reply;
    reply.send(Err(ReplyError::Guest {
        kind: "broken".into(),
        message: "the handler failed".into(),
    }));
    h.wait_due("expire", None).await;
    assert_eq!(h.counter(|c| &c.reminder_fires_failed_total), 1);
    h.advance(10_000);
    h.firing.scan().await;
    assert!(h.router.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_that_could_not_run_is_tried_again_under_the_same_key() {
    let h = harness(ShardSlice::ALL).await;
    let due = h.set("expire", 0, None, Missed::Skip).await;
    h.firing.scan().await;
    let first = h.router.take();
    assert_eq!(first.len(), 1);
    first
        .into_iter()
        .next()
        .unwrap()
        .reply
        .send(Err(ReplyError::Unavailable("moving".into())));
    // Held back a second on the clock, then dispatched again, same key.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.firing.scan().await;
    assert!(h.router.take().is_empty(), "tried again at once");
    h.advance(1_000);
    let mut again = Vec::new();
    for _ in 0..200 {
        h.firing.scan().await;
        again = h.router.take();
        if !again.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].key, fire_key("expire", due, None));
    // The reminder itself is moved on only by the fire's own commit.
    assert_eq!(h.due_of("expire").await, Some(due));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_periodic_times_skip_or_fire_once_never_a_burst() {
    let h = harness(ShardSlice::ALL).await;
    let skip_due = h.set("skip", 100, Some(100), Missed::Skip).await;
    let once_due = h.set("once", 100, Some(100), Missed::FireOnce).await;
    // Ten periods pass with nobody scanning (the silo was down).
    h.advance(1_050);
    h.firing.scan().await;
    let fired = h.router.take();
    let keys: Vec<&str> = fired.iter().map(|held| held.key.as_str()).collect();
    assert_eq!(
        keys,
        [fire_key("once", once_due, Some(100))],
        "one fire, of `once` alone"
    );
    assert_eq!(h.counter(|c| &c.reminder_fires_skipped_total), 1);
    // The skipped one goes on at its first time after now.
    assert_eq!(h.due_of("skip").await, Some(skip_due + 1_000));
    h.firing.scan().await;
    assert!(
        h.router.take().is_empty(),
        "a second fire for the missed times"
    );
    for held in fired {
        held.reply.send(Ok(Vec::new()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_fires_only_the_shards_it_holds() {
    let object = ObjectKey::new("Session", "alice");
    let held = ShardSlice {
        index: shard_of(&object) % 2,
        count: 2,
    };
    let other = ShardSlice {
        index: 1 - held.index,
        count: 2,
    };
    let h = harness(other).await;
    h.set("expire", 0, None, Missed::Skip).await;
    h.firing.scan().await;
    assert!(h.router.take().is_empty(), "fired a shard of another silo");
    let mine = harness(held).await;
    mine.set("expire", 0, None, Missed::Skip).await;
    mine.firing.scan().await;
    assert_eq!(mine.router.take().len(), 1);
}

/// Answers each fire as the object's turn would: its commit (group
/// committed with others) moves the reminder on, then the reply; records every key
/// and the most fires it held unanswered at once.
struct CommittingRouter {
    store: Arc<dyn StateStore>,
    keys: Mutex<Vec<String>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    most_held: std::sync::atomic::AtomicUsize,
}

impl Dispatch for CommittingRouter {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        let fire_key = envelope
            .idempotency_key
            .as_deref()
            .unwrap_or_default()
            .to_string();
        let fire = super::reminders::Fire::of_key(&fire_key).expect("a fire's key");
        self.keys.lock().unwrap().push(format!("{key} {fire_key}"));
        let held = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_held.fetch_max(held, Ordering::SeqCst);
        let (store, held) = (self.store.clone(), self.held.clone());
        tokio::spawn(async move {
            // In the turn's commit, as an activation commits a fire.
            let commit = Commit {
                reminders: vec![fire.advance(0)],
                ..Commit::default()
            };
            let owner = SiloId {
                address: String::new(),
                generation: GENERATION,
            };
            let advanced = store.commit_turn(&key, commit, &owner).await;
            held.fetch_sub(1, Ordering::SeqCst);
            envelope.reply.send(
                advanced
                    .map(|()| Vec::new())
                    .map_err(|error| ReplyError::Internal(error.to_string())),
            );
        });
    }
}

/// 100,000 reminders due at once on one silo: the scan reads them in
/// pages, holds at most `MAX_IN_FLIGHT` fires at a time, and over its
/// scans fires each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_due_reminders_fire_once_each_within_the_in_flight_bound() {
    const OBJECTS: usize = 100;
    const PER_OBJECT: usize = 1000;
    let h = harness(ShardSlice::ALL).await;
    let owner = SiloId {
        address: String::new(),
        generation: GENERATION,
    };
    let due_ms = h.clock.now_ms();
    let mut commits = Vec::new();
    for n in 0..OBJECTS {
        let object = ObjectKey::new("Session", &format!("s{n}"));
        let reminders = (0..PER_OBJECT)
            .map(|r| ReminderChange::Set {
                name: format!("r{r}"),
                reminder: Reminder {
                    due_ms: due_ms + (r % 7) as i64,
                    every_ms: None,
                    missed: Missed::Skip,
                    message_type: "expire".into(),
                    payload: Vec::new(),
                },
            })
            .collect();
        let commit = Commit {
            reminders,
            ..Commit::default()
        };
        let (store, owner) = (h.store.clone(), owner.clone());
        commits.push(tokio::spawn(async move {
            store.commit_turn(&object, commit, &owner).await.unwrap()
        }));
    }
    for commit in commits {
        commit.await.unwrap();
    }
    let router = Arc::new(CommittingRouter {
        store: h.store.clone(),
        keys: Mutex::new(Vec::new()),
        held: Arc::default(),
        most_held: Default::default(),
    });
    let firing = Firing::new(
        h.store.clone(),
        router.clone(),
        h.clock.clone(),
        h.counters.clone(),
        TaskTracker::new(),
        Arc::new(|| Some(ShardSlice::ALL)),
        Duration::from_secs(5),
    );
    h.advance(10);
    let total = OBJECTS * PER_OBJECT;
    for _ in 0..10_000 {
        firing.scan().await;
        assert!(firing.in_flight_count() <= super::firing::MAX_IN_FLIGHT);
        let left = h
            .store
            .due_reminders(ShardSlice::ALL, i64::MIN, i64::MAX, 0, 1)
            .await
            .unwrap();
        if left.is_empty() && firing.in_flight_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keys = router.keys.lock().unwrap().clone();
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), total, "every reminder fired");
    assert_eq!(keys.len(), total, "none fired twice");
    assert!(router.most_held.load(Ordering::SeqCst) <= super::firing::MAX_IN_FLIGHT);
    assert_eq!(h.counter(|c| &c.reminder_fires_total), total as u64);
}
