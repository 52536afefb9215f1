//! The counter the tests and `rio bench` use: `increment` writes state,
//! `get` only reads it; `add-to` and `relay` call other objects;
//! `add-slowly` holds a turn open between its read and its write.

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
struct AddSlowly {
    by: i64,
    millis: u64,
}

/// Reads the value, sleeps `millis` in WASI, then writes value + `by`: a
/// turn that is still in progress when its silo is frozen or loses the
/// object, which is what the fencing test needs.
fn add_slowly(message: AddSlowly) -> Result<Value, Error> {
    let read = state::load::<i64>("value")?.unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(message.millis));
    let value = read + message.by;
    state::save("value", &value)?;
    Ok(Value { value })
}

#[derive(Deserialize)]
struct AddTo {
    target: String,
    by: i64,
}

/// Increments the counter `target` of this object's own service type
/// (`Counter/<target>` when deployed as `Counter`) and returns its reply.
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
    /// Absent means `{}`, which is what an empty payload decodes as.
    #[serde(default)]
    payload: Option<CborValue>,
}

/// Forwards any message and returns the reply; call errors (a `cycle` for
/// A -> B -> A) come back unchanged. Tests build call chains with it.
fn relay(message: Relay) -> Result<CborValue, Error> {
    call(
        &message.service_type,
        &message.object_id,
        &message.message_type,
        &message.payload.unwrap_or(CborValue::Map(Vec::new())),
    )
}

rio_sdk::service! {
    "increment" => increment,
    "get" => get,
    "add-slowly" => add_slowly,
    "add-to" => add_to,
    "relay" => relay,
}
