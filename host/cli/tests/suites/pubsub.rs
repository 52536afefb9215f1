//! Pub/sub to clients with real `rio silo` processes: events leave only
//! when their turn commits, carry their publisher's sequence number (kept
//! across a restart), reach the subscribers of their topic and no other;
//! a subscriber too slow to read is told how many events it missed, by the
//! silo and by the client, and the numbers show exactly that gap; on three
//! silos, subscribers on every silo receive every event of several
//! publishers in order, and go on receiving them without a gap after a
//! silo is killed and the publishers it held move; a dropped subscription
//! ends at the silo and leaves the rest of its connection alone.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::guests::build;
use common::stores::SqliteFile;
use common::{SiloProcess, outcome_unknown, raw_connection, rio, stdout_of};
use rio_client::{Calls, Client, Delivery, Event, Subscription};
use rio_protocol::{ClientFrame, Request, Response, ServerFrame, encode_frame};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The `i` an event of the counter guest carries: its publisher's count.
fn item(event: &Event) -> u64 {
    let value: Value = ciborium::from_reader(&event.payload[..]).unwrap();
    value["i"].as_u64().unwrap()
}

async fn publish(
    client: &Client,
    id: &str,
    message: Value,
) -> Result<Value, rio_client::ClientError> {
    client
        .call::<_, Value>("Counter", id, "publish", &message)
        .await
}

/// The next delivery within a while, or a failure saying what was awaited.
async fn next(subscription: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(other) => panic!("{what}: the subscription ended: {other:?}"),
        Err(_) => panic!("{what}: nothing within 10 s"),
    }
}

async fn next_event(subscription: &mut Subscription, what: &str) -> Event {
    match next(subscription, what).await {
        Delivery::Event(event) => event,
        other => panic!("{what}: expected an event, got {other:?}"),
    }
}

/// Nothing more arrives for a while.
async fn quiet(subscription: &mut Subscription, what: &str) {
    if let Ok(delivery) =
        tokio::time::timeout(Duration::from_millis(300), subscription.next()).await
    {
        panic!("{what}: expected nothing, got {delivery:?}");
    }
}

