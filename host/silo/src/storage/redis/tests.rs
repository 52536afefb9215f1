//! What only the Redis backend needs tested, against a real server
//! (`RIO_TEST_REDIS_URL`, by default `redis://127.0.0.1:6379/0`): its Lua
//! scripts' slicing of large commits and releases, its URL errors and its
//! text encoding of silo ids. What every backend promises is in the
//! conformance suite (`host/silo/tests/conformance.rs`).
//!
//! Every test names its objects and silos with a tag of its own, so tests
//! (and the shared conformance suite) can run at once on one database.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::membership::{MEMBERS, parse_member};
use super::placement::RELEASE_BATCH;
use super::*;
use crate::storage::{PlacementStore, SiloStatus, StateStore, StateWrite};

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
            // Straight to stderr: the harness hides what `eprintln!` prints in a
            // test that passes, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipping: no Redis at {}: {error}",
                redact(&url)
            );
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

fn object(tag: &str, id: &str) -> ObjectKey {
    ObjectKey::new(&format!("Type-{tag}"), id)
}

fn value(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
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
