//! Connection limits and trap causes (issue 11, items 4 and 6), tried
//! against real `rio silo` processes over loopback TCP with short limits
//! given by flags: a silent connection is closed at the handshake timeout,
//! an idle one at the idle timeout (one with a call in flight is not), the
//! connection over the cap is refused while a connected client goes on, a
//! client that never reads its big replies does not grow the silo (and is
//! closed if it never reads at all), one that half-closes still gets its
//! replies, and a trapping guest's caller gets
//! one line with the cause while the silo logs each trap once.

use crate::common;

use std::time::{Duration, Instant};

use common::guests::build;
use common::{SiloLog, SiloProcess, raw_connection};
use rio_client::{Calls, Client, ClientError};
use rio_protocol::{
    CallRequest, ClientFrame, FrameReader, Request, Response, ServerFrame, encode_frame,
};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Largest frame these tests read: replies of a few MiB.
const MAX_TEST_FRAME: usize = 8 * 1024 * 1024;

async fn deploy_faulty(silo: &SiloProcess) -> Client {
    let client = Client::connect(&silo.address)
        .await
        .expect("client connects");
    client
        .deploy("Faulty", build("guests/faulty"))
        .await
        .expect("faulty deploys");
    client
}

fn to_cbor(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).unwrap();
    bytes
}

fn call_frame(id: u64, object_id: &str, message_type: &str, message: Value) -> Vec<u8> {
    let mut frame = Vec::new();
    let request = Request::Call(CallRequest {
        service_type: "Faulty".into(),
        object_id: object_id.into(),
        message_type: message_type.into(),
        payload: ByteBuf::from(to_cbor(&message)),
        timeout_ms: Some(30_000),
        idempotency_key: None,
    });
    encode_frame(&ClientFrame::Request { id, request }, &mut frame).unwrap();
    frame
}

/// The next frame within `limit`: `Some(frame)`, or `None` at the end of
/// the stream; panics when nothing comes in time.
async fn next_within(
    reader: &mut FrameReader<OwnedReadHalf>,
    limit: Duration,
) -> Option<ServerFrame> {
    match tokio::time::timeout(limit, reader.next_frame::<ServerFrame>()).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(error)) => panic!("reading a frame failed: {error}"),
        Err(_) => panic!("nothing came within {limit:?}"),
    }
}

/// The goodbye that must come within `limit`, then the end of the stream.
async fn goodbye_within(reader: &mut FrameReader<OwnedReadHalf>, limit: Duration) -> String {
    let reason = match next_within(reader, limit).await {
        Some(ServerFrame::Goodbye { reason, .. }) => reason,
        other => panic!("expected a goodbye, got {other:?}"),
    };
    assert!(
        next_within(reader, limit).await.is_none(),
        "the silo closes after its goodbye"
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_hello_is_closed_at_the_handshake_timeout() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--handshake-timeout-ms", "300"]);
    let stream = TcpStream::connect(&silo.address).await.unwrap();
    let started = Instant::now();
    let mut reader = FrameReader::new(stream, MAX_TEST_FRAME);
    let reason = match tokio::time::timeout(Duration::from_secs(5), reader.next_frame()).await {
        Ok(Ok(Some(ServerFrame::Goodbye { reason, .. }))) => reason,
        other => panic!("expected a goodbye, got {other:?}"),
    };
    let took = started.elapsed();
    assert!(reason.contains("no hello within 300 ms"), "{reason}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );

    // A client that does say hello is served, and sees the count.
    let client = Client::connect(&silo.address).await.unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.connections_closed_misbehaving, 1, "{stats:?}");
    assert_eq!(stats.connections_open, 1, "{stats:?}");
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_a_goodbye_and_a_busy_one_is_not() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--connection-idle-secs", "1"]);
    let admin = deploy_faulty(&silo).await;
    drop(admin);

    // Busy: one call sleeping past the idle timeout keeps the connection.
    let (mut busy, mut busy_writer) = raw_connection(&silo.address, MAX_TEST_FRAME).await;
    busy_writer
        .write_all(&call_frame(1, "sleeper", "sleep", json!({"millis": 2500})))
        .await
        .unwrap();
    // Idle: says hello and nothing more.
    let (mut idle, _idle_writer) = raw_connection(&silo.address, MAX_TEST_FRAME).await;
    let reason = goodbye_within(&mut idle, Duration::from_secs(4)).await;
    assert!(reason.contains("idle for 1 s"), "{reason}");

    match next_within(&mut busy, Duration::from_secs(6)).await {
        Some(ServerFrame::Reply {
            id: 1,
            result: Ok(Response::Payload(_)),
        }) => {}
        other => panic!("the busy connection gets its reply, got {other:?}"),
    }
    // Its idle time starts once the call is done, not at the request: a
    // request 0.4 s after the reply is still served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    busy_writer
        .write_all(&call_frame(2, "sleeper", "ok", json!({})))
        .await
        .unwrap();
    match next_within(&mut busy, Duration::from_secs(3)).await {
        Some(ServerFrame::Reply {
            id: 2,
            result: Ok(Response::Payload(_)),
        }) => {}
        other => panic!("the connection was closed right after its call: {other:?}"),
    }
    let reason = goodbye_within(&mut busy, Duration::from_secs(4)).await;
    assert!(reason.contains("idle for 1 s"), "{reason}");
    let client = Client::connect(&silo.address).await.unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.connections_closed_idle, 2, "{stats:?}");
    assert_eq!(stats.connections_closed_misbehaving, 0, "{stats:?}");
    silo.stop();
}

