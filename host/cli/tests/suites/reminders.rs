//! Durable reminders with real `rio silo` processes in real time (the
//! scan's rules are unit-tested in the silo): the counter guest's
//! reminders fire once each, periodic ones go on until cancelled, a failed
//! turn sets none, a reminder fires after its lone silo is killed and
//! started again (the object not active), a periodic reminder whose times
//! were missed while the silo was down skips them or fires once, never a
//! burst; and on three silos sharing PostgreSQL, MariaDB or Redis, the
//! reminders of many objects each fire exactly once although a silo is
//! killed with SIGKILL before they are due.

use crate::common;

use std::time::{Duration, Instant};

use common::guests::build;
use common::stores::{MariaDatabase, PostgresDatabase, RedisDatabase};
use common::{SiloProcess, outcome_unknown};
use rio_client::{Calls, Client};
use serde_json::{Value, json};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The fires `id` recorded: (reminder, due time, ran at).
async fn fires(client: &Client, id: &str) -> Vec<(String, u64, u64)> {
    let started = Instant::now();
    loop {
        match client
            .call::<_, Value>("Counter", id, "fires", &json!({}))
            .await
        {
            Ok(reply) => return serde_json::from_value(reply["fires"].clone()).unwrap(),
            Err(error)
                if outcome_unknown(&error) && started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("fires of {id}: {error}"),
        }
    }
}

fn named<'a>(fires: &'a [(String, u64, u64)], name: &str) -> Vec<&'a (String, u64, u64)> {
    fires.iter().filter(|fire| fire.0 == name).collect()
}

