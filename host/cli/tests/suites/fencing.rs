//! Fencing with real silo processes: a silo frozen (SIGSTOP) in the middle
//! of turns, declared dead while frozen, then resumed (SIGCONT), must not
//! commit those turns over the writes the survivors acknowledged meanwhile.
//!
//! Runs on a shared SQLite file, and on PostgreSQL when the server is up
//! (required under `CI=true`).

use crate::common;

use std::time::{Duration, Instant};

use common::stores::{PostgresDatabase, SqliteFile};
use common::{SiloProcess, rio, stdout_of};
use rio_client::{Calls, Client, ClientError};
use serde_json::{Value, json};

/// Objects placed on the silo that will be frozen; the last one's slow turn
/// reaches it forwarded through another silo.
const DIRECT: [&str; 3] = ["direct-0", "direct-1", "direct-2"];
const FORWARDED: &str = "forwarded";
/// Increments acknowledged through the survivors per object.
const INCREMENTS: i64 = 20;
/// What a stale turn would add: unmistakable in the final value.
const STALE_BY: i64 = 1000;

fn counter_guest() -> String {
    stdout_of(&rio(&["build", "guests/counter"]))
}

fn start(dir: &tempfile::TempDir, url: &str, extra: &[&str]) -> SiloProcess {
    let mut flags = vec!["--cluster", url, "--placement", "prefer-local"];
    flags.extend_from_slice(extra);
    SiloProcess::start_with(dir.path(), &flags)
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

/// Waits until the survivor at `through` reads `silo` as dead.
async fn wait_until_dead(through: &Client, silo: &str, since: Instant) {
    loop {
        let members = through.members().await.unwrap();
        if members
            .iter()
            .any(|member| member.address == silo && member.status == "dead")
        {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the frozen silo {silo} was not declared dead within a minute: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stale_turns_of_a_frozen_silo_do_not_commit(url: &str) {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // A long turn deadline: the deadline must not be what stops the stale
    // turns, fencing must.
    let mut frozen = start(&dirs[0], url, &["--turn-deadline-ms", "600000"]);
    let b = start(&dirs[1], url, &[]);
    let c = start(&dirs[2], url, &[]);
    let deploy = rio(&[
        "deploy",
        "--silo",
        &frozen.address,
        "--type",
        "Counter",
        &counter_guest(),
    ]);
    stdout_of(&deploy);

    // First calls through the frozen-to-be silo place the objects there
    // (prefer-local), each with the value 1.
    let on_frozen = Client::connect(&frozen.address).await.unwrap();
    let all: Vec<&str> = DIRECT.iter().copied().chain([FORWARDED]).collect();
    for id in &all {
        assert_eq!(increment(&on_frozen, id).await.unwrap(), 1, "{id}");
    }
    let through_b = Client::connect(&b.address).await.unwrap();
    let through_c = Client::connect(&c.address).await.unwrap();
    // The forwarded slow turn must reach the frozen silo before it stops:
    // a call forwarded now opens the survivor's connection to it. (One
    // that could not be sent before the freeze is not stale: the survivor
    // routes it again, to wherever the object moved.)
    assert_eq!(value_of(&through_b, FORWARDED).await.unwrap(), 1);

    // Slow turns: each reads 1, then sleeps in the guest while the silo is
    // frozen, then would write 1 + STALE_BY.
    let slow = json!({"by": STALE_BY, "millis": 3000});
    let mut stale = Vec::new();
    for id in &all {
        let entry = if *id == FORWARDED {
            &b.address
        } else {
            &frozen.address
        };
        let client = Client::connect(entry)
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(120));
        let (id, slow) = (id.to_string(), slow.clone());
        stale.push(tokio::spawn(async move {
            let result: Result<Value, ClientError> =
                client.call("Counter", &id, "add-slowly", &slow).await;
            (id, result)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    frozen.signal("STOP");
    let frozen_at = Instant::now();
    wait_until_dead(&through_b, &frozen.address, frozen_at).await;
    eprintln!(
        "declared dead {:.2} s after SIGSTOP",
        frozen_at.elapsed().as_secs_f64()
    );

    // The objects move to the survivors, which take acknowledged writes.
    // (A survivor that has not yet re-read the membership may still pass a
    // call to the frozen silo: give up on such a call after a few seconds.)
    let probe = through_b.with_timeout(Duration::from_secs(5));
    for id in &all {
        while let Err(error) = value_of(&probe, id).await {
            assert!(
                frozen_at.elapsed() < Duration::from_secs(90),
                "{id} did not move off the frozen silo: {error}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in &all {
        for n in 0..INCREMENTS {
            let survivor = if n % 2 == 0 { &through_b } else { &through_c };
            let value = increment(survivor, id)
                .await
                .unwrap_or_else(|error| panic!("{id}: increment {n} failed: {error}"));
            assert_eq!(value, 2 + n, "{id}: the survivors see every earlier write");
        }
    }

    frozen.signal("CONT");
    for task in stale {
        let (id, result) = task.await.unwrap();
        match result {
            Ok(reply) => panic!("{id}: a stale turn of the frozen silo was acknowledged: {reply}"),
            Err(error) => eprintln!("{id}: the stale turn failed as it must: {error}"),
        }
    }
    assert!(
        frozen.exited_within(Duration::from_secs(30)),
        "the resumed silo learns it was declared dead and exits"
    );

    // Every activation dropped: the survivors stop (committing and
    // releasing), and a fresh silo loads each object from the store.
    b.stop();
    c.stop();
    let fresh = start(&dirs[3], url, &[]);
    let through_fresh = Client::connect(&fresh.address).await.unwrap();
    for id in &all {
        assert_eq!(
            value_of(&through_fresh, id).await.unwrap(),
            1 + INCREMENTS,
            "{id}: every acknowledged write is in the store, no stale one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_silo_commits_nothing_after_its_objects_moved_on_sqlite() {
    let store = SqliteFile::create();
    stale_turns_of_a_frozen_silo_do_not_commit(&store.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_silo_commits_nothing_after_its_objects_moved_on_postgres() {
    let Some(database) = PostgresDatabase::create("fence") else {
        return;
    };
    stale_turns_of_a_frozen_silo_do_not_commit(&database.url).await;
}
