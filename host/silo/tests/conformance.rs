//! Conformance suite of the storage backends: every case runs against each
//! backend it applies to and checks what the storage traits' doc comments
//! promise, so the backends stay interchangeable.
//!
//! - Every store, the lone silo's embedded one included: state, components,
//!   reply records, the outbox.
//! - The cluster stores (SQLite, PostgreSQL, MariaDB, Redis) besides:
//!   membership, placement, and commits fenced by placement.
//! - The embedded store besides: commits fenced by its lease.
//!
//! Servers are expected on their default loopback ports; one that does not
//! answer is skipped with a printed reason, unless `CI=true`.

mod backends;
#[path = "conformance/reminders.rs"]
mod reminder_cases;
#[path = "conformance/topics.rs"]
mod topic_cases;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backends::{Env, now_ms};
use rio_silo::ObjectKey;
use rio_silo::storage::{
    ClusterStore, Commit, DeadLetter, Member, Outgoing, ReplyRecord, SiloId, SiloStatus,
    StateWrite, StorageError, StoredEntry,
};
use tokio::sync::Barrier;

/// A backend that deadlocks should fail its test, not hang the suite.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// One `#[tokio::test]` per (group, backend, case), named
/// `group::backend::case`, so the failure list says at once which backend
/// broke which promise.
macro_rules! conformance {
    ($($group:ident: [$($backend:ident),+ $(,)?] => $cases:tt),+ $(,)?) => {
        $( mod $group { $( conformance!(@backend $backend $cases); )+ } )+
    };
    (@backend $backend:ident [$($case:ident),+ $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((env, store)) =
                        crate::backends::Env::start(stringify!($backend)).await
                    else {
                        return;
                    };
                    if tokio::time::timeout(crate::CASE_TIMEOUT, crate::$case(store, &env))
                        .await
                        .is_err()
                    {
                        panic!(
                            "{}: {} did not finish within {:?}",
                            env.backend,
                            stringify!($case),
                            crate::CASE_TIMEOUT
                        );
                    }
                }
            )+
        }
    };
}

conformance! {
    every_store: [embedded, sqlite, postgres, mariadb, redis] => [
        state,
        lazy_state,
        state_concurrency,
        components,
        reply_records,
        reply_sweep,
        outbox,
        reminders,
        topics,
    ],
    cluster_stores: [sqlite, postgres, mariadb, redis] => [
        membership,
        placement,
        racing_claims_shared_instance,
        racing_claims_separate_instances,
        racing_take_over,
        fencing,
        fencing_in_one_batch,
        reply_records_in_one_batch,
        fenced_commit_stores_no_reply,
        fenced_commit_sets_no_reminder,
        fenced_commit_subscribes_nothing,
    ],
    embedded_store: [embedded] => [lease_fencing],
}

use reminder_cases::{fenced_commit_sets_no_reminder, reminders};
use topic_cases::{fenced_commit_subscribes_nothing, topics};

fn put(key: &str, value: &[u8]) -> StateWrite {
    (key.to_string(), Some(value.to_vec()))
}

fn delete(key: &str) -> StateWrite {
    (key.to_string(), None)
}

fn map(pairs: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_vec()))
        .collect()
}

async fn load(store: &ClusterStore, object: &ObjectKey) -> HashMap<String, Vec<u8>> {
    store
        .state
        .load(object)
        .await
        .unwrap_or_else(|error| panic!("load {object}: {error}"))
}

/// The silo the state cases commit as; their objects are their own, so one
/// silo for all of them is enough.
fn writer() -> SiloId {
    SiloId {
        address: "writer.test:7070".into(),
        generation: 1,
    }
}

/// Commits as [`writer`], which first claims the object: commits are fenced
/// by ownership.
async fn commit(store: &ClusterStore, object: &ObjectKey, writes: Vec<StateWrite>) {
    let owner = store
        .placement
        .claim(object, &writer())
        .await
        .unwrap_or_else(|error| panic!("claim {object}: {error}"));
    assert_eq!(owner, writer(), "{object} belongs to another test's silo");
    store
        .state
        .commit(object, writes, &owner)
        .await
        .unwrap_or_else(|error| panic!("commit to {object}: {error}"));
}

/// Asserts that `silo` may not commit `writes` to `object`.
async fn assert_fenced(
    store: &ClusterStore,
    object: &ObjectKey,
    silo: &SiloId,
    writes: Vec<StateWrite>,
    why: &str,
) {
    match store.state.commit(object, writes, silo).await {
        Err(StorageError::Fenced { .. }) => {}
        other => panic!("commit to {object} by {silo} ({why}): expected fenced, got {other:?}"),
    }
}

