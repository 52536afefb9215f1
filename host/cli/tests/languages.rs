//! The behaviour every guest language must have, run against the same
//! counter and faulty guests written in Rust, Python and JavaScript: built
//! with `rio build`, deployed to a real `rio silo` process, called over TCP.
//!
//! Outside CI a language whose tooling is not installed is skipped with a
//! printed reason; in CI (`CI=true`) that is a failure.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{SiloProcess, rio, workspace_root};
use rio_client::{Client, ClientError, ReplyError};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    /// Guest folders, relative to the workspace root.
    fn counter(self) -> &'static str {
        match self {
            Language::Rust => "guests/counter",
            Language::Python => "examples/counter-python",
            Language::JavaScript => "examples/counter-js",
        }
    }

    fn faulty(self) -> &'static str {
        match self {
            Language::Rust => "guests/faulty",
            Language::Python => "guests/faulty-python",
            Language::JavaScript => "guests/faulty-js",
        }
    }

    /// Why this language's guests cannot be built here, if they cannot.
    fn missing_tooling(self) -> Option<String> {
        let runs = |program: &str, arg: &str| {
            std::process::Command::new(program)
                .arg(arg)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        match self {
            Language::Rust => None,
            Language::Python => (!runs("componentize-py", "--version")).then(|| {
                "componentize-py is not installed (pip install -r guest-sdk-python/requirements-build.txt)".into()
            }),
            Language::JavaScript => {
                let sdk_tools = workspace_root().join("guest-sdk-js/node_modules/@bytecodealliance/componentize-js");
                (!runs("node", "--version") || !sdk_tools.is_dir()).then(|| {
                    "node or the JS SDK's tools are missing (npm ci --prefix guest-sdk-js)".into()
                })
            }
        }
    }
}

/// Whether the test should go on; prints why not, and fails in CI.
fn tooling_ready(language: Language) -> bool {
    let Some(reason) = language.missing_tooling() else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{language:?} guests cannot be built in CI: {reason}");
    }
    eprintln!("skipping the {language:?} guests: {reason}");
    false
}

