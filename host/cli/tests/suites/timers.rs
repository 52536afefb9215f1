//! Timers and self-deactivation with real `rio silo` processes in real
//! time (their rules are tested on an injected clock in the silo's own
//! `activation::timer_tests`; this is the end-to-end run of each
//! mechanism): the counter guest's timer ticks, is cancelled and ends with
//! a `deactivate`; the metrics example in Rust, Python and JavaScript,
//! recorded into by many clients at once with `close` (self-deactivation)
//! among the records and the silo killed with SIGKILL in the middle,
//! flushes every acknowledged record into its total exactly once.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::guests::{Language, build, tooling_ready};
use common::{SiloProcess, outcome_unknown};
use rio_client::{Calls, Client};
use serde_json::{Value, json};

/// Polls `read` until `done` holds of its answer, failing after `limit`
/// with the last answer.
async fn eventually<F, Fut>(
    limit: Duration,
    what: &str,
    read: F,
    done: impl Fn(&Value) -> bool,
) -> Value
where
    F: Fn() -> Fut,
    Fut: Future<Output = Value>,
{
    let started = Instant::now();
    loop {
        let now = read().await;
        if done(&now) {
            return now;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: still {now} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_ticks_in_real_time_stops_when_cancelled_and_ends_with_a_deactivate() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    let value = |id: &'static str| {
        let client = client.clone();
        async move {
            let reply: Value = client.call("Counter", id, "get", &json!({})).await.unwrap();
            reply
        }
    };
    let timer = json!({"name": "t", "after_ms": 50, "every_ms": 100, "by": 1});
    let _: Value = client
        .call("Counter", "t", "set-timer", &timer)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "ticks",
        || value("t"),
        |v| v["value"].as_i64() >= Some(3),
    )
    .await;

    let _: Value = client
        .call("Counter", "t", "cancel-timer", &json!({"name": "t"}))
        .await
        .unwrap();
    let cancelled_at = value("t").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        value("t").await,
        cancelled_at,
        "no tick after the cancel committed"
    );

    // A timer that would tick in 200 ms, then a deactivate: it never ticks.
    let timer = json!({"name": "late", "after_ms": 200, "by": 1000});
    let _: Value = client
        .call("Counter", "t", "set-timer", &timer)
        .await
        .unwrap();
    let before = client.stats().await.unwrap();
    let _: Value = client
        .call("Counter", "t", "deactivate", &json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = client.stats().await.unwrap();
    assert_eq!(after.deactivations_total, before.deactivations_total + 1);
    assert_eq!(
        after.timer_ticks_total, before.timer_ticks_total,
        "the timer ended with it"
    );
    assert_eq!(
        value("t").await,
        cancelled_at,
        "state kept; activated afresh"
    );
    assert!(after.timer_ticks_total >= 3);
    // The same counters from the command line.
    let printed: Value = serde_json::from_str(&common::stdout_of(&common::rio(&[
        "stats",
        "--silo",
        &silo.address,
    ])))
    .unwrap();
    assert_eq!(printed["timer_ticks_total"], after.timer_ticks_total);
    assert!(printed["deactivations_total"].as_u64() >= Some(1));
    silo.stop();
}