async fn state(store: ClusterStore, env: &Env) {
    let object = env.object("State", "alice");
    assert_eq!(load(&store, &object).await, HashMap::new(), "never written");

    commit(
        &store,
        &object,
        vec![put("a", b"1"), put("b", b"2"), put("c", b"3")],
    )
    .await;
    assert_eq!(
        load(&store, &object).await,
        map(&[("a", b"1"), ("b", b"2"), ("c", b"3")])
    );

    // Deleting a key that was never written is part of a normal turn too.
    commit(
        &store,
        &object,
        vec![
            put("a", b"10"),
            delete("b"),
            put("d", b"4"),
            delete("never"),
        ],
    )
    .await;
    assert_eq!(
        load(&store, &object).await,
        map(&[("a", b"10"), ("c", b"3"), ("d", b"4")]),
        "the second commit applies in full on top of the first"
    );

    // Within one commit the last write of a key wins; an empty commit
    // changes nothing.
    commit(
        &store,
        &object,
        vec![delete("a"), put("a", b"11"), put("c", b"30"), delete("c")],
    )
    .await;
    commit(&store, &object, Vec::new()).await;
    assert_eq!(
        load(&store, &object).await,
        map(&[("a", b"11"), ("d", b"4")]),
        "the last write of a key in a commit wins"
    );

    let one = env.object("TypeOne", "same");
    let other = env.object("TypeTwo", "same");
    commit(&store, &one, vec![put("k", b"one")]).await;
    commit(&store, &other, vec![put("k", b"other")]).await;
    assert_eq!(load(&store, &one).await, map(&[("k", b"one")]));
    assert_eq!(load(&store, &other).await, map(&[("k", b"other")]));

    // A backend that joins type and id with a separator into one key would
    // make each of these pairs one object.
    let base = env.name("Sep");
    let pairs = [
        (
            ObjectKey::new(&format!("{base}:x"), "y"),
            ObjectKey::new(&base, "x:y"),
        ),
        (
            ObjectKey::new(&format!("{base}/x"), "y"),
            ObjectKey::new(&base, "x/y"),
        ),
    ];
    for (left, right) in &pairs {
        commit(&store, left, vec![put("side", b"left")]).await;
        commit(&store, right, vec![put("side", b"right")]).await;
    }
    for (left, right) in &pairs {
        assert_eq!(
            load(&store, left).await,
            map(&[("side", b"left")]),
            "{left}"
        );
        assert_eq!(
            load(&store, right).await,
            map(&[("side", b"right")]),
            "{right}"
        );
    }

    let binary = env.object("Binary", "bytes");
    let every_byte: Vec<u8> = (0..=255).collect();
    let reversed: Vec<u8> = every_byte.iter().rev().copied().collect();
    commit(
        &store,
        &binary,
        vec![
            put("every byte", &every_byte),
            put("reversed", &reversed),
            put("empty", b""),
        ],
    )
    .await;
    let loaded = load(&store, &binary).await;
    assert_eq!(loaded.get("every byte"), Some(&every_byte));
    assert_eq!(loaded.get("reversed"), Some(&reversed));
    assert_eq!(
        loaded.get("empty"),
        Some(&Vec::new()),
        "an empty value is a value, not a deletion"
    );

    let odd = env.object("Unicode", "ид/😀:x/y z");
    let key = "ключ:🔑/a b";
    commit(&store, &odd, vec![put(key, "значение ✓".as_bytes())]).await;
    assert_eq!(
        load(&store, &odd).await,
        map(&[(key, "значение ✓".as_bytes())])
    );
    assert_eq!(
        load(&store, &env.object("Unicode", "ид")).await,
        HashMap::new(),
        "a prefix of the id is another object"
    );
}

/// `load_keys` gives every key with its value's size and only the small
/// values; `read_value` gives the others, and nothing for a missing key.
async fn lazy_state(store: ClusterStore, env: &Env) {
    let object = env.object("Lazy", "big");
    let big = vec![7u8; 100_000];
    commit(
        &store,
        &object,
        vec![put("small", b"tiny"), put("big", &big), put("empty", b"")],
    )
    .await;
    let entries = store
        .state
        .load_keys(&object, 1_000)
        .await
        .unwrap_or_else(|error| panic!("load_keys {object}: {error}"));
    let expected = HashMap::from([
        (
            "small".to_string(),
            StoredEntry {
                value_bytes: 4,
                value: Some(b"tiny".to_vec()),
            },
        ),
        (
            "big".to_string(),
            StoredEntry {
                value_bytes: 100_000,
                value: None,
            },
        ),
        (
            "empty".to_string(),
            StoredEntry {
                value_bytes: 0,
                value: Some(Vec::new()),
            },
        ),
    ]);
    assert_eq!(entries, expected, "{}", env.backend);
    let read = |key: &'static str| {
        let store = store.clone();
        let object = object.clone();
        async move { store.state.read_value(&object, key).await.unwrap() }
    };
    assert_eq!(read("big").await, Some(big));
    assert_eq!(read("small").await, Some(b"tiny".to_vec()));
    assert_eq!(read("missing").await, None);
    let none = env.object("Lazy", "nobody");
    assert!(
        store
            .state
            .load_keys(&none, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn state_concurrency(store: ClusterStore, env: &Env) {
    let objects: Vec<ObjectKey> = (0..50)
        .map(|i| env.object("Many", &format!("object-{i}")))
        .collect();
    let tasks: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let (store, object) = (store.clone(), object.clone());
            tokio::spawn(async move {
                let n = i.to_string();
                commit(
                    &store,
                    &object,
                    vec![put("n", n.as_bytes()), put("fixed", b"x")],
                )
                .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("commit task panicked");
    }
    for (i, object) in objects.iter().enumerate() {
        let n = i.to_string();
        assert_eq!(
            load(&store, object).await,
            map(&[("n", n.as_bytes()), ("fixed", b"x")]),
            "{object}"
        );
    }

    // Each task only ever writes its own key, so a backend that rewrites the
    // whole state on commit loses the others' keys.
    const WRITERS: usize = 20;
    const ROUNDS: u32 = 5;
    let shared = env.object("Shared", "one");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, shared, barrier) = (store.clone(), shared.clone(), barrier.clone());
            tokio::spawn(async move {
                let key = format!("writer-{i}");
                barrier.wait().await;
                for _ in 0..ROUNDS {
                    let current: u32 = load(&store, &shared)
                        .await
                        .get(&key)
                        .map(|v| String::from_utf8_lossy(v).parse().expect("a number"))
                        .unwrap_or(0);
                    let next = (current + 1).to_string();
                    commit(&store, &shared, vec![put(&key, next.as_bytes())]).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task panicked");
    }
    let rounds = ROUNDS.to_string();
    let expected: HashMap<String, Vec<u8>> = (0..WRITERS)
        .map(|i| (format!("writer-{i}"), rounds.as_bytes().to_vec()))
        .collect();
    assert_eq!(load(&store, &shared).await, expected);

    // A reader racing the writer must see one commit or the other, never a mix.
    let whole = env.object("Whole", "one");
    let first = vec![put("a", b"first"), put("b", b"first"), delete("c")];
    let second = vec![put("a", b"second"), delete("b"), put("c", b"second")];
    let first_state = map(&[("a", b"first"), ("b", b"first")]);
    let second_state = map(&[("a", b"second"), ("c", b"second")]);
    commit(&store, &whole, first.clone()).await;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, whole, done) = (store.clone(), whole.clone(), done.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                let writes = if round % 2 == 0 { &second } else { &first };
                commit(&store, &whole, writes.clone()).await;
            }
            done.store(true, Ordering::Release);
        })
    };
    loop {
        let finished = done.load(Ordering::Acquire);
        let seen = load(&store, &whole).await;
        assert!(
            seen == first_state || seen == second_state,
            "read half a commit: {seen:?}"
        );
        if finished {
            break;
        }
    }
    writer.await.expect("writer task panicked");
    assert_eq!(
        load(&store, &whole).await,
        first_state,
        "the last commit wins"
    );
}

