//! The behaviour every guest language must have, run against the same
//! counter and faulty guests written in Rust, Python and JavaScript: built
//! with `rio build`, deployed to a real `rio silo` process, called over TCP.
//!
//! Outside CI a language whose tooling is not installed is skipped with a
//! printed reason; in CI (`CI=true`) that is a failure.

use crate::common;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{SiloProcess, rio, workspace_root};
use rio_client::{Calls, Client, ClientError, ReplyError};
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
    // Straight to stderr: the harness hides what `eprintln!` prints in a
    // test that passes, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping the {language:?} guests: {reason}"
    );
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
    // Deploying compiles a Python or JS component (12-18 MB) in the silo:
    // 10-25 s alone on two cores, well over a minute while the suites of
    // all three languages compile theirs at once.
    Client::connect(&silo.address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(240))
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

    // Every failure answers the same kind in every language: the table of
    // error kinds in ARCHITECTURE.md, case by case.
    error_kinds(language, &client).await;
    one_way_sends(language, &client).await;
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
    let error = crashed.expect_err("set-then-trap fails");
    assert_eq!(error.kind(), "trap", "{language:?}: {error}");
    if !matches!(language, Language::Rust) {
        // An uncaught exception names its type and text.
        let named = match language {
            Language::Python => "RuntimeError: failing after a write of 9",
            _ => "Error: failing after a write of 9",
        };
        assert!(
            error.to_string().contains(named),
            "{language:?}: the uncaught exception answered {error}"
        );
    }
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
    assert_eq!(
        hog.as_ref().map_err(ReplyError::kind),
        Err("trap"),
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

/// One failure case: a call and the kind it must answer, or its reply.
struct Case {
    what: &'static str,
    target: &'static str,
    message_type: &'static str,
    message: Value,
    expected: Result<Value, &'static str>,
}

fn case(
    what: &'static str,
    target: &'static str,
    message_type: &'static str,
    message: Value,
    expected: Result<Value, &'static str>,
) -> Case {
    Case {
        what,
        target,
        message_type,
        message,
        expected,
    }
}

/// `relay` of the counter, calling `target` with `message_type`.
fn relayed(target: &str, message_type: &str, payload: Value) -> Value {
    let (service_type, object_id) = target.split_once('/').unwrap();
    json!({
        "service_type": service_type,
        "object_id": object_id,
        "message_type": message_type,
        "payload": payload,
    })
}

/// `send` from a guest: delivered once the sending turn committed, applied
/// once; arguments no message can carry are refused at once.
async fn one_way_sends(language: Language, client: &Client) {
    for _ in 0..2 {
        let sent = call(
            client,
            "Counter/sender",
            "send-to",
            relayed("Counter/sent-to", "increment", json!({"by": 4})),
        )
        .await;
        assert_eq!(sent.unwrap(), json!({"sent": true}), "{language:?}");
    }
    let started = Instant::now();
    while value_of(client, "Counter/sent-to").await < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{language:?}: the sent increments did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        value_of(client, "Counter/sent-to").await,
        8,
        "{language:?}: once each"
    );
    let refused = call(
        client,
        "Counter/sender",
        "send-to",
        relayed("Counter/", "increment", json!({"by": 1})),
    )
    .await;
    match refused {
        Err(ReplyError::Guest { kind, .. }) => assert_eq!(kind, "internal", "{language:?}"),
        other => panic!("{language:?}: a send to an empty id answered {other:?}"),
    }
}

