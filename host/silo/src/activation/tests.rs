//! An activation alone: the counter guest on a real engine and a real
//! embedded store, with the router replaced by fakes (a local-only
//! `Dispatch`, a `Messenger` whose calls answer as each test scripts) and
//! time by a `ManualClock`, so idle collection is tested without sleeping.

#[path = "../../tests/common/guest_build.rs"]
mod guest_build;

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rio_protocol::ReplyError;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::directory::{Delivery, Directory, Vacancy};
use super::{Context, Links};
use crate::base::ObjectKey;
use crate::base::clock::{Clock, ManualClock};
use crate::base::reserved::INTENT_KEY;
use crate::config::SiloConfig;
use crate::deadlock::{Deadlock, WaitEdge, WaitGraph};
use crate::effects::Effects;
use crate::effects::committer::Committer;
use crate::effects::resume::RESUME_SPACING;
use crate::host::{Messenger, TurnCall};
use crate::message::{Dispatch, Envelope, ReplyTo, empty_chain};
use crate::observe::Counters;
use crate::runtime::component_cache::CompiledCache;
use crate::runtime::deployments::{DeployedType, Deployments, Toolchain};
use crate::storage::StateStore;

pub(super) const IDLE: Duration = Duration::from_secs(60);

/// One call a guest made, as the fake messenger saw it.
#[derive(Debug, Clone)]
struct Called {
    callee: ObjectKey,
    message_type: String,
    key: Option<Arc<str>>,
}

type CallAnswer = dyn Fn(&Called, usize) -> Result<Vec<u8>, ReplyError> + Send + Sync;

/// Stands in for the router: messages go into this silo's directory (an
/// object's first one starts its activation), guests' calls are answered
/// by `answer` given how many calls came before, and intents are stored
/// as the router stores them.
struct FakeRouter {
    ctx: Arc<Context>,
    deployed: Arc<DeployedType>,
    this: Weak<FakeRouter>,
    waits: WaitGraph,
    calls: Mutex<Vec<Called>>,
    answer: Mutex<Box<CallAnswer>>,
}

impl Dispatch for FakeRouter {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        let delivery = self
            .ctx
            .directory
            .deliver(&key, envelope, |_| Vacancy::Activate { full: None });
        match delivery {
            Delivery::Queued => {}
            Delivery::Refused(envelope, error) => envelope.reply.send(Err(error)),
            Delivery::Activate(inbox, handle) => {
                let router = self.this.upgrade().expect("the fake router lives");
                let links = Links {
                    dispatch: router.clone(),
                    messenger: router,
                };
                super::spawn(&self.ctx, links, key, self.deployed.clone(), inbox, handle);
            }
            Delivery::Place => panic!("a lone silo places nothing"),
        }
    }
}

impl Messenger for FakeRouter {
    fn wait(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        rerun: bool,
    ) -> Result<WaitEdge, Deadlock> {
        self.waits.wait_from(caller, callee, None, rerun)
    }

    fn call<'a>(
        self: Arc<Self>,
        call: TurnCall,
        _wait: Option<&'a WaitEdge>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, ReplyError>> + Send + 'a>> {
        let called = Called {
            callee: call.callee,
            message_type: call.message_type,
            key: call.idempotency_key,
        };
        let mut calls = self.calls.lock().unwrap();
        let answer = (self.answer.lock().unwrap())(&called, calls.len());
        calls.push(called);
        Box::pin(async move { answer })
    }

    fn record_intent(
        self: Arc<Self>,
        object: ObjectKey,
        intent: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReplyError>> + Send>> {
        Box::pin(async move {
            self.ctx
                .effects
                .committer
                .record_intent(&object, intent)
                .await
        })
    }
}

pub(super) struct Harness {
    _dir: tempfile::TempDir,
    router: Arc<FakeRouter>,
    store: Arc<dyn StateStore>,
    pub(super) clock: Arc<ManualClock>,
    _stop: watch::Sender<bool>,
}

const GENERATION: i64 = 1;

/// The counter guest, built once for every test of this binary.
fn counter_component() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES
        .get_or_init(|| guest_build::guest("rio-guest-counter"))
        .clone()
}