/// Records per client, and clients per language.
const RECORDS: usize = 30;
const CLIENTS: usize = 6;
/// Sources per language: the few objects every client records into.
const SOURCES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_every_language_flush_each_record_once_across_closes_and_a_kill() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let folders = [
        ("RustMetrics", "examples/metrics"),
        ("PyMetrics", "examples/metrics-python"),
        ("JsMetrics", "examples/metrics-js"),
    ];
    let data = tempfile::tempdir().unwrap();
    let (silo, _log) = SiloProcess::start_logged(data.path(), &[]);
    let address = silo.address.clone();
    let client = Client::connect(&address).await.unwrap();
    // A Python or JS component compiles at deploy; on a busy two-core
    // machine that can outlast a call's default 30 s.
    let deployer = client.with_timeout(Duration::from_secs(300));
    for (service_type, folder) in folders {
        deployer.deploy(service_type, build(folder)).await.unwrap();
    }

    // Every client records keyed values into the few sources of every type,
    // closing its source now and then; a call whose outcome is unknown (the
    // kill) is retried under its key until it is answered.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for (service_type, _) in folders {
        for task in 0..CLIENTS {
            let (address, acknowledged) = (address.clone(), acknowledged.clone());
            let retried = retried.clone();
            clients.spawn(async move {
                let client = Client::connect(&address).await.unwrap();
                for n in 0..RECORDS {
                    let source = format!("s{}", (task + n) % SOURCES);
                    let (message, body) = if n % 10 == 9 {
                        ("close", json!({}))
                    } else {
                        ("record", json!({"value": task * 1000 + n}))
                    };
                    let key = format!("{task}-{n}");
                    let started = Instant::now();
                    loop {
                        let reply: Result<Value, _> = client
                            .call_with_key(service_type, &source, message, &body, &key)
                            .await;
                        match reply {
                            Ok(_) => break,
                            Err(error) if outcome_unknown(&error) => {
                                assert!(
                                    started.elapsed() < Duration::from_secs(90),
                                    "{service_type}/{source} {message} {key}: {error}"
                                );
                                retried.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(error) => panic!("{service_type}/{source} {message}: {error}"),
                        }
                    }
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    let total_calls = folders.len() * CLIENTS * RECORDS;
    let started = Instant::now();
    while acknowledged.load(Ordering::Relaxed) < total_calls / 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "half the records in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    silo.kill();
    let (restarted, _log) = SiloProcess::start_logged_at(data.path(), &address, &[]);
    while let Some(finished) = clients.join_next().await {
        finished.unwrap();
    }
    let retried = retried.load(Ordering::Relaxed);
    println!("{total_calls} keyed calls, {retried} attempts retried across the kill");

    // What every type's total must come to: each record once.
    let (mut count, mut sum) = (0_i64, 0_i64);
    for task in 0..CLIENTS {
        for n in (0..RECORDS).filter(|n| n % 10 != 9) {
            count += 1;
            sum += (task * 1000 + n) as i64;
        }
    }
    let client = Client::connect(&address).await.unwrap();
    for (service_type, _) in folders {
        // Timers are volatile: a source activates (and sets its timer) again
        // when it is called, and flushes what the kill left pending.
        for source in 0..SOURCES {
            let _: Value = client
                .call(service_type, &format!("s{source}"), "get", &json!({}))
                .await
                .unwrap();
        }
        let read = || {
            let client = client.clone();
            async move {
                let reply: Value = client
                    .call(service_type, "total", "get", &json!({}))
                    .await
                    .unwrap();
                reply["total"].clone()
            }
        };
        let total = eventually(Duration::from_secs(30), service_type, read, |total| {
            total["count"].as_i64() >= Some(count)
        })
        .await;
        assert_eq!(
            total,
            json!({"count": count, "sum": sum}),
            "{service_type}: every record once"
        );
    }
    // Two more flush periods: nothing arrives twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (service_type, _) in folders {
        let reply: Value = client
            .call(service_type, "total", "get", &json!({}))
            .await
            .unwrap();
        assert_eq!(
            reply["total"],
            json!({"count": count, "sum": sum}),
            "{service_type}"
        );
        for source in 0..SOURCES {
            let reply: Value = client
                .call(service_type, &format!("s{source}"), "get", &json!({}))
                .await
                .unwrap();
            assert_eq!(
                reply["pending"],
                json!({"count": 0, "sum": 0}),
                "{service_type}/s{source}"
            );
        }
    }
    let stats = client.stats().await.unwrap();
    assert!(stats.timer_ticks_total > 0);
    restarted.stop();
}

/// Clients on every silo of a three-silo cluster (a SQLite file) increment
/// a few counters and ask them to deactivate, all at once; a timer set
/// through one silo ticks on the object's owner. Each deactivation hands
/// what waited to the object's next activation, wherever it is placed:
/// every increment counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_deactivation_and_timers_in_a_cluster_lose_and_double_nothing() {
    let store = common::stores::SqliteFile::create();
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = data
        .iter()
        .map(|dir| SiloProcess::start_with(dir.path(), &["--cluster", &store.url]))
        .collect();
    let addresses: Vec<String> = silos.iter().map(|silo| silo.address.clone()).collect();
    let admin = Client::connect(&addresses[0]).await.unwrap();
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    // Each silo reads the membership table once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    const OBJECTS: usize = 4;
    const INCREMENTS: usize = 40;
    let mut clients = tokio::task::JoinSet::new();
    for (silo, address) in addresses.iter().enumerate() {
        for task in 0..2 {
            let address = address.clone();
            clients.spawn(async move {
                let client = Client::connect(&address).await.unwrap();
                for n in 0..INCREMENTS {
                    let id = format!("c{}", (silo + task + n) % OBJECTS);
                    let _: Value = client
                        .call("Counter", &id, "increment", &json!({"by": 1}))
                        .await
                        .unwrap_or_else(|e| panic!("increment {id} through silo {silo}: {e}"));
                    if n % 4 == 3 {
                        let _: Value = client
                            .call("Counter", &id, "deactivate", &json!({}))
                            .await
                            .unwrap_or_else(|e| panic!("deactivate {id}: {e}"));
                    }
                }
            });
        }
    }
    while let Some(finished) = clients.join_next().await {
        finished.unwrap();
    }
    let client = Client::connect(&addresses[2]).await.unwrap();
    let mut total = 0;
    for id in 0..OBJECTS {
        let reply: Value = client
            .call("Counter", &format!("c{id}"), "get", &json!({}))
            .await
            .unwrap();
        total += reply["value"].as_i64().unwrap();
    }
    assert_eq!(
        total,
        (addresses.len() * 2 * INCREMENTS) as i64,
        "every increment once"
    );
    let mut deactivations = 0;
    for address in &addresses {
        let stats = Client::connect(address)
            .await
            .unwrap()
            .stats()
            .await
            .unwrap();
        deactivations += stats.deactivations_total;
    }
    assert!(deactivations >= 10, "{deactivations} deactivations");

    // A timer set through one silo ticks wherever its object lives.
    let timer = json!({"name": "t", "after_ms": 50, "every_ms": 100, "by": 1});
    let _: Value = client
        .call("Counter", "ticking", "set-timer", &timer)
        .await
        .unwrap();
    let value = || {
        let client = client.clone();
        async move {
            let reply: Value = client
                .call("Counter", "ticking", "get", &json!({}))
                .await
                .unwrap();
            reply
        }
    };
    eventually(Duration::from_secs(20), "ticks", value, |v| {
        v["value"].as_i64() >= Some(3)
    })
    .await;
    for silo in silos {
        silo.stop();
    }
}
