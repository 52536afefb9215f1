//! Activation, deactivation, restart, deploy: an object's life on a silo.

mod common;

use std::time::Duration;

use common::{
    DataDir, Empty, Increment, TestSilo, Value, config, counter_value, eventually, guest,
};
use rio_client::{Calls, ClientError, ReplyError};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
struct Activations {
    activations: i64,
}

#[tokio::test]
async fn first_message_activates_the_object() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Faulty", "rio-guest-faulty").await;
    let client = silo.client().await;
    assert_eq!(client.stats().await.unwrap().live_activations, 0);

    let reply: Activations = client
        .call("Faulty", "a", "activations", &Empty {})
        .await
        .unwrap();
    assert_eq!(
        reply.activations, 1,
        "on-activate ran once before the first message"
    );
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.live_activations, 1);
    assert_eq!(stats.activations_total, 1);

    let reply: Activations = client
        .call("Faulty", "a", "activations", &Empty {})
        .await
        .unwrap();
    assert_eq!(
        reply.activations, 1,
        "a second message reuses the activation"
    );
    silo.stop().await;
}

#[tokio::test]
async fn state_survives_idle_deactivation() {
    let data = DataDir::new();
    let mut config = config(&data);
    config.idle_timeout = Duration::from_millis(200);
    let silo = TestSilo::start(config).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    silo.deploy("Faulty", "rio-guest-faulty").await;
    let client = silo.client().await;

    let reply: Value = client
        .call("Counter", "alice", "increment", &Increment { by: 2 })
        .await
        .unwrap();
    assert_eq!(reply, Value { value: 2 });
    let _: Activations = client
        .call("Faulty", "f", "activations", &Empty {})
        .await
        .unwrap();
    let deactivated = eventually(Duration::from_secs(5), async || {
        let stats = client.stats().await.unwrap();
        stats.live_activations == 0 && stats.deactivations_total >= 2
    })
    .await;
    assert!(deactivated, "idle objects are deactivated");

    assert_eq!(counter_value(&client, "Counter", "alice").await, 2);
    let reply: Activations = client
        .call("Faulty", "f", "activations", &Empty {})
        .await
        .unwrap();
    assert_eq!(
        reply.activations, 2,
        "the object was activated again, and its hook's write was kept"
    );
    silo.stop().await;
}

#[tokio::test]
async fn state_and_deployments_survive_a_silo_restart() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;
    for _ in 0..3 {
        let _: Value = client
            .call("Counter", "bob", "increment", &Increment { by: 5 })
            .await
            .unwrap();
    }
    drop(client);
    silo.stop().await;

    let compiled: Vec<_> = walk(&data.path().join("compiled"));
    assert_eq!(
        compiled.len(),
        1,
        "one compiled component is cached on disk: {compiled:?}"
    );
    let modified = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();

    let silo = TestSilo::start(config(&data)).await;
    let client = silo.client().await;
    assert_eq!(
        counter_value(&client, "Counter", "bob").await,
        15,
        "no deploy needed after a restart"
    );
    let deployments = client.deployments().await.unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].service_type, "Counter");
    let after = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();
    assert_eq!(
        modified, after,
        "the restarted silo loaded the cached compiled component instead of recompiling"
    );
    silo.stop().await;
}

fn walk(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn unknown_type_and_unknown_message_are_typed_errors() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;

    let error = client
        .call::<Empty, Value>("Nope", "x", "get", &Empty {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::UnknownType { service_type }) if service_type == "Nope"),
        "{error}"
    );

    let error = client
        .call::<Empty, Value>("Counter", "x", "frobnicate", &Empty {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::UnknownMessage { message_type, .. }) if message_type == "frobnicate"),
        "{error}"
    );
    silo.stop().await;
}

#[tokio::test]
async fn a_wrong_file_is_refused_and_changes_nothing() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Counter", "rio-guest-counter").await;
    let client = silo.client().await;
    let _: Value = client
        .call("Counter", "c", "increment", &Increment { by: 1 })
        .await
        .unwrap();

    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    for (name, bytes) in [
        ("garbage", b"hello".to_vec()),
        ("core module", core_module),
        ("empty component", empty_component),
    ] {
        let error = client.deploy("Counter", bytes).await.unwrap_err();
        assert!(
            matches!(error, ClientError::Reply(ReplyError::InvalidComponent(_))),
            "{name}: {error}"
        );
    }
    let error = client
        .deploy("bad/name", guest("rio-guest-counter"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Reply(ReplyError::BadRequest(_))),
        "{error}"
    );

    let deployments = client.deployments().await.unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(
        counter_value(&client, "Counter", "c").await,
        1,
        "the old code still serves"
    );
    silo.stop().await;
}

#[tokio::test]
async fn redeploy_moves_live_objects_to_the_new_code_keeping_state() {
    let data = DataDir::new();
    let silo = TestSilo::start(config(&data)).await;
    silo.deploy("Thing", "rio-guest-counter").await;
    let client = silo.client().await;
    let _: Value = client
        .call("Thing", "t", "increment", &Increment { by: 7 })
        .await
        .unwrap();

    silo.deploy("Thing", "rio-guest-faulty").await;
    let reply: serde_json::Value = client.call("Thing", "t", "ok", &Empty {}).await.unwrap();
    assert_eq!(reply["ok"], true, "the live object now runs the new code");
    silo.stop().await;
}
