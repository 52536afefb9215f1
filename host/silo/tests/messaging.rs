//! Turn-based concurrency, pipelining, and calls between objects.

mod common;

use std::collections::HashSet;

use common::{DataDir, Empty, Increment, TestSilo, Value, config, counter_value};
use rio_client::{Calls, ClientError, ReplyError};
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn concurrent_calls_to_one_object_run_one_at_a_time() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(silo.client().await);
    }
    let mut calls = Vec::new();
    for i in 0..800 {
        let client = clients[i % clients.len()].clone();
        calls.push(tokio::spawn(async move {
            client
                .call::<_, Value>("Counter", "hot", "increment", &Increment { by: 1 })
                .await
                .unwrap()
                .value
        }));
    }
    let mut seen = HashSet::new();
    for call in calls {
        seen.insert(call.await.unwrap());
    }
    // Each turn read-modify-wrote alone: every reply is a distinct value.
    assert_eq!(seen.len(), 800, "no two turns saw the same state");
    assert_eq!(seen.iter().max(), Some(&800));
    assert_eq!(
        counter_value(&clients[0], "Counter", "hot").await,
        800,
        "no increment was lost"
    );
    silo.stop().await;
}

#[tokio::test]
async fn many_calls_pipelined_on_one_connection() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;
    let mut calls = Vec::new();
    for i in 0..2000i64 {
        let client = client.clone();
        // 50 objects: replies for different objects complete out of order.
        calls.push(tokio::spawn(async move {
            client
                .call::<_, Value>(
                    "Counter",
                    &format!("p{}", i % 50),
                    "increment",
                    &Increment { by: 1 },
                )
                .await
                .unwrap()
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            counter_value(&client, "Counter", &format!("p{i}")).await,
            40
        );
    }
    silo.stop().await;
}

#[derive(Serialize)]
struct AddTo<'a> {
    target: &'a str,
    by: i64,
}

#[tokio::test]
async fn an_object_calls_another_and_gets_its_reply() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;
    let reply: Value = client
        .call("Counter", "a", "add-to", &AddTo { target: "b", by: 3 })
        .await
        .unwrap();
    assert_eq!(reply, Value { value: 3 });
    assert_eq!(counter_value(&client, "Counter", "b").await, 3);
    assert_eq!(counter_value(&client, "Counter", "a").await, 0);
    silo.stop().await;
}

#[derive(Serialize)]
struct Relay {
    service_type: String,
    object_id: String,
    message_type: String,
    payload: ciborium::Value,
}

#[tokio::test]
async fn a_call_cycle_is_an_error_not_a_hang() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;
    // a asks b to ask a for its value: a is still in its turn.
    let inner = Relay {
        service_type: "Counter".into(),
        object_id: "a".into(),
        message_type: "get".into(),
        payload: ciborium::Value::Map(vec![]),
    };
    let outer = Relay {
        service_type: "Counter".into(),
        object_id: "b".into(),
        message_type: "relay".into(),
        payload: ciborium::Value::serialized(&inner).unwrap(),
    };
    let error = client
        .call::<_, Value>("Counter", "a", "relay", &outer)
        .await
        .unwrap_err();
    match &error {
        ClientError::Reply(ReplyError::Guest { kind, message }) => {
            assert_eq!(kind, "cycle", "{message}");
            assert!(message.contains("Counter/a"), "{message}");
        }
        other => panic!("expected the cycle to come back as an error, got {other}"),
    }
    // Both objects are still usable.
    assert_eq!(counter_value(&client, "Counter", "a").await, 0);
    assert_eq!(counter_value(&client, "Counter", "b").await, 0);
    silo.stop().await;
}

#[derive(Serialize)]
struct Amount {
    amount: i64,
}

#[derive(Serialize)]
struct Transfer<'a> {
    to: &'a str,
    amount: i64,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Balance {
    balance: i64,
}

#[tokio::test]
async fn a_bank_transfer_calls_the_other_account() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Account", "rio-example-bank").await;
    let client = silo.client().await;
    let _: Balance = client
        .call("Account", "alice", "deposit", &Amount { amount: 100 })
        .await
        .unwrap();

    let _: Balance = client
        .call(
            "Account",
            "alice",
            "transfer",
            &Transfer {
                to: "bob",
                amount: 30,
            },
        )
        .await
        .unwrap();
    let alice: Balance = client
        .call("Account", "alice", "balance", &Empty {})
        .await
        .unwrap();
    let bob: Balance = client
        .call("Account", "bob", "balance", &Empty {})
        .await
        .unwrap();
    assert_eq!((alice.balance, bob.balance), (70, 30));

    let error = client
        .call::<_, Balance>(
            "Account",
            "alice",
            "transfer",
            &Transfer {
                to: "bob",
                amount: 1000,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::Guest { kind, .. }) if kind == "insufficient-funds"),
        "{error}"
    );
    let alice: Balance = client
        .call("Account", "alice", "balance", &Empty {})
        .await
        .unwrap();
    let bob: Balance = client
        .call("Account", "bob", "balance", &Empty {})
        .await
        .unwrap();
    assert_eq!(
        (alice.balance, bob.balance),
        (70, 30),
        "a refused transfer moves nothing"
    );
    silo.stop().await;
}