async fn components(store: ClusterStore, env: &Env) {
    let components = &store.components;
    // Not a multiple of any page size, and no run of equal bytes to compress.
    let blob: Vec<u8> = (0..2 * 1024 * 1024 + 17)
        .map(|i: usize| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect();
    // The store treats the hash as an opaque name; unique per run, as the
    // content behind a real hash never changes.
    let hash = env.name("sha256-big");
    components
        .put_component(&hash, &blob)
        .await
        .expect("put_component");
    components
        .put_component(&hash, &blob)
        .await
        .expect("put_component of a present hash is a no-op");
    let loaded = components
        .component(&hash)
        .await
        .expect("component")
        .expect("the stored component");
    assert!(
        loaded == blob,
        "2 MB component came back different: {} bytes instead of {}",
        loaded.len(),
        blob.len()
    );
    assert_eq!(
        components
            .component(&env.name("sha256-unknown"))
            .await
            .expect("component"),
        None
    );

    let small_hash = env.name("sha256-small");
    components
        .put_component(&small_hash, b"\0asm small")
        .await
        .expect("put_component");
    assert_eq!(
        components.component(&small_hash).await.expect("component"),
        Some(b"\0asm small".to_vec())
    );

    let service = env.name("Deployed");
    let bystander = env.name("Bystander");
    let deployed = |all: Vec<(String, String)>| -> Vec<(String, String)> {
        let mut mine: Vec<_> = all
            .into_iter()
            .filter(|(ty, _)| *ty == service || *ty == bystander)
            .collect();
        mine.sort();
        mine
    };
    components
        .set_deployment(&service, &hash)
        .await
        .expect("set_deployment");
    components
        .set_deployment(&bystander, &hash)
        .await
        .expect("set_deployment");
    assert_eq!(
        deployed(components.deployments().await.expect("deployments")),
        vec![
            (bystander.clone(), hash.clone()),
            (service.clone(), hash.clone())
        ]
    );
    components
        .set_deployment(&service, &small_hash)
        .await
        .expect("redeploy");
    assert_eq!(
        deployed(components.deployments().await.expect("deployments")),
        vec![
            (bystander.clone(), hash.clone()),
            (service.clone(), small_hash.clone())
        ],
        "a redeploy replaces the type's hash and leaves other types alone"
    );
}

async fn membership(store: ClusterStore, env: &Env) {
    let membership = &store.membership;
    let t0 = now_ms();
    let a = env.silo("a");
    let b = env.silo("b");
    membership.join(&a, t0).await.expect("join a");
    membership.join(&b, t0 + 1).await.expect("join b");
    let member = |silo: &SiloId, status, heartbeat_ms| Member {
        silo: silo.clone(),
        status,
        heartbeat_ms,
    };
    assert_eq!(
        env.members(&store).await,
        vec![
            member(&a, SiloStatus::Active, t0),
            member(&b, SiloStatus::Active, t0 + 1)
        ]
    );

    assert_eq!(
        membership
            .heartbeat(&a, t0 + 1000)
            .await
            .expect("heartbeat"),
        SiloStatus::Active
    );
    assert_eq!(
        env.members(&store).await,
        vec![
            member(&a, SiloStatus::Active, t0 + 1000),
            member(&b, SiloStatus::Active, t0 + 1)
        ],
        "a heartbeat moves only its own silo's time"
    );

    membership
        .set_status(&a, SiloStatus::Left)
        .await
        .expect("set_status");
    membership
        .set_status(&a, SiloStatus::Active)
        .await
        .expect("set_status");
    assert_eq!(
        membership
            .heartbeat(&a, t0 + 2000)
            .await
            .expect("heartbeat"),
        SiloStatus::Left,
        "left is final"
    );
    assert_eq!(
        env.members(&store).await[0],
        member(&a, SiloStatus::Left, t0 + 2000),
        "a leaving silo's heartbeat still moves its time: the others tell a silo still handing over from one that died leaving"
    );

    membership
        .set_status(&b, SiloStatus::Dead)
        .await
        .expect("set_status");
    assert_eq!(
        membership
            .heartbeat(&b, t0 + 3000)
            .await
            .expect("heartbeat"),
        SiloStatus::Dead,
        "a silo declared dead learns it from its heartbeat"
    );
    membership
        .set_status(&b, SiloStatus::Left)
        .await
        .expect("set_status");
    membership
        .set_status(&b, SiloStatus::Active)
        .await
        .expect("set_status");
    let statuses: Vec<_> = env
        .members(&store)
        .await
        .into_iter()
        .map(|m| (m.silo, m.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(a.clone(), SiloStatus::Left), (b.clone(), SiloStatus::Dead)],
        "a heartbeat does not resurrect, and dead is final"
    );

    let ghost = env.silo("ghost");
    assert_eq!(
        membership.heartbeat(&ghost, t0).await.expect("heartbeat"),
        SiloStatus::Dead,
        "a silo that never joined reads as dead"
    );
    assert!(
        !env.members(&store)
            .await
            .iter()
            .any(|m| m.silo == ghost && m.status == SiloStatus::Active),
        "a heartbeat does not join"
    );
    membership
        .set_status(&ghost, SiloStatus::Dead)
        .await
        .expect("set_status");
    assert!(
        !env.members(&store).await.iter().any(|m| m.silo == ghost),
        "declaring a silo that never joined dead does not make it a member"
    );

    // A restarted process on the same address is a new silo.
    let a_again = SiloId {
        address: a.address.clone(),
        generation: a.generation + 1,
    };
    membership
        .join(&a_again, t0 + 4000)
        .await
        .expect("join again");
    let statuses: Vec<_> = env
        .members(&store)
        .await
        .into_iter()
        .map(|m| (m.silo, m.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (a.clone(), SiloStatus::Left),
            (a_again.clone(), SiloStatus::Active),
            (b.clone(), SiloStatus::Dead)
        ]
    );

    let c = env.silo("c");
    membership.join(&c, t0).await.expect("join c");
    membership
        .suspect(&c, &a_again, t0 + 100)
        .await
        .expect("suspect");
    membership.suspect(&c, &b, t0 + 200).await.expect("suspect");
    membership.suspect(&c, &b, t0 + 300).await.expect("suspect");
    // An older suspicion delivered late does not hide the newer one.
    membership.suspect(&c, &b, t0 + 50).await.expect("suspect");
    let suspicions = |since| membership.suspicions(&c, since);
    assert_eq!(
        suspicions(t0).await.expect("suspicions"),
        2,
        "distinct suspecters"
    );
    assert_eq!(suspicions(t0 + 150).await.expect("suspicions"), 1);
    assert_eq!(
        suspicions(t0 + 300).await.expect("suspicions"),
        1,
        "`since` is inclusive"
    );
    assert_eq!(suspicions(t0 + 301).await.expect("suspicions"), 0);
    assert_eq!(
        membership
            .suspicions(&a_again, t0)
            .await
            .expect("suspicions"),
        0,
        "suspicions are per target"
    );
}

async fn placement(store: ClusterStore, env: &Env) {
    let placement = &store.placement;
    let a = env.silo("a");
    let b = env.silo("b");
    let c = env.silo("c");
    let object = env.object("Placed", "x");
    let owner = |object: ObjectKey| async move { placement.owner(&object).await.expect("owner") };

    assert_eq!(owner(object.clone()).await, None);
    assert_eq!(placement.claim(&object, &a).await.expect("claim"), a);
    assert_eq!(owner(object.clone()).await, Some(a.clone()));
    assert_eq!(
        placement.claim(&object, &b).await.expect("claim"),
        a,
        "the first claim wins"
    );
    placement.release(&object, &b).await.expect("release");
    assert_eq!(
        owner(object.clone()).await,
        Some(a.clone()),
        "only the owner releases"
    );
    placement.release(&object, &a).await.expect("release");
    assert_eq!(owner(object.clone()).await, None);
    assert_eq!(
        placement.claim(&object, &b).await.expect("claim"),
        b,
        "a released object can be claimed again"
    );

    assert_eq!(
        placement
            .take_over(&object, &a, &c)
            .await
            .expect("take_over"),
        Some(b.clone()),
        "take_over from a silo that does not own it"
    );
    assert_eq!(owner(object.clone()).await, Some(b.clone()));
    assert_eq!(
        placement
            .take_over(&object, &b, &c)
            .await
            .expect("take_over"),
        Some(c.clone())
    );
    assert_eq!(owner(object.clone()).await, Some(c.clone()));

    let unowned = env.object("Placed", "nobody");
    assert_eq!(
        placement
            .take_over(&unowned, &a, &c)
            .await
            .expect("take_over"),
        None,
        "take_over of an object with no entry"
    );
    assert_eq!(owner(unowned).await, None, "take_over does not claim");

    // Same id, other type: another object.
    let twin = env.object("PlacedTwin", "x");
    assert_eq!(placement.claim(&twin, &a).await.expect("claim"), a);
    assert_eq!(owner(object.clone()).await, Some(c.clone()));

    // The generation is part of the owner: a restarted silo owns nothing of
    // its previous life.
    let a_again = SiloId {
        address: a.address.clone(),
        generation: a.generation + 1,
    };
    assert_eq!(placement.claim(&twin, &a_again).await.expect("claim"), a);
    placement.release(&twin, &a_again).await.expect("release");
    assert_eq!(
        placement
            .take_over(&twin, &a_again, &b)
            .await
            .expect("take_over"),
        Some(a.clone())
    );
    assert_eq!(owner(twin.clone()).await, Some(a.clone()));

    let d = env.silo("d");
    let e = env.silo("e");
    let of_d: Vec<_> = (0..10)
        .map(|i| env.object("Many", &format!("d-{i}")))
        .collect();
    let of_e: Vec<_> = (0..2)
        .map(|i| env.object("Many", &format!("e-{i}")))
        .collect();
    for object in &of_d {
        assert_eq!(placement.claim(object, &d).await.expect("claim"), d);
    }
    for object in &of_e {
        assert_eq!(placement.claim(object, &e).await.expect("claim"), e);
    }
    assert_eq!(placement.release_all(&d).await.expect("release_all"), 10);
    for object in &of_d {
        assert_eq!(owner(object.clone()).await, None, "{object}");
    }
    for object in &of_e {
        assert_eq!(owner(object.clone()).await, Some(e.clone()), "{object}");
    }
    assert_eq!(
        placement.release_all(&d).await.expect("release_all"),
        0,
        "nothing left to release"
    );
}

async fn racing_claims_shared_instance(store: ClusterStore, env: &Env) {
    race_claims(env, vec![store]).await;
}

async fn racing_claims_separate_instances(store: ClusterStore, env: &Env) {
    let mut stores = vec![store];
    for _ in 0..3 {
        stores.push(env.open().await);
    }
    race_claims(env, stores).await;
}

/// Tasks start together and each walks the objects in its own order, so
/// most objects see several claims at once.
async fn race_claims(env: &Env, stores: Vec<ClusterStore>) {
    const TASKS: usize = 16;
    const OBJECTS: usize = 20;
    let objects: Arc<Vec<ObjectKey>> = Arc::new(
        (0..OBJECTS)
            .map(|i| env.object("Raced", &format!("object-{i}")))
            .collect(),
    );
    let silos: Vec<SiloId> = (0..TASKS)
        .map(|i| env.silo(&format!("claimer-{i}")))
        .collect();
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (objects, silo, barrier) = (objects.clone(), silos[i].clone(), barrier.clone());
            tokio::spawn(async move {
                let mut order: Vec<usize> = (0..OBJECTS).map(|j| (j + i) % OBJECTS).collect();
                if i % 2 == 1 {
                    order.reverse();
                }
                let mut owners = vec![None; OBJECTS];
                barrier.wait().await;
                for j in order {
                    let owner = store
                        .placement
                        .claim(&objects[j], &silo)
                        .await
                        .unwrap_or_else(|error| panic!("claim by {silo}: {error}"));
                    owners[j] = Some(owner);
                }
                owners
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("claiming task panicked"));
    }
    for (j, object) in objects.iter().enumerate() {
        let told: HashSet<&SiloId> = results
            .iter()
            .map(|owners| owners[j].as_ref().expect("every task claimed every object"))
            .collect();
        assert_eq!(
            told.len(),
            1,
            "{object}: claimers were told different owners: {told:?}"
        );
        let winner = *told.iter().next().expect("one owner");
        assert!(
            silos.contains(winner),
            "{object}: owner {winner} never claimed it"
        );
        for store in &stores {
            assert_eq!(
                store.placement.owner(object).await.expect("owner").as_ref(),
                Some(winner),
                "{object}: the stored owner differs from the one claimers were told"
            );
        }
    }
}

async fn racing_take_over(store: ClusterStore, env: &Env) {
    const TASKS: usize = 8;
    const OBJECTS: usize = 10;
    let mut stores = vec![store.clone()];
    for _ in 0..3 {
        stores.push(env.open().await);
    }
    let dead = env.silo("dead");
    store.membership.join(&dead, now_ms()).await.expect("join");
    store
        .membership
        .set_status(&dead, SiloStatus::Dead)
        .await
        .expect("set_status");
    let objects: Arc<Vec<ObjectKey>> = Arc::new(
        (0..OBJECTS)
            .map(|i| env.object("Orphan", &format!("object-{i}")))
            .collect(),
    );
    for object in objects.iter() {
        assert_eq!(
            store.placement.claim(object, &dead).await.expect("claim"),
            dead
        );
    }

    let silos: Vec<SiloId> = (0..TASKS).map(|i| env.silo(&format!("heir-{i}"))).collect();
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (objects, dead, silo, barrier) = (
                objects.clone(),
                dead.clone(),
                silos[i].clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let mut order: Vec<usize> = (0..OBJECTS).map(|j| (j + i) % OBJECTS).collect();
                if i % 2 == 1 {
                    order.reverse();
                }
                let mut owners = vec![None; OBJECTS];
                barrier.wait().await;
                for j in order {
                    owners[j] = store
                        .placement
                        .take_over(&objects[j], &dead, &silo)
                        .await
                        .unwrap_or_else(|error| panic!("take_over by {silo}: {error}"));
                }
                owners
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("take_over task panicked"));
    }
    for (j, object) in objects.iter().enumerate() {
        let told: HashSet<Option<&SiloId>> =
            results.iter().map(|owners| owners[j].as_ref()).collect();
        assert_eq!(
            told.len(),
            1,
            "{object}: heirs were told different owners: {told:?}"
        );
        let winner = told
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_else(|| panic!("{object}: the entry vanished during take_over"));
        assert!(
            silos.contains(winner),
            "{object}: owner {winner} is not an heir"
        );
        assert_eq!(
            store.placement.owner(object).await.expect("owner").as_ref(),
            Some(winner)
        );
    }
}