/// A `Client` kept idle past the silo's idle timeout connects again by
/// itself for its next call (issue 19, item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connects_again_by_itself() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--connection-idle-secs", "1"]);
    let client = deploy_faulty(&silo).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the idle connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply: Value = client
        .call("Faulty", "again", "ok", &json!({}))
        .await
        .expect("the client connects again for its next call");
    assert_eq!(reply["ok"], true);
    assert!(!client.is_closed());
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.connections_closed_idle, 1, "{stats:?}");
    assert_eq!(stats.connections_open, 1, "{stats:?}");
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_over_the_cap_is_refused_and_connected_clients_go_on() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--max-connections", "3"]);
    let client = deploy_faulty(&silo).await;
    // Two more connections that hold their place without saying anything.
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&silo.address).await.unwrap());
    }
    // The accept loop counts them as it takes them: wait until it has.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stats().await.unwrap().connections_open < 3 {
        assert!(
            Instant::now() < deadline,
            "the silent connections were not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    match Client::connect(&silo.address).await {
        // The goodbye's kind: a client can tell it from a broken silo.
        Err(ClientError::Reply(rio_protocol::ReplyError::Overloaded(reason))) => {
            assert!(reason.contains("too many connections"), "{reason}")
        }
        Err(other) => panic!("expected a refusal with a reason, got {other}"),
        Ok(_) => panic!("a fourth connection was accepted over a cap of 3"),
    }
    let reply: Value = client
        .call("Faulty", "cap", "ok", &json!({}))
        .await
        .expect("the connected client still calls");
    assert_eq!(reply["ok"], true);
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.connections_refused, 1, "{stats:?}");
    assert_eq!(stats.connections_open, 3, "{stats:?}");

    // A place freed is a place taken again.
    drop(silent.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        if let Ok(client) = Client::connect(&silo.address).await {
            break client;
        }
        assert!(Instant::now() < deadline, "a freed place was not reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reply: Value = again.call("Faulty", "cap", "ok", &json!({})).await.unwrap();
    assert_eq!(reply["ok"], true);
    silo.stop();
}

/// Unread replies: 300 requests for 1 MiB replies each, never read, would
/// have the silo hold 300 MiB; with 2 MiB of unread replies and 4 requests
/// in flight allowed, it holds a few MiB and then stops reading them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_grow_the_silo_and_gets_everything_later() {
    const REQUESTS: u64 = 300;
    const REPLY_BYTES: usize = 1024 * 1024;
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(
        data.path(),
        &[
            "--max-unread-reply-mib",
            "2",
            "--max-requests-in-flight",
            "4",
        ],
    );
    let admin = deploy_faulty(&silo).await;
    // Activated and warmed with one big reply, so what grows later is the queue.
    let _: Value = admin
        .call("Faulty", "blob", "blob", &json!({"bytes": REPLY_BYTES}))
        .await
        .unwrap();
    let before = admin.stats().await.unwrap().resident_bytes;

    let (mut reader, mut writer) = raw_connection(&silo.address, MAX_TEST_FRAME).await;
    let mut frames = Vec::new();
    for id in 1..=REQUESTS {
        frames.extend(call_frame(
            id,
            "blob",
            "blob",
            json!({"bytes": REPLY_BYTES}),
        ));
    }
    // All requests go out at once (they are small); the silo may take
    // them into its socket buffer but must not turn them all into replies.
    tokio::time::timeout(Duration::from_secs(10), writer.write_all(&frames))
        .await
        .expect("the requests fit the socket buffers")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = admin.stats().await.unwrap();
    let grown = stalled.resident_bytes.saturating_sub(before);
    println!(
        "resident before {} MiB, with {REQUESTS} unread 1 MiB replies asked for: {} MiB (+{} MiB)",
        before >> 20,
        stalled.resident_bytes >> 20,
        grown >> 20
    );
    if before > 0 {
        assert!(
            grown < 96 * 1024 * 1024,
            "the silo grew by {} MiB for a client that does not read",
            grown >> 20
        );
    }
    assert_eq!(stalled.connections_closed_misbehaving, 0, "{stalled:?}");

    // Once the client reads, every reply comes, in full.
    let mut seen = vec![false; REQUESTS as usize + 1];
    for _ in 0..REQUESTS {
        match next_within(&mut reader, Duration::from_secs(30)).await {
            Some(ServerFrame::Reply {
                id,
                result: Ok(Response::Payload(payload)),
            }) => {
                assert!(payload.len() > REPLY_BYTES, "reply {id} is whole");
                assert!(!seen[id as usize], "reply {id} came twice");
                seen[id as usize] = true;
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    assert!(seen[1..].iter().all(|&s| s), "every request got its reply");
    silo.stop();
}

/// A client that never reads at all is closed once its replies have sat
/// unread for the idle timeout, and its connection is let go although its
/// goodbye cannot be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_at_the_idle_timeout_and_let_go() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(
        data.path(),
        &[
            "--connection-idle-secs",
            "1",
            "--max-unread-reply-mib",
            "1",
            "--max-requests-in-flight",
            "2",
        ],
    );
    let admin = deploy_faulty(&silo).await;
    let (_reader, mut writer) = raw_connection(&silo.address, MAX_TEST_FRAME).await;
    let mut frames = Vec::new();
    for id in 1..=50 {
        frames.extend(call_frame(
            id,
            "blob",
            "blob",
            json!({"bytes": 1024 * 1024}),
        ));
    }
    writer.write_all(&frames).await.unwrap();

    // Stalled for 1 s, then at most 5 s to deliver a goodbye nobody reads.
    let started = Instant::now();
    let stats = loop {
        let stats = admin.stats().await.unwrap();
        if stats.connections_open == 1 || started.elapsed() > Duration::from_secs(15) {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("let go after {:.1?}: {stats:?}", started.elapsed());
    assert_eq!(stats.connections_open, 1, "{stats:?}");
    assert_eq!(stats.connections_closed_misbehaving, 1, "{stats:?}");
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_gets_the_replies_of_what_it_sent() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &[]);
    let admin = deploy_faulty(&silo).await;
    drop(admin);
    let (mut reader, mut writer) = raw_connection(&silo.address, MAX_TEST_FRAME).await;
    let mut frames = Vec::new();
    // Slow ones (their turns sleep) and quick ones, on several objects.
    for id in 1..=4u64 {
        frames.extend(call_frame(
            id,
            &format!("slow-{id}"),
            "sleep",
            json!({"millis": 400}),
        ));
    }
    for id in 5..=20u64 {
        frames.extend(call_frame(
            id,
            &format!("quick-{}", id % 3),
            "ok",
            json!({}),
        ));
    }
    writer.write_all(&frames).await.unwrap();
    writer.shutdown().await.unwrap();

    let mut replied = Vec::new();
    while let Some(frame) = next_within(&mut reader, Duration::from_secs(10)).await {
        match frame {
            ServerFrame::Reply { id, result } => {
                assert!(result.is_ok(), "request {id}: {result:?}");
                replied.push(id);
            }
            other => panic!("expected replies only, got {other:?}"),
        }
    }
    replied.sort();
    assert_eq!(replied, (1..=20).collect::<Vec<u64>>());
    silo.stop();
}

/// What a call ended with: the error's kind and text.
async fn failure(
    client: &Client,
    object_id: &str,
    message_type: &str,
    message: Value,
) -> (String, String) {
    match client
        .call::<_, Value>("Faulty", object_id, message_type, &message)
        .await
    {
        Err(ClientError::Reply(error)) => (error.kind().to_string(), error.to_string()),
        other => panic!("{message_type} should fail with a reply error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_reaches_the_caller_as_one_line_with_its_cause_and_is_logged_once() {
    let data = tempfile::tempdir().unwrap();
    let (silo, log): (SiloProcess, SiloLog) = SiloProcess::start_logged(
        data.path(),
        &["--memory-limit-mib", "16", "--turn-deadline-ms", "1000"],
    );
    let client = deploy_faulty(&silo).await;

    let cases = [
        ("panic", "trap", json!({}), "trap", "panicked at"),
        (
            "overflow",
            "overflow",
            json!({}),
            "trap",
            "trapped: call stack exhausted",
        ),
        (
            "exit",
            "exit",
            json!({"status": 3}),
            "trap",
            "exited with status",
        ),
        (
            "hog",
            "hog",
            json!({}),
            "trap",
            "exceeded its memory limit of 16777216 bytes",
        ),
        (
            "loop",
            "loop",
            json!({}),
            "timeout",
            "ran past its deadline",
        ),
    ];
    for (object_id, message_type, message, kind, cause) in cases {
        let (got_kind, text) = failure(&client, object_id, message_type, message).await;
        println!("{message_type}: `{got_kind}` {text}");
        assert_eq!(got_kind, kind, "{message_type}: {text}");
        assert!(
            text.contains(cause),
            "{message_type}: the cause is missing: {text}"
        );
        assert!(text.contains(&format!("Faulty/{object_id}")), "{text}");
        assert!(
            !text.contains('\n'),
            "{message_type}: more than one line: {text}"
        );
        assert!(
            !text.contains("wasm backtrace"),
            "{message_type}: a backtrace reached the caller: {text}"
        );
        assert!(text.len() < 800, "{message_type}: {} bytes", text.len());
    }
    // The panic's own words, not only that it panicked.
    let (_, text) = failure(&client, "panic", "trap", json!({})).await;
    assert!(text.contains("asked to trap"), "{text}");

    // Each object is still there afterwards, activated afresh.
    let reply: Value = client
        .call("Faulty", "overflow", "ok", &json!({}))
        .await
        .unwrap();
    assert_eq!(reply["ok"], true);

    // Logged once each: two panics, an overflow, an exit and a hog; one
    // deadline. Lines are written as they happen, but let the pipe catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trapped = log.lines_with("guest trapped");
    assert_eq!(trapped.len(), 5, "{trapped:#?}");
    for object_id in ["panic", "overflow", "exit", "hog"] {
        assert!(
            trapped
                .iter()
                .any(|line| line.contains(&format!("Faulty/{object_id}"))),
            "no log line names Faulty/{object_id}: {trapped:#?}"
        );
    }
    let deadline = log.lines_with("turn stopped at its deadline");
    assert_eq!(deadline.len(), 1, "{deadline:#?}");
    // The only panics in the log are the guest's, quoted in those lines.
    let panics = log.lines_with("panicked at");
    assert!(
        panics.iter().all(|line| line.contains("guest trapped")),
        "{panics:#?}"
    );
    silo.stop();
}
