//! Pub/sub to objects with real `rio silo` processes: a subscription is
//! made in its turn's commit (a failed turn subscribes nothing) and lasts
//! across restarts; every later event of its topic takes effect once in
//! each subscriber, in publish order, and none of another topic's; a
//! subscriber whose handler fails holds up nobody; and on three silos,
//! forty subscribers see exactly the events their publisher committed,
//! once each and in order, across a `kill -9` of the publisher's silo and
//! then of another silo holding subscribers (SQLite file, PostgreSQL,
//! Redis); and with five publishers on one topic at once and two objects
//! answering each other's events, through a silo frozen with SIGSTOP past
//! its declared death, each publisher's events take effect once and in
//! order in every subscriber.

use crate::common;

use std::time::{Duration, Instant};

use common::SiloProcess;
use common::guests::build;
use common::stores::{PostgresDatabase, RedisDatabase, SqliteFile};
use rio_client::{Calls, Client, ClientError};
use rio_protocol::{CallRequest, Request, Response};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

async fn call(client: &Client, id: &str, message: &str, body: Value) -> Result<Value, ClientError> {
    client.call::<_, Value>("Counter", id, message, &body).await
}

async fn heard(client: &Client, id: &str) -> Vec<u64> {
    let listed = call(client, id, "heard-list", json!({})).await.unwrap();
    serde_json::from_value(listed["heard"].clone()).unwrap()
}

/// What `id` has heard once it heard `count` events (or after 30 s).
async fn heard_until(client: &Client, id: &str, count: usize) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let seen = match call(client, id, "heard-list", json!({})).await {
            Ok(listed) => serde_json::from_value(listed["heard"].clone()).unwrap(),
            Err(_) => Vec::new(),
        };
        if seen.len() >= count || started.elapsed() > Duration::from_secs(30) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(client: &Client, id: &str, topic: &str, n: u64) -> Result<Value, ClientError> {
    call(client, id, "publish", json!({"topic": topic, "n": n})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_subscribers_get_each_later_event_once_in_order_and_durably() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();

    // Published before anyone subscribes: reaches nobody.
    publish(&client, "p", "news", 1).await.unwrap();
    // A failed turn subscribes nothing.
    let failed = call(
        &client,
        "s1",
        "subscribe",
        json!({"topic": "news", "fail": true}),
    )
    .await;
    assert!(failed.is_err());
    let listed = call(&client, "s1", "subscriptions", json!({}))
        .await
        .unwrap();
    assert_eq!(listed["subscriptions"], json!([]));
    // A bad topic or message type is refused.
    for bad in [
        json!({"topic": ""}),
        json!({"topic": "rio:x"}),
        json!({"topic": "t", "as": "rio:wake-outbox"}),
    ] {
        assert!(
            call(&client, "s9", "subscribe", bad.clone()).await.is_err(),
            "{bad}"
        );
    }

    for id in ["s1", "s2"] {
        call(&client, id, "subscribe", json!({"topic": "news"}))
            .await
            .unwrap();
    }
    call(&client, "s3", "subscribe", json!({"topic": "other"}))
        .await
        .unwrap();
    // One whose handler does not exist: its deliveries fail and count as
    // delivered, and the others' go on.
    call(
        &client,
        "s4",
        "subscribe",
        json!({"topic": "news", "as": "nope"}),
    )
    .await
    .unwrap();
    let listed = call(&client, "s1", "subscriptions", json!({}))
        .await
        .unwrap();
    assert_eq!(listed["subscriptions"], json!([["news", "heard"]]));

    // Events 2..=6; a failed turn's three never leave; then 7 and 8.
    publish(&client, "p", "news", 5).await.unwrap();
    let failed = call(
        &client,
        "p",
        "publish",
        json!({"topic": "news", "n": 3, "fail": true}),
    )
    .await;
    assert!(failed.is_err());
    publish(&client, "p", "news", 2).await.unwrap();
    for id in ["s1", "s2"] {
        assert_eq!(
            heard_until(&client, id, 7).await,
            (2..=8).collect::<Vec<u64>>(),
            "{id}"
        );
    }
    assert!(
        heard(&client, "s3").await.is_empty(),
        "another topic's subscriber"
    );

    // Unsubscribed, s2 hears no more.
    call(&client, "s2", "unsubscribe", json!({"topic": "news"}))
        .await
        .unwrap();
    publish(&client, "p", "news", 1).await.unwrap();
    assert_eq!(
        heard_until(&client, "s1", 8).await,
        (2..=9).collect::<Vec<u64>>()
    );
    // s1 and s2 are in one page: had s2 still been subscribed, it would
    // have had the event with s1.
    assert_eq!(heard(&client, "s2").await, (2..=8).collect::<Vec<u64>>());

    let stats = client.stats().await.unwrap();
    assert!(stats.object_event_deliveries_total >= 15, "{stats:?}");
    assert!(stats.object_event_deliveries_failed_total >= 8, "{stats:?}");

    // Across a restart the subscription stays.
    silo.stop();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    publish(&client, "p", "news", 2).await.unwrap();
    assert_eq!(
        heard_until(&client, "s1", 10).await,
        (2..=11).collect::<Vec<u64>>()
    );
    silo.stop();
}

fn cbor_empty() -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(&json!({}), &mut bytes).unwrap();
    bytes
}

