//! Guests that trap, loop or eat memory, and peers that send bad frames:
//! each fails only its own request, with a clear error, and loses nothing.

mod common;

use std::time::Duration;

use common::{DataDir, Empty, TestSilo, config};
use rio_client::{Calls, ClientError, ReplyError};
use rio_protocol::{ClientFrame, FrameReader, PROTOCOL_VERSION, ServerFrame, encode_frame};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Serialize)]
struct SetValue {
    value: i64,
}

#[derive(Deserialize, Debug, PartialEq)]
struct MaybeValue {
    value: Option<i64>,
}

#[derive(Deserialize)]
struct Ok_ {
    ok: bool,
}

async fn faulty_silo(data: &DataDir) -> TestSilo {
    let silo = TestSilo::start(config(data)).await;
    silo.deploy("Faulty", "rio-guest-faulty").await;
    silo
}

#[tokio::test]
async fn a_trap_discards_the_turns_writes_and_only_that_message_fails() {
    let data = DataDir::new();
    let silo = faulty_silo(&data).await;
    let client = silo.client().await;
    let _: MaybeValue = client
        .call("Faulty", "t", "set", &SetValue { value: 1 })
        .await
        .unwrap();

    let error = client
        .call::<_, MaybeValue>("Faulty", "t", "set-then-trap", &SetValue { value: 5 })
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::Trap(_))),
        "{error}"
    );

    let reply: MaybeValue = client.call("Faulty", "t", "get", &Empty {}).await.unwrap();
    assert_eq!(
        reply.value,
        Some(1),
        "the trapped turn's write was discarded"
    );

    let error = client
        .call::<_, MaybeValue>("Faulty", "t", "trap", &Empty {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::Trap(_))),
        "{error}"
    );
    let reply: Ok_ = client.call("Faulty", "t", "ok", &Empty {}).await.unwrap();
    assert!(reply.ok, "the object is activated afresh after a trap");
    silo.stop().await;
}

#[tokio::test]
async fn a_guest_error_reaches_the_caller_with_kind_and_message_and_writes_nothing() {
    let data = DataDir::new();
    let silo = faulty_silo(&data).await;
    let client = silo.client().await;
    let error = client
        .call::<_, MaybeValue>("Faulty", "g", "fail", &Empty {})
        .await
        .unwrap_err();
    match error {
        ClientError::Reply(ReplyError::Guest { kind, message }) => {
            assert_eq!(kind, "refused");
            assert_eq!(message, "this guest refuses");
        }
        other => panic!("expected a guest error, got {other}"),
    }
    silo.stop().await;
}

#[tokio::test]
async fn a_guest_looping_forever_is_stopped_at_its_deadline_and_others_go_on() {
    let data = DataDir::new();
    let silo = faulty_silo(&data).await;
    let client = silo.client().await;
    let _: MaybeValue = client
        .call("Faulty", "other", "set", &SetValue { value: 3 })
        .await
        .unwrap();

    let looping = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, MaybeValue>("Faulty", "looper", "loop", &Empty {})
                .await
        })
    };
    // While one guest spins, another object still answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply: MaybeValue = client
        .call("Faulty", "other", "get", &Empty {})
        .await
        .unwrap();
    assert_eq!(reply.value, Some(3));

    let error = looping.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, ClientError::Reply(ReplyError::Timeout(_))),
        "{error}"
    );
    let reply: Ok_ = client
        .call("Faulty", "looper", "ok", &Empty {})
        .await
        .unwrap();
    assert!(reply.ok);
    silo.stop().await;
}

#[tokio::test]
async fn a_guest_eating_memory_is_stopped_at_its_limit_and_others_go_on() {
    let data = DataDir::new();
    let mut config = config(&data);
    config.memory_limit_bytes = 16 * 1024 * 1024;
    let silo = TestSilo::start(config).await;
    silo.deploy("Faulty", "rio-guest-faulty").await;
    let client = silo.client().await;

    let error = client
        .call::<_, MaybeValue>("Faulty", "hog", "hog", &Empty {})
        .await
        .unwrap_err();
    match &error {
        ClientError::Reply(ReplyError::Trap(message)) => {
            assert!(message.contains("memory limit"), "{message}")
        }
        other => panic!("expected a trap for the memory limit, got {other}"),
    }
    let reply: Ok_ = client.call("Faulty", "hog", "ok", &Empty {}).await.unwrap();
    assert!(reply.ok);
    let reply: Ok_ = client
        .call("Faulty", "bystander", "ok", &Empty {})
        .await
        .unwrap();
    assert!(reply.ok);
    silo.stop().await;
}