async fn fencing(store: ClusterStore, env: &Env) {
    let a = env.silo("a");
    let b = env.silo("b");
    let a_before = SiloId {
        generation: a.generation - 1,
        ..a.clone()
    };
    let object = env.object("Fenced", "x");
    assert_eq!(store.placement.claim(&object, &a).await.expect("claim"), a);
    store
        .state
        .commit(&object, vec![put("n", b"1")], &a)
        .await
        .expect("the owner commits");
    let committed = map(&[("n", b"1")]);
    assert_eq!(load(&store, &object).await, committed);

    assert_fenced(&store, &object, &b, vec![put("n", b"b")], "another silo").await;
    assert_fenced(
        &store,
        &object,
        &a_before,
        vec![put("n", b"old"), delete("n")],
        "an older generation of the owner's address",
    )
    .await;
    assert_eq!(
        load(&store, &object).await,
        committed,
        "refused commits change nothing"
    );

    // Taken over (the owner was declared dead): the old owner is fenced off
    // and the new one commits.
    assert_eq!(
        store
            .placement
            .take_over(&object, &a, &b)
            .await
            .expect("take_over"),
        Some(b.clone())
    );
    assert_fenced(
        &store,
        &object,
        &a,
        vec![put("n", b"stale")],
        "the previous owner",
    )
    .await;
    store
        .state
        .commit(&object, vec![put("n", b"2")], &b)
        .await
        .expect("the new owner commits");
    assert_eq!(load(&store, &object).await, map(&[("n", b"2")]));

    // Released: nobody owns it, so nobody commits.
    store.placement.release(&object, &b).await.expect("release");
    assert_fenced(
        &store,
        &object,
        &b,
        vec![put("n", b"3")],
        "a released entry",
    )
    .await;
    let unplaced = env.object("Fenced", "never-placed");
    assert_fenced(&store, &unplaced, &a, vec![put("n", b"1")], "no entry").await;
    assert_eq!(load(&store, &object).await, map(&[("n", b"2")]));
    assert_eq!(load(&store, &unplaced).await, HashMap::new());

    // Another store instance (another silo process) sees the same fence.
    let other = env.open().await;
    assert_fenced(
        &other,
        &object,
        &a,
        vec![put("n", b"9")],
        "through another instance",
    )
    .await;
}

