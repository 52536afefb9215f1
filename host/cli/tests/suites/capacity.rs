//! Capacity (issue 11): a real `rio silo` holds many Rust counter
//! activations in few kernel memory mappings (so that 100,000 fit under
//! Linux's default `vm.max_map_count` of 65,530), counts only live instances
//! in `Stats`, and when full deactivates its least recently used idle
//! object before it refuses a new one with `overloaded`.

use crate::common;

use std::io::Write as _;
use std::time::Duration;

use common::SiloProcess;
use common::guests::{Language, build, tooling_ready};
use rio_client::{Calls, Client, ClientError};
use serde_json::{Value, json};

/// The activations the mapping count is extrapolated to.
const TARGET_ACTIVATIONS: u64 = 100_000;
/// Linux's default `vm.max_map_count`.
const DEFAULT_MAX_MAP_COUNT: u64 = 65_530;

/// The memory mappings of process `pid` now (Linux only).
fn mappings(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(maps.lines().count() as u64)
}

async fn connect(silo: &SiloProcess) -> Client {
    Client::connect(&silo.address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(120))
}

/// Calls `get` on `Counter/{prefix}{i}` for every `i` in `ids`, `lanes`
/// calls at a time.
async fn get_all(client: &Client, prefix: &str, ids: std::ops::Range<u64>, lanes: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let client = client.clone();
        let prefix = prefix.to_string();
        let ids = ids.clone();
        tasks.spawn(async move {
            for i in ids.skip(lane as usize).step_by(lanes as usize) {
                let id = format!("{prefix}{i}");
                let _: Value = client
                    .call("Counter", &id, "get", &json!({}))
                    .await
                    .unwrap_or_else(|error| panic!("get on {id}: {error}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a lane of calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_counters_stay_live_in_few_mappings() {
    const ACTIVATIONS: u64 = 20_000;
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--idle-timeout-secs", "3600"]);
    let Some(_) = mappings(silo.pid()) else {
        // Straight to stderr: the harness hides what `eprintln!` prints in a
        // test that passes, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "no /proc/PID/maps here: skipping");
        return;
    };
    let client = connect(&silo).await;
    client
        .deploy("Counter", build("examples/counter"))
        .await
        .expect("deploy");
    // One activation first, so that what every activation shares (compiled
    // code, the runtime's threads and arenas) is counted before.
    get_all(&client, "warm-", 0..1, 1).await;
    let before = mappings(silo.pid()).unwrap();

    let started = std::time::Instant::now();
    get_all(&client, "c-", 0..ACTIVATIONS, 64).await;
    let took = started.elapsed();
    let after = mappings(silo.pid()).unwrap();
    let stats = client.stats().await.expect("stats");
    eprintln!(
        "{ACTIVATIONS} activations in {took:.1?}: mappings {before} -> {after}, resident {} MiB",
        stats.resident_bytes >> 20
    );
    assert_eq!(stats.live_activations, ACTIVATIONS + 1, "all stay live");
    assert_eq!(stats.deactivations_total, 0);

    let grown = after.saturating_sub(before);
    let extrapolated = before + grown * TARGET_ACTIVATIONS / ACTIVATIONS;
    assert!(
        extrapolated < DEFAULT_MAX_MAP_COUNT,
        "{grown} more mappings for {ACTIVATIONS} activations: {TARGET_ACTIVATIONS} would need \
         about {extrapolated}, over the default vm.max_map_count of {DEFAULT_MAX_MAP_COUNT}"
    );

    // Still live: calling a sample again activates nothing.
    let activations = stats.activations_total;
    get_all(&client, "c-", 0..1000, 16).await;
    let stats = client.stats().await.expect("stats");
    assert_eq!(stats.activations_total, activations);
    silo.stop();
}

/// The object's counter value, activating it if needed.
async fn get(client: &Client, id: &str) -> Result<Value, ClientError> {
    client.call("Counter", id, "get", &json!({})).await
}

async fn activations_total(client: &Client) -> u64 {
    client.stats().await.expect("stats").activations_total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_the_least_recently_used_idle_object_makes_room() {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--max-activations", "3"]);
    let client = connect(&silo).await;
    client
        .deploy("Counter", build("examples/counter"))
        .await
        .expect("deploy");
    for id in ["a", "b", "c", "a"] {
        get(&client, id).await.expect("room for three");
    }
    // Full: `d` makes `b`, the least recently used, deactivate.
    get(&client, "d").await.expect("room made for d");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = client.stats().await.expect("stats");
        if stats.deactivations_total == 1 && stats.live_activations == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never deactivated: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = activations_total(&client).await;
    for id in ["a", "c", "d"] {
        get(&client, id).await.expect("still live");
    }
    assert_eq!(
        activations_total(&client).await,
        before,
        "a, c and d stayed live"
    );
    get(&client, "b")
        .await
        .expect("b comes back, another making room");
    assert_eq!(activations_total(&client).await, before + 1);
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_idle_object_to_deactivate_a_full_silo_refuses_with_overloaded() {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--max-activations", "2"]);
    let client = connect(&silo).await;
    client
        .deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .expect("deploy");
    // A trapped instance is dropped: it no longer counts as live.
    let trapped = client
        .call::<_, Value>("Faulty", "trapper", "trap", &json!({}))
        .await;
    assert!(trapped.is_err());
    let stats = client.stats().await.expect("stats");
    assert_eq!(stats.live_activations, 0, "{stats:?}");
    // Two turns busy for a while fill the silo (the trapper makes room).
    let mut sleepers = Vec::new();
    for id in ["x", "y"] {
        let client = client.clone();
        sleepers.push(tokio::spawn(async move {
            loop {
                let slept = client
                    .call::<_, Value>("Faulty", id, "sleep", &json!({"millis": 3000}))
                    .await;
                // The trapper's task may not have marked itself idle yet
                // (its reply goes out first): then it cannot make room.
                match &slept {
                    Err(ClientError::Reply(error)) if error.kind() == "overloaded" => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => return slept,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.stats().await.expect("stats").live_activations < 2 {
        if let Some(done) = sleepers.iter_mut().find(|sleeper| sleeper.is_finished()) {
            panic!("a sleeper ended first: {:?}", done.await);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sleepers never activated: {:?}",
            client.stats().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match client
        .call::<_, Value>("Faulty", "z", "ok", &json!({}))
        .await
    {
        Err(ClientError::Reply(error)) => {
            assert_eq!(error.kind(), "overloaded", "{error}");
            assert!(error.to_string().contains("max-activations"), "{error}");
        }
        other => panic!("a full silo with no idle activation took z: {other:?}"),
    }
    let refused = client.stats().await.expect("stats");
    assert!(refused.activations_refused_total >= 1, "{refused:?}");
    assert!(refused.messages_refused_total >= refused.activations_refused_total);
    for sleeper in sleepers {
        sleeper.await.unwrap().expect("the sleepers finish");
    }
    // Idle now (once their tasks have marked themselves so, just after
    // their replies left): one of them makes room.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .call::<_, Value>("Faulty", "z", "ok", &json!({}))
            .await
        {
            Ok(_) => break,
            Err(ClientError::Reply(error))
                if error.kind() == "overloaded" && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("no room made for z: {error}"),
        }
    }
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_budget_a_silo_with_nothing_idle_refuses_with_overloaded() {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // Any silo is resident in more than 1 MiB.
    let silo = SiloProcess::start_with(data.path(), &["--memory-budget-mib", "1"]);
    let client = connect(&silo).await;
    client
        .deploy("Counter", build("examples/counter"))
        .await
        .expect("deploys never fail for want of room for activations");
    match get(&client, "first").await {
        Err(ClientError::Reply(error)) => {
            assert_eq!(error.kind(), "overloaded", "{error}");
            assert!(error.to_string().contains("budget"), "{error}");
        }
        other => panic!("a silo over its memory budget activated an object: {other:?}"),
    }
    silo.stop();
}