/// A lone silo with the counter guest deployed, and a client of it.
async fn counter_silo() -> (tempfile::TempDir, SiloProcess, Client) {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    (data, silo, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_leave_at_commit_numbered_per_publisher_across_a_restart() {
    let (data, silo, client) = counter_silo().await;

    let mut own = client.subscribe(&["Counter/a"]).await.unwrap();
    let mut news = client.subscribe(&["news"]).await.unwrap();

    publish(&client, "a", json!({"n": 3})).await.unwrap();
    for expected in 1..=3 {
        let event = next_event(&mut own, "Counter/a's events").await;
        assert_eq!((event.seq, item(&event)), (expected, expected));
        assert_eq!(event.publisher, "Counter/a");
        assert_eq!(event.topic, "Counter/a");
    }
    quiet(&mut news, "another topic").await;

    // A failed turn publishes nothing and uses no number.
    let failed = publish(&client, "a", json!({"n": 2, "fail": true})).await;
    assert!(failed.is_err(), "{failed:?}");
    quiet(&mut own, "a failed turn").await;

    // The same publisher's numbers count all its topics.
    publish(&client, "a", json!({"n": 1, "topic": "news"}))
        .await
        .unwrap();
    let event = next_event(&mut news, "news").await;
    assert_eq!((event.seq, event.topic.as_str()), (4, "news"));
    quiet(&mut own, "the news event on Counter/a").await;

    // Bad topics are refused: the guest's publish fails, and so does a
    // subscription.
    let refused = publish(&client, "a", json!({"topic": "rio:x"})).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(client.subscribe(&[""]).await.is_err());

    // The CLI prints one JSON line per event.
    let address = silo.address.clone();
    let cli = tokio::task::spawn_blocking(move || {
        rio(&["subscribe", "--silo", &address, "--count", "2", "Counter/b"])
    });
    // Until the CLI's subscription is in place, events go to nobody: keep
    // publishing until it has printed two.
    let mut published = 0;
    while !cli.is_finished() {
        publish(&client, "b", json!({"n": 1})).await.unwrap();
        published += 1;
        assert!(published < 100, "the CLI printed nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = cli.await.unwrap();
    let text = stdout_of(&output);
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["publisher"], "Counter/b");
    assert_eq!(
        lines[1]["seq"].as_u64(),
        lines[0]["seq"].as_u64().map(|seq| seq + 1)
    );
    assert_eq!(lines[1]["event"]["i"], lines[1]["seq"]);

    // The numbering goes on after a restart.
    drop((own, news));
    silo.stop();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    let mut own = client.subscribe(&["Counter/a"]).await.unwrap();
    publish(&client, "a", json!({"n": 1})).await.unwrap();
    let event = next_event(&mut own, "after the restart").await;
    assert_eq!((event.seq, item(&event)), (5, 5));

    // The connection ends: so does the subscription, with an error.
    silo.stop();
    match tokio::time::timeout(Duration::from_secs(10), own.next()).await {
        Ok(Some(Err(_))) => {}
        other => panic!("expected the subscription to end with an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_ends_at_the_silo_and_the_rest_of_its_connection_goes_on() {
    let (_data, silo, client) = counter_silo().await;
    let stats = || async { client.stats().await.unwrap() };

    let mut kept = client.subscribe(&["news"]).await.unwrap();
    let dropped = client.subscribe(&["news"]).await.unwrap();
    let unsubscribed = client.subscribe(&["news"]).await.unwrap();
    assert_eq!(stats().await.subscriptions_open, 3);
    unsubscribed.unsubscribe().await.unwrap();
    drop(dropped);
    // The drop's unsubscribe is not waited for: it arrives soon after.
    let started = std::time::Instant::now();
    while stats().await.subscriptions_open != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            stats().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One publish, one delivery: to the subscription that is left, on the
    // same connection, and none to the dropped one.
    let before = stats().await.event_deliveries_total;
    publish(&client, "a", json!({"n": 1, "topic": "news"}))
        .await
        .unwrap();
    let event = next_event(&mut kept, "the kept subscription").await;
    assert_eq!((event.topic.as_str(), event.seq), ("news", 1));
    quiet(&mut kept, "one event").await;
    assert_eq!(stats().await.event_deliveries_total, before + 1);
    let reply: Value = client
        .call("Counter", "a", "get", &json!({}))
        .await
        .unwrap();
    assert!(reply["value"].is_number(), "calls go on: {reply}");
    silo.stop();
}

/// Checks a subscriber's deliveries against a publisher's events
/// `1..=total`: in order, each event's number is its `i`, and every gap is
/// exactly what a `Missed` before it said. Answers (events seen, missed).
fn check_gaps(deliveries: &[Delivery], total: u64) -> (u64, u64) {
    let (mut last, mut seen, mut missed, mut told) = (0u64, 0u64, 0u64, 0u64);
    for delivery in deliveries {
        match delivery {
            Delivery::Missed(count) => told += count,
            Delivery::Event(event) => {
                assert_eq!(event.seq, item(event), "{event:?}");
                assert!(event.seq > last, "out of order: {} after {last}", event.seq);
                let gap = event.seq - last - 1;
                assert_eq!(
                    gap, told,
                    "a gap of {gap} before {}, told {told}",
                    event.seq
                );
                missed += gap;
                told = 0;
                last = event.seq;
                seen += 1;
            }
        }
    }
    assert_eq!(
        last + told,
        total,
        "the last event seen was {last}; {told} told missed after it"
    );
    (seen, missed + told)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_what_it_missed_and_never_slows_the_publisher() {
    let (_data, silo, client) = counter_silo().await;

    // A raw subscriber that reads nothing for now: the silo's buffer for it
    // (and the sockets') fill, and the silo counts what it misses.
    let (mut reader, mut writer) = raw_connection(&silo.address, 64 << 20).await;
    let mut frame = Vec::new();
    let subscribe = Request::Subscribe {
        topics: vec!["Counter/fast".into()],
    };
    encode_frame(
        &ClientFrame::Request {
            id: 9,
            request: subscribe,
        },
        &mut frame,
    )
    .unwrap();
    writer.write_all(&frame).await.unwrap();
    match reader.next_frame::<ServerFrame>().await.unwrap() {
        Some(ServerFrame::Reply {
            id: 9,
            result: Ok(Response::Subscribed),
        }) => {}
        other => panic!("expected the subscription, got {other:?}"),
    }
    // A client subscriber whose stream nobody polls: its own buffer fills.
    let mut unpolled = client.subscribe(&["Counter/fast"]).await.unwrap();

    const TURNS: u64 = 300;
    const PER_TURN: u64 = 1_000;
    let started = std::time::Instant::now();
    for _ in 0..TURNS {
        publish(&client, "fast", json!({"n": PER_TURN}))
            .await
            .unwrap();
    }
    let publishing = started.elapsed();
    let total = TURNS * PER_TURN;

    // Both read now, until nothing more comes; then one more event, which
    // brings the count of what each missed after the last it received.
    let mut raw = Vec::new();
    async fn drain_raw(
        reader: &mut rio_protocol::FrameReader<tokio::net::tcp::OwnedReadHalf>,
        raw: &mut Vec<Delivery>,
        until_seq: Option<u64>,
    ) {
        loop {
            let wait = Duration::from_millis(if until_seq.is_some() { 10_000 } else { 500 });
            let Ok(frame) = tokio::time::timeout(wait, reader.next_frame::<ServerFrame>()).await
            else {
                assert!(
                    until_seq.is_none(),
                    "the raw subscriber waited {wait:?} for the last event"
                );
                return;
            };
            let Some(ServerFrame::Events {
                subscription: 9,
                missed,
                events,
            }) = frame.unwrap()
            else {
                panic!("expected events");
            };
            if missed > 0 {
                raw.push(Delivery::Missed(missed));
            }
            let last = events.last().map(|event| event.seq);
            raw.extend(events.into_iter().map(Delivery::Event));
            if until_seq.is_some() && last == until_seq {
                return;
            }
        }
    }
    drain_raw(&mut reader, &mut raw, None).await;
    let mut polled = Vec::new();
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), unpolled.next()).await
    {
        polled.push(delivery);
    }
    publish(&client, "fast", json!({"n": 1})).await.unwrap();
    let total = total + 1;
    drain_raw(&mut reader, &mut raw, Some(total)).await;
    polled.push(next(&mut unpolled, "the unpolled subscription's count").await);
    polled.push(next(&mut unpolled, "the unpolled subscription's last event").await);

    let stats = client.stats().await.unwrap();
    let (seen, missed) = check_gaps(&raw, total);
    assert!(
        missed > 0,
        "the raw subscriber missed nothing of {total}: raise the load"
    );
    assert!(seen > 0);
    assert!(stats.events_missed_total >= missed, "{stats:?}");
    let (client_seen, client_missed) = check_gaps(&polled, total);
    assert!(
        client_missed > 0,
        "the unpolled subscription missed nothing"
    );
    assert!(client_seen as usize >= rio_client::FEED_CAPACITY - 1);
    eprintln!(
        "{total} events published in {publishing:?}; raw subscriber saw {seen}, missed {missed}; \
         unpolled client saw {client_seen}, missed {client_missed}"
    );
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_three_silos_get_every_event_in_order_also_after_a_kill() {
    const PUBLISHERS: usize = 6;
    const TURNS: u64 = 15;
    const PER_TURN: u64 = 4;
    let store = SqliteFile::create();
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut silos: Vec<Option<SiloProcess>> = data
        .iter()
        .map(|dir| {
            Some(SiloProcess::start_with(
                dir.path(),
                &["--cluster", &store.url],
            ))
        })
        .collect();
    let addresses: Vec<String> = silos
        .iter()
        .flatten()
        .map(|silo| silo.address.clone())
        .collect();
    let clients: Vec<Client> = {
        let mut clients = Vec::new();
        for address in &addresses {
            clients.push(Client::connect(address).await.unwrap());
        }
        clients
    };
    clients[0]
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    // Each silo reads the membership table once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Two subscribers on each silo to the topic every publisher uses.
    let mut subscribers: Vec<(usize, Subscription)> = Vec::new();
    for (silo, client) in clients.iter().enumerate() {
        for _ in 0..2 {
            subscribers.push((silo, client.subscribe(&["feed"]).await.unwrap()));
        }
    }
    let ids: Vec<String> = (0..PUBLISHERS).map(|n| format!("p{n}")).collect();

    // Every publisher through every silo, in turn.
    let phase = |clients: Vec<Client>, ids: Vec<String>| async move {
        let mut tasks = Vec::new();
        for (n, id) in ids.into_iter().enumerate() {
            let clients = clients.clone();
            tasks.push(tokio::spawn(async move {
                for turn in 0..TURNS {
                    let client = &clients[(n + turn as usize) % clients.len()];
                    loop {
                        match publish(client, &id, json!({"n": PER_TURN, "topic": "feed"})).await {
                            Ok(_) => break,
                            // A publish that failed without running may
                            // be retried: no number was used.
                            Err(error) if outcome_unknown(&error) => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(error) => panic!("publish {id}: {error}"),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    };

    /// Reads `count` events per publisher from `subscription`, checking
    /// they follow `last` without a gap, in order.
    async fn read_phase(
        subscription: &mut Subscription,
        last: &mut HashMap<String, u64>,
        until: u64,
        publishers: usize,
        what: &str,
    ) {
        while last.len() < publishers || last.values().any(|seq| *seq < until) {
            let event = next_event(subscription, what).await;
            let before = last.entry(event.publisher.clone()).or_insert(0);
            assert_eq!(
                event.seq,
                *before + 1,
                "{what}: {} after {before}",
                event.seq
            );
            assert_eq!(item(&event), event.seq);
            *before = event.seq;
        }
    }

    phase(clients.clone(), ids.clone()).await;
    let mut last: Vec<HashMap<String, u64>> = vec![HashMap::new(); subscribers.len()];
    for (n, (silo, subscription)) in subscribers.iter_mut().enumerate() {
        let what = format!("subscriber {n} on silo {silo}, phase 1");
        read_phase(
            subscription,
            &mut last[n],
            TURNS * PER_TURN,
            PUBLISHERS,
            &what,
        )
        .await;
    }

    // Kill the third silo: its subscribers end; the publishers it held move.
    silos[2].take().unwrap().kill();
    for (silo, subscription) in subscribers.iter_mut().filter(|(silo, _)| *silo == 2) {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
            Ok(Some(Err(_))) => {}
            other => panic!("a subscriber on the killed silo {silo}: {other:?}"),
        }
    }
    let survivors = clients[..2].to_vec();
    phase(survivors.clone(), ids.clone()).await;
    for (n, (silo, subscription)) in subscribers.iter_mut().enumerate() {
        if *silo == 2 {
            continue;
        }
        let what = format!("subscriber {n} on silo {silo}, phase 2");
        read_phase(
            subscription,
            &mut last[n],
            2 * TURNS * PER_TURN,
            PUBLISHERS,
            &what,
        )
        .await;
        quiet(subscription, &what).await;
    }
    for id in &ids {
        let published: Value = survivors[0]
            .call("Counter", id, "published", &json!({}))
            .await
            .unwrap();
        assert_eq!(published["published"], 2 * TURNS * PER_TURN, "{id}");
    }
    for silo in silos.into_iter().flatten() {
        silo.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_frozen_silo_are_told_what_did_not_reach_it() {
    let store = SqliteFile::create();
    let data: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // The publisher's silo keeps at most 500 events for the other one.
    let flags = [
        "--cluster",
        store.url.as_str(),
        "--placement",
        "prefer-local",
        "--peer-event-queue",
        "500",
    ];
    let silos: Vec<SiloProcess> = data
        .iter()
        .map(|dir| SiloProcess::start_with(dir.path(), &flags))
        .collect();
    let near = Client::connect(&silos[0].address).await.unwrap();
    let far = Client::connect(&silos[1].address).await.unwrap();
    near.deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let mut subscription = far.subscribe(&["Counter/pub"]).await.unwrap();
    // Placed on the silo it was called through.
    publish(&near, "pub", json!({"n": 5})).await.unwrap();
    let mut deliveries = Vec::new();
    for n in 1..=5 {
        deliveries.push(Delivery::Event(
            next_event(&mut subscription, &format!("event {n}")).await,
        ));
    }

    // Freeze the subscriber's silo well within failure detection, and
    // publish four times its queue meanwhile.
    silos[1].signal("STOP");
    for _ in 0..4 {
        publish(&near, "pub", json!({"n": 500})).await.unwrap();
    }
    silos[1].signal("CONT");
    // Right after the freeze the queue may still be full, and an event
    // published then dropped too: one at a time until one gets through,
    // which brings the count of everything dropped before it.
    let mut total = 5 + 4 * 500;
    'through: for _ in 0..50 {
        let reply = publish(&near, "pub", json!({"n": 1})).await.unwrap();
        total = reply["published"].as_u64().unwrap();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
        {
            let last = matches!(&delivery, Delivery::Event(event) if event.seq == total);
            deliveries.push(delivery);
            if last {
                break 'through;
            }
        }
    }
    let (seen, missed) = check_gaps(&deliveries, total);
    assert!(
        missed > 0,
        "nothing was dropped for the frozen silo: raise the load"
    );
    assert_eq!(seen + missed, total);
    let stats = near.stats().await.unwrap();
    assert!(stats.events_not_broadcast_total >= missed, "{stats:?}");
    for silo in silos {
        silo.stop();
    }
}
