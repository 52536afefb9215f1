//! Turns of different call chains waiting on each other: the call that
//! closes the cycle fails with `deadlock`, the others go on, and the books
//! still balance.

mod common;

use std::time::{Duration, Instant};

use common::{DataDir, TestSilo, config};
use rio_client::{Calls, Client, ClientError, ReplyError};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Amount {
    amount: i64,
}

#[derive(Serialize)]
struct Transfer<'a> {
    to: &'a str,
    amount: i64,
}

#[derive(Deserialize)]
struct Balance {
    balance: i64,
}

/// Long enough that a call ending well before it was not stopped by it.
const TURN_DEADLINE: Duration = Duration::from_secs(10);

async fn bank(data: &DataDir) -> TestSilo {
    let mut config = config(data);
    config.turn_deadline = TURN_DEADLINE;
    let silo = TestSilo::start(config).await;
    silo.deploy("Account", "rio-example-bank").await;
    silo
}

async fn open_accounts(client: &Client, ids: &[String], each: i64) {
    for id in ids {
        let _: Balance = client
            .call("Account", id, "deposit", &Amount { amount: each })
            .await
            .expect("deposit succeeds");
    }
}

async fn balances(client: &Client, ids: &[String]) -> Vec<i64> {
    let mut all = Vec::new();
    for id in ids {
        let balance: Balance = client
            .call("Account", id, "balance", &())
            .await
            .expect("every account still answers");
        all.push(balance.balance);
    }
    all
}

/// What one transfer ended with, and how long it took.
struct Outcome {
    kind: &'static str,
    took: Duration,
}

async fn transfer(client: &Client, from: &str, to: &str, amount: i64) -> Outcome {
    let started = Instant::now();
    let result: Result<Balance, ClientError> = client
        .call("Account", from, "transfer", &Transfer { to, amount })
        .await;
    let kind = match result {
        Ok(_) => "ok",
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) if kind == "deadlock" => "deadlock",
        Err(ClientError::Reply(ReplyError::Deadlock(_))) => "deadlock",
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) if kind == "insufficient-funds" => {
            "insufficient-funds"
        }
        Err(other) => panic!("transfer {from} -> {to} ended with {other:?}"),
    };
    Outcome {
        kind,
        took: started.elapsed(),
    }
}

#[tokio::test]
async fn crossing_transfers_end_with_ok_or_deadlock_and_keep_the_total() {
    let data = DataDir::new();
    let silo = bank(&data).await;
    let (one, two) = (silo.client().await, silo.client().await);
    let ids = vec!["alice".to_string(), "bob".to_string()];
    open_accounts(&one, &ids, 1_000).await;

    let rounds = 200;
    let (mut deadlocks, mut slowest) = (0, Duration::ZERO);
    for _ in 0..rounds {
        let (a, b) = tokio::join!(
            transfer(&one, "alice", "bob", 3),
            transfer(&two, "bob", "alice", 2),
        );
        for outcome in [a, b] {
            assert_ne!(outcome.kind, "insufficient-funds");
            deadlocks += usize::from(outcome.kind == "deadlock");
            slowest = slowest.max(outcome.took);
        }
    }
    println!("{rounds} crossing rounds: {deadlocks} deadlocks refused, slowest call {slowest:?}");
    assert!(
        slowest < TURN_DEADLINE / 2,
        "a call took {slowest:?}: it waited for a deadline instead of being refused"
    );
    assert_eq!(balances(&one, &ids).await.iter().sum::<i64>(), 2_000);
    silo.stop().await;
}

#[tokio::test]
async fn a_cycle_of_three_refuses_one_call_and_the_others_complete() {
    let data = DataDir::new();
    let silo = bank(&data).await;
    let client = silo.client().await;
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    open_accounts(&client, &ids, 100).await;
    let mut refused_rounds = 0;
    for _ in 0..50 {
        let (x, y, z) = tokio::join!(
            transfer(&client, "a", "b", 1),
            transfer(&client, "b", "c", 1),
            transfer(&client, "c", "a", 1),
        );
        let outcomes = [x, y, z];
        let refused = outcomes.iter().filter(|o| o.kind == "deadlock").count();
        // When the three close a cycle, exactly one call is refused: the
        // others then finish. (Often the turns do not overlap at all.)
        assert!(refused <= 1, "{refused} of 3 calls refused in one round");
        refused_rounds += refused;
        for outcome in &outcomes {
            assert!(outcome.took < TURN_DEADLINE / 2, "{:?}", outcome.took);
        }
    }
    println!("three-way cycles: {refused_rounds} of 50 rounds refused one call");
    assert_eq!(balances(&client, &ids).await.iter().sum::<i64>(), 300);
    silo.stop().await;
}

#[tokio::test]
async fn random_transfers_from_many_clients_all_end_and_balance() {
    let data = DataDir::new();
    let silo = bank(&data).await;
    let ids: Vec<String> = (0..30).map(|i| format!("acct-{i}")).collect();
    let setup = silo.client().await;
    open_accounts(&setup, &ids, 1_000).await;

    let mut clients = Vec::new();
    for seed in 0..16u64 {
        let client = silo.client().await;
        let ids = ids.clone();
        clients.push(tokio::spawn(async move {
            // A small deterministic generator: each client its own sequence.
            let mut state = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut next = move |bound: usize| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as usize) % bound
            };
            let mut outcomes = Vec::new();
            for _ in 0..60 {
                let from = next(ids.len());
                let to = (from + 1 + next(ids.len() - 1)) % ids.len();
                let amount = 1 + next(20) as i64;
                outcomes.push(transfer(&client, &ids[from], &ids[to], amount).await);
            }
            outcomes
        }));
    }
    let (mut count, mut deadlocks, mut slowest) = (0, 0, Duration::ZERO);
    for client in clients {
        for outcome in client.await.unwrap() {
            count += 1;
            deadlocks += usize::from(outcome.kind == "deadlock");
            slowest = slowest.max(outcome.took);
        }
    }
    println!("{count} random transfers: {deadlocks} deadlocks, slowest {slowest:?}");
    assert!(slowest < TURN_DEADLINE / 2, "slowest call {slowest:?}");
    let after = balances(&setup, &ids).await;
    assert_eq!(after.iter().sum::<i64>(), 30_000, "money created or lost");
    assert!(after.iter().all(|balance| *balance >= 0));
    silo.stop().await;
}
