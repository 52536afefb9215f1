//! The counter the tests and `rio bench` use: `increment` writes state,
//! `get` only reads it; `add-to` and `relay` call other objects.

use rio_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Increment {
    by: i64,
}

#[derive(Serialize, Deserialize)]
struct Value {
    value: i64,
}

fn increment(message: Increment) -> Result<Value, Error> {
    let value = state::load::<i64>("value")?.unwrap_or(0) + message.by;
    state::save("value", &value)?;
    Ok(Value { value })
}

fn get(_: Empty) -> Result<Value, Error> {
    Ok(Value {
        value: state::load("value")?.unwrap_or(0),
    })
}

#[derive(Deserialize)]
struct AddTo {
    target: String,
    by: i64,
}

/// Increments another counter and returns its reply.
fn add_to(message: AddTo) -> Result<Value, Error> {
    call(
        &identity::service_type(),
        &message.target,
        "increment",
        &Increment { by: message.by },
    )
}

#[derive(Deserialize)]
struct Relay {
    service_type: String,
    object_id: String,
    message_type: String,
    payload: CborValue,
}

/// Forwards any message and returns the reply (tests use it to build call chains).
fn relay(message: Relay) -> Result<CborValue, Error> {
    call(
        &message.service_type,
        &message.object_id,
        &message.message_type,
        &message.payload,
    )
}

rio_sdk::service! {
    "increment" => increment,
    "get" => get,
    "add-to" => add_to,
    "relay" => relay,
}