/// `rio build FOLDER`, returning the component's bytes.
fn build(folder: &str) -> Vec<u8> {
    let output = rio(&["build", folder]);
    assert!(
        output.status.success(),
        "rio build {folder} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

async fn connect(silo: &SiloProcess) -> Client {
    Client::connect(&silo.address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(60))
}

async fn call(
    client: &Client,
    target: &str,
    message_type: &str,
    message: Value,
) -> Result<Value, ReplyError> {
    let (service_type, object_id) = target.split_once('/').unwrap();
    match client
        .call(service_type, object_id, message_type, &message)
        .await
    {
        Ok(reply) => Ok(reply),
        Err(ClientError::Reply(error)) => Err(error),
        Err(other) => panic!("{target} {message_type}: not a reply: {other}"),
    }
}

async fn value_of(client: &Client, target: &str) -> i64 {
    let reply = call(client, target, "get", json!({}))
        .await
        .expect("get succeeds");
    reply["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("{target} get answered {reply}"))
}

/// Silo flags that make deactivation and deadlines quick to observe.
const SILO_FLAGS: &[&str] = &["--idle-timeout-secs", "1", "--turn-deadline-ms", "1500"];

async fn behaviour_suite(language: Language) {
    if !tooling_ready(language) {
        return;
    }
    let counter = build(language.counter());
    let faulty = build(language.faulty());
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), SILO_FLAGS);
    let client = connect(&silo).await;
    client
        .deploy("Counter", counter)
        .await
        .expect("the counter deploys");
    client
        .deploy("Faulty", faulty)
        .await
        .expect("the faulty guest deploys");

    // Activation on the first message, with the hook run and committed once.
    let reply = call(&client, "Faulty/a", "activations", json!({}))
        .await
        .unwrap();
    assert_eq!(
        reply["activations"], 1,
        "{language:?}: on-activate ran once"
    );
    let reply = call(&client, "Faulty/a", "activations", json!({}))
        .await
        .unwrap();
    assert_eq!(
        reply["activations"], 1,
        "{language:?}: the activation is reused"
    );

    // State, and messages with and without a payload.
    let reply = call(&client, "Counter/alice", "increment", json!({"by": 2}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 2}), "{language:?}");
    assert_eq!(value_of(&client, "Counter/alice").await, 2);
    let reply = client
        .call_raw("Counter", "alice", "get", Vec::new())
        .await
        .unwrap();
    let reply: Value = ciborium::from_reader(reply.as_slice()).unwrap();
    assert_eq!(
        reply,
        json!({"value": 2}),
        "{language:?}: an empty payload is `{{}}`"
    );

    // Concurrent calls to one object run one at a time: no lost increment,
    // and every caller saw a distinct value.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = client.clone();
        calls.spawn(
            async move { call(&client, "Counter/busy", "increment", json!({"by": 1})).await },
        );
    }
    let mut seen = Vec::new();
    while let Some(done) = calls.join_next().await {
        let reply = done.unwrap().expect("increment succeeds");
        seen.push(reply["value"].as_i64().unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=100).collect::<Vec<_>>(),
        "{language:?}: turns are serialized"
    );
    assert_eq!(value_of(&client, "Counter/busy").await, 100);

    // Errors reach the caller with their kind and message.
    match call(&client, "Faulty/e", "fail", json!({})).await {
        Err(ReplyError::Guest { kind, message }) => {
            assert_eq!(kind, "refused", "{language:?}");
            assert!(!message.is_empty());
        }
        other => panic!("{language:?}: fail answered {other:?}"),
    }
    match call(&client, "Counter/alice", "no-such-message", json!({})).await {
        Err(ReplyError::UnknownMessage { message_type, .. }) => {
            assert_eq!(message_type, "no-such-message")
        }
        other => panic!("{language:?}: an unknown message answered {other:?}"),
    }
    match call(&client, "Counter/alice", "increment", json!({"by": "two"})).await {
        Err(ReplyError::Guest { kind, .. }) => assert_eq!(kind, "bad-request", "{language:?}"),
        other => panic!("{language:?}: a malformed message answered {other:?}"),
    }
    assert_eq!(
        value_of(&client, "Counter/alice").await,
        2,
        "{language:?}: failed turns wrote nothing"
    );

    // A turn that fails after writing leaves no trace of the write.
    call(&client, "Faulty/t", "set", json!({"value": 5}))
        .await
        .unwrap();
    let crashed = call(&client, "Faulty/t", "set-then-trap", json!({"value": 9})).await;
    assert!(
        matches!(crashed, Err(ReplyError::Trap(_) | ReplyError::Guest { .. })),
        "{language:?}: set-then-trap answered {crashed:?}"
    );
    let reply = call(&client, "Faulty/t", "get", json!({})).await.unwrap();
    assert_eq!(
        reply["value"], 5,
        "{language:?}: the failed turn's write was discarded"
    );

    // A guest past its deadline or its memory limit fails that message only.
    match call(&client, "Faulty/spin", "loop", json!({})).await {
        Err(ReplyError::Timeout(_)) => {}
        other => panic!("{language:?}: loop answered {other:?}"),
    }
    let hog = call(&client, "Faulty/hog", "hog", json!({})).await;
    assert!(
        matches!(hog, Err(ReplyError::Trap(_) | ReplyError::Guest { .. })),
        "{language:?}: hog answered {hog:?}"
    );
    call(&client, "Faulty/spin", "ok", json!({}))
        .await
        .expect("the object serves again");
    call(&client, "Faulty/hog", "ok", json!({}))
        .await
        .expect("the object serves again");
    assert_eq!(
        value_of(&client, "Counter/alice").await,
        2,
        "{language:?}: other objects go on"
    );

    // State survives idle deactivation.
    let deactivated = async {
        for _ in 0..200 {
            let stats = client.stats().await.unwrap();
            if stats.live_activations == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(
        deactivated.await,
        "{language:?}: idle objects are deactivated"
    );
    assert_eq!(value_of(&client, "Counter/alice").await, 2, "{language:?}");
    let reply = call(&client, "Faulty/a", "activations", json!({}))
        .await
        .unwrap();
    assert_eq!(
        reply["activations"], 2,
        "{language:?}: activated again, state reloaded"
    );

    // ...and a restart, which loads the compiled components from disk.
    drop(client);
    silo.stop();
    let restarted_at = Instant::now();
    let silo = SiloProcess::start_with(data.path(), SILO_FLAGS);
    let client = connect(&silo).await;
    assert_eq!(
        value_of(&client, "Counter/alice").await,
        2,
        "{language:?}: state survives a restart"
    );
    let first_call = restarted_at.elapsed();
    let stats = client.stats().await.unwrap();
    assert_eq!(
        stats.components_compiled, 0,
        "{language:?}: a restart compiles nothing"
    );
    assert!(
        stats.components_loaded >= 2,
        "{language:?}: both components came from the cache"
    );
    eprintln!("{language:?}: restart to first reply {first_call:?} (debug build of rio)");
    silo.stop();
}

#[tokio::test]
async fn rust_guests_behave() {
    behaviour_suite(Language::Rust).await;
}

#[tokio::test]
async fn python_guests_behave() {
    behaviour_suite(Language::Python).await;
}

#[tokio::test]
async fn javascript_guests_behave() {
    behaviour_suite(Language::JavaScript).await;
}

/// Objects in each language call objects in each other language, both ways,
/// and the polyglot example combines a Rust and a JS counter from Python.
#[tokio::test]
async fn objects_call_each_other_across_languages() {
    let languages = [Language::Rust, Language::Python, Language::JavaScript];
    if !languages.iter().all(|&language| tooling_ready(language)) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = connect(&silo).await;
    let names = ["RustCounter", "PyCounter", "JsCounter"];
    for (language, name) in languages.iter().zip(names) {
        client
            .deploy(name, build(language.counter()))
            .await
            .unwrap();
    }
    for caller in names {
        for callee in names {
            let reply = call(
                &client,
                &format!("{caller}/x"),
                "relay",
                json!({
                    "service_type": callee,
                    "object_id": format!("from-{caller}"),
                    "message_type": "increment",
                    "payload": {"by": 3},
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("{caller} relaying to {callee}: {e}"));
            assert_eq!(reply, json!({"value": 3}), "{caller} → {callee}");
            assert_eq!(
                value_of(&client, &format!("{callee}/from-{caller}")).await,
                3
            );
        }
    }
    // An error raised by the callee reaches the caller's caller with its kind.
    let relayed = call(
        &client,
        "PyCounter/x",
        "relay",
        json!({"service_type": "JsCounter", "object_id": "y", "message_type": "increment", "payload": {"by": "three"}}),
    )
    .await;
    match relayed {
        Err(ReplyError::Guest { kind, .. }) => assert_eq!(kind, "bad-request"),
        other => panic!("a relayed error answered {other:?}"),
    }

    client
        .deploy("Aggregator", build("examples/polyglot/python-aggregator"))
        .await
        .unwrap();
    let reply = call(
        &client,
        "Aggregator/a",
        "sum",
        json!({"id": "shared", "by": 4}),
    )
    .await
    .unwrap();
    assert_eq!(reply, json!({"rust": 4, "js": 4, "total": 8}));
    silo.stop();
}