async fn fencing_in_one_batch(store: ClusterStore, env: &Env) {
    let me = env.silo("me");
    let them = env.silo("them");
    // Objects 0..30: even ones are mine, odd ones theirs, every fifth unplaced.
    let objects: Vec<(ObjectKey, Option<SiloId>)> = (0..30)
        .map(|i| {
            let owner = match i {
                i if i % 5 == 0 => None,
                i if i % 2 == 0 => Some(me.clone()),
                _ => Some(them.clone()),
            };
            (env.object("Batch", &format!("o{i}")), owner)
        })
        .collect();
    for (object, owner) in &objects {
        if let Some(owner) = owner {
            store.placement.claim(object, owner).await.expect("claim");
        }
    }
    // All at once, so the group-commit writer takes them in one batch.
    let barrier = Arc::new(Barrier::new(objects.len()));
    let tasks: Vec<_> = objects
        .iter()
        .map(|(object, _)| {
            let (store, object, me, barrier) =
                (store.clone(), object.clone(), me.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .state
                    .commit(&object, vec![put("by", b"me")], &me)
                    .await
            })
        })
        .collect();
    for ((object, owner), task) in objects.iter().zip(tasks) {
        let result = task.await.expect("commit task panicked");
        if owner.as_ref() == Some(&me) {
            result.unwrap_or_else(|error| panic!("my commit to {object} failed: {error}"));
            assert_eq!(
                load(&store, object).await,
                map(&[("by", b"me")]),
                "{object}"
            );
        } else {
            assert!(
                matches!(result, Err(StorageError::Fenced { .. })),
                "commit to {object} (owner {owner:?}) should be fenced: {result:?}"
            );
            assert_eq!(load(&store, object).await, HashMap::new(), "{object}");
        }
    }
}