/// Polls the fires of `id` until `done` holds, failing after `limit`.
async fn fires_until(
    client: &Client,
    id: &str,
    limit: Duration,
    done: impl Fn(&[(String, u64, u64)]) -> bool,
) -> Vec<(String, u64, u64)> {
    let started = Instant::now();
    loop {
        let now = fires(client, id).await;
        if done(&now) {
            return now;
        }
        assert!(
            started.elapsed() < limit,
            "{id}: fires still {now:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn remind(client: &Client, id: &str, message: Value) {
    let _: Value = client
        .call("Counter", id, "remind", &message)
        .await
        .unwrap_or_else(|error| panic!("remind {id} {message}: {error}"));
}

async fn listed(client: &Client, id: &str) -> Vec<String> {
    let reply: Value = client
        .call("Counter", id, "reminders", &json!({}))
        .await
        .unwrap();
    reply["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reminder| reminder["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_fire_once_go_on_until_cancelled_and_survive_a_killed_silo() {
    let data = tempfile::tempdir().unwrap();
    let (silo, _log) = SiloProcess::start_logged(data.path(), &[]);
    let address = silo.address.clone();
    let client = Client::connect(&address).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();

    // A failed turn sets nothing; a client may not name a fire's key.
    let failed = client
        .call::<_, Value>(
            "Counter",
            "r",
            "remind",
            &json!({"name": "bad", "after_ms": 0, "fail": true}),
        )
        .await;
    assert!(failed.is_err());
    let forged = client
        .call_with_key::<_, Value>(
            "Counter",
            "r",
            "reminded",
            &json!({"by": 1}),
            "rio:reminder:1:0:x",
        )
        .await
        .unwrap_err();
    assert!(forged.to_string().contains("reserved"), "{forged}");

    // From the CLI: one object's, and the next due anywhere.
    remind(
        &client,
        "cli",
        json!({"name": "later", "after_ms": 600_000}),
    )
    .await;
    remind(&client, "cli", json!({"name": "hourly", "after_ms": 500_000, "every_ms": 3_600_000, "fire_once_when_missed": true})).await;
    let printed = common::stdout_of(&common::rio(&[
        "reminders",
        "Counter/cli",
        "--silo",
        &address,
    ]));
    let rows: Vec<&str> = printed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{printed}");
    assert!(
        rows[0].starts_with("Counter/cli\thourly\t")
            && rows[0].contains("\t3600000\tfire-once\treminded\t{\"by\":1}"),
        "{printed}"
    );
    assert!(
        rows[1].starts_with("Counter/cli\tlater\t") && rows[1].contains("\t-\tskip\treminded\t"),
        "{printed}"
    );
    let due = common::stdout_of(&common::rio(&[
        "reminders",
        "--due",
        "--limit",
        "1",
        "--silo",
        &address,
    ]));
    assert_eq!(due.lines().count(), 2, "{due}");
    assert!(
        due.lines()
            .nth(1)
            .unwrap()
            .starts_with("Counter/cli\thourly\t"),
        "{due}"
    );

    let set_at = now_ms();
    remind(&client, "r", json!({"name": "once", "after_ms": 300})).await;
    remind(
        &client,
        "r",
        json!({"name": "every", "after_ms": 300, "every_ms": 400}),
    )
    .await;
    assert_eq!(listed(&client, "r").await, ["every", "once"]);
    let seen = fires_until(&client, "r", Duration::from_secs(10), |fires| {
        named(fires, "every").len() >= 3
    })
    .await;
    client
        .call::<_, Value>("Counter", "r", "cancel-reminder", &json!({"name": "every"}))
        .await
        .unwrap();
    let once = named(&seen, "once");
    assert_eq!(once.len(), 1, "{seen:?}");
    let (_, due, ran) = once[0];
    assert!(*due >= set_at + 300 && *ran >= *due, "{seen:?}");
    assert!(ran - due < 1_500, "fired {} ms late", ran - due);
    // The periodic one fired at its times, each time once.
    let dues: Vec<u64> = named(&seen, "every").iter().map(|fire| fire.1).collect();
    for pair in dues.windows(2) {
        assert_eq!(pair[1] - pair[0], 400, "{dues:?}");
    }
    assert!(listed(&client, "r").await.is_empty());
    let after_cancel = fires(&client, "r").await.len();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        fires(&client, "r").await.len(),
        after_cancel,
        "a cancelled reminder fired"
    );

    // Set, then the silo killed at once and started again: the fire comes
    // to an object nobody called since. Missed periodic times either skip
    // or fire once, never one per missed time.
    remind(&client, "k", json!({"name": "later", "after_ms": 1_500})).await;
    remind(
        &client,
        "m",
        json!({"name": "skip", "after_ms": 200, "every_ms": 300}),
    )
    .await;
    remind(&client, "m", json!({"name": "catch-up", "after_ms": 200, "every_ms": 300, "fire_once_when_missed": true})).await;
    // Let the periodic ones fire once on the running silo.
    fires_until(&client, "m", Duration::from_secs(10), |fires| {
        !named(fires, "skip").is_empty() && !named(fires, "catch-up").is_empty()
    })
    .await;
    silo.kill();
    let killed_at = now_ms();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let restart_began = now_ms();
    let (silo, _log) = SiloProcess::start_logged_at(data.path(), &address, &[]);
    let restarted_at = now_ms();
    let client = Client::connect(&address).await.unwrap();
    let later = fires_until(&client, "k", Duration::from_secs(10), |fires| {
        !fires.is_empty()
    })
    .await;
    assert_eq!(later.len(), 1, "{later:?}");
    let seen = fires_until(&client, "m", Duration::from_secs(10), |fires| {
        named(fires, "skip")
            .iter()
            .any(|fire| fire.1 > restarted_at)
            && named(fires, "catch-up")
                .iter()
                .any(|fire| fire.1 > restarted_at)
    })
    .await;
    // Whatever ran after the kill ran after the restart began; a time more
    // than a period (300 ms) before that was missed.
    let late = |name: &str, by: u64| {
        named(&seen, name)
            .iter()
            .filter(|fire| fire.2 > killed_at && fire.1 + by < restart_began)
            .count()
    };
    assert_eq!(
        late("skip", 300),
        0,
        "the skip policy fired a missed time: {seen:?}"
    );
    assert_eq!(
        late("catch-up", 0),
        1,
        "fire-once did not fire exactly once: {seen:?}"
    );
    let stats: Value = serde_json::to_value(client.stats().await.unwrap()).unwrap();
    assert!(
        stats["reminder_fires_skipped_total"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["reminder_fires_total"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    silo.stop();
}

/// Three silos on the cluster store at `url`, the counter guest deployed
/// and every silo's membership view current; with their data folders.
async fn counter_cluster(url: &str) -> (Vec<SiloProcess>, Vec<String>, Vec<tempfile::TempDir>) {
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = data
        .iter()
        .map(|dir| SiloProcess::start_with(dir.path(), &["--cluster", url]))
        .collect();
    let addresses: Vec<String> = silos.iter().map(|silo| silo.address.clone()).collect();
    let admin = Client::connect(&addresses[0]).await.unwrap();
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    // Each silo reads the membership table once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    (silos, addresses, data)
}

/// Reminders on `OBJECTS` counters through three silos on `url`, due a few
/// seconds later; one silo killed with SIGKILL before they are due: each
/// fires exactly once, on a survivor, within 10 s of its due time.
async fn reminders_outlive_a_killed_silo(url: &str) {
    const OBJECTS: usize = 24;
    let (silos, addresses, _data) = counter_cluster(url).await;
    let mut silos: Vec<Option<SiloProcess>> = silos.into_iter().map(Some).collect();
    for n in 0..OBJECTS {
        let client = Client::connect(&addresses[n % 3]).await.unwrap();
        remind(
            &client,
            &format!("k{n}"),
            json!({"name": "due", "after_ms": 3_000}),
        )
        .await;
    }
    let due_by = now_ms() + 3_000;
    silos[0].take().unwrap().kill();
    let client = Client::connect(&addresses[1]).await.unwrap();
    for n in 0..OBJECTS {
        let id = format!("k{n}");
        let seen = fires_until(&client, &id, Duration::from_secs(30), |fires| {
            !fires.is_empty()
        })
        .await;
        assert_eq!(seen.len(), 1, "{id}: {seen:?}");
        let (_, due, ran) = &seen[0];
        assert!(
            *ran <= due_by + 10_000 && ran >= due,
            "{id} fired at {ran}, due {due}"
        );
    }
    // And not again: a second look after more scans.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for n in 0..OBJECTS {
        let id = format!("k{n}");
        assert_eq!(fires(&client, &id).await.len(), 1, "{id} fired twice");
    }
    for silo in silos.into_iter().flatten() {
        silo.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_outlive_a_killed_silo_on_postgres() {
    let Some(database) = PostgresDatabase::create("reminders") else {
        return;
    };
    reminders_outlive_a_killed_silo(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_outlive_a_killed_silo_on_mariadb() {
    let Some(database) = MariaDatabase::create("reminders") else {
        return;
    };
    reminders_outlive_a_killed_silo(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_outlive_a_killed_silo_on_redis() {
    let Some(database) = RedisDatabase::create(13) else {
        return;
    };
    reminders_outlive_a_killed_silo(&database.url).await;
}

/// The session example in Rust, Python and JavaScript: a session expires
/// through its reminder even though its silo was killed and started again
/// meanwhile (exactly once: `expired` is 1), one with a long time-to-live
/// stays, and `expire` from a client is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_in_every_language_across_a_killed_silo() {
    if !common::guests::tooling_ready(&common::guests::Language::ALL) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (silo, _log) = SiloProcess::start_logged(data.path(), &[]);
    let address = silo.address.clone();
    let client = Client::connect(&address).await.unwrap();
    let types = [
        ("Session", "examples/session"),
        ("PySession", "examples/session-python"),
        ("JsSession", "examples/session-js"),
    ];
    // Compiling a Python or JS component takes tens of seconds of a busy
    // two-core machine: longer than a call's default 30 s.
    let deployer = client.with_timeout(Duration::from_secs(300));
    for (service_type, folder) in types {
        deployer.deploy(service_type, build(folder)).await.unwrap();
    }
    for (service_type, _) in types {
        let short: Value = client
            .call(
                service_type,
                "short",
                "login",
                &json!({"user": "ann", "ttl_ms": 1_500}),
            )
            .await
            .unwrap();
        assert_eq!(short["active"], true, "{service_type}: {short}");
        let _: Value = client
            .call(
                service_type,
                "long",
                "login",
                &json!({"user": "bo", "ttl_ms": 600_000}),
            )
            .await
            .unwrap();
        let refused = client
            .call::<_, Value>(service_type, "long", "expire", &json!({}))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("not-a-reminder"),
            "{service_type}: {refused}"
        );
    }
    silo.kill();
    let (silo, _log) = SiloProcess::start_logged_at(data.path(), &address, &[]);
    let client = Client::connect(&address).await.unwrap();
    for (service_type, _) in types {
        let started = Instant::now();
        let status = loop {
            let status: Value = client
                .call(service_type, "short", "get", &json!({}))
                .await
                .unwrap();
            if status["expired"] != 0 || started.elapsed() > Duration::from_secs(15) {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status,
            json!({"active": false, "user": null, "expired": 1}),
            "{service_type}"
        );
        let touched = client
            .call::<_, Value>(service_type, "short", "touch", &json!({}))
            .await
            .unwrap_err();
        assert!(
            touched.to_string().contains("no-session"),
            "{service_type}: {touched}"
        );
        let long: Value = client
            .call(service_type, "long", "touch", &json!({}))
            .await
            .unwrap();
        assert_eq!(long["active"], true, "{service_type}: {long}");
        let long: Value = client
            .call(service_type, "long", "get", &json!({}))
            .await
            .unwrap();
        assert_eq!(
            long,
            json!({"active": true, "user": "bo", "expired": 0}),
            "{service_type}"
        );
    }
    silo.stop();
}

/// Periodic reminders on a few objects of a three-silo PostgreSQL cluster
/// while clients read those objects all along, and one silo frozen with
/// SIGSTOP for longer than failure detection, then woken: each fire takes
/// effect once (the value its fires add equals the fires recorded, no
/// time fires twice), every fire is on its reminder's schedule, and the
/// fires go on through the freeze on the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reminders_fire_once_each_through_a_frozen_silo() {
    let Some(database) = PostgresDatabase::create("reminders_frozen") else {
        return;
    };
    const OBJECTS: usize = 9;
    const PERIOD_MS: u64 = 300;
    let (mut silos, addresses, _data) = counter_cluster(&database.url).await;
    for n in 0..OBJECTS {
        let client = Client::connect(&addresses[n % 3]).await.unwrap();
        let message = json!({"name": "tick", "after_ms": PERIOD_MS, "every_ms": PERIOD_MS});
        remind(&client, &format!("p{n}"), message).await;
    }
    // Readers on the two silos that stay awake, on the same objects.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4 {
        let (address, stop) = (addresses[1 + r % 2].clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let client = Client::connect(&address)
                .await
                .unwrap()
                .with_timeout(Duration::from_secs(5));
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("p{}", reads as usize % OBJECTS);
                let _ = client
                    .call::<_, Value>("Counter", &id, "get", &json!({}))
                    .await;
                reads += 1;
            }
            reads
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    silos[0].signal("STOP");
    let frozen_at = now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    silos[0].signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = Client::connect(&addresses[1]).await.unwrap();
    for n in 0..OBJECTS {
        let id = format!("p{n}");
        let started = Instant::now();
        loop {
            match client
                .call::<_, Value>("Counter", &id, "cancel-reminder", &json!({"name": "tick"}))
                .await
            {
                Ok(_) => break,
                Err(error)
                    if outcome_unknown(&error) && started.elapsed() < Duration::from_secs(30) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cancel {id}: {error}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    assert!(reads > 0);
    for n in 0..OBJECTS {
        let id = format!("p{n}");
        let seen = fires(&client, &id).await;
        let value: Value = client
            .call("Counter", &id, "get", &json!({}))
            .await
            .unwrap();
        assert_eq!(
            value["value"].as_u64().unwrap(),
            seen.len() as u64,
            "{id}: {seen:?}"
        );
        let dues: Vec<u64> = seen.iter().map(|fire| fire.1).collect();
        let distinct: std::collections::HashSet<&u64> = dues.iter().collect();
        assert_eq!(
            distinct.len(),
            dues.len(),
            "{id}: a time fired twice: {dues:?}"
        );
        for due in &dues {
            assert_eq!(
                (due - dues[0]) % PERIOD_MS,
                0,
                "{id}: off its schedule: {dues:?}"
            );
        }
        // It fired while the silo was frozen, on a survivor.
        let during = seen
            .iter()
            .filter(|fire| fire.2 > frozen_at + 3_500 && fire.2 < frozen_at + 7_000)
            .count();
        assert!(during > 0, "{id} did not fire during the freeze: {seen:?}");
    }
    for silo in silos.drain(1..) {
        silo.stop();
    }
}
