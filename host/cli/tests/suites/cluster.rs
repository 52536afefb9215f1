//! Multi-silo tests with real `rio silo` processes on loopback sharing one
//! cluster store (a SQLite file, or PostgreSQL): racing first calls, calls
//! between objects on different silos, deploy on one silo and call on
//! another, a silo killed under a write load, a silo stopped gracefully.
//!
//! PostgreSQL is 127.0.0.1:5432 (trust auth); each test makes a database of
//! its own with `psql`. Outside CI a test that needs it skips, saying why.

use crate::common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::stores::{PostgresDatabase, server_is_up};
use common::{SiloProcess, rio, stdout_of};
use rio_client::{Calls, Client, ClientError, ClusterClient};
use serde_json::{Value, json};

struct Cluster {
    silos: Vec<Option<SiloProcess>>,
    _data: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start(url: &str, count: usize) -> Cluster {
        let data: Vec<tempfile::TempDir> =
            (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
        let silos = data
            .iter()
            .map(|dir| Some(SiloProcess::start_with(dir.path(), &["--cluster", url])))
            .collect();
        Cluster { silos, _data: data }
    }

    fn address(&self, index: usize) -> String {
        self.silos[index]
            .as_ref()
            .expect("silo running")
            .address
            .clone()
    }

    fn take(&mut self, index: usize) -> SiloProcess {
        self.silos[index].take().expect("silo running")
    }
}

fn counter_component() -> String {
    stdout_of(&rio(&["build", "examples/counter"]))
}

fn deploy(address: &str, service_type: &str, component: &str) {
    stdout_of(&rio(&[
        "deploy",
        "--silo",
        address,
        "--type",
        service_type,
        component,
    ]));
}

async fn increment(client: &Client, id: &str) -> Result<i64, ClientError> {
    let reply: Value = client
        .call("Counter", id, "increment", &json!({"by": 1}))
        .await?;
    Ok(reply["value"].as_i64().unwrap())
}

async fn value_of(client: &Client, id: &str) -> Result<i64, ClientError> {
    let reply: Value = client.call("Counter", id, "get", &json!({})).await?;
    Ok(reply["value"].as_i64().unwrap())
}

async fn activations_total(addresses: &[String]) -> u64 {
    let mut total = 0;
    for address in addresses {
        let client = Client::connect(address).await.unwrap();
        total += client.stats().await.unwrap().activations_total;
    }
    total
}

/// Many clients, through every silo, race to the first calls of the same
/// objects: each object is activated exactly once in the cluster and no
/// increment is lost.
async fn racing_first_calls(url: &str) {
    let cluster = Cluster::start(url, 3);
    let addresses: Vec<String> = (0..3).map(|i| cluster.address(i)).collect();
    // Deployed through one silo, called through all three.
    deploy(&addresses[0], "Counter", &counter_component());

    const OBJECTS: usize = 40;
    const CLIENTS_PER_SILO: usize = 3;
    let mut tasks = Vec::new();
    for (silo, address) in addresses.iter().enumerate() {
        for n in 0..CLIENTS_PER_SILO {
            let client = Client::connect(address).await.unwrap();
            let rotation = silo * CLIENTS_PER_SILO + n;
            tasks.push(tokio::spawn(async move {
                let calls = (0..OBJECTS).map(|i| {
                    let id = format!("race-{}", (i + rotation * 7) % OBJECTS);
                    let client = client.clone();
                    async move { increment(&client, &id).await }
                });
                for result in join_all(calls).await {
                    result.expect("every racing call succeeds");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let client = Client::connect(&addresses[1]).await.unwrap();
    for i in 0..OBJECTS {
        let id = format!("race-{i}");
        assert_eq!(
            value_of(&client, &id).await.unwrap(),
            (3 * CLIENTS_PER_SILO) as i64,
            "{id} kept every increment"
        );
    }
    assert_eq!(
        activations_total(&addresses).await,
        OBJECTS as u64,
        "one activation per object in the whole cluster"
    );
}

async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_on_a_shared_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("cluster.db").display());
    racing_first_calls(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_on_postgres() {
    let Some(database) = PostgresDatabase::create("race") else {
        return;
    };
    racing_first_calls(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_on_mariadb() {
    if !server_is_up("MariaDB", 3306) {
        return;
    }
    let name = format!("rio_race_{}", std::process::id());
    let mariadb = |sql: &str| {
        let output = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e", sql])
            .output()
            .expect("the mariadb client runs");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    mariadb(&format!(
        "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
    ));
    racing_first_calls(&format!("mysql://root@127.0.0.1:3306/{name}")).await;
    mariadb(&format!("DROP DATABASE {name}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_on_redis() {
    if !server_is_up("Redis", 6379) {
        return;
    }
    // A database of its own (the conformance suite uses 0), emptied first.
    const DATABASE: &str = "9";
    let flushed = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-n", DATABASE, "FLUSHDB"])
        .output()
        .expect("redis-cli runs");
    assert!(flushed.status.success());
    racing_first_calls(&format!("redis://127.0.0.1:6379/{DATABASE}")).await;
}

async fn forwarded_total(addresses: &[String]) -> u64 {
    let mut total = 0;
    for address in addresses {
        let client = Client::connect(address).await.unwrap();
        total += client.stats().await.unwrap().forwarded_total;
    }
    total
}

/// A cluster client learns where each object lives from its first call and
/// sends the next ones straight there: no silo forwards them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_calls_owners_directly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("cluster.db").display());
    let cluster = Cluster::start(&url, 3);
    let addresses: Vec<String> = (0..3).map(|i| cluster.address(i)).collect();
    deploy(&addresses[0], "Counter", &counter_component());
    let client = ClusterClient::connect(&addresses).await.unwrap();
    let ids: Vec<String> = (0..30).map(|i| format!("direct-{i}")).collect();
    for id in &ids {
        let _: Value = client
            .call("Counter", id, "increment", &json!({"by": 1}))
            .await
            .unwrap();
    }
    let forwarded_before = forwarded_total(&addresses).await;
    assert!(
        forwarded_before > 0,
        "first calls through a random silo were forwarded"
    );
    for round in 2..=5 {
        for id in &ids {
            let reply: Value = client
                .call("Counter", id, "increment", &json!({"by": 1}))
                .await
                .unwrap();
            assert_eq!(reply["value"], round, "{id}");
        }
    }
    assert_eq!(
        forwarded_total(&addresses).await,
        forwarded_before,
        "later calls went to the owners"
    );
}

/// Accounts on different silos: a transfer's call to the other account
/// crosses silos, and the guest never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_between_objects_on_different_silos() {
    let Some(database) = PostgresDatabase::create("transfer") else {
        return;
    };
    let cluster = Cluster::start(&database.url, 3);
    let bank = stdout_of(&rio(&["build", "examples/bank"]));
    deploy(&cluster.address(2), "Account", &bank);
    // Each silo reads the membership table once a second: until then a
    // silo that joined first knows no other to place objects on.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let client = Client::connect(&cluster.address(0)).await.unwrap();
    const PAIRS: usize = 12;
    for pair in 0..PAIRS {
        let (from, to) = (format!("from-{pair}"), format!("to-{pair}"));
        let _: Value = client
            .call("Account", &from, "deposit", &json!({"amount": 100}))
            .await
            .unwrap();
        let reply: Value = client
            .call(
                "Account",
                &from,
                "transfer",
                &json!({"to": to, "amount": 30}),
            )
            .await
            .unwrap();
        assert_eq!(reply["balance"], 70);
        let reply: Value = client
            .call("Account", &to, "balance", &json!({}))
            .await
            .unwrap();
        assert_eq!(reply["balance"], 30, "{to} got the money");
    }
    // Random placement over three silos: some pair surely spans two.
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &database.name, "-tAc"])
        .arg("SELECT COUNT(*) FROM placement a JOIN placement b ON b.object_id = 'to-' || substr(a.object_id, 6) WHERE a.object_id LIKE 'from-%' AND a.owner_address <> b.owner_address")
        .output()
        .unwrap();
    let spanning: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(spanning > 0, "no transfer crossed silos");
    eprintln!("{spanning} of {PAIRS} transfers crossed silos");
}

/// Writers through two silos keep incrementing counters spread over three;
/// one silo is killed with SIGKILL. Its objects come back on the survivors
/// with every acknowledged increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_silo_loses_no_acknowledged_write() {
    let Some(database) = PostgresDatabase::create("kill") else {
        return;
    };
    let mut cluster = Cluster::start(&database.url, 3);
    deploy(&cluster.address(0), "Counter", &counter_component());
    let survivors = [cluster.address(1), cluster.address(2)];

    const WRITERS: usize = 8;
    const OBJECTS_PER_WRITER: usize = 6;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = Client::connect(&survivors[writer % 2]).await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // Per object: acknowledged increments, and attempts.
            let mut counts: HashMap<String, (i64, i64)> = HashMap::new();
            let mut failures = 0;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("w{writer}-{}", n % OBJECTS_PER_WRITER);
                n += 1;
                let entry = counts.entry(id.clone()).or_default();
                entry.1 += 1;
                match increment(&client, &id).await {
                    Ok(_) => entry.0 += 1,
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (counts, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = cluster.take(0);
    let killed_at = Instant::now();
    killed.kill();
    // Every object answers again: the killed silo's ones on a survivor.
    let probe = Client::connect(&survivors[0]).await.unwrap();
    for writer in 0..WRITERS {
        for object in 0..OBJECTS_PER_WRITER {
            let id = format!("w{writer}-{object}");
            while value_of(&probe, &id).await.is_err() {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(60),
                    "{id} is still unreachable a minute after the kill"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "every object callable again {:.2} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged_total = 0;
    let mut failures_total = 0;
    for writer in writers {
        let (counts, failures) = writer.await.unwrap();
        failures_total += failures;
        for (id, (acknowledged, attempts)) in counts {
            let value = value_of(&probe, &id).await.unwrap();
            assert!(
                value >= acknowledged,
                "{id}: {acknowledged} increments acknowledged, {value} survived"
            );
            assert!(
                value <= attempts,
                "{id}: {value} is more than the {attempts} attempts"
            );
            acknowledged_total += acknowledged;
        }
    }
    eprintln!(
        "{acknowledged_total} acknowledged increments all survived; {failures_total} calls failed around the kill"
    );
    let members = Client::connect(&survivors[1])
        .await
        .unwrap()
        .members()
        .await
        .unwrap();
    let dead: Vec<_> = members.iter().filter(|m| m.status == "dead").collect();
    assert_eq!(
        dead.len(),
        1,
        "the killed silo is declared dead: {members:?}"
    );
}

/// A silo stopped with SIGTERM hands its objects over: callers through the
/// other silos see no error, and every increment is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_silo_hands_its_objects_over() {
    let Some(database) = PostgresDatabase::create("leave") else {
        return;
    };
    let mut cluster = Cluster::start(&database.url, 3);
    deploy(&cluster.address(0), "Counter", &counter_component());
    let others = [cluster.address(1), cluster.address(2)];

    const WRITERS: usize = 6;
    const OBJECTS_PER_WRITER: usize = 5;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = Client::connect(&others[writer % 2]).await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged: HashMap<String, i64> = HashMap::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("g{writer}-{}", n % OBJECTS_PER_WRITER);
                n += 1;
                increment(&client, &id)
                    .await
                    .unwrap_or_else(|error| panic!("{id} failed during a graceful stop: {error}"));
                *acknowledged.entry(id).or_default() += 1;
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.take(0).stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let probe = Client::connect(&others[0]).await.unwrap();
    for writer in writers {
        for (id, acknowledged) in writer.await.unwrap() {
            assert_eq!(value_of(&probe, &id).await.unwrap(), acknowledged, "{id}");
        }
    }
    let members = probe.members().await.unwrap();
    assert_eq!(
        members.iter().filter(|m| m.status == "left").count(),
        1,
        "{members:?}"
    );
}
