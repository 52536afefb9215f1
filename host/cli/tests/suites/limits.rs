//! Limits on what one guest or caller may use (issue 11), tried against a
//! real `rio silo` started with small limits: a turn writing 2 GiB, a value
//! over the value limit, a call chain too deep, too many calls in a turn, an
//! object id or a message type too long, and a guest flooding its log with forged lines; and,
//! at the default limits on two silos, replies and payloads over
//! `payload-bytes`. Each fails that one call with the limit named, and the
//! silo (and the connection) goes on serving.

use crate::common;

use std::time::Duration;

use common::SiloProcess;
use common::guests::{Language, build, tooling_ready};
use rio_client::{Calls, Client, ClientError};
use rio_protocol::{CallRequest, ForwardRequest, ReplyError, Request};
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

const LIMITS: &[&str] = &[
    "--limit",
    "turn-write-bytes=4MiB",
    "--limit",
    "value-bytes=1MiB",
    "--limit",
    "call-depth=5",
    "--limit",
    "calls-per-turn=10",
    "--limit",
    "object-id-bytes=64",
    "--limit",
    "message-type-bytes=64",
    "--limit",
    "log-line-bytes=200",
    "--limit",
    "log-lines-per-second=20",
];

/// The call's error kind and text; panics if it succeeded.
async fn refused(
    client: &Client,
    object_id: &str,
    message_type: &str,
    message: Value,
) -> (String, String) {
    match client
        .call::<_, Value>("Faulty", object_id, message_type, &message)
        .await
    {
        Ok(reply) => panic!("{message_type} on {object_id} succeeded: {reply}"),
        Err(ClientError::Reply(error)) => (error.kind().to_string(), error.to_string()),
        Err(other) => panic!("{message_type} on {object_id}: not a reply: {other}"),
    }
}