fn record(key: &str, reply: &[u8], stored_at_ms: i64) -> ReplyRecord {
    ReplyRecord {
        key: key.to_string(),
        reply: reply.to_vec(),
        stored_at_ms,
    }
}

async fn stored_reply(store: &ClusterStore, object: &ObjectKey, key: &str) -> Option<Vec<u8>> {
    store
        .state
        .stored_reply(object, key)
        .await
        .unwrap_or_else(|error| panic!("stored_reply({object}, {key}): {error}"))
}

/// Commits `commit` as [`writer`], which claims the object first.
async fn commit_turn(store: &ClusterStore, object: &ObjectKey, commit: Commit) {
    let owner = store
        .placement
        .claim(object, &writer())
        .await
        .unwrap_or_else(|error| panic!("claim {object}: {error}"));
    store
        .state
        .commit_turn(object, commit, &owner)
        .await
        .unwrap_or_else(|error| panic!("commit to {object}: {error}"));
}

async fn reply_records(store: ClusterStore, env: &Env) {
    let object = env.object("Keyed", "alice");
    let other = env.object("Keyed", "bob");
    assert_eq!(
        stored_reply(&store, &object, "k1").await,
        None,
        "never stored"
    );

    // The reply and the writes land together.
    let turn = Commit {
        writes: vec![put("n", b"1")],
        reply: Some(record("k1", b"reply one", now_ms())),
        outbox: Vec::new(),
        reminders: Vec::new(),
        ..Commit::default()
    };
    commit_turn(&store, &object, turn).await;
    assert_eq!(load(&store, &object).await, map(&[("n", b"1")]));
    assert_eq!(
        stored_reply(&store, &object, "k1").await.as_deref(),
        Some(&b"reply one"[..])
    );

    // A keyed turn that wrote nothing still stores its reply; an empty
    // reply is a reply too.
    let turn = Commit {
        writes: Vec::new(),
        reply: Some(record("k2", b"", now_ms())),
        outbox: Vec::new(),
        reminders: Vec::new(),
        ..Commit::default()
    };
    commit_turn(&store, &object, turn).await;
    assert_eq!(stored_reply(&store, &object, "k2").await, Some(Vec::new()));
    assert_eq!(load(&store, &object).await, map(&[("n", b"1")]));

    // Keys are per object, and plain commits store no reply.
    assert_eq!(stored_reply(&store, &other, "k1").await, None);
    commit(&store, &other, vec![put("n", b"7")]).await;
    assert_eq!(stored_reply(&store, &other, "k1").await, None);
    assert_eq!(stored_reply(&store, &object, "k3").await, None);

    // Keys with separators and non-ASCII text stay apart, and another
    // store instance (another silo) reads the same records.
    let odd = env.object("Keyed", "x:y");
    let keys = ["a:b", "a", "é/ü\n", "derived:00ff"];
    for (i, key) in keys.iter().enumerate() {
        let turn = Commit {
            writes: Vec::new(),
            reply: Some(record(key, format!("r{i}").as_bytes(), now_ms())),
            outbox: Vec::new(),
            reminders: Vec::new(),
            ..Commit::default()
        };
        commit_turn(&store, &odd, turn).await;
    }
    let again = env.open().await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            stored_reply(&again, &odd, key).await,
            Some(format!("r{i}").into_bytes()),
            "{key}"
        );
    }
}

