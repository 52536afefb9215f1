//! A counter service object, the smallest useful one.
//!
//! Each object id (`Counter/alice`, `Counter/bob`...) is its own counter,
//! activated on its first message and handling one message at a time:
//!
//! - `increment {"by": n}` adds `n` and answers `{"value": <new value>}`;
//! - `get` answers `{"value": <value>}` without writing anything.
//!
//! The value lives under the state key `value`. It is committed when
//! `increment` returns `Ok`, and survives deactivation and restarts.
//!
//! Build it with `rio build examples/counter`.

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

fn get() -> Result<Value, Error> {
    let value = state::load("value")?.unwrap_or(0);
    Ok(Value { value })
}

rio_sdk::service! { "increment" => increment, "get" => get }