async fn resident_bytes(client: &Client) -> u64 {
    client.stats().await.expect("stats").resident_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_fails_only_its_call_and_names_itself() {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (silo, log) = SiloProcess::start_logged(data.path(), LIMITS);
    let client = Client::connect(&silo.address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(120));
    client
        .deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .expect("deploy");
    let _: Value = client
        .call("Faulty", "writer", "set", &json!({"value": 1}))
        .await
        .expect("a normal write");

    // 2 GiB in one turn, from a 1 MiB buffer: stopped at 4 MiB pending.
    let before = resident_bytes(&client).await;
    let (kind, text) = refused(
        &client,
        "writer",
        "fill",
        json!({"keys": 2048, "value_bytes": MIB}),
    )
    .await;
    let grew = resident_bytes(&client).await.saturating_sub(before);
    eprintln!(
        "2 GiB turn: `{kind}` {text}; the silo's RSS grew by {} KiB",
        grew / 1024
    );
    assert_eq!(kind, "trap", "{text}");
    assert!(text.contains("turn-write-bytes"), "{text}");
    // The limit, the guest's own 1 MiB buffer and a fresh instance: far
    // below what the turn asked for.
    assert!(
        grew < 64 * MIB,
        "the silo grew by {grew} bytes for a refused turn"
    );
    let value: Value = client
        .call("Faulty", "writer", "get", &json!({}))
        .await
        .expect("the object answers after its refused turn");
    assert_eq!(value, json!({"value": 1}), "the refused turn wrote nothing");

    let (kind, text) = refused(
        &client,
        "writer",
        "fill",
        json!({"keys": 1, "value_bytes": 2 * MIB}),
    )
    .await;
    assert_eq!(kind, "trap", "{text}");
    assert!(text.contains("value-bytes"), "{text}");

    // A chain of 5 turns is allowed, a sixth is not.
    let _: Value = client
        .call("Faulty", "chain", "chain", &json!({"depth": 4}))
        .await
        .expect("a chain within the limit");
    let (_, text) = refused(&client, "deep", "chain", json!({"depth": 10})).await;
    assert!(text.contains("call-depth"), "{text}");
    // A forwarded call is held to the same limit: a peer's chain of 5
    // waiting turns plus the callee's is one too many (this silo has no
    // cluster secret, so anyone may forward).
    let forward = |chain: usize| {
        Request::Forward(ForwardRequest {
            call: CallRequest {
                service_type: "Faulty".into(),
                object_id: "forwarded".into(),
                message_type: "ok".into(),
                payload: serde_bytes::ByteBuf::from(vec![0xa0]),
                timeout_ms: Some(10_000),
                idempotency_key: None,
            },
            call_chain: (0..chain)
                .map(|index| ("Faulty".to_string(), format!("caller-{index}")))
                .collect(),
            hops: 0,
            waiting_since_us: None,
            from_rerun: false,
        })
    };
    match client.request(forward(5)).await {
        Err(ClientError::Reply(ReplyError::BadRequest(text))) => {
            assert!(text.contains("call-depth"), "{text}")
        }
        other => panic!("a forwarded chain over the limit: {other:?}"),
    }
    client
        .request(forward(4))
        .await
        .expect("a forwarded chain within the limit");

    let _: Value = client
        .call("Faulty", "caller", "many-calls", &json!({"count": 10}))
        .await
        .expect("ten calls in a turn");
    let (_, text) = refused(&client, "caller", "many-calls", json!({"count": 11})).await;
    assert!(text.contains("calls-per-turn"), "{text}");

    let long_id = "x".repeat(65);
    let (kind, text) = refused(&client, &long_id, "ok", json!({})).await;
    assert_eq!(kind, "bad-request", "{text}");
    assert!(text.contains("object-id-bytes"), "{text}");

    // A message type past `message-type-bytes` (64 here) is refused without
    // being echoed back: 1 MiB of it would otherwise come back in the error.
    let long_type = "t".repeat(MIB as usize);
    let (kind, text) = refused(&client, "typed", &long_type, json!({})).await;
    assert_eq!(kind, "bad-request", "{text}");
    assert!(text.contains("message-type-bytes"), "{text}");
    assert!(text.len() < 1024, "the error echoes {} bytes", text.len());
    let at_limit = "t".repeat(64);
    let (kind, text) = refused(&client, "typed", &at_limit, json!({})).await;
    assert_eq!(
        kind, "unknown-message",
        "one at the limit reaches the guest: {text}"
    );

    // A flood of forged lines: each comes out as one escaped line, cut,
    // and past 20 a second dropped; the count shows with a later line.
    let forged = format!(
        "flood\n2026-01-01T00:00:00.000000Z ERROR rio_silo::server: forged {}",
        "y".repeat(400)
    );
    let _: Value = client
        .call(
            "Faulty",
            "logger",
            "log-flood",
            &json!({"lines": 1000, "text": forged}),
        )
        .await
        .expect("flooding the log is not an error");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _: Value = client
        .call(
            "Faulty",
            "logger",
            "log-flood",
            &json!({"lines": 1, "text": "after"}),
        )
        .await
        .expect("one more line");
    let _: Value = client
        .call("Faulty", "writer", "get", &json!({}))
        .await
        .expect("the silo still serves");
    // The log is read from the silo's stderr by a thread: let it catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = log.text();
    let flood_lines = text.lines().filter(|line| line.contains("flood")).count();
    let forged_lines = text
        .lines()
        .filter(|line| line.starts_with("2026-01-01T00:00:00.000000Z"))
        .count();
    eprintln!("the silo logged {flood_lines} of 1000 flood lines");
    assert_eq!(forged_lines, 0, "a guest forged a silo log line:\n{text}");
    assert!(
        (1..=40).contains(&flood_lines),
        "{flood_lines} flood lines were logged; the rate limit is 20 a second"
    );
    assert!(
        text.contains("more bytes cut"),
        "long lines are cut:\n{text}"
    );
    let dropped: u64 = text
        .lines()
        .filter(|line| line.contains("log lines dropped"))
        .filter_map(|line| line.split("dropped=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        dropped + flood_lines as u64 >= 1000,
        "{dropped} dropped lines counted, {flood_lines} logged, of 1000:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // stdout and stderr count against the same rate: a guest printing on
    // both until its turn's deadline gets at most 20 lines a second into
    // the log, escaped and cut like the `log` import's, the rest counted.
    let printed = client
        .call::<_, Value>(
            "Faulty",
            "printer",
            "print-flood",
            &json!({"lines": 0, "text": "print\n2026-01-01T00:00:00.000000Z ERROR rio_silo: forged"}),
        )
        .await;
    match printed {
        Err(ClientError::Reply(error)) => assert_eq!(error.kind(), "timeout", "{error}"),
        other => panic!("printing until the deadline answered {other:?}"),
    }
    let _: Value = client
        .call("Faulty", "writer", "get", &json!({}))
        .await
        .expect("the silo still serves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The silo logs at `warn` here, so the printed lines themselves (at
    // `info`) do not show; what shows is the count of those dropped,
    // logged with each line let through.
    let text = log.text();
    let printer_drops: Vec<u64> = text
        .lines()
        .filter(|line| line.contains("log lines dropped") && line.contains("printer"))
        .filter_map(|line| line.split("dropped=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .collect();
    let dropped: u64 = printer_drops.iter().sum();
    eprintln!(
        "the printer's lines dropped: {dropped}, counted in {} log lines",
        printer_drops.len()
    );
    assert!(
        dropped >= 1000,
        "{dropped} printed lines were dropped: stdout and stderr skip the rate limit"
    );
    // A count is logged with a line let through, so at most 20 a second
    // over the 5 s deadline (and one window more for where seconds fall).
    assert!(
        printer_drops.len() <= 20 * 6,
        "{} lines counting drops",
        printer_drops.len()
    );
}

/// One limit, `payload-bytes` (16 MiB by default), bounds every call's
/// payload and reply, and clients and peers accept replies that big: a
/// bigger reply or payload fails its own call, never the connection (a
/// 17 MiB reply used to close the client's connection, failing every call
/// in flight on it, and between silos the forwarding connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_reply_or_payload_fails_only_its_call_also_between_silos() {
    if !tooling_ready(&[Language::Rust]) {
        return;
    }
    let store = common::stores::SqliteFile::create();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = dirs
        .iter()
        .map(|dir| {
            SiloProcess::start_with(
                dir.path(),
                &["--cluster", &store.url, "--placement", "prefer-local"],
            )
        })
        .collect();
    let connect = |address: String| async move {
        Client::connect(&address)
            .await
            .expect("client connects")
            .with_timeout(Duration::from_secs(120))
    };
    let near = connect(silos[0].address.clone()).await;
    let far = connect(silos[1].address.clone()).await;
    near.deploy("Faulty", build(Language::Rust.faulty()))
        .await
        .expect("deploy");
    // `remote` lives on the second silo: the first forwards to it.
    let _: Value = far
        .call("Faulty", "remote", "ok", &json!({}))
        .await
        .expect("activated on the second silo");

    for object_id in ["local", "remote"] {
        let (big_message, small_message) = (json!({"bytes": 17 * MIB}), json!({}));
        let big = near.call::<_, Value>("Faulty", object_id, "blob", &big_message);
        let small = near.call::<_, Value>("Faulty", object_id, "ok", &small_message);
        let (big, small) = tokio::join!(big, small);
        match big {
            Err(ClientError::Reply(error)) => {
                let text = error.to_string();
                assert_eq!(error.kind(), "trap", "{object_id}: {text}");
                assert!(text.contains("payload-bytes"), "{object_id}: {text}");
            }
            other => panic!("{object_id}: a 17 MiB reply should fail its call: {other:?}"),
        }
        small.unwrap_or_else(|error| panic!("{object_id}: the call beside it failed: {error}"));
        // Just under the limit passes whole, on the same connection.
        let whole: Value = near
            .call("Faulty", object_id, "blob", &json!({"bytes": 15 * MIB}))
            .await
            .unwrap_or_else(|error| panic!("{object_id}: a 15 MiB reply: {error}"));
        assert_eq!(
            whole["blob"].as_str().map(str::len),
            Some(15 * MIB as usize)
        );

        let error = near
            .call_raw("Faulty", object_id, "ok", vec![0; 17 * MIB as usize])
            .await
            .expect_err("a 17 MiB payload is refused");
        let ClientError::Reply(error) = error else {
            panic!("{object_id}: not a reply: {error}");
        };
        assert_eq!(error.kind(), "bad-request", "{error}");
        assert!(error.to_string().contains("payload-bytes"), "{error}");
        let _: Value = near
            .call("Faulty", object_id, "ok", &json!({}))
            .await
            .unwrap_or_else(|error| panic!("{object_id}: the connection broke: {error}"));
    }
    assert!(!near.is_closed() && !far.is_closed());
    for silo in silos {
        silo.stop();
    }
}