/// The address of the silo that runs `id`'s turns.
async fn owner_of(client: &Client, id: &str) -> String {
    let request = Request::RoutedCall(CallRequest {
        service_type: "Counter".into(),
        object_id: id.into(),
        message_type: "get".into(),
        payload: ByteBuf::from(cbor_empty()),
        timeout_ms: Some(10_000),
        idempotency_key: None,
    });
    match client.request(request).await {
        Ok(Response::Routed { owner, .. }) => owner,
        other => panic!("a routed call to {id}: {other:?}"),
    }
}

/// Deploys the counter through `admin`, lets the cluster's members learn
/// of it, then subscribes `s0`..`s{count - 1}` to `topic`, each through
/// the silos in turn.
async fn deploy_and_subscribe(admin: &Client, addresses: &[String], count: usize, topic: &str) {
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for n in 0..count {
        let client = Client::connect(&addresses[n % addresses.len()])
            .await
            .unwrap();
        call(
            &client,
            &format!("s{n}"),
            "subscribe",
            json!({"topic": topic}),
        )
        .await
        .unwrap();
    }
}

/// Forty subscribers through three silos on `url`; one publisher whose
/// turns publish one event each from a client that goes on through
/// failures; the publisher's silo is killed with SIGKILL, a new silo
/// joins, and then another silo holding subscribers is killed. At the
/// end every subscriber has heard exactly 1..=n, n being what the
/// publisher committed: each event once, in order, none lost.
async fn subscribers_apply_each_event_once_across_kills(url: &str) {
    const SUBSCRIBERS: usize = 40;
    const PUBLISHES: usize = 150;
    let topic = "feed";
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |n: usize| SiloProcess::start_with(dirs[n].path(), &["--cluster", url]);
    let mut silos: Vec<Option<SiloProcess>> = (0..3).map(|n| Some(start(n))).collect();
    let mut addresses: Vec<String> = silos.iter().flatten().map(|s| s.address.clone()).collect();
    let admin = Client::connect(&addresses[0]).await.unwrap();
    deploy_and_subscribe(&admin, &addresses, SUBSCRIBERS, topic).await;
    let publisher_home = owner_of(&admin, "p").await;

    // Publishes go on through the kills, each to a silo still alive.
    let (alive_tx, alive_rx) = tokio::sync::watch::channel(addresses.clone());
    let publishing = tokio::spawn(async move {
        let mut acknowledged = 0;
        for k in 0..PUBLISHES {
            let alive = alive_rx.borrow().clone();
            let address = &alive[k % alive.len()];
            if let Ok(client) = Client::connect(address).await
                && publish(&client, "p", "feed", 1).await.is_ok()
            {
                acknowledged += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acknowledged
    });

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let first = addresses
        .iter()
        .position(|address| *address == publisher_home)
        .expect("the publisher lives on one of the silos");
    silos[first].take().unwrap().kill();
    addresses.remove(first);
    let joined = start(3);
    addresses.push(joined.address.clone());
    silos.push(Some(joined));
    alive_tx.send(addresses.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Then a silo holding subscribers, not the publisher's new home.
    let survivor = Client::connect(&addresses[0]).await.unwrap();
    let home_now = owner_of(&survivor, "p").await;
    let mut second = None;
    for n in 0..SUBSCRIBERS {
        let owner = owner_of(&survivor, &format!("s{n}")).await;
        if owner != home_now {
            second = Some(owner);
            break;
        }
    }
    let second = second.expect("some subscriber lives away from the publisher");
    let index = silos
        .iter()
        .position(|silo| silo.as_ref().is_some_and(|silo| silo.address == second))
        .unwrap();
    silos[index].take().unwrap().kill();
    addresses.retain(|address| *address != second);
    alive_tx.send(addresses.clone()).unwrap();

    let acknowledged = publishing.await.unwrap();
    let client = Client::connect(&addresses[0]).await.unwrap();
    let committed = call(&client, "p", "published", json!({})).await.unwrap()["published"]
        .as_u64()
        .unwrap();
    assert!(committed >= acknowledged as u64 && committed <= PUBLISHES as u64);
    assert!(
        committed > PUBLISHES as u64 / 2,
        "only {committed} publishes committed"
    );
    let expected: Vec<u64> = (1..=committed).collect();
    for n in 0..SUBSCRIBERS {
        let id = format!("s{n}");
        let seen = heard_until(&client, &id, committed as usize).await;
        assert_eq!(seen, expected, "{id} heard the wrong events");
    }
    // And nothing more arrives late.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    for n in 0..SUBSCRIBERS {
        let id = format!("s{n}");
        assert_eq!(heard(&client, &id).await.len(), committed as usize, "{id}");
    }
    for silo in silos.into_iter().flatten() {
        silo.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_subscribers_apply_each_event_once_across_kills_on_a_sqlite_file() {
    let store = SqliteFile::create();
    subscribers_apply_each_event_once_across_kills(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_subscribers_apply_each_event_once_across_kills_on_postgres() {
    let Some(database) = PostgresDatabase::create("objsubs") else {
        return;
    };
    subscribers_apply_each_event_once_across_kills(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_subscribers_apply_each_event_once_across_kills_on_redis() {
    let Some(database) = RedisDatabase::create(12) else {
        return;
    };
    subscribers_apply_each_event_once_across_kills(&database.url).await;
}

/// What `id` has heard: each event's number and publisher, in the order
/// they took effect.
async fn heard_from(client: &Client, id: &str) -> Vec<(String, u64)> {
    let Ok(listed) = call(client, id, "heard-list", json!({})).await else {
        return Vec::new();
    };
    let numbers: Vec<u64> = serde_json::from_value(listed["heard"].clone()).unwrap();
    let from: Vec<String> = serde_json::from_value(listed["from"].clone()).unwrap();
    from.into_iter().zip(numbers).collect()
}

/// What `id` has heard once it heard `count` events (or after 60 s).
async fn heard_from_until(client: &Client, id: &str, count: usize) -> Vec<(String, u64)> {
    let started = Instant::now();
    loop {
        let seen = heard_from(client, id).await;
        if seen.len() >= count || started.elapsed() > Duration::from_secs(60) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls `id`'s `published` until it answers (its silo may be failing
/// over).
async fn committed_by(client: &Client, id: &str) -> u64 {
    let started = Instant::now();
    loop {
        match call(client, id, "published", json!({})).await {
            Ok(published) => return published["published"].as_u64().unwrap(),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("published of {id}: {error}"),
        }
    }
}

/// Five publishers publish on one topic at the same time, each from its
/// own client that goes on through failures, to twenty subscribers over
/// three silos; meanwhile two objects subscribed to each other's own
/// topics as `echo` answer every event with one of their own, so
/// deliveries run in both directions at once, each a turn that publishes.
/// One silo is frozen with SIGSTOP for longer than failure detection in
/// the middle, then woken. At the end every subscriber has heard, of each
/// publisher, exactly 1..=what it committed, in order and once; each echo
/// side has heard exactly 1..=UNTIL of the other; nothing arrives late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_echoes_take_effect_once_through_a_frozen_silo() {
    const SUBSCRIBERS: usize = 20;
    const PUBLISHERS: usize = 5;
    const PUBLISHES: usize = 30;
    const UNTIL: u64 = 60;
    let store = SqliteFile::create();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = dirs
        .iter()
        .map(|dir| SiloProcess::start_with(dir.path(), &["--cluster", &store.url]))
        .collect();
    let addresses: Vec<String> = silos.iter().map(|s| s.address.clone()).collect();
    let admin = Client::connect(&addresses[1]).await.unwrap();
    deploy_and_subscribe(&admin, &addresses, SUBSCRIBERS, "crowd").await;
    for (id, other) in [("ping", "pong"), ("pong", "ping")] {
        let topic = format!("Counter/{other}");
        call(
            &admin,
            id,
            "subscribe",
            json!({"topic": topic, "as": "echo"}),
        )
        .await
        .unwrap();
    }

    // Both echo sides start at the same moment, beside the publishers.
    let kick = json!({"n": 1, "until": UNTIL});
    let (ping, pong) = tokio::join!(
        call(&admin, "ping", "publish", kick.clone()),
        call(&admin, "pong", "publish", kick.clone()),
    );
    ping.unwrap();
    pong.unwrap();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        // Clients of the two silos that stay awake.
        let address = addresses[1 + p % 2].clone();
        publishers.push(tokio::spawn(async move {
            let client = Client::connect(&address)
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(5));
            for _ in 0..PUBLISHES {
                let _ = publish(&client, &format!("p{p}"), "crowd", 1).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    silos[0].signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    silos[0].signal("CONT");
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let client = Client::connect(&addresses[1]).await.unwrap();
    let mut committed = Vec::new();
    for p in 0..PUBLISHERS {
        committed.push(committed_by(&client, &format!("p{p}")).await);
    }
    let total: u64 = committed.iter().sum();
    assert!(
        total > (PUBLISHERS * PUBLISHES) as u64 / 2,
        "only {committed:?} committed"
    );
    let check = |id: &str, seen: &[(String, u64)]| {
        for (p, &count) in committed.iter().enumerate() {
            let publisher = format!("p{p}");
            let of: Vec<u64> = seen
                .iter()
                .filter(|(from, _)| *from == publisher)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(
                of,
                (1..=count).collect::<Vec<u64>>(),
                "{id} heard the wrong events of {publisher}"
            );
        }
        assert_eq!(
            seen.len() as u64,
            total,
            "{id} heard events beyond the publishers' own"
        );
    };
    for n in 0..SUBSCRIBERS {
        let id = format!("s{n}");
        let seen = heard_from_until(&client, &id, total as usize).await;
        check(&id, &seen);
    }
    for (id, other) in [("ping", "pong"), ("pong", "ping")] {
        let seen = heard_from_until(&client, id, UNTIL as usize).await;
        let expected: Vec<(String, u64)> = (1..=UNTIL).map(|i| (other.to_string(), i)).collect();
        assert_eq!(seen, expected, "{id} heard the wrong echoes");
        assert_eq!(committed_by(&client, id).await, UNTIL, "{id} published");
    }
    // And nothing more arrives late.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    for n in 0..SUBSCRIBERS {
        let id = format!("s{n}");
        check(&id, &heard_from(&client, &id).await);
    }
    for id in ["ping", "pong"] {
        assert_eq!(heard_from(&client, id).await.len() as u64, UNTIL, "{id}");
    }
    let mut silos = silos;
    for silo in silos.drain(1..) {
        silo.stop();
    }
}
