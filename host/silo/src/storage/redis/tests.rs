//! Tests of the Redis backend against a real server (`RIO_TEST_REDIS_URL`,
//! by default `redis://127.0.0.1:6379/0`).
//!
//! Every test names its objects and silos with a tag of its own, so tests
//! (and the shared conformance suite) can run at once on one database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

fn server_url() -> String {
    std::env::var("RIO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// The store, or `None` (after saying why) when no server runs outside CI;
/// in CI a missing server is a failure.
async fn store() -> Option<RedisStore> {
    let url = server_url();
    match RedisStore::open(&url).await {
        Ok(store) => Some(store),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: no Redis at {}: {error}", redact(&url));
            None
        }
        Err(error) => panic!("Redis is required in CI: {error}"),
    }
}

/// Unique across tests and runs: process id, clock and a counter.
fn tag(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!(
        "t{}-{nanos}-{}-{test}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn silo(tag: &str, name: &str) -> SiloId {
    SiloId {
        address: format!("{name}.{tag}:7000"),
        generation: 1_700_000_000_000,
    }
}

/// Claims `object` for this test's writer silo, which may then commit to it.
async fn writer_of(store: &RedisStore, tag: &str, object: &ObjectKey) -> SiloId {
    let writer = silo(tag, "writer");
    assert_eq!(store.claim(object, &writer).await.unwrap(), writer);
    writer
}

fn object(tag: &str, id: &str) -> ObjectKey {
    ObjectKey::new(&format!("Type-{tag}"), id)
}

fn value(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

fn map(entries: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(key, value)| (key.to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// Removes every key and member record carrying `tag`.
async fn forget(store: &RedisStore, tag: &str) {
    let mut connection = store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("rio:*{tag}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut connection)
            .await
            .expect("DEL");
    }
    let members: Vec<String> = redis::cmd("HKEYS")
        .arg(MEMBERS)
        .query_async(&mut connection)
        .await
        .expect("HKEYS");
    let ours: Vec<&String> = members.iter().filter(|field| field.contains(tag)).collect();
    if !ours.is_empty() {
        redis::cmd("HDEL")
            .arg(MEMBERS)
            .arg(&ours)
            .query_async::<()>(&mut connection)
            .await
            .expect("HDEL");
    }
}

async fn our_members(store: &RedisStore, tag: &str) -> Vec<Member> {
    store
        .members()
        .await
        .unwrap()
        .into_iter()
        .filter(|member| member.silo.address.contains(tag))
        .collect()
}

#[tokio::test]
async fn load_sees_the_last_commit() {
    let Some(store) = store().await else { return };
    let tag = tag("load");
    let counter = object(&tag, "alice");
    assert!(store.load(&counter).await.unwrap().is_empty());
    let writer = writer_of(&store, &tag, &counter).await;

    store
        .commit(
            &counter,
            vec![("a".into(), value("1")), ("b".into(), value("2"))],
            &writer,
        )
        .await
        .unwrap();
    assert_eq!(
        store.load(&counter).await.unwrap(),
        map(&[("a", "1"), ("b", "2")])
    );

    // Within one commit the last write of a key wins.
    store
        .commit(
            &counter,
            vec![
                ("a".into(), None),
                ("a".into(), value("3")),
                ("b".into(), value("4")),
                ("b".into(), None),
            ],
            &writer,
        )
        .await
        .unwrap();
    assert_eq!(store.load(&counter).await.unwrap(), map(&[("a", "3")]));

    store.commit(&counter, Vec::new(), &writer).await.unwrap();
    assert_eq!(store.load(&counter).await.unwrap(), map(&[("a", "3")]));

    store
        .commit(&counter, vec![("a".into(), None)], &writer)
        .await
        .unwrap();
    assert!(store.load(&counter).await.unwrap().is_empty());
    forget(&store, &tag).await;
}

#[tokio::test]
async fn keys_with_colons_do_not_collide() {
    let Some(store) = store().await else { return };
    let tag = tag("colons");
    let left = ObjectKey::new(&format!("{tag}:a:b"), "c");
    let right = ObjectKey::new(&format!("{tag}:a"), "b:c");
    let (a, b) = (silo(&tag, "a"), silo(&tag, "b"));
    assert_eq!(store.claim(&left, &a).await.unwrap(), a);
    assert_eq!(store.claim(&right, &b).await.unwrap(), b);
    store
        .commit(&left, vec![("k".into(), value("left"))], &a)
        .await
        .unwrap();
    store
        .commit(&right, vec![("k".into(), value("right"))], &b)
        .await
        .unwrap();
    assert_eq!(store.load(&left).await.unwrap(), map(&[("k", "left")]));
    assert_eq!(store.load(&right).await.unwrap(), map(&[("k", "right")]));
    forget(&store, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_is_seen_whole_or_not_at_all() {
    let Some(store) = store().await else { return };
    let tag = tag("atomic");
    let account = object(&tag, "account");
    // Two shapes, each a commit of writes and deletes away from the other:
    // a reader seeing anything else saw half a commit.
    let first = map(&[("x", "1"), ("y", "1")]);
    let second = map(&[("z", "2")]);
    let to_first = vec![
        ("x".into(), value("1")),
        ("y".into(), value("1")),
        ("z".into(), None),
    ];
    let to_second = vec![
        ("x".into(), None),
        ("y".into(), None),
        ("z".into(), value("2")),
    ];
    let owner = writer_of(&store, &tag, &account).await;
    store
        .commit(&account, to_first.clone(), &owner)
        .await
        .unwrap();

    let writer = {
        let (store, account, owner) = (store.clone(), account.clone(), owner.clone());
        tokio::spawn(async move {
            for round in 0..300 {
                let writes = if round % 2 == 0 {
                    &to_second
                } else {
                    &to_first
                };
                store
                    .commit(&account, writes.clone(), &owner)
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let seen = store.load(&account).await.unwrap();
        assert!(seen == first || seen == second, "half a commit: {seen:?}");
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    assert_eq!(store.load(&account).await.unwrap(), first);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn a_commit_lands_only_while_its_silo_owns_the_object() {
    let Some(store) = store().await else { return };
    let tag = tag("fence");
    let counter = object(&tag, "c");
    let (a, b) = (silo(&tag, "a"), silo(&tag, "b"));
    // More fields than one Lua unpack takes, so the script's slicing runs.
    let many: Vec<StateWrite> = (0..2500)
        .map(|i| (format!("f{i}"), value(&i.to_string())))
        .collect();
    let refused = store.commit(&counter, many.clone(), &a).await;
    assert!(
        matches!(refused, Err(StorageError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(
        store.load(&counter).await.unwrap().is_empty(),
        "no entry, no write"
    );

    store.claim(&counter, &a).await.unwrap();
    store.commit(&counter, many, &a).await.unwrap();
    assert_eq!(store.load(&counter).await.unwrap().len(), 2500);
    let deletes: Vec<StateWrite> = (0..2400).map(|i| (format!("f{i}"), None)).collect();
    let refused = store.commit(&counter, deletes.clone(), &b).await;
    assert!(
        matches!(refused, Err(StorageError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(store.load(&counter).await.unwrap().len(), 2500);
    store.commit(&counter, deletes, &a).await.unwrap();
    assert_eq!(store.load(&counter).await.unwrap().len(), 100);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn components_and_deployments() {
    let Some(store) = store().await else { return };
    let tag = tag("components");
    let hash = format!("sha256-{tag}");
    let service = format!("Service-{tag}");
    assert_eq!(store.component(&hash).await.unwrap(), None);
    assert!(store.set_deployment(&service, &hash).await.is_err());

    store.put_component(&hash, b"first").await.unwrap();
    // Content-addressed: a second put of the same hash changes nothing.
    store.put_component(&hash, b"second").await.unwrap();
    assert_eq!(
        store.component(&hash).await.unwrap(),
        Some(b"first".to_vec())
    );

    store.set_deployment(&service, &hash).await.unwrap();
    let other = format!("sha256-{tag}-v2");
    store.put_component(&other, b"v2").await.unwrap();
    store.set_deployment(&service, &other).await.unwrap();
    let deployed: Vec<_> = store
        .deployments()
        .await
        .unwrap()
        .into_iter()
        .filter(|(service_type, _)| *service_type == service)
        .collect();
    assert_eq!(deployed, vec![(service.clone(), other)]);

    let mut connection = store.connection();
    redis::cmd("HDEL")
        .arg(DEPLOYMENTS)
        .arg(&service)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    forget(&store, &tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_have_exactly_one_winner() {
    let Some(store) = store().await else { return };
    let tag = tag("race");
    let contested = object(&tag, "contested");
    let url = server_url();
    let mut racers = Vec::new();
    for index in 0..20 {
        let (url, contested) = (url.clone(), contested.clone());
        let me = silo(&tag, &format!("silo{index}"));
        racers.push(tokio::spawn(async move {
            // A store per racer: separate connections, as separate silos have.
            let store = RedisStore::open(&url).await.unwrap();
            let owner = store.claim(&contested, &me).await.unwrap();
            (me, owner)
        }));
    }
    let mut owners = HashSet::new();
    let mut winners = 0;
    for racer in racers {
        let (me, owner) = racer.await.unwrap();
        winners += usize::from(owner == me);
        owners.insert(owner);
    }
    assert_eq!(winners, 1);
    assert_eq!(owners.len(), 1, "racers disagree: {owners:?}");
    let owner = owners.into_iter().next();
    assert_eq!(store.owner(&contested).await.unwrap(), owner);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn take_over_only_from_the_stated_owner() {
    let Some(store) = store().await else { return };
    let tag = tag("takeover");
    let (a, b, c) = (silo(&tag, "a"), silo(&tag, "b"), silo(&tag, "c"));
    let moved = object(&tag, "moved");
    assert_eq!(store.claim(&moved, &a).await.unwrap(), a);
    assert_eq!(store.claim(&moved, &b).await.unwrap(), a);

    assert_eq!(
        store.take_over(&moved, &b, &c).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.owner(&moved).await.unwrap(), Some(a.clone()));

    assert_eq!(
        store.take_over(&moved, &a, &c).await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(store.owner(&moved).await.unwrap(), Some(c.clone()));
    // The entry moved with its owner: a's departure no longer touches it.
    assert_eq!(store.release_all(&a).await.unwrap(), 0);
    assert_eq!(store.owner(&moved).await.unwrap(), Some(c.clone()));

    let vanished = object(&tag, "vanished");
    assert_eq!(store.take_over(&vanished, &a, &c).await.unwrap(), None);
    assert_eq!(store.owner(&vanished).await.unwrap(), None);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn release_only_by_the_owner() {
    let Some(store) = store().await else { return };
    let tag = tag("release");
    let (a, b) = (silo(&tag, "a"), silo(&tag, "b"));
    let held = object(&tag, "held");
    store.release(&held, &a).await.unwrap();
    assert_eq!(store.claim(&held, &a).await.unwrap(), a);

    store.release(&held, &b).await.unwrap();
    assert_eq!(store.owner(&held).await.unwrap(), Some(a.clone()));

    store.release(&held, &a).await.unwrap();
    assert_eq!(store.owner(&held).await.unwrap(), None);
    assert_eq!(store.claim(&held, &b).await.unwrap(), b);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn release_all_drops_only_what_the_silo_still_owns() {
    let Some(store) = store().await else { return };
    let tag = tag("releaseall");
    let (dead, alive) = (silo(&tag, "dead"), silo(&tag, "alive"));
    // More than one script run's worth.
    let count = 2 * RELEASE_BATCH + 7;
    for index in 0..count {
        let owned = object(&tag, &format!("o{index}"));
        assert_eq!(store.claim(&owned, &dead).await.unwrap(), dead);
    }
    let theirs = object(&tag, "theirs");
    store.claim(&theirs, &alive).await.unwrap();
    let taken = object(&tag, "o0");
    store.take_over(&taken, &dead, &alive).await.unwrap();
    let released = object(&tag, "o1");
    store.release(&released, &dead).await.unwrap();

    assert_eq!(store.release_all(&dead).await.unwrap(), count as u64 - 2);
    for index in 2..count {
        let owned = object(&tag, &format!("o{index}"));
        assert_eq!(store.owner(&owned).await.unwrap(), None, "{owned}");
    }
    assert_eq!(store.owner(&taken).await.unwrap(), Some(alive.clone()));
    assert_eq!(store.owner(&theirs).await.unwrap(), Some(alive.clone()));
    assert_eq!(store.release_all(&dead).await.unwrap(), 0);
    assert_eq!(store.release_all(&alive).await.unwrap(), 2);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn status_never_moves_back() {
    let Some(store) = store().await else { return };
    let tag = tag("status");
    let (dead, left, stranger) = (
        silo(&tag, "dead"),
        silo(&tag, "left"),
        silo(&tag, "stranger"),
    );
    store.join(&dead, 100).await.unwrap();
    store.join(&left, 100).await.unwrap();
    assert_eq!(
        store.heartbeat(&dead, 150).await.unwrap(),
        SiloStatus::Active
    );

    store.set_status(&dead, SiloStatus::Dead).await.unwrap();
    store.set_status(&dead, SiloStatus::Left).await.unwrap();
    store.set_status(&dead, SiloStatus::Active).await.unwrap();
    store.join(&dead, 200).await.unwrap();

    store.set_status(&left, SiloStatus::Left).await.unwrap();
    store.set_status(&left, SiloStatus::Dead).await.unwrap();
    store.set_status(&left, SiloStatus::Active).await.unwrap();

    // Declaring an unknown silo dead does not make it a member.
    store.set_status(&stranger, SiloStatus::Dead).await.unwrap();

    let members = our_members(&store, &tag).await;
    let status: HashMap<_, _> = members.iter().map(|m| (m.silo.clone(), m.status)).collect();
    assert_eq!(status.len(), 2, "{members:?}");
    assert_eq!(status[&dead], SiloStatus::Dead);
    assert_eq!(status[&left], SiloStatus::Left);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn heartbeat_reports_the_stored_status() {
    let Some(store) = store().await else { return };
    let tag = tag("heartbeat");
    let (alive, dead, unknown) = (
        silo(&tag, "alive"),
        silo(&tag, "dead"),
        silo(&tag, "unknown"),
    );
    store.join(&alive, 1_000).await.unwrap();
    store.join(&dead, 1_000).await.unwrap();
    assert_eq!(
        store.heartbeat(&alive, 2_000).await.unwrap(),
        SiloStatus::Active
    );

    store.set_status(&dead, SiloStatus::Dead).await.unwrap();
    assert_eq!(
        store.heartbeat(&dead, 3_000).await.unwrap(),
        SiloStatus::Dead
    );
    assert_eq!(
        store.heartbeat(&dead, 4_000).await.unwrap(),
        SiloStatus::Dead
    );

    assert_eq!(
        store.heartbeat(&unknown, 3_000).await.unwrap(),
        SiloStatus::Dead
    );

    let members = our_members(&store, &tag).await;
    let expected = vec![
        Member {
            silo: alive.clone(),
            status: SiloStatus::Active,
            heartbeat_ms: 2_000,
        },
        Member {
            silo: dead.clone(),
            status: SiloStatus::Dead,
            heartbeat_ms: 4_000,
        },
    ];
    assert_eq!(members, expected);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn suspicions_count_distinct_suspectors_since_a_time() {
    let Some(store) = store().await else { return };
    let tag = tag("suspicions");
    let (target, b, c, d) = (
        silo(&tag, "target"),
        silo(&tag, "b"),
        silo(&tag, "c"),
        silo(&tag, "d"),
    );
    assert_eq!(store.suspicions(&target, 0).await.unwrap(), 0);
    store.suspect(&target, &b, 100).await.unwrap();
    store.suspect(&target, &c, 200).await.unwrap();
    store.suspect(&target, &b, 300).await.unwrap();
    // Late delivery of an older suspicion does not hide the newer one.
    store.suspect(&target, &b, 50).await.unwrap();

    assert_eq!(store.suspicions(&target, 0).await.unwrap(), 2);
    assert_eq!(store.suspicions(&target, 200).await.unwrap(), 2);
    assert_eq!(store.suspicions(&target, 201).await.unwrap(), 1);
    assert_eq!(store.suspicions(&target, 300).await.unwrap(), 1);
    assert_eq!(store.suspicions(&target, 301).await.unwrap(), 0);
    // Suspicions of one silo say nothing of another.
    assert_eq!(store.suspicions(&d, 0).await.unwrap(), 0);
    forget(&store, &tag).await;
}

#[tokio::test]
async fn open_cluster_serves_every_concern() {
    if store().await.is_none() {
        return;
    }
    let tag = tag("cluster");
    let cluster = ClusterStore::open(&server_url(), 1).await.unwrap();
    let counter = object(&tag, "c");
    let me = silo(&tag, "me");
    cluster.membership.join(&me, 5).await.unwrap();
    assert_eq!(cluster.placement.claim(&counter, &me).await.unwrap(), me);
    cluster
        .state
        .commit(&counter, vec![("n".into(), value("1"))], &me)
        .await
        .unwrap();
    assert_eq!(
        cluster.state.load(&counter).await.unwrap(),
        map(&[("n", "1")])
    );
    let store = RedisStore::open(&server_url()).await.unwrap();
    forget(&store, &tag).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = "redis://rio:hunter2@127.0.0.1:1/0";
    let Err(error) = RedisStore::open(url).await else {
        panic!("connected to nothing");
    };
    let message = error.to_string();
    assert!(message.contains("cannot reach Redis"), "{message}");
    assert!(
        message.contains("redis://rio:***@127.0.0.1:1/0"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_malformed_url_is_a_bad_url() {
    let Err(error) = RedisStore::open("redis://:hunter2@127.0.0.1:notaport/0").await else {
        panic!("opened a malformed URL");
    };
    assert!(matches!(error, StorageError::BadUrl { .. }), "{error:?}");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn silo_ids_round_trip_through_their_text() {
    let silo = SiloId {
        address: "[::1]#odd:7000".into(),
        generation: -3,
    };
    assert_eq!(parse_silo(&silo.to_string()).unwrap(), silo);
    assert!(parse_silo("no-generation").is_err());
    assert!(parse_silo("host:1#x").is_err());
    assert!(parse_member("host:1#5", "active").is_err());
    assert_eq!(
        parse_member("host:1#5", "left:42").unwrap().status,
        SiloStatus::Left
    );
}
