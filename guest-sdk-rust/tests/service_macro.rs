//! Expands `service!` natively and drives the generated export through the
//! same trait the component's entry points call, with handlers that need no
//! host (wit-bindgen's native import stubs would panic).

use rio_sdk::bindings::exports::rio::service::handler::Guest;
use rio_sdk::prelude::*;

#[derive(Deserialize)]
struct Echo {
    text: String,
    #[serde(default)]
    times: Option<usize>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Said {
    said: String,
}

fn echo(message: Echo) -> Result<Said, Error> {
    Ok(Said {
        said: message.text.repeat(message.times.unwrap_or(1)),
    })
}

fn ping() -> Result<Said, Error> {
    Ok(Said {
        said: "pong".into(),
    })
}

fn refuse(_: Empty) -> Result<Said, Error> {
    Err(Error::new("refused", "not today"))
}

fn ready() -> Result<(), Error> {
    Ok(())
}

rio_sdk::service! {
    on_activate = ready;
    "echo" => echo,
    "ping" => ping,
    "refuse" => refuse,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).unwrap();
    bytes
}

fn send(message_type: &str, payload: Vec<u8>) -> Result<Said, (String, String)> {
    RioServiceObject::handle("o".into(), message_type.into(), payload)
        .map(|reply| ciborium::from_reader(&reply[..]).unwrap())
        .map_err(|e| (e.kind, e.message))
}

#[test]
fn messages_are_routed_decoded_and_answered() {
    let hello = ciborium::Value::Map(vec![
        ("text".into(), "hi".into()),
        ("times".into(), 2.into()),
    ]);
    assert_eq!(send("echo", cbor(&hello)).unwrap().said, "hihi");
    for payload in [vec![], vec![0xf6], vec![0xa0]] {
        assert_eq!(send("ping", payload).unwrap().said, "pong");
    }
}

#[test]
fn failures_come_back_as_kinds() {
    assert_eq!(send("echo", vec![]).unwrap_err().0, "bad-request");
    assert_eq!(
        send("refuse", vec![]).unwrap_err(),
        ("refused".into(), "not today".into())
    );
    let (kind, message) = send("frob", vec![]).unwrap_err();
    assert_eq!(kind, "unknown-message");
    assert!(message.contains("frob"), "{message}");
}

#[test]
fn hooks_run_and_missing_hooks_succeed() {
    assert!(RioServiceObject::on_activate("o".into()).is_ok());
    assert!(RioServiceObject::on_deactivate("o".into()).is_ok());
}
