//! One-way sends through the transactional outbox, with real `rio silo`
//! processes: a turn that fails sends nothing; sent messages take effect
//! exactly once and in the order sent, also when the sender's silo is
//! killed between the commit and the delivery (restarted alone, or taken
//! over by a survivor in a cluster on a SQLite file and on PostgreSQL);
//! messages the receiver refuses become dead letters that `rio
//! dead-letters` lists with the reason; the bank's `transfer-send` in
//! Rust, Python and JavaScript moves money once, and never half. Clients
//! send one way too: acknowledged once stored, applied once and in order,
//! once per idempotency key, dead-lettered when refused, and delivered
//! after a kill that followed the acknowledgement. A lone silo killed (and
//! restarted on its data) or frozen in the middle of many clients'
//! crossing transfers, called and sent, loses and doubles no money.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bank::Picks;
use common::guests::{Language, build, tooling_ready};
use common::stores::{PostgresDatabase, SqliteFile};
use common::{SiloProcess, outcome_unknown, rio, stdout_of};
use rio_client::{Calls, Client, ClientError, ReplyError};
use serde_json::{Value, json};

async fn deploy_counter(address: &str) {
    let client = Client::connect(address).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap_or_else(|error| panic!("deploy guests/counter: {error}"));
}

async fn send_items(client: &Client, sender: &str, message: Value) -> Result<Value, ClientError> {
    client.call("Counter", sender, "send-items", &message).await
}

async fn seen(client: &Client, receiver: &str) -> Vec<i64> {
    let reply: Value = client
        .call("Counter", receiver, "seen", &json!({}))
        .await
        .unwrap();
    serde_json::from_value(reply["seen"].clone()).unwrap()
}

