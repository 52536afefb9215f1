//! No orphaned objects: a silo that is killed while it leaves (SIGTERM, then
//! SIGKILL a few milliseconds later) holds objects it never handed over. The
//! survivors must take them over at their next call, within the failure
//! detection time, with their last acknowledged values.
//!
//! Runs on a shared SQLite file, and on PostgreSQL when the server is up
//! (required under `CI=true`).

use crate::common;

use std::time::{Duration, Instant};

use common::stores::{PostgresDatabase, SqliteFile};
use common::{SiloProcess, rio, stdout_of};
use rio_client::{Calls, Client, ClientError};
use serde_json::{Value, json};

/// Objects on the silo that is killed while leaving.
const OBJECTS: i64 = 200;
/// Generous next to the failure detection (about three probe intervals),
/// and longer than the 15 s a message used to wait for a leaving owner
/// before giving up for good.
const REACHABLE_WITHIN: Duration = Duration::from_secs(25);

fn start(dir: &tempfile::TempDir, url: &str) -> SiloProcess {
    SiloProcess::start_with(
        dir.path(),
        &["--cluster", url, "--placement", "prefer-local"],
    )
}

async fn add(client: &Client, id: &str, by: i64) -> Result<i64, ClientError> {
    let reply: Value = client
        .call("Counter", id, "increment", &json!({ "by": by }))
        .await?;
    Ok(reply["value"].as_i64().unwrap())
}

async fn value_of(client: &Client, id: &str) -> Result<i64, ClientError> {
    let reply: Value = client.call("Counter", id, "get", &json!({})).await?;
    Ok(reply["value"].as_i64().unwrap())
}

/// Kills a silo `delay` after SIGTERM, while it holds `OBJECTS` counters,
/// and checks each answers through a survivor with its value.
async fn killed_while_leaving(
    url: &str,
    survivor: &Client,
    dir: &tempfile::TempDir,
    delay_ms: u64,
) {
    let leaving = start(dir, url);
    let on_leaving = Client::connect(&leaving.address).await.unwrap();
    let id = |i: i64| format!("k{delay_ms}-{i}");
    // prefer-local: first calls through the silo place the objects on it.
    for i in 0..OBJECTS {
        assert_eq!(add(&on_leaving, &id(i), i + 1).await.unwrap(), i + 1);
    }
    drop(on_leaving);

    leaving.signal("TERM");
    std::thread::sleep(Duration::from_millis(delay_ms));
    leaving.kill();
    let killed_at = Instant::now();

    let mut slowest = Duration::ZERO;
    for i in 0..OBJECTS {
        let object = id(i);
        let value = loop {
            match value_of(survivor, &object).await {
                Ok(value) => break value,
                Err(error) => {
                    assert!(
                        killed_at.elapsed() < REACHABLE_WITHIN,
                        "SIGKILL {delay_ms} ms after SIGTERM: {object} still unreachable after {:?}: {error}",
                        killed_at.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        slowest = slowest.max(killed_at.elapsed());
        assert_eq!(value, i + 1, "{object} kept its last acknowledged value");
    }
    assert!(
        slowest < REACHABLE_WITHIN,
        "SIGKILL {delay_ms} ms after SIGTERM: the last object answered {slowest:?} after the kill"
    );
    eprintln!(
        "SIGKILL {delay_ms} ms after SIGTERM: all {OBJECTS} objects answered within {:.2} s of the kill",
        slowest.as_secs_f64()
    );
}

async fn no_object_is_orphaned(url: &str) {
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = start(&dirs[0], url);
    let _c = start(&dirs[1], url);
    let component = stdout_of(&rio(&["build", "guests/counter"]));
    stdout_of(&rio(&[
        "deploy", "--silo", &b.address, "--type", "Counter", &component,
    ]));
    let survivor = Client::connect(&b.address).await.unwrap();
    for (delay_ms, dir) in [0, 10, 50, 200].into_iter().zip(&dirs[2..]) {
        killed_while_leaving(url, &survivor, dir, delay_ms).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_killed_while_leaving_leaves_no_orphans_on_sqlite() {
    let store = SqliteFile::create();
    no_object_is_orphaned(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_killed_while_leaving_leaves_no_orphans_on_postgres() {
    let Some(database) = PostgresDatabase::create("orphans") else {
        return;
    };
    no_object_is_orphaned(&database.url).await;
}