async fn reply_records_in_one_batch(store: ClusterStore, env: &Env) {
    let me = env.silo("me");
    let them = env.silo("them");
    let objects: Vec<(ObjectKey, SiloId)> = (0..20)
        .map(|i| {
            let owner = if i % 3 == 0 { them.clone() } else { me.clone() };
            (env.object("KeyedBatch", &format!("o{i}")), owner)
        })
        .collect();
    for (object, owner) in &objects {
        store.placement.claim(object, owner).await.expect("claim");
    }
    // All at once, so the group-commit writer takes them in one batch; half
    // of mine write state, the other half only their reply.
    let barrier = Arc::new(Barrier::new(objects.len()));
    let tasks: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, (object, _))| {
            let (store, object, me, barrier) =
                (store.clone(), object.clone(), me.clone(), barrier.clone());
            tokio::spawn(async move {
                let writes = if i % 2 == 0 {
                    vec![put("by", b"me")]
                } else {
                    Vec::new()
                };
                let turn = Commit {
                    writes,
                    reply: Some(record("key", format!("reply {i}").as_bytes(), now_ms())),
                    outbox: Vec::new(),
                    reminders: Vec::new(),
                    ..Commit::default()
                };
                barrier.wait().await;
                store.state.commit_turn(&object, turn, &me).await
            })
        })
        .collect();
    for (i, ((object, owner), task)) in objects.iter().zip(tasks).enumerate() {
        let result = task.await.expect("commit task panicked");
        let reply = stored_reply(&store, object, "key").await;
        if *owner == me {
            result.unwrap_or_else(|error| panic!("my commit to {object} failed: {error}"));
            assert_eq!(reply, Some(format!("reply {i}").into_bytes()), "{object}");
        } else {
            assert!(
                matches!(result, Err(StorageError::Fenced { .. })),
                "commit to {object} should be fenced: {result:?}"
            );
            assert_eq!(reply, None, "a refused commit stores no reply: {object}");
            assert_eq!(load(&store, object).await, HashMap::new(), "{object}");
        }
    }
}

async fn fenced_commit_stores_no_reply(store: ClusterStore, env: &Env) {
    let a = env.silo("a");
    let b = env.silo("b");
    let object = env.object("KeyedFence", "x");
    assert_eq!(store.placement.claim(&object, &a).await.expect("claim"), a);
    for (writes, why) in [
        (vec![put("n", b"b")], "with writes"),
        (Vec::new(), "with no writes"),
    ] {
        let turn = Commit {
            writes,
            reply: Some(record("k", b"b's reply", now_ms())),
            outbox: Vec::new(),
            reminders: Vec::new(),
            ..Commit::default()
        };
        match store.state.commit_turn(&object, turn, &b).await {
            Err(StorageError::Fenced { .. }) => {}
            other => panic!("a commit by a non-owner ({why}): expected fenced, got {other:?}"),
        }
        assert_eq!(stored_reply(&store, &object, "k").await, None, "{why}");
    }
    let unplaced = env.object("KeyedFence", "never-placed");
    let turn = Commit {
        writes: Vec::new(),
        reply: Some(record("k", b"r", now_ms())),
        outbox: Vec::new(),
        reminders: Vec::new(),
        ..Commit::default()
    };
    assert!(matches!(
        store.state.commit_turn(&unplaced, turn, &a).await,
        Err(StorageError::Fenced { .. })
    ));
    assert_eq!(stored_reply(&store, &unplaced, "k").await, None);
    assert_eq!(load(&store, &object).await, HashMap::new());
}

async fn reply_sweep(store: ClusterStore, env: &Env) {
    let object = env.object("Swept", "x");
    let day_ms = 24 * 60 * 60 * 1000;
    let long_ago = now_ms() - 10 * day_ms;
    let old_keys = ["old-1", "old-2", "old-3"];
    for key in old_keys {
        let turn = Commit {
            writes: Vec::new(),
            reply: Some(record(key, b"old", long_ago)),
            outbox: Vec::new(),
            reminders: Vec::new(),
            ..Commit::default()
        };
        commit_turn(&store, &object, turn).await;
    }
    let turn = Commit {
        writes: vec![put("n", b"1")],
        reply: Some(record("new", b"new", now_ms())),
        outbox: Vec::new(),
        reminders: Vec::new(),
        ..Commit::default()
    };
    commit_turn(&store, &object, turn).await;

    // Other tests' expired records may be swept too (the sweep is global),
    // but never more than the limit per pass, and never a young one.
    let cutoff = now_ms() - day_ms;
    let mut passes = 0;
    loop {
        let deleted = store
            .state
            .sweep_replies(cutoff, 2)
            .await
            .unwrap_or_else(|error| panic!("sweep: {error}"));
        assert!(
            deleted <= 2,
            "one pass deleted {deleted} records, over its limit of 2"
        );
        passes += 1;
        if deleted < 2 {
            break;
        }
        assert!(passes < 10_000, "the sweep never ends");
    }
    for key in old_keys {
        assert_eq!(
            stored_reply(&store, &object, key).await,
            None,
            "{key} expired"
        );
    }
    assert_eq!(
        stored_reply(&store, &object, "new").await.as_deref(),
        Some(&b"new"[..]),
        "a young record stays"
    );
    assert_eq!(
        load(&store, &object).await,
        map(&[("n", b"1")]),
        "state stays"
    );
}

fn outgoing(seq: i64, receiver: &ObjectKey, payload: &[u8]) -> Outgoing {
    Outgoing {
        seq,
        receiver: receiver.clone(),
        message_type: "append".into(),
        payload: payload.to_vec(),
        created_at_ms: 1_000 + seq,
    }
}