/// Waits until `receiver` has seen `expected` (failing after `limit` with
/// what it saw), then checks that nothing more arrives for a moment: a
/// message applied twice would show up as an extra item. Answers when it
/// had seen them.
async fn wait_for_seen(
    client: &Client,
    receiver: &str,
    expected: &[i64],
    limit: Duration,
) -> Instant {
    let started = Instant::now();
    loop {
        let now = seen(client, receiver).await;
        if now == expected {
            break;
        }
        assert!(
            now.len() <= expected.len() && expected.starts_with(&now),
            "{receiver} saw {now:?}, expected a prefix of {expected:?}"
        );
        assert!(
            started.elapsed() < limit,
            "{receiver} saw {now:?} after {limit:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen(client, receiver).await,
        expected,
        "nothing applied twice"
    );
    seen_at
}

async fn counter_value(client: &Client, id: &str) -> i64 {
    let reply: Value = client.call("Counter", id, "get", &json!({})).await.unwrap();
    reply["value"].as_i64().unwrap()
}

/// Keeps `receiver` busy for `millis` in a turn of its own, so that
/// deliveries to it wait in its mailbox meanwhile.
fn hold_busy(client: &Client, receiver: &'static str, millis: u64) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let _ = client
            .call::<_, Value>(
                "Counter",
                receiver,
                "add-slowly",
                &json!({"by": 0, "millis": millis}),
            )
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_take_effect_once_in_order_and_survive_a_kill_between_commit_and_delivery() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    let sent = send_items(&client, "a", json!({"target": "r", "items": [1, 2, 3]})).await;
    assert_eq!(sent.unwrap(), json!({"value": 3}));
    // A turn that fails after sending sends nothing.
    let failed = send_items(
        &client,
        "a",
        json!({"target": "r", "items": [100], "fail": true}),
    )
    .await;
    match failed {
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) => {
            assert_eq!(kind, "failed-on-purpose");
        }
        other => panic!("the failing turn answered {other:?}"),
    }
    wait_for_seen(&client, "r", &[1, 2, 3], Duration::from_secs(10)).await;
    assert_eq!(
        counter_value(&client, "a").await,
        3,
        "the failed turn committed nothing"
    );

    // The receiver is busy, so the next messages are committed by the
    // sender but not yet delivered when the silo is killed.
    let busy = hold_busy(&client, "r", 3000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = send_items(&client, "a", json!({"target": "r", "items": [4, 5, 6]})).await;
    assert_eq!(sent.unwrap(), json!({"value": 6}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    silo.kill();
    let _ = busy.await;

    // Started again on the same data, the silo wakes the sender, which
    // delivers what it had committed, after what was delivered before.
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    wait_for_seen(&client, "r", &[1, 2, 3, 4, 5, 6], Duration::from_secs(10)).await;
    assert_eq!(counter_value(&client, "a").await, 6);

    // Seqs go on after the delivered ones: later sends are not mistaken
    // for deliveries already made.
    let sent = send_items(&client, "a", json!({"target": "r", "items": [7]})).await;
    assert_eq!(sent.unwrap(), json!({"value": 7}));
    wait_for_seen(
        &client,
        "r",
        &[1, 2, 3, 4, 5, 6, 7],
        Duration::from_secs(10),
    )
    .await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_become_dead_letters_listed_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    // -1 is refused by the receiver's handler (retried, then given up);
    // the messages after it are still delivered, in order.
    let sent = send_items(&client, "a", json!({"target": "r", "items": [7, -1, 8]})).await;
    assert_eq!(sent.unwrap(), json!({"value": 3}));
    // An unknown message and an unknown type are given up at once.
    let unknown_message = json!({"target": "r", "items": [9], "message_type": "no-such"});
    send_items(&client, "b", unknown_message).await.unwrap();
    let unknown_type = json!({"service_type": "Nowhere", "target": "x", "items": [10]});
    send_items(&client, "c", unknown_type).await.unwrap();
    wait_for_seen(&client, "r", &[7, 8], Duration::from_secs(10)).await;

    let started = Instant::now();
    let letters = loop {
        let letters = client.dead_letters(None, 100).await.unwrap();
        if letters.len() >= 3 || started.elapsed() > Duration::from_secs(10) {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut reasons: Vec<(String, String)> = letters
        .iter()
        .map(|letter| {
            (
                format!("{}/{}", letter.sender.0, letter.sender.1),
                letter.reason.clone(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{letters:?}");
    assert_eq!(reasons[0].0, "Counter/a");
    assert!(
        reasons[0].1.starts_with("negative-item:"),
        "{:?}",
        reasons[0]
    );
    assert_eq!(reasons[1].0, "Counter/b");
    assert!(
        reasons[1].1.starts_with("unknown-message:"),
        "{:?}",
        reasons[1]
    );
    assert_eq!(reasons[2].0, "Counter/c");
    assert!(
        reasons[2].1.starts_with("unknown-type:"),
        "{:?}",
        reasons[2]
    );
    let refused = letters
        .iter()
        .find(|letter| letter.sender.1 == "a")
        .unwrap();
    assert_eq!(refused.seq, 1, "the second message a sent");
    assert_eq!(refused.receiver, ("Counter".to_string(), "r".to_string()));
    assert_eq!(refused.message_type, "append");

    // The CLI lists them, all or by receiver type.
    let all = stdout_of(&rio(&["dead-letters", "--silo", &silo.address]));
    assert_eq!(all.lines().count(), 4, "a header and three letters:\n{all}");
    assert!(
        all.contains("Counter/a\t1\tCounter/r\tappend\t{\"item\":-1}\tnegative-item"),
        "{all}"
    );
    let nowhere = stdout_of(&rio(&["dead-letters", "--silo", &silo.address, "Nowhere"]));
    assert_eq!(nowhere.lines().count(), 2, "{nowhere}");
    assert!(
        nowhere.contains("Counter/c\t0\tNowhere/x\tappend"),
        "{nowhere}"
    );

    // Dead letters are not retried: after a restart nothing more arrives.
    silo.stop();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen(&client, "r").await, vec![7, 8]);
    assert_eq!(client.dead_letters(None, 100).await.unwrap().len(), 3);
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_past_the_limits_is_refused_and_its_turn_sends_nothing() {
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--limit",
        "calls-per-turn=3",
        "--limit",
        "turn-write-bytes=1KiB",
    ];
    let silo = SiloProcess::start_with(data.path(), &flags);
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();
    let too_many = send_items(&client, "a", json!({"target": "r", "items": [1, 2, 3, 4]})).await;
    match too_many {
        Err(ClientError::Reply(ReplyError::Guest { kind, message })) => {
            assert_eq!(kind, "internal");
            assert!(message.contains("calls-per-turn"), "{message}");
        }
        other => panic!("a fourth send answered {other:?}"),
    }
    let sent = send_items(&client, "a", json!({"target": "r", "items": [5, 6, 7]})).await;
    assert_eq!(
        sent.unwrap(),
        json!({"value": 3}),
        "three sends are within the limit"
    );
    wait_for_seen(&client, "r", &[5, 6, 7], Duration::from_secs(10)).await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_senders_messages_are_delivered_by_a_survivor() {
    let store = SqliteFile::create();
    delivered_by_a_survivor(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_senders_messages_are_delivered_by_a_survivor_on_postgres() {
    let Some(database) = PostgresDatabase::create("outbox") else {
        return;
    };
    delivered_by_a_survivor(&database.url).await;
}

async fn delivered_by_a_survivor(url: &str) {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut silos: Vec<SiloProcess> = dirs
        .iter()
        .map(|dir| {
            SiloProcess::start_with(
                dir.path(),
                &["--cluster", url, "--placement", "prefer-local"],
            )
        })
        .collect();
    let survivor = silos.pop().unwrap();
    let sender_silo = silos.pop().unwrap();
    deploy_counter(&sender_silo.address).await;
    let to_sender_silo = Client::connect(&sender_silo.address).await.unwrap();
    let to_survivor = Client::connect(&survivor.address).await.unwrap();
    // The receiver lives on the survivor, the sender on the silo to die.
    assert_eq!(seen(&to_survivor, "r").await, Vec::<i64>::new());
    let sent = send_items(&to_sender_silo, "a", json!({"target": "r", "items": [1]})).await;
    assert_eq!(sent.unwrap(), json!({"value": 1}));
    wait_for_seen(&to_survivor, "r", &[1], Duration::from_secs(10)).await;

    let busy = hold_busy(&to_survivor, "r", 2000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let items = json!({"target": "r", "items": [2, 3, 4]});
    let sent = send_items(&to_sender_silo, "a", items).await;
    assert_eq!(sent.unwrap(), json!({"value": 4}));
    sender_silo.kill();
    let killed_at = Instant::now();
    let _ = busy.await;

    // The survivor declares the sender's silo dead, wakes the sender, and
    // it delivers from there: once each, in order.
    let delivered_at =
        wait_for_seen(&to_survivor, "r", &[1, 2, 3, 4], Duration::from_secs(30)).await;
    println!(
        "the dead sender's messages were all delivered {:.2} s after the kill",
        (delivered_at - killed_at).as_secs_f64()
    );
    assert_eq!(counter_value(&to_survivor, "a").await, 4);
    survivor.stop();
}

async fn balance(client: &Client, account: (&str, &str)) -> i64 {
    let reply: Value = client
        .call(account.0, account.1, "balance", &json!({}))
        .await
        .unwrap();
    reply["balance"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_send_moves_money_once_in_every_language() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    let types: Vec<String> = Language::ALL
        .iter()
        .map(|language| format!("{}Account", language.tag()))
        .collect();
    // A Python or JS component compiles at deploy; on a busy two-core
    // machine that can outlast a call's default 30 s.
    let deployer = client.with_timeout(Duration::from_secs(300));
    for (language, service_type) in Language::ALL.iter().zip(&types) {
        deployer
            .deploy(service_type, build(language.bank()))
            .await
            .unwrap_or_else(|error| panic!("deploy {language:?}: {error}"));
        let _: Value = client
            .call(service_type, "a", "deposit", &json!({"amount": 100}))
            .await
            .unwrap();
    }
    // Each language's account `a` pays the next language's account `b`:
    // the deposit travels as a one-way message committed with the
    // withdrawal.
    for (i, from) in types.iter().enumerate() {
        let to = &types[(i + 1) % types.len()];
        let reply: Value = client
            .call(
                from,
                "a",
                "transfer-send",
                &json!({"to": "b", "to_type": to, "amount": 10 * (i as i64 + 1)}),
            )
            .await
            .unwrap_or_else(|error| panic!("{from} transfer-send: {error}"));
        assert_eq!(
            reply,
            json!({"balance": 100 - 10 * (i as i64 + 1)}),
            "{from}"
        );
        // One that cannot withdraw fails and sends nothing.
        let refused = client
            .call::<_, Value>(
                from,
                "a",
                "transfer-send",
                &json!({"to": "b", "to_type": to, "amount": 1_000}),
            )
            .await;
        match refused {
            Err(ClientError::Reply(ReplyError::Guest { kind, .. })) => {
                assert_eq!(kind, "insufficient-funds", "{from}")
            }
            other => panic!("{from}: an overdraft answered {other:?}"),
        }
    }
    // Rust paid 10 to Python, Python 20 to JS, JS 30 to Rust; the `a`s
    // kept the rest.
    let expected = [30, 10, 20];
    let started = Instant::now();
    loop {
        let mut balances = Vec::new();
        for service_type in &types {
            balances.push(balance(&client, (service_type, "b")).await);
        }
        if balances == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "balances {balances:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (service_type, expected)) in types.iter().zip(expected).enumerate() {
        assert_eq!(
            balance(&client, (service_type, "b")).await,
            expected,
            "{service_type} once"
        );
        let kept = 100 - 10 * (i as i64 + 1);
        assert_eq!(balance(&client, (service_type, "a")).await, kept);
    }
    silo.stop();
}

/// Waits until `id`'s value is `expected` (failing after `limit` with what
/// it was), then checks that it stays so for a moment: a message applied
/// twice would show up as a larger value.
async fn wait_for_value(client: &Client, id: &str, expected: i64, limit: Duration) {
    let started = Instant::now();
    loop {
        let value = counter_value(client, id).await;
        if value == expected {
            break;
        }
        assert!(value < expected, "{id} is {value}, more than {expected}");
        assert!(
            started.elapsed() < limit,
            "{id} is {value} after {limit:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counter_value(client, id).await,
        expected,
        "nothing applied twice"
    );
}

/// Sends `count` increments of 1 to `id` all at once over `client`'s one
/// connection, and waits for every acknowledgement.
async fn send_increments_at_once(client: &Client, id: &'static str, count: usize) {
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..count {
        let client = client.clone();
        sends.spawn(async move {
            client
                .send("Counter", id, "increment", &json!({"by": 1}))
                .await
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap()
            .unwrap_or_else(|error| panic!("a send to {id}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sends_are_acknowledged_once_stored_and_take_effect_once_in_order() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    // Every send is acknowledged, then each takes effect exactly once.
    let started = Instant::now();
    send_increments_at_once(&client, "n", 200).await;
    let acknowledged = started.elapsed();
    wait_for_value(&client, "n", 200, Duration::from_secs(30)).await;
    println!(
        "200 concurrent client sends acknowledged in {:.2} s",
        acknowledged.as_secs_f64()
    );

    // One after the other, they take effect in the order sent, also while
    // the receiver is busy and the deliveries wait behind its turn.
    for item in 0..20 {
        client
            .send("Counter", "r", "append", &json!({"item": item}))
            .await
            .unwrap();
    }
    let busy = hold_busy(&client, "r", 1000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for item in 20..40 {
        client
            .send("Counter", "r", "append", &json!({"item": item}))
            .await
            .unwrap();
    }
    let expected: Vec<i64> = (0..40).collect();
    wait_for_seen(&client, "r", &expected, Duration::from_secs(10)).await;
    let _ = busy.await;

    // The CLI sends one way too, and prints nothing but errors.
    let sent = stdout_of(&rio(&[
        "send",
        "--silo",
        &silo.address,
        "Counter/r",
        "append",
        r#"{"item": 40}"#,
    ]));
    assert_eq!(sent, "");
    let expected: Vec<i64> = (0..=40).collect();
    wait_for_seen(&client, "r", &expected, Duration::from_secs(10)).await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_client_send_retried_is_stored_and_applied_once() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    // The first attempt and three retries with the same key.
    for _ in 0..4 {
        client
            .send_with_key("Counter", "k", "increment", &json!({"by": 5}), "deposit-1")
            .await
            .unwrap();
    }
    wait_for_value(&client, "k", 5, Duration::from_secs(10)).await;
    // The CLI's key is the same kind of key: a retry there changes nothing,
    // and another key is another message.
    let retry = [
        "send",
        "--silo",
        &silo.address,
        "--idempotency-key",
        "deposit-1",
        "Counter/k",
        "increment",
        r#"{"by": 5}"#,
    ];
    stdout_of(&rio(&retry));
    let mut payload = Vec::new();
    ciborium::into_writer(&json!({"by": 7}), &mut payload).unwrap();
    client
        .send_raw_keyed("Counter", "k", "increment", payload, Some("deposit-2"))
        .await
        .unwrap();
    wait_for_value(&client, "k", 12, Duration::from_secs(10)).await;

    // Still once after a restart, which loads the keys from the store.
    silo.stop();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    client
        .send_with_key("Counter", "k", "increment", &json!({"by": 5}), "deposit-1")
        .await
        .unwrap();
    wait_for_value(&client, "k", 12, Duration::from_secs(10)).await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_send_the_receiver_refuses_is_acknowledged_then_dead_lettered() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    // Stored and acknowledged: the guest's answer comes later.
    client
        .send("Counter", "u", "no-such", &json!({"x": 1}))
        .await
        .unwrap();
    // What the silo can tell at once is refused at once, and not stored.
    match client.send("Nowhere", "x", "append", &json!({})).await {
        Err(ClientError::Reply(ReplyError::UnknownType { service_type })) => {
            assert_eq!(service_type, "Nowhere")
        }
        other => panic!("a send to an unknown type answered {other:?}"),
    }
    match client
        .send("Counter", "u", "rio:wake-outbox", &json!({}))
        .await
    {
        Err(ClientError::Reply(ReplyError::BadRequest(message))) => {
            assert!(message.contains("reserved"), "{message}")
        }
        other => panic!("a send of a reserved type answered {other:?}"),
    }

    let started = Instant::now();
    let letters = loop {
        let letters = client.dead_letters(None, 100).await.unwrap();
        if !letters.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    // A client's message waits in its receiver's own outbox.
    assert_eq!(letter.sender, ("Counter".to_string(), "u".to_string()));
    assert_eq!(letter.receiver, ("Counter".to_string(), "u".to_string()));
    assert_eq!(letter.message_type, "no-such");
    assert!(
        letter.reason.starts_with("unknown-message:"),
        "{}",
        letter.reason
    );
    let listed = stdout_of(&rio(&["dead-letters", "--silo", &silo.address]));
    assert!(
        listed.contains("Counter/u\t0\tCounter/u\tno-such\t{\"x\":1}\tunknown-message"),
        "{listed}"
    );
    // The receiver still takes other messages, after the refused one.
    client
        .send("Counter", "u", "increment", &json!({"by": 3}))
        .await
        .unwrap();
    wait_for_value(&client, "u", 3, Duration::from_secs(10)).await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_send_acknowledged_before_a_kill_is_delivered_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();

    // Sent at once, the sends are stored ahead of their deliveries (which
    // queue behind them in the receiver's mailbox), so most are still
    // undelivered when the silo is killed right after the last ack.
    send_increments_at_once(&client, "d", 100).await;
    let value_at_kill = counter_value(&client, "d").await;
    silo.kill();
    println!("{value_at_kill} of 100 acknowledged sends had taken effect at the kill");
    assert!(
        value_at_kill < 100,
        "the test needs sends still undelivered at the kill"
    );

    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    wait_for_value(&client, "d", 100, Duration::from_secs(30)).await;
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sends_through_any_silo_of_a_cluster_take_effect_once_in_order() {
    let store = SqliteFile::create();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = dirs
        .iter()
        .map(|dir| {
            SiloProcess::start_with(
                dir.path(),
                &["--cluster", &store.url, "--placement", "prefer-local"],
            )
        })
        .collect();
    deploy_counter(&silos[0].address).await;
    let first = Client::connect(&silos[0].address).await.unwrap();
    let second = Client::connect(&silos[1].address).await.unwrap();
    let addresses: Vec<String> = silos.iter().map(|silo| silo.address.clone()).collect();
    let cluster = rio_client::ClusterClient::connect(&addresses)
        .await
        .unwrap();

    // Placed on the first silo; the second forwards what it is sent, and
    // the cluster client learns the owner. Alternating between them keeps
    // the order, since each send is acknowledged before the next.
    assert_eq!(seen(&first, "r").await, Vec::<i64>::new());
    for item in 0..30 {
        let message = json!({"item": item});
        let sent = match item % 3 {
            0 => first.send("Counter", "r", "append", &message).await,
            1 => second.send("Counter", "r", "append", &message).await,
            _ => cluster.send("Counter", "r", "append", &message).await,
        };
        sent.unwrap_or_else(|error| panic!("send {item}: {error}"));
    }
    let expected: Vec<i64> = (0..30).collect();
    wait_for_seen(&second, "r", &expected, Duration::from_secs(10)).await;

    // A keyed retry through the other silo is still stored once.
    for client in [&first, &second] {
        client
            .send_with_key("Counter", "r", "append", &json!({"item": 30}), "last")
            .await
            .unwrap();
    }
    cluster
        .send_with_key("Counter", "r", "append", &json!({"item": 30}), "last")
        .await
        .unwrap();
    let expected: Vec<i64> = (0..=30).collect();
    wait_for_seen(&first, "r", &expected, Duration::from_secs(10)).await;
    for silo in silos {
        silo.stop();
    }
}

const LONE_ACCOUNTS: usize = 8;
const LONE_CLIENTS: usize = 8;
const LONE_TRANSFERS: usize = 240;
const LONE_START: i64 = 1_000;

/// One transfer from a lone-silo bank test's client, retried with its key
/// (reconnecting to wherever the silo listens now) until it is answered:
/// true if it went through, false if refused (`deadlock` for crossing
/// calls, `insufficient-funds`), which moves nothing. Counts in `retries`
/// the attempts whose outcome was unknown (each is retried).
async fn lone_transfer(
    address: &Mutex<String>,
    client: &mut Option<Client>,
    message_type: &str,
    message: &Value,
    from: &str,
    key: &str,
    retries: &AtomicUsize,
) -> bool {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "transfer {key} unanswered after 90 s"
        );
        if client.is_none() {
            let at = address.lock().unwrap().clone();
            match Client::connect(&at).await {
                Ok(connected) => *client = Some(connected.with_timeout(Duration::from_secs(10))),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let connected = client.as_ref().unwrap();
        match connected
            .call_with_key::<_, Value>("LoneAccount", from, message_type, message, key)
            .await
        {
            Ok(_) => return true,
            Err(ClientError::Reply(error))
                if matches!(error.kind(), "deadlock" | "insufficient-funds") =>
            {
                return false;
            }
            Err(error) if outcome_unknown(&error) => {
                retries.fetch_add(1, Ordering::Relaxed);
                *client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("transfer {key} answered {error}"),
        }
    }
}

/// Eight clients move money at random between eight accounts of one silo,
/// every transfer keyed, half called (crossing calls are refused as
/// deadlocks) and half sent through the outbox. A third of the way through
/// the silo is killed with SIGKILL and started again on its data; clients
/// retry what had no answer with the same key. At the end the money adds
/// up and every account holds exactly what the acknowledged transfers say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_silo_killed_in_the_middle_of_transfers_loses_and_doubles_nothing() {
    lone_bank_under(LoneFault::Kill).await;
}

/// The same with the silo stopped (SIGSTOP) for longer than the clients'
/// timeout and then continued: clients retry into the frozen silo, and
/// the first attempts and their retries all run once it wakes, each key
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_silo_frozen_in_the_middle_of_transfers_loses_and_doubles_nothing() {
    lone_bank_under(LoneFault::Freeze).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LoneFault {
    Kill,
    Freeze,
}

async fn lone_bank_under(fault: LoneFault) {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let setup = Client::connect(&silo.address).await.unwrap();
    setup
        .deploy("LoneAccount", build(Language::Rust.bank()))
        .await
        .unwrap();
    let accounts: Vec<String> = (0..LONE_ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    for account in &accounts {
        let _: Value = setup
            .call_with_key(
                "LoneAccount",
                account,
                "deposit",
                &json!({"amount": LONE_START}),
                "open",
            )
            .await
            .unwrap();
    }
    let address = Arc::new(Mutex::new(silo.address.clone()));
    let finished = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..LONE_CLIENTS {
        let (address, finished, accounts) = (address.clone(), finished.clone(), accounts.clone());
        let (retries, done) = (retries.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut picks = Picks(c as u64 + 7);
            let mut client = None;
            let mut moved: HashMap<String, i64> = HashMap::new();
            for n in 0..LONE_TRANSFERS / LONE_CLIENTS {
                let from = accounts[picks.below(accounts.len())].clone();
                let to = loop {
                    let to = &accounts[picks.below(accounts.len())];
                    if *to != from {
                        break to.clone();
                    }
                };
                let amount = picks.below(200) as i64 + 1;
                let message_type = if n % 2 == 0 {
                    "transfer"
                } else {
                    "transfer-send"
                };
                let message = json!({"to": to, "to_type": "LoneAccount", "amount": amount});
                let key = format!("lone-{c}-{n}");
                let went = lone_transfer(
                    &address,
                    &mut client,
                    message_type,
                    &message,
                    &from,
                    &key,
                    &retries,
                )
                .await;
                if went {
                    done.fetch_add(1, Ordering::Relaxed);
                    *moved.entry(from).or_default() -= amount;
                    *moved.entry(to).or_default() += amount;
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
            moved
        }));
    }

    let load_started = Instant::now();
    while finished.load(Ordering::Relaxed) < LONE_TRANSFERS / 3 {
        assert!(
            load_started.elapsed() < Duration::from_secs(120),
            "the load stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let silo = match fault {
        LoneFault::Kill => {
            silo.kill();
            let silo = SiloProcess::start(data.path());
            *address.lock().unwrap() = silo.address.clone();
            silo
        }
        LoneFault::Freeze => {
            silo.signal("STOP");
            // Past the clients' 10 s timeout: their retries queue up too.
            tokio::time::sleep(Duration::from_secs(12)).await;
            silo.signal("CONT");
            silo
        }
    };

    let mut expected: HashMap<String, i64> = accounts
        .iter()
        .map(|account| (account.clone(), LONE_START))
        .collect();
    for client in clients {
        for (account, delta) in client.await.expect("a client's task ends") {
            *expected.get_mut(&account).unwrap() += delta;
        }
    }
    // Sent deposits may still be on their way: wait until the books match,
    // then check they stay so (a message delivered twice would show).
    let reader = Client::connect(&silo.address).await.unwrap();
    let mut held = HashMap::new();
    let settled = Instant::now();
    loop {
        for account in &accounts {
            held.insert(
                account.clone(),
                balance(&reader, ("LoneAccount", account)).await,
            );
        }
        if held == expected {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "accounts hold {held:?}, the acknowledged transfers say {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for account in &accounts {
        assert_eq!(
            balance(&reader, ("LoneAccount", account)).await,
            expected[account],
            "{account} changed after the books settled"
        );
    }
    let total: i64 = expected.values().sum();
    assert_eq!(
        total,
        LONE_START * LONE_ACCOUNTS as i64,
        "money is conserved"
    );
    let (done, retries) = (
        done.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed),
    );
    eprintln!(
        "{LONE_TRANSFERS} transfers: {done} went through, {retries} attempts had an \
         unknown outcome and were retried with their key; books settled in {:.2?}",
        settled.elapsed()
    );
    assert!(
        done > LONE_TRANSFERS / 3,
        "too few transfers went through: {done}"
    );
    assert!(retries > 0, "no transfer was in flight when the silo died");
    silo.stop();
}

/// Every `rio:` message type is the silo's own: a client calling one, or a
/// guest calling or sending one, is refused and nothing runs. (Before the
/// names were checked in one place, a call typed `rio:wake-outbox` was
/// answered `ok` without the guest running.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_message_types_are_refused_from_clients_and_guests() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    deploy_counter(&silo.address).await;
    let client = Client::connect(&silo.address).await.unwrap();
    let refused_as_reserved = |result: Result<Value, ClientError>, what: &str| match result {
        Err(ClientError::Reply(ReplyError::BadRequest(message))) => {
            assert!(message.contains("reserved"), "{what}: {message}")
        }
        other => panic!("{what} answered {other:?}"),
    };
    for reserved in ["rio:wake-outbox", "rio:wake-interrupted", "rio:anything"] {
        let called = client.call("Counter", "r", reserved, &json!({})).await;
        refused_as_reserved(called, &format!("a client's call of {reserved}"));
        let relay = json!({"service_type": "Counter", "object_id": "t", "message_type": reserved});
        let relayed: Result<Value, _> = client.call("Counter", "r", "relay", &relay).await;
        match relayed {
            Err(error) => assert!(
                error.to_string().contains("reserved"),
                "a guest's call of {reserved}: {error}"
            ),
            Ok(reply) => panic!("a guest's call of {reserved} answered {reply}"),
        }
        let sends = json!({"target": "t", "items": [1], "message_type": reserved});
        let sent: Result<Value, _> = client.call("Counter", "r", "send-items", &sends).await;
        assert!(
            sent.is_err(),
            "a guest's send of {reserved} answered {sent:?}"
        );
    }
    // Nothing ran: the counter that every message named is untouched, and
    // the sender's refused turns committed no send.
    assert_eq!(counter_value(&client, "t").await, 0);
    assert_eq!(counter_value(&client, "r").await, 0);
    assert!(seen(&client, "t").await.is_empty());
    silo.stop();
}
