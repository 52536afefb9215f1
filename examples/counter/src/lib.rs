//! A counter service object: `increment {"by": n}` and `get`, both answering
//! `{"value": n}`. Build it with `rio build examples/counter`.

use rio_sdk::prelude::*;

#[derive(Deserialize)]
struct Increment {
    by: i64,
}

#[derive(Serialize)]
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

rio_sdk::service! { "increment" => increment, "get" => get }