/// A turn's messages are stored with its writes, by the owner only; they
/// leave the outbox when delivered or buried, and the next seq outlives
/// them.
async fn outbox(store: ClusterStore, env: &Env) {
    let a = env.silo("a");
    let b = env.stranger();
    let sender = env.object("Sender", "s:1");
    let receiver = env.object("Receiver", "r");
    let state = &store.state;
    assert_eq!(store.placement.claim(&sender, &a).await.expect("claim"), a);
    let empty = state.pending_outbox(&sender).await.unwrap();
    assert_eq!((empty.next_seq, empty.messages.len()), (0, 0));

    let sent = vec![
        outgoing(0, &receiver, b"zero"),
        outgoing(1, &receiver, b"one"),
    ];
    let turn = Commit {
        writes: vec![put("n", b"1")],
        reply: None,
        outbox: sent.clone(),
        reminders: Vec::new(),
        ..Commit::default()
    };
    state.commit_turn(&sender, turn, &a).await.unwrap();
    let pending = state.pending_outbox(&sender).await.unwrap();
    assert_eq!(pending.messages, sent);
    assert_eq!(pending.next_seq, 2);
    let senders = state.senders_with_pending(100_000).await.unwrap();
    assert!(senders.contains(&sender), "{senders:?}");

    // A commit by a silo that does not own the sender stores no message.
    let stale = Commit {
        writes: Vec::new(),
        reply: None,
        outbox: vec![outgoing(2, &receiver, b"stale")],
        reminders: Vec::new(),
        ..Commit::default()
    };
    assert!(matches!(
        state.commit_turn(&sender, stale, &b).await,
        Err(StorageError::Fenced { .. })
    ));
    assert_eq!(state.pending_outbox(&sender).await.unwrap(), pending);

    // Delivered: removed (twice is no error).
    state.remove_outgoing(&sender, 0).await.unwrap();
    state.remove_outgoing(&sender, 0).await.unwrap();
    let pending = state.pending_outbox(&sender).await.unwrap();
    assert_eq!(pending.messages, vec![sent[1].clone()]);

    // Refused: moved to the dead letters once, however often it is buried.
    let letter = DeadLetter {
        sender: sender.clone(),
        message: sent[1].clone(),
        reason: "negative-item: no".into(),
        failed_at_ms: now_ms(),
    };
    state.bury(&letter).await.unwrap();
    state.bury(&letter).await.unwrap();
    let after = state.pending_outbox(&sender).await.unwrap();
    assert!(after.messages.is_empty());
    assert_eq!(after.next_seq, 2, "seqs are never reused");
    let senders = state.senders_with_pending(100_000).await.unwrap();
    assert!(!senders.contains(&sender), "{senders:?}");
    let letters = state
        .dead_letters(Some(&receiver.service_type), 100)
        .await
        .unwrap();
    assert_eq!(letters, vec![letter]);
    let other_type = env.object("Nobody", "x");
    let none = state
        .dead_letters(Some(&other_type.service_type), 100)
        .await
        .unwrap();
    assert!(none.is_empty());
    let all = state.dead_letters(None, 100_000).await.unwrap();
    assert!(all.iter().any(|letter| letter.sender == sender));

    // The next turn's messages carry on from the stored next seq.
    let turn = Commit {
        writes: Vec::new(),
        reply: None,
        outbox: vec![outgoing(2, &receiver, b"two")],
        reminders: Vec::new(),
        ..Commit::default()
    };
    state.commit_turn(&sender, turn, &a).await.unwrap();
    let pending = state.pending_outbox(&sender).await.unwrap();
    assert_eq!(pending.next_seq, 3);
    assert_eq!(pending.messages.len(), 1);
}

/// The embedded store commits only for the process that opened its file
/// last, whatever placement says (a lone silo has none): an earlier
/// process is refused its writes, reply and messages, also in a batch
/// shared with the holder's commits.
async fn lease_fencing(store: ClusterStore, env: &Env) {
    let first = env.silo("first");
    let object = env.object("Leased", "a");
    let put_n = |value: &[u8]| vec![put("n", value)];
    store
        .state
        .commit(&object, put_n(b"1"), &first)
        .await
        .expect("the lease holder commits");
    assert_fenced(
        &store,
        &object,
        &env.stranger(),
        put_n(b"x"),
        "an earlier process",
    )
    .await;

    // A second process opens the file: from now on only it commits, even
    // through the first process's store instance.
    let second = SiloId {
        generation: first.generation + 1,
        ..first.clone()
    };
    let other = env.open_embedded(second.generation).await;
    assert_fenced(
        &store,
        &object,
        &first,
        put_n(b"stale"),
        "the lease was taken",
    )
    .await;
    let stale = Commit {
        writes: put_n(b"stale"),
        reply: Some(ReplyRecord {
            key: "k".into(),
            reply: b"r".to_vec(),
            stored_at_ms: now_ms(),
        }),
        outbox: vec![outgoing(0, &env.object("Leased", "b"), b"m")],
        reminders: Vec::new(),
        ..Commit::default()
    };
    assert!(matches!(
        store.state.commit_turn(&object, stale, &first).await,
        Err(StorageError::Fenced { .. })
    ));
    assert_eq!(store.state.stored_reply(&object, "k").await.unwrap(), None);
    assert!(
        store
            .state
            .pending_outbox(&object)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    other
        .state
        .commit(&object, put_n(b"2"), &second)
        .await
        .expect("the new holder commits");
    assert_eq!(load(&store, &object).await, map(&[("n", b"2")]));

    // In one group-commit batch a refused commit fails only itself.
    let objects: Vec<ObjectKey> = (0..20)
        .map(|i| env.object("Leased", &format!("o{i}")))
        .collect();
    let tasks: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, object)| {
            let silo = if i % 4 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let (other, object) = (other.clone(), object.clone());
            tokio::spawn(async move {
                let result = other
                    .state
                    .commit(&object, vec![put("v", b"1")], &silo)
                    .await;
                (silo, result)
            })
        })
        .collect();
    for (task, object) in tasks.into_iter().zip(&objects) {
        let (silo, result) = task.await.expect("commit task panicked");
        let state = load(&other, object).await;
        if silo == second {
            result.unwrap_or_else(|error| panic!("{object}: {error}"));
            assert_eq!(state, map(&[("v", b"1")]), "{object}");
        } else {
            assert!(
                matches!(result, Err(StorageError::Fenced { .. })),
                "{result:?}"
            );
            assert!(state.is_empty(), "{object}");
        }
    }
}
