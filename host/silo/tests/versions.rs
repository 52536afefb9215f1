//! A component built against the released WIT `rio:service@0.1.0`
//! (`guests/legacy-v0_1`) runs beside 0.2.0 components on one silo, and
//! objects of either version call objects of the other.

mod common;

use common::{DataDir, Empty, Increment, TestSilo, Value, config, counter_value};
use rio_client::{Calls, Client, ClientError};
use serde::Serialize;
use serde_json::{Value as Json, json};

/// What the legacy guest's `call` and the counter's `relay` both take.
#[derive(Serialize)]
struct Forward {
    service_type: &'static str,
    object_id: &'static str,
    message_type: &'static str,
    payload: Json,
}

fn forward(target: &'static str, message_type: &'static str, payload: Json) -> Forward {
    let (service_type, object_id) = target.split_once('/').unwrap();
    Forward {
        service_type,
        object_id,
        message_type,
        payload,
    }
}

/// The reply of `target`'s `message_type`, or the kind of its error.
async fn send(
    client: &Client,
    target: &str,
    message_type: &str,
    message: &Forward,
) -> Result<Value, String> {
    let (service_type, object_id) = target.split_once('/').unwrap();
    match client
        .call::<_, Value>(service_type, object_id, message_type, message)
        .await
    {
        Ok(value) => Ok(value),
        Err(ClientError::Reply(error)) => Err(error.kind().to_string()),
        Err(other) => panic!("{target} {message_type}: not a reply: {other}"),
    }
}

async fn deploy_both(silo: &TestSilo) {
    silo.deploy("Legacy", "rio-guest-legacy").await;
    silo.deploy("Counter", "rio-guest-counter").await;
}

#[tokio::test]
async fn a_0_1_0_component_runs_beside_0_2_0_ones_and_they_call_each_other() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    deploy_both(&silo).await;
    let client = silo.client().await;

    // Each version called directly.
    let reply: Value = client
        .call("Legacy", "a", "increment", &Increment { by: 2 })
        .await
        .expect("the 0.1.0 counter increments");
    assert_eq!(reply, Value { value: 2 });
    assert_eq!(counter_value(&client, "Legacy", "a").await, 2);
    let reply: Value = client
        .call("Counter", "a", "increment", &Increment { by: 5 })
        .await
        .expect("the 0.2.0 counter increments");
    assert_eq!(reply, Value { value: 5 });

    // 0.2.0 calls 0.1.0.
    let relayed = send(
        &client,
        "Counter/x",
        "relay",
        &forward("Legacy/y", "increment", json!({"by": 3})),
    )
    .await;
    assert_eq!(relayed, Ok(Value { value: 3 }));
    assert_eq!(counter_value(&client, "Legacy", "y").await, 3);

    // 0.1.0 calls 0.2.0.
    let called = send(
        &client,
        "Legacy/z",
        "call",
        &forward("Counter/w", "increment", json!({"by": 4})),
    )
    .await;
    assert_eq!(called, Ok(Value { value: 4 }));
    assert_eq!(counter_value(&client, "Counter", "w").await, 4);

    // ...and a chain through both and back: 0.1.0 → 0.2.0 → 0.1.0.
    let chained = send(
        &client,
        "Legacy/z",
        "call",
        &forward(
            "Counter/w",
            "relay",
            json!({"service_type": "Legacy", "object_id": "y", "message_type": "increment", "payload": {"by": 1}}),
        ),
    )
    .await;
    assert_eq!(chained, Ok(Value { value: 4 }));
    silo.stop().await;
}

#[tokio::test]
async fn failed_calls_reach_either_version_with_their_kind() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    deploy_both(&silo).await;
    let client = silo.client().await;
    let cases = [
        // The legacy guest sees a platform failure of its own contract.
        (
            "Legacy/l",
            "call",
            forward("NoSuchType/q", "get", json!({})),
            "unknown-type",
        ),
        // A 0.2.0 callee's error reaches the 0.1.0 caller unchanged...
        (
            "Legacy/l",
            "call",
            forward("Counter/c", "increment", json!({"by": "x"})),
            "bad-request",
        ),
        // ...and a 0.1.0 callee's error the 0.2.0 caller.
        (
            "Counter/c",
            "relay",
            forward("Legacy/l", "increment", json!({"by": "x"})),
            "bad-request",
        ),
        // A call that would wait on itself, across both versions.
        (
            "Legacy/l",
            "call",
            forward(
                "Counter/c",
                "relay",
                json!({"service_type": "Legacy", "object_id": "l", "message_type": "get"}),
            ),
            "cycle",
        ),
    ];
    for (target, message_type, message, kind) in cases {
        let answered = send(&client, target, message_type, &message).await;
        assert_eq!(
            answered,
            Err(kind.to_string()),
            "{target} {message_type} to {}/{}",
            message.service_type,
            message.object_id
        );
    }
    // The failed turns wrote nothing.
    assert_eq!(counter_value(&client, "Legacy", "l").await, 0);
    assert_eq!(counter_value(&client, "Counter", "c").await, 0);
    silo.stop().await;
}

#[tokio::test]
async fn a_0_1_0_component_survives_a_restart_from_the_compiled_cache() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    deploy_both(&silo).await;
    let client = silo.client().await;
    let _: Value = client
        .call("Legacy", "kept", "increment", &Increment { by: 7 })
        .await
        .unwrap();
    drop(client);
    silo.stop().await;

    let silo = TestSilo::start(config(&data)).await;
    let client = silo.client().await;
    assert_eq!(counter_value(&client, "Legacy", "kept").await, 7);
    let reply: Value = client
        .call("Legacy", "kept", "add", &Increment { by: 1 })
        .await
        .unwrap();
    assert_eq!(reply, Value { value: 8 });
    let _: Value = client
        .call("Counter", "fresh", "get", &Empty {})
        .await
        .expect("the 0.2.0 component was kept too");
    silo.stop().await;
}