/// The kinds of ARCHITECTURE.md's table, as this language's guests answer
/// them, directly and passed through a caller of the same language.
async fn error_kinds(language: Language, client: &Client) {
    // A table, one case a line.
    #[rustfmt::skip]
    let cases = [
        case("a handler's own error", "Faulty/e", "fail", json!({}), Err("refused")),
        case("an uncaught error", "Faulty/e", "trap", json!({}), Err("trap")),
        case("no handler", "Counter/alice", "no-such-message", json!({}), Err("unknown-message")),
        case("a field of the wrong type", "Counter/alice", "increment", json!({"by": "two"}), Err("bad-request")),
        case("a missing field", "Counter/alice", "increment", json!({}), Err("bad-request")),
        case("a message that is not a map", "Counter/alice", "increment", json!("two"), Err("bad-request")),
        case("an optional field of the wrong type", "Faulty/o", "maybe", json!({"value": "x"}), Err("bad-request")),
        case("an optional field absent", "Faulty/o", "maybe", json!({}), Ok(json!({"value": null}))),
        case("an optional field null", "Faulty/o", "maybe", json!({"value": null}), Ok(json!({"value": null}))),
        case("an optional field set", "Faulty/o", "maybe", json!({"value": 3}), Ok(json!({"value": 3}))),
        case("stored data that does not decode", "Faulty/g", "read-garbage", json!({}), Err("bad-data")),
        case("a call to an unknown type", "Counter/r", "relay", relayed("NoSuchType/x", "get", json!({})), Err("unknown-type")),
        case("a callee's own error", "Counter/r", "relay", relayed("Faulty/e", "fail", json!({})), Err("refused")),
        case("a callee's uncaught error", "Counter/r", "relay", relayed("Faulty/e", "trap", json!({})), Err("trap")),
        case("a callee's bad request", "Counter/r", "relay", relayed("Counter/b", "increment", json!({"by": "x"})), Err("bad-request")),
        case("a callee's bad data", "Counter/r", "relay", relayed("Faulty/g", "read-garbage", json!({})), Err("bad-data")),
        case("a call that would wait on itself", "Counter/r", "relay", relayed("Counter/r", "get", json!({})), Err("cycle")),
    ];
    for case in cases {
        let answered = call(client, case.target, case.message_type, case.message).await;
        let what = case.what;
        match (&answered, case.expected) {
            (Ok(reply), Ok(expected)) => assert_eq!(reply, &expected, "{language:?}: {what}"),
            (Err(error), Err(kind)) => {
                assert_eq!(error.kind(), kind, "{language:?}: {what} answered {error}");
                assert!(
                    !error.to_string().trim_end().ends_with(':'),
                    "{language:?}: {what} answered an empty message: {error}"
                );
            }
            (_, expected) => panic!("{language:?}: {what} answered {answered:?}, not {expected:?}"),
        }
    }
    // A message that is not CBOR at all.
    let garbled = client
        .call_raw("Counter", "alice", "increment", vec![0xff, 0x00])
        .await;
    match garbled {
        Err(ClientError::Reply(error)) => {
            assert_eq!(error.kind(), "bad-request", "{language:?}: {error}")
        }
        other => panic!("{language:?}: a garbled message answered {other:?}"),
    }
    match call(client, "Counter/alice", "no-such-message", json!({})).await {
        Err(ReplyError::UnknownMessage {
            service_type,
            message_type,
        }) => assert_eq!(
            (service_type.as_str(), message_type.as_str()),
            ("Counter", "no-such-message")
        ),
        other => panic!("{language:?}: an unknown message answered {other:?}"),
    }
    // A callee's unknown message, passed on, names the callee, not the relay.
    let relayed_unknown = call(
        client,
        "Counter/r",
        "relay",
        relayed("Faulty/e", "no-such-message", json!({})),
    )
    .await;
    match relayed_unknown {
        Err(ReplyError::UnknownMessage {
            service_type,
            message_type,
        }) => assert_eq!(
            (service_type.as_str(), message_type.as_str()),
            ("Faulty", "no-such-message"),
            "{language:?}"
        ),
        other => panic!("{language:?}: a callee's unknown message answered {other:?}"),
    }
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
            // The callee's error reaches the caller's caller with its kind.
            let refused = call(
                &client,
                &format!("{caller}/x"),
                "relay",
                json!({
                    "service_type": callee,
                    "object_id": format!("from-{caller}"),
                    "message_type": "increment",
                    "payload": {"by": "three"},
                }),
            )
            .await;
            assert_eq!(
                refused.as_ref().map_err(ReplyError::kind),
                Err("bad-request"),
                "{caller} → {callee}: {refused:?}"
            );
        }
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
