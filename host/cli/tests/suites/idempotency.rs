//! Idempotency keys with real `rio silo` processes: a retry with the key of
//! a call whose reply was lost answers the first reply and changes nothing,
//! on one silo (also after it was killed and restarted) and in a cluster
//! after the owner was killed; a failed turn stores nothing; a turn's calls
//! carry keys derived from its own, so a retried turn does not apply its
//! callees twice, and a keyed turn interrupted after a call runs again
//! before any other turn of its object (woken by a survivor when nobody
//! retries); keys expire after the retention.

use crate::common;

use std::time::{Duration, Instant};

use common::guests::build;
use common::stores::{PostgresDatabase, RedisDatabase, SqliteFile};
use common::{SiloProcess, rio, stdout_of};
use rio_client::{Calls, Client, ClientError, ClusterClient, ReplyError};
use serde_json::{Value, json};

async fn deploy(address: &str, service_type: &str, folder: &str) {
    let client = Client::connect(address).await.unwrap();
    client
        .deploy(service_type, build(folder))
        .await
        .unwrap_or_else(|error| panic!("deploy {folder}: {error}"));
}

async fn keyed(
    client: &Client,
    object: (&str, &str),
    message_type: &str,
    message: Value,
    key: &str,
) -> Result<Value, ClientError> {
    client
        .call_with_key(object.0, object.1, message_type, &message, key)
        .await
}