/// A raw connection that has done the handshake.
async fn raw_connection(
    silo: &TestSilo,
) -> (
    FrameReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let stream = TcpStream::connect(&silo.address).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut hello = Vec::new();
    encode_frame(
        &ClientFrame::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: None,
        },
        &mut hello,
    )
    .unwrap();
    write.write_all(&hello).await.unwrap();
    let mut reader = FrameReader::new(read, 1 << 20);
    assert!(matches!(
        reader.next_frame::<ServerFrame>().await.unwrap(),
        Some(ServerFrame::Welcome { .. })
    ));
    (reader, write)
}

async fn expect_goodbye_then_close(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
    reason_contains: &str,
) {
    match reader.next_frame::<ServerFrame>().await.unwrap() {
        Some(ServerFrame::Goodbye { reason, .. }) => {
            assert!(reason.contains(reason_contains), "reason: {reason}")
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
    assert!(
        reader.next_frame::<ServerFrame>().await.unwrap().is_none(),
        "then the connection closes"
    );
}

#[tokio::test]
async fn malformed_oversized_and_unknown_frames_get_clear_answers() {
    let data = DataDir::new();
    let mut config = config(&data);
    config.max_frame_bytes = 4096;
    let silo = TestSilo::start(config).await;
    silo.deploy("Faulty", "rio-guest-faulty").await;

    // Not CBOR at all: goodbye with the reason, then close.
    let (mut reader, mut writer) = raw_connection(&silo).await;
    writer
        .write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd])
        .await
        .unwrap();
    expect_goodbye_then_close(&mut reader, "undecodable").await;

    // Announces more than the limit: refused before the body is read.
    let (mut reader, mut writer) = raw_connection(&silo).await;
    writer.write_all(&100_000u32.to_be_bytes()).await.unwrap();
    expect_goodbye_then_close(&mut reader, "over the limit").await;

    // A request kind this silo does not know: an error reply for its id,
    // and the connection stays usable.
    let (mut reader, mut writer) = raw_connection(&silo).await;
    use ciborium::Value;
    let text = |t: &str| Value::Text(t.into());
    let request = Value::Map(vec![(text("Frobnicate"), Value::Map(vec![]))]);
    let inner = Value::Map(vec![
        (text("id"), Value::Integer(7.into())),
        (text("request"), request),
    ]);
    let unknown = Value::Map(vec![(text("Request"), inner)]);
    let mut frame = Vec::new();
    encode_frame(&unknown, &mut frame).unwrap();
    writer.write_all(&frame).await.unwrap();
    match reader.next_frame::<ServerFrame>().await.unwrap() {
        Some(ServerFrame::Reply {
            id: 7,
            result: Err(ReplyError::BadRequest(_)),
        }) => {}
        other => panic!("expected a bad-request reply for id 7, got {other:?}"),
    }
    let mut frame = Vec::new();
    encode_frame(
        &ClientFrame::Request {
            id: 8,
            request: rio_protocol::Request::Stats,
        },
        &mut frame,
    )
    .unwrap();
    writer.write_all(&frame).await.unwrap();
    assert!(matches!(
        reader.next_frame::<ServerFrame>().await.unwrap(),
        Some(ServerFrame::Reply {
            id: 8,
            result: Ok(_)
        })
    ));

    // A client of another protocol version is told so.
    let stream = TcpStream::connect(&silo.address).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut hello = Vec::new();
    encode_frame(
        &ClientFrame::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            token: None,
        },
        &mut hello,
    )
    .unwrap();
    write.write_all(&hello).await.unwrap();
    let mut reader = FrameReader::new(read, 1 << 20);
    expect_goodbye_then_close(&mut reader, "not supported").await;

    // Through all of it the silo kept serving.
    let client = silo.client().await;
    let reply: Ok_ = client
        .call("Faulty", "still", "ok", &Empty {})
        .await
        .unwrap();
    assert!(reply.ok);
    silo.stop().await;
}

#[derive(Deserialize, Debug, PartialEq)]
struct Sandbox {
    environment_variables: usize,
    arguments: usize,
    can_list_root: bool,
    can_open_file: bool,
    can_connect: bool,
}

#[tokio::test]
async fn guests_see_no_files_no_environment_and_no_network() {
    let data = DataDir::new();
    let silo = faulty_silo(&data).await;
    let client = silo.client().await;
    let seen: Sandbox = client
        .call("Faulty", "s", "sandbox", &Empty {})
        .await
        .unwrap();
    let nothing = Sandbox {
        environment_variables: 0,
        arguments: 0,
        can_list_root: false,
        can_open_file: false,
        can_connect: false,
    };
    assert_eq!(seen, nothing);
    silo.stop().await;
}
