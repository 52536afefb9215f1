//! `rio call` and `rio send` for scripts (issue 21, item 6), tried case by
//! case against real `rio silo` processes: with `--output json` stdout is
//! one JSON document, the reply or `{"error": {"kind", "message"}}`, stderr
//! stays empty, and the exit code is the one the README's table gives the
//! kind's class, also without `--output json`.

use crate::common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::guests::{Language, build};
use common::{SiloProcess, rio};
use rio_client::{Client, ConnectOptions};
use serde_json::{Value, json};

/// `rio call|send --silo ADDRESS --output json ARGS…`.
fn json_command(command: &str, address: &str, args: &[&str]) -> Output {
    let mut all = vec![command, "--silo", address, "--output", "json"];
    all.extend_from_slice(args);
    rio(&all)
}

/// The one JSON document on stdout and the exit code, checking that
/// nothing went to stderr (a script reads stdout only).
fn outcome(output: &Output) -> (Value, i32) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "stderr is not empty: {stderr}");
    let document: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    (
        document,
        output.status.code().expect("exited, not signalled"),
    )
}

/// An error's kind and exit code, checking its shape and that it has a
/// message.
fn error_of(output: &Output) -> (String, i32) {
    let (document, code) = outcome(output);
    let error = &document["error"];
    let kind = error["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("no kind: {document}"));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "no message: {document}");
    assert_eq!(error.as_object().unwrap().len(), 2, "{document}");
    (kind.to_string(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_of_a_call_is_one_json_document_and_an_exit_code_of_its_class() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--turn-deadline-ms", "3000"]);
    let address = silo.address.as_str();
    let client = Client::connect(address).await.unwrap();
    client
        .deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .expect("the faulty guest deploys");
    let call = |args: &[&str]| json_command("call", address, args);

    // Success: the reply, exit 0.
    let (reply, code) = outcome(&call(&["Faulty/a", "set", r#"{"value": 5}"#]));
    assert_eq!((reply, code), (json!({"value": 5}), 0));

    // Nothing ran.
    assert_eq!(
        error_of(&call(&["Nope/a", "ok"])),
        ("unknown-type".into(), 3)
    );
    assert_eq!(
        error_of(&call(&["Faulty/a", "nope"])),
        ("unknown-message".into(), 3)
    );
    assert_eq!(
        error_of(&call(&["--idempotency-key", "", "Faulty/a", "ok"])),
        ("bad-request".into(), 4)
    );
    assert_eq!(error_of(&call(&["Faulty-a", "ok"])), ("usage".into(), 2));
    assert_eq!(
        error_of(&call(&["Faulty/a", "set", "{value: 5"])),
        ("usage".into(), 2)
    );

    // The handler's own error keeps its kind and message.
    let (document, code) = outcome(&call(&["Faulty/a", "fail"]));
    assert_eq!(
        (document, code),
        (
            json!({"error": {"kind": "refused", "message": "this guest refuses"}}),
            6
        )
    );

    // A trap and a turn past its deadline: their writes are discarded.
    assert_eq!(
        error_of(&call(&["Faulty/a", "set-then-trap", r#"{"value": 9}"#])),
        ("trap".into(), 7)
    );
    assert_eq!(
        error_of(&call(&["Faulty/b", "sleep", r#"{"millis": 10000}"#])),
        ("timeout".into(), 10)
    );
    let (reply, _) = outcome(&call(&["Faulty/a", "get"]));
    assert_eq!(
        reply,
        json!({"value": 5}),
        "the trapped turn's write is gone"
    );

    // No answer within the client's own timeout (the silo is frozen after
    // the hello): the outcome is unknown. Frozen before the hello it is
    // `handshake`, nothing sent.
    let frozen = {
        let address = address.to_string();
        std::thread::spawn(move || {
            let sleep = r#"{"millis": 5000}"#;
            json_command(
                "call",
                &address,
                &["--timeout", "3", "Faulty/c", "sleep", sleep],
            )
        })
    };
    // Long enough for the command to start and send its call (the guest
    // then sleeps for longer than the client waits).
    std::thread::sleep(Duration::from_millis(1500));
    silo.signal("STOP");
    let frozen = frozen.join().unwrap();
    silo.signal("CONT");
    assert_eq!(error_of(&frozen), ("no-reply".into(), 12));
    // Nothing listens there: nothing was sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert_eq!(
        error_of(&json_command("call", &nowhere, &["Faulty/a", "ok"])),
        ("connect".into(), 11)
    );

    // Without `--output json` the same codes, and prose on stderr only.
    let text = rio(&["call", "--silo", address, "Faulty/a", "fail"]);
    assert_eq!(text.status.code(), Some(6));
    assert!(text.stdout.is_empty());
    assert!(String::from_utf8_lossy(&text.stderr).contains("this guest refuses"));

    // A send prints that it was stored, then takes effect.
    let (document, code) = outcome(&json_command(
        "send",
        address,
        &["Faulty/d", "set", r#"{"value": 7}"#],
    ));
    assert_eq!((document, code), (json!({"stored": true}), 0));
    let started = Instant::now();
    loop {
        let (reply, _) = outcome(&call(&["Faulty/d", "get"]));
        if reply == json!({"value": 7}) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        error_of(&json_command("send", address, &["Nope/d", "set", "{}"])),
        ("unknown-type".into(), 3)
    );
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_wrong_or_insufficient_token_exits_5() {
    const CALL_TOKEN: &str = "call-token-5d1e9a";
    const ADMIN_TOKEN: &str = "admin-token-0b7f2c";
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(
        data.path(),
        &["--call-token", CALL_TOKEN, "--admin-token", ADMIN_TOKEN],
    );
    let address = silo.address.as_str();
    let admin = Client::connect_with(
        address,
        &ConnectOptions {
            token: Some(ADMIN_TOKEN.into()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    admin
        .deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .unwrap();

    let (reply, code) = outcome(&json_command(
        "call",
        address,
        &["--token", CALL_TOKEN, "Faulty/a", "ok"],
    ));
    assert_eq!((reply, code), (json!({"ok": true}), 0));
    assert_eq!(
        error_of(&json_command("call", address, &["Faulty/a", "ok"])),
        ("unauthorized".into(), 5),
        "no token"
    );
    assert_eq!(
        error_of(&json_command(
            "call",
            address,
            &["--token", "not-the-token", "Faulty/a", "ok"]
        )),
        ("unauthorized".into(), 5),
        "a wrong token"
    );
    // A call token may not undeploy: every command exits by the table.
    let undeploy = rio(&[
        "undeploy", "--silo", address, "--token", CALL_TOKEN, "Faulty",
    ]);
    assert_eq!(undeploy.status.code(), Some(5), "{undeploy:?}");
    assert!(String::from_utf8_lossy(&undeploy.stderr).contains("unauthorized"));
    assert_eq!(admin.deployments().await.unwrap().len(), 1);
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_at_its_connection_cap_exits_9_and_the_same_call_works_once_there_is_room() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--max-connections", "1"]);
    let address = silo.address.as_str();
    let holder = Client::connect(address).await.unwrap();
    holder
        .deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .unwrap();
    assert_eq!(
        error_of(&json_command("call", address, &["Faulty/a", "ok"])),
        ("overloaded".into(), 9)
    );
    drop(holder);
    let started = Instant::now();
    loop {
        let output = json_command("call", address, &["Faulty/a", "ok"]);
        if output.status.code() == Some(0) {
            assert_eq!(outcome(&output).0, json!({"ok": true}));
            break;
        }
        assert_eq!(error_of(&output), ("overloaded".into(), 9));
        assert!(started.elapsed() < Duration::from_secs(10), "no room yet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    silo.stop();
}