async fn counter_value(client: &Client, id: &str) -> i64 {
    let reply: Value = client.call("Counter", id, "get", &json!({})).await.unwrap();
    reply["value"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answers_the_first_reply_and_changes_nothing_also_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy(&silo.address, "Counter", "guests/counter").await;
    let client = Client::connect(&silo.address).await.unwrap();
    let alice = ("Counter", "alice");

    let first = keyed(&client, alice, "increment", json!({"by": 5}), "k1")
        .await
        .unwrap();
    assert_eq!(first, json!({"value": 5}));
    let again = keyed(&client, alice, "increment", json!({"by": 5}), "k1")
        .await
        .unwrap();
    assert_eq!(again, first, "the retry answers the first reply");
    assert_eq!(counter_value(&client, "alice").await, 5, "and runs nothing");
    // The key is the call's identity, not its message: a retry carrying
    // another message still gets the first reply.
    let other = keyed(&client, alice, "get", json!({}), "k1").await.unwrap();
    assert_eq!(other, first);

    // Another key is another call; keys are per object.
    let second = keyed(&client, alice, "increment", json!({"by": 5}), "k2")
        .await
        .unwrap();
    assert_eq!(second, json!({"value": 10}));
    let bob = keyed(
        &client,
        ("Counter", "bob"),
        "increment",
        json!({"by": 1}),
        "k1",
    )
    .await
    .unwrap();
    assert_eq!(bob, json!({"value": 1}));

    // The reply is lost: the client gives up on a slow turn and drops its
    // connection, but the turn goes on and commits. A retry sent at once
    // waits for that first attempt (calls to one object run one at a
    // time) and answers its reply.
    let impatient = Client::connect(&silo.address).await.unwrap();
    let lost = tokio::spawn(async move {
        keyed(
            &impatient,
            alice,
            "add-slowly",
            json!({"by": 100, "millis": 600}),
            "slow",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    lost.abort();
    let _ = lost.await;
    let retry = keyed(
        &client,
        alice,
        "add-slowly",
        json!({"by": 100, "millis": 600}),
        "slow",
    )
    .await
    .unwrap();
    assert_eq!(retry, json!({"value": 110}), "the first attempt's reply");
    assert_eq!(counter_value(&client, "alice").await, 110, "applied once");

    // `rio call --idempotency-key` is the same call.
    let cli = |key: &str| {
        stdout_of(&rio(&[
            "call",
            "--silo",
            &silo.address,
            "--idempotency-key",
            key,
            "Counter/alice",
            "increment",
            r#"{"by": 1}"#,
        ]))
    };
    assert_eq!(cli("cli"), r#"{"value":111}"#);
    assert_eq!(cli("cli"), r#"{"value":111}"#);

    // Killed and started again on the same data: the replies were committed
    // with the writes, so retries still answer them.
    silo.kill();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    for (key, reply) in [
        ("k1", json!({"value": 5})),
        ("k2", json!({"value": 10})),
        ("slow", json!({"value": 110})),
        ("cli", json!({"value": 111})),
    ] {
        let again = keyed(&client, alice, "increment", json!({"by": 5}), key)
            .await
            .unwrap();
        assert_eq!(again, reply, "{key} after the restart");
    }
    assert_eq!(counter_value(&client, "alice").await, 111);

    // Keys the stores cannot index are refused before anything runs.
    for bad in [String::new(), "x".repeat(256)] {
        match keyed(&client, alice, "increment", json!({"by": 1}), &bad).await {
            Err(ClientError::Reply(ReplyError::BadRequest(message))) => {
                assert!(message.contains("idempotency key"), "{message}");
            }
            other => panic!("a key of {} bytes: {other:?}", bad.len()),
        }
    }
    assert_eq!(counter_value(&client, "alice").await, 111);
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_stores_nothing_so_its_retry_runs() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy(&silo.address, "Account", "examples/bank").await;
    let client = Client::connect(&silo.address).await.unwrap();
    let alice = ("Account", "alice");

    match keyed(&client, alice, "withdraw", json!({"amount": 30}), "w1").await {
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) => {
            assert_eq!(kind, "insufficient-funds");
        }
        other => panic!("withdrawing from an empty account: {other:?}"),
    }
    let deposited = keyed(&client, alice, "deposit", json!({"amount": 50}), "d1").await;
    assert_eq!(deposited.unwrap(), json!({"balance": 50}));
    // The failed attempt left no reply: its retry runs, and then sticks.
    for _ in 0..2 {
        let retried = keyed(&client, alice, "withdraw", json!({"amount": 30}), "w1").await;
        assert_eq!(retried.unwrap(), json!({"balance": 20}));
    }
    // A turn that reads only still stores its reply under its key.
    let read = keyed(&client, alice, "balance", json!({}), "b1")
        .await
        .unwrap();
    assert_eq!(read, json!({"balance": 20}));
    client
        .call::<_, Value>("Account", "alice", "deposit", &json!({"amount": 1}))
        .await
        .unwrap();
    let read_again = keyed(&client, alice, "balance", json!({}), "b1")
        .await
        .unwrap();
    assert_eq!(read_again, read, "the stored reply, not the new balance");
    silo.stop();
}

/// Two silos on one cluster store, placing objects where their first call
/// arrives.
fn two_silos(url: &str) -> (Vec<SiloProcess>, Vec<tempfile::TempDir>) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos = dirs
        .iter()
        .map(|dir| {
            SiloProcess::start_with(
                dir.path(),
                &["--cluster", url, "--placement", "prefer-local"],
            )
        })
        .collect();
    (silos, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_owner_is_killed_a_retry_through_a_survivor_answers_the_stored_reply() {
    let store = SqliteFile::create();
    retry_through_a_survivor(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_owner_is_killed_a_retry_through_a_survivor_answers_the_stored_reply_on_postgres()
{
    let Some(database) = PostgresDatabase::create("idempotency") else {
        return;
    };
    retry_through_a_survivor(&database.url).await;
}

async fn retry_through_a_survivor(url: &str) {
    let (mut silos, _dirs) = two_silos(url);
    let survivor = silos.pop().unwrap();
    let owner = silos.pop().unwrap();
    deploy(&owner.address, "Counter", "guests/counter").await;
    let to_owner = Client::connect(&owner.address).await.unwrap();
    let x = ("Counter", "x");
    let first = keyed(&to_owner, x, "increment", json!({"by": 7}), "k")
        .await
        .unwrap();
    assert_eq!(first, json!({"value": 7}));

    owner.kill();
    let killed_at = Instant::now();
    // The survivor takes the object over once the owner is declared dead;
    // the retry waits for that within its deadline.
    let to_survivor = Client::connect(&survivor.address).await.unwrap();
    let retry = keyed(&to_survivor, x, "increment", json!({"by": 7}), "k")
        .await
        .unwrap();
    assert_eq!(retry, first, "the stored reply, from the cluster store");
    assert_eq!(counter_value(&to_survivor, "x").await, 7, "applied once");
    println!(
        "the retry was answered {:.2} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    // A cluster client's routed call finds the same reply.
    let cluster = ClusterClient::connect(std::slice::from_ref(&survivor.address))
        .await
        .unwrap();
    let routed: Value = cluster
        .call_with_key("Counter", "x", "increment", &json!({"by": 7}), "k")
        .await
        .unwrap();
    assert_eq!(routed, first);
    let next = keyed(&to_survivor, x, "increment", json!({"by": 7}), "k2")
        .await
        .unwrap();
    assert_eq!(next, json!({"value": 14}));
    survivor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_turn_does_not_apply_its_callee_twice() {
    let store = SqliteFile::create();
    let (mut silos, _dirs) = two_silos(&store.url);
    let callee_silo = silos.pop().unwrap();
    let caller_silo = silos.pop().unwrap();
    deploy(&caller_silo.address, "Counter", "guests/counter").await;
    let to_callee_silo = Client::connect(&callee_silo.address).await.unwrap();
    let to_caller_silo = Client::connect(&caller_silo.address).await.unwrap();
    // Counter/b lives on the callee's silo, Counter/a on the caller's.
    assert_eq!(counter_value(&to_callee_silo, "b").await, 0);
    assert_eq!(counter_value(&to_caller_silo, "a").await, 0);

    // a's turn calls b, which commits after a slow turn; a's silo dies
    // while it waits, so a's turn never commits and its caller never
    // learns what happened.
    let relay = json!({
        "service_type": "Counter",
        "object_id": "b",
        "message_type": "add-slowly",
        "payload": {"by": 1, "millis": 1500},
    });
    let first = {
        let (client, relay) = (to_caller_silo.clone(), relay.clone());
        tokio::spawn(async move { keyed(&client, ("Counter", "a"), "relay", relay, "t").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    caller_silo.kill();
    let lost = first.await.unwrap();
    assert!(
        lost.is_err(),
        "the caller's silo was killed mid-turn: {lost:?}"
    );

    // The client retries through the survivor with the same key: a is
    // activated there, calls b again under the same derived key, and b
    // answers the reply it committed instead of adding again.
    let retried = keyed(
        &to_callee_silo,
        ("Counter", "a"),
        "relay",
        relay.clone(),
        "t",
    )
    .await
    .unwrap();
    assert_eq!(retried, json!({"value": 1}));
    assert_eq!(
        counter_value(&to_callee_silo, "b").await,
        1,
        "b applied once"
    );

    // Now a committed under the key too: another retry is answered by a.
    let again = keyed(
        &to_callee_silo,
        ("Counter", "a"),
        "relay",
        relay.clone(),
        "t",
    )
    .await
    .unwrap();
    assert_eq!(again, json!({"value": 1}));
    // A new key is a new transfer.
    let fresh = keyed(&to_callee_silo, ("Counter", "a"), "relay", relay, "t2")
        .await
        .unwrap();
    assert_eq!(fresh, json!({"value": 2}));
    callee_silo.stop();
}

/// The case derived keys alone cannot save: `a` deducts and calls `b`,
/// `b` commits, `a`'s silo dies before `a` commits; then, before the client
/// retries, another transfer drains `a`. A retry run after it would be
/// refused `insufficient` and leave `b`'s credit standing (value created).
/// The interrupted turn runs again first instead, so every transfer either
/// happened once on both sides or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_keyed_turn_runs_again_before_any_other_turn() {
    let store = SqliteFile::create();
    let (mut silos, _dirs) = two_silos(&store.url);
    let survivor = silos.pop().unwrap();
    let doomed = silos.pop().unwrap();
    deploy(&doomed.address, "Counter", "guests/counter").await;
    let to_survivor = Client::connect(&survivor.address).await.unwrap();
    let to_doomed = Client::connect(&doomed.address).await.unwrap();
    // b and c live on the survivor, a on the doomed silo.
    assert_eq!(counter_value(&to_survivor, "b").await, 0);
    assert_eq!(counter_value(&to_survivor, "c").await, 0);
    let funded: Value = to_doomed
        .call("Counter", "a", "increment", &json!({"by": 10}))
        .await
        .unwrap();
    assert_eq!(funded, json!({"value": 10}));

    let to_b = json!({"target": "b", "by": 10, "millis": 1500});
    let first = {
        let (client, message) = (to_doomed.clone(), to_b.clone());
        tokio::spawn(
            async move { keyed(&client, ("Counter", "a"), "move-slowly", message, "t").await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill();
    let lost = first.await.unwrap();
    assert!(lost.is_err(), "a's silo was killed mid-turn: {lost:?}");

    // Another transfer out of a reaches a first. Refusals while a finishes
    // its interrupted turn are `unavailable` (nothing ran): retried.
    let to_c = json!({"target": "c", "by": 10, "millis": 0});
    let deadline = Instant::now() + Duration::from_secs(30);
    let other = loop {
        match keyed(
            &to_survivor,
            ("Counter", "a"),
            "move-slowly",
            to_c.clone(),
            "u",
        )
        .await
        {
            Err(ClientError::Reply(ReplyError::Unavailable(_) | ReplyError::Timeout(_)))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => break outcome,
        }
    };
    match other {
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) => {
            assert_eq!(kind, "insufficient", "t took a's 10 first")
        }
        outcome => panic!("the second transfer should be refused for lack of value: {outcome:?}"),
    }
    // The client's retry of t gets the reply of t's finished rerun.
    let retried = keyed(&to_survivor, ("Counter", "a"), "move-slowly", to_b, "t")
        .await
        .unwrap();
    assert_eq!(retried, json!({"value": 0}));
    let values = [
        counter_value(&to_survivor, "a").await,
        counter_value(&to_survivor, "b").await,
        counter_value(&to_survivor, "c").await,
    ];
    assert_eq!(
        values,
        [0, 10, 0],
        "a's 10 moved to b once, and nowhere else"
    );
    survivor.stop();
}

/// As above, but nobody calls `a` again: the survivor, on declaring the
/// doomed silo dead, wakes the objects holding an interrupted keyed turn,
/// and `a` finishes its transfer on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_silos_interrupted_keyed_turn_is_finished_without_a_retry() {
    let store = SqliteFile::create();
    interrupted_turn_finished_without_a_retry(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_silos_interrupted_keyed_turn_is_finished_without_a_retry_on_redis() {
    // Database 11: 0 is the storage suite's, 9 `cluster.rs`'s, 10 `chaos.rs`'s.
    let Some(database) = RedisDatabase::create(11) else {
        return;
    };
    interrupted_turn_finished_without_a_retry(&database.url).await;
}

async fn interrupted_turn_finished_without_a_retry(url: &str) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let flags = ["--cluster", url, "--placement", "prefer-local"];
    let doomed = SiloProcess::start_with(dirs[0].path(), &flags);
    let survivor = SiloProcess::start_with(dirs[1].path(), &flags);
    deploy(&doomed.address, "Counter", "guests/counter").await;
    let to_survivor = Client::connect(&survivor.address).await.unwrap();
    let to_doomed = Client::connect(&doomed.address).await.unwrap();
    assert_eq!(counter_value(&to_survivor, "b").await, 0);
    let funded: Value = to_doomed
        .call("Counter", "a", "increment", &json!({"by": 10}))
        .await
        .unwrap();
    assert_eq!(funded, json!({"value": 10}));

    let to_b = json!({"target": "b", "by": 10, "millis": 1500});
    let first = {
        let client = to_doomed.clone();
        tokio::spawn(
            async move { keyed(&client, ("Counter", "a"), "move-slowly", to_b, "t").await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill();
    assert!(
        first.await.unwrap().is_err(),
        "a's silo was killed mid-turn"
    );

    // No call to a: the survivor activates a (b is its only object so far)
    // once it declares the doomed silo dead, and a finishes its turn.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = to_survivor.stats().await.unwrap();
        if stats.live_activations >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing woke a 30 s after the kill ({} live activations)",
            stats.live_activations
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counter_value(&to_survivor, "b").await,
        10,
        "b credited once"
    );
    assert_eq!(counter_value(&to_survivor, "a").await, 0, "and a debited");
    // The client's late retry gets the finished turn's reply.
    let retried = keyed(
        &to_survivor,
        ("Counter", "a"),
        "move-slowly",
        json!({"target": "b", "by": 10, "millis": 0}),
        "t",
    )
    .await
    .unwrap();
    assert_eq!(retried, json!({"value": 0}));
    survivor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_after_the_retention_and_a_late_retry_runs_again() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("rio.toml");
    std::fs::write(
        &config,
        "idempotency_retention_secs = 1\nidempotency_sweep_secs = 1\n",
    )
    .unwrap();
    let silo = SiloProcess::start_with(
        &data.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    deploy(&silo.address, "Counter", "guests/counter").await;
    let client = Client::connect(&silo.address).await.unwrap();
    let x = ("Counter", "x");
    let first = keyed(&client, x, "increment", json!({"by": 1}), "k")
        .await
        .unwrap();
    assert_eq!(first, json!({"value": 1}));
    assert_eq!(
        keyed(&client, x, "increment", json!({"by": 1}), "k")
            .await
            .unwrap(),
        first,
        "within the retention"
    );
    // Past the retention the sweep (every second here) deletes the reply:
    // the same key is a new call.
    let started = Instant::now();
    let late = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = keyed(&client, x, "increment", json!({"by": 1}), "k")
            .await
            .unwrap();
        if reply != first {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reply was never swept"
        );
    };
    assert_eq!(late, json!({"value": 2}), "the late retry ran once");
    silo.stop();
}