impl Harness {
    pub(super) async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SiloConfig::new(dir.path());
        config.idle_timeout = IDLE;
        let store = crate::storage::embedded::open(
            &dir.path().join("rio.db"),
            64,
            GENERATION,
            Default::default(),
        )
        .await
        .unwrap();
        let engine = crate::runtime::engine::build_engine(&config, false).unwrap();
        crate::runtime::engine::spawn_epoch_ticker(&engine);
        let toolchain = Toolchain {
            linker: crate::host::linker(&engine).unwrap(),
            cache: Arc::new(CompiledCache::new(&engine, dir.path()).unwrap()),
            engine,
        };
        let counters = Arc::new(Counters::default());
        let deployments = Deployments::new(toolchain, None, store.clone(), counters.clone());
        deployments
            .deploy("Counter", counter_component())
            .await
            .unwrap();
        let deployed = deployments.get("Counter").unwrap();
        let (stop, stopping) = watch::channel(false);
        let clock = ManualClock::new();
        let effects = Arc::new(Effects {
            committer: Committer::new(store.clone(), None, GENERATION),
            tasks: TaskTracker::new(),
            stopping,
            turn_deadline: config.turn_deadline,
            reply_memory: crate::effects::idempotency::ReplyMemory::new(
                crate::effects::idempotency::RECENT_REPLIES_BUDGET_BYTES,
            ),
            outbox_counters: Default::default(),
        });
        let ctx = Arc::new(Context {
            directory: Directory::new(config.mailbox_capacity),
            config,
            deployments,
            effects,
            counters,
            address: OnceLock::new(),
            cluster: None,
            clock: clock.clone() as Arc<dyn Clock>,
            events: Arc::new(crate::events::Events::new(
                Default::default(),
                1 << 20,
                None,
                crate::events::objects::ObjectDelivery::new(
                    store.clone(),
                    clock.clone(),
                    Default::default(),
                    TaskTracker::new(),
                    Duration::from_secs(5),
                ),
            )),
        });
        let router = Arc::new_cyclic(|this| FakeRouter {
            ctx,
            deployed,
            this: this.clone(),
            waits: WaitGraph::default(),
            calls: Mutex::new(Vec::new()),
            answer: Mutex::new(Box::new(|_, _| panic!("no call expected"))),
        });
        Harness {
            _dir: dir,
            router,
            store,
            clock,
            _stop: stop,
        }
    }

    /// Guests' calls are answered by `answer` from now on.
    fn answer_calls(
        &self,
        answer: impl Fn(&Called, usize) -> Result<Vec<u8>, ReplyError> + Send + Sync + 'static,
    ) {
        *self.router.answer.lock().unwrap() = Box::new(answer);
    }

    /// Sends `Counter/id` a message and waits for its reply.
    pub(super) async fn call(
        &self,
        id: &str,
        message: &str,
        payload: Value,
        key: Option<&str>,
    ) -> Result<Value, ReplyError> {
        let (reply, replied) = oneshot::channel();
        let mut envelope = Envelope::new(
            message.to_string(),
            cbor(&payload),
            empty_chain(),
            ReplyTo::Caller(reply),
            Instant::now() + Duration::from_secs(30),
        );
        envelope.idempotency_key = key.map(Arc::from);
        self.router
            .dispatch(ObjectKey::new("Counter", id), envelope);
        let bytes = replied.await.expect("the activation answers")?;
        Ok(ciborium::from_reader(bytes.as_slice()).unwrap())
    }

    /// The value a `get` answers, or `None` if it is refused.
    async fn value_unchecked(&self, id: &str) -> Option<i64> {
        let reply = self.call(id, "get", json!({}), None).await.ok()?;
        reply["value"].as_i64()
    }

    pub(super) async fn value(&self, id: &str) -> i64 {
        let reply = self.call(id, "get", json!({}), None).await.unwrap();
        reply["value"].as_i64().unwrap()
    }

    /// The object's stored state entries, by key.
    async fn stored(&self, id: &str) -> Vec<String> {
        let entries = self
            .store
            .load_keys(&ObjectKey::new("Counter", id), 1 << 20)
            .await
            .unwrap();
        let mut keys: Vec<String> = entries.into_keys().collect();
        keys.sort();
        keys
    }

    pub(super) fn ctx(&self) -> &Context {
        &self.router.ctx
    }

    /// Waits until every activation has ended (bounded: a test that hangs
    /// here fails instead).
    pub(super) async fn activations_ended(&self) {
        let tasks = &self.ctx().effects.tasks;
        tasks.close();
        tokio::time::timeout(Duration::from_secs(20), tasks.wait())
            .await
            .expect("the activations ended");
        tasks.reopen();
    }
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_commits_its_writes_and_a_failed_turn_leaves_the_store_untouched() {
    let harness = Harness::new().await;
    let reply = harness
        .call("c", "increment", json!({"by": 5}), None)
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 5}));
    assert_eq!(harness.stored("c").await, ["value"]);
    let stored = harness
        .store
        .read_value(&ObjectKey::new("Counter", "c"), "value")
        .await
        .unwrap();

    // A payload the handler cannot decode: the guest's error, nothing kept.
    let refused = harness
        .call("c", "increment", json!({"by": "five"}), None)
        .await;
    assert!(refused.is_err(), "answered {refused:?}");
    let unchanged = harness
        .store
        .read_value(&ObjectKey::new("Counter", "c"), "value")
        .await
        .unwrap();
    assert_eq!(unchanged, stored, "a failed turn writes nothing");
    assert_eq!(harness.value("c").await, 5, "nor does the instance keep it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_answers_its_stored_reply_here_and_after_a_new_activation() {
    let harness = Harness::new().await;
    let first = harness
        .call("k", "increment", json!({"by": 5}), Some("pay-1"))
        .await;
    let again = harness
        .call("k", "increment", json!({"by": 5}), Some("pay-1"))
        .await;
    assert_eq!(first.unwrap(), json!({"value": 5}));
    assert_eq!(again.unwrap(), json!({"value": 5}), "the retry ran nothing");
    assert_eq!(harness.value("k").await, 5);

    // Idle past its timeout: deactivated; the next message activates it
    // afresh, which remembers nothing, so the reply comes from the store.
    harness.clock.advance(IDLE + Duration::from_secs(1));
    harness.activations_ended().await;
    let counters = &harness.ctx().counters;
    assert_eq!(
        counters
            .deactivations_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let later = harness
        .call("k", "increment", json!({"by": 5}), Some("pay-1"))
        .await;
    assert_eq!(later.unwrap(), json!({"value": 5}));
    assert_eq!(harness.value("k").await, 5);
    assert_eq!(
        counters
            .activations_total
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_stays_until_its_clock_passes_the_idle_timeout() {
    let harness = Harness::new().await;
    harness
        .call("i", "increment", json!({"by": 1}), None)
        .await
        .unwrap();
    let live = |harness: &Harness| harness.ctx().directory.occupancy();
    assert_eq!(live(&harness), 1);

    // Just short of the timeout, and a message that restarts it.
    harness.clock.advance(IDLE - Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert_eq!(live(&harness), 1, "not idle long enough yet");
    harness
        .call("i", "increment", json!({"by": 1}), None)
        .await
        .unwrap();
    harness.clock.advance(Duration::from_secs(2));
    tokio::task::yield_now().await;
    assert_eq!(live(&harness), 1, "the message restarted its idle time");

    harness.clock.advance(IDLE);
    harness.activations_ended().await;
    assert_eq!(live(&harness), 0, "retired once idle for the whole timeout");
    assert_eq!(
        harness.value("i").await,
        2,
        "its state was committed before"
    );
}

/// An interrupted turn whose calls keep failing is tried for its whole
/// budget, however many messages come meanwhile, and is given up only
/// after both its attempts and its time (issue 19, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_keyed_turn_is_given_up_only_after_its_attempts_and_its_time() {
    let harness = Harness::new().await;
    harness
        .call("a", "increment", json!({"by": 10}), None)
        .await
        .unwrap();
    harness.answer_calls(|_, _| Err(ReplyError::Unavailable("the owner is away".into())));
    let moved = harness
        .call(
            "a",
            "move-slowly",
            json!({"target": "b", "by": 4, "millis": 0}),
            Some("move-1"),
        )
        .await;
    assert!(moved.is_err(), "{moved:?}");
    // Many more attempts than the minimum, spaced, within the budget (two
    // turn deadlines for a lone silo): each message is refused, none runs.
    let budget = 2 * harness.ctx().config.turn_deadline;
    let attempts = 2 * crate::effects::resume::RESUME_ATTEMPTS;
    let step = (budget / 2) / attempts;
    assert!(step >= RESUME_SPACING, "the test's steps are spaced");
    for _ in 0..attempts {
        harness.clock.advance(step);
        let refused = harness.call("a", "increment", json!({"by": 1}), None).await;
        assert!(
            matches!(&refused, Err(ReplyError::Unavailable(message)) if message.contains("interrupted keyed turn")),
            "{refused:?}"
        );
    }
    assert!(harness.stored("a").await.contains(&INTENT_KEY.to_string()));
    assert_eq!(harness.value_unchecked("a").await, None, "nothing else ran");

    // Past the budget, the next failed attempt gives it up, and the message
    // runs on the state before the move (none of its attempts committed).
    harness.clock.advance(budget);
    let after = harness.call("a", "increment", json!({"by": 1}), None).await;
    assert_eq!(after.unwrap(), json!({"value": 11}));
    assert!(!harness.stored("a").await.contains(&INTENT_KEY.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_keyed_turn_runs_again_before_the_next_message() {
    let harness = Harness::new().await;
    harness
        .call("a", "increment", json!({"by": 10}), None)
        .await
        .unwrap();
    // The move's call to `b` twice ends with its outcome unknown, then
    // is answered.
    harness.answer_calls(|called, before| {
        assert_eq!(called.callee, ObjectKey::new("Counter", "b"));
        assert_eq!(called.message_type, "add-slowly");
        match before {
            0 | 1 => Err(ReplyError::Unavailable("the answer was lost".into())),
            _ => Ok(cbor(&json!({"value": 4}))),
        }
    });
    let moved = harness
        .call(
            "a",
            "move-slowly",
            json!({"target": "b", "by": 4, "millis": 0}),
            Some("move-1"),
        )
        .await;
    assert!(
        matches!(moved, Err(ReplyError::Guest { ref kind, .. }) if kind == "unavailable"),
        "{moved:?}"
    );
    assert!(
        harness.stored("a").await.contains(&INTENT_KEY.to_string()),
        "its intent is stored"
    );

    // A message right after is refused without an attempt: attempts are
    // spaced, so a burst cannot spend them.
    let burst = harness
        .call("a", "increment", json!({"by": 100}), None)
        .await;
    assert!(
        matches!(&burst, Err(ReplyError::Unavailable(message)) if message.contains("a moment ago")),
        "{burst:?}"
    );
    assert_eq!(
        harness.router.calls.lock().unwrap().len(),
        1,
        "no attempt in a burst"
    );

    // The next message after the spacing first runs the move again; it
    // fails once more, so the message is refused with nothing of it run.
    harness.clock.advance(RESUME_SPACING);
    let refused = harness
        .call("a", "increment", json!({"by": 100}), None)
        .await;
    match refused {
        Err(ReplyError::Unavailable(message)) => {
            assert!(message.contains("interrupted keyed turn"), "{message}")
        }
        other => panic!("a message behind an unfinished turn answered {other:?}"),
    }
    // The one after runs the move a third time, which is answered: the
    // move commits first, then the message runs on its result.
    harness.clock.advance(RESUME_SPACING);
    let after = harness
        .call("a", "increment", json!({"by": 100}), None)
        .await;
    assert_eq!(after.unwrap(), json!({"value": 106}));

    let calls = harness.router.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|call| call.key.is_some() && call.key == calls[0].key),
        "every run makes the same keyed call: {calls:?}"
    );
    assert_eq!(
        harness.stored("a").await,
        ["value"],
        "the intent is gone with the move's commit"
    );
    let retried = harness
        .call(
            "a",
            "move-slowly",
            json!({"target": "b", "by": 4, "millis": 0}),
            Some("move-1"),
        )
        .await;
    assert_eq!(
        retried.unwrap(),
        json!({"value": 6}),
        "the client's retry gets the rerun's reply"
    );
    assert_eq!(
        harness.router.calls.lock().unwrap().len(),
        3,
        "and runs nothing"
    );
}

/// A keyed turn whose every call was refused before it ran (the callee
/// finishing an interrupted turn of its own) did nothing anywhere: it ends
/// with its error instead of becoming interrupted, so its object does not
/// refuse others meanwhile (which, met by the same refusals, spread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_turn_whose_calls_were_refused_unrun_is_not_interrupted() {
    let harness = Harness::new().await;
    harness
        .call("a", "increment", json!({"by": 10}), None)
        .await
        .unwrap();
    harness.answer_calls(|_, _| {
        Err(ReplyError::Unavailable(format!(
            "Counter/b is finishing an interrupted keyed turn first; {}, retry it",
            crate::effects::resume::NOT_RUN
        )))
    });
    let moved = harness
        .call(
            "a",
            "move-slowly",
            json!({"target": "b", "by": 4, "millis": 0}),
            Some("move-1"),
        )
        .await;
    assert!(moved.is_err(), "{moved:?}");
    assert!(
        !harness.stored("a").await.contains(&INTENT_KEY.to_string()),
        "no intent is left to run again"
    );
    // The next message runs at once, on the state before the move.
    let after = harness.call("a", "increment", json!({"by": 1}), None).await;
    assert_eq!(after.unwrap(), json!({"value": 11}));
}
