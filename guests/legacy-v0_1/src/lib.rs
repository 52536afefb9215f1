//! A counter built against the released WIT `rio:service@0.1.0` with
//! wit-bindgen alone (the SDK targets the newest version), so tests can run
//! a component of the old contract beside new ones and call both ways.
//!
//! Messages, CBOR as every SDK encodes them:
//! - `increment {"by": n}` (also `add`) answers `{"value": <new value>}`,
//!   as `guests/counter` does;
//! - `get` answers `{"value": <value>}`;
//! - `call {"service_type", "object_id", "message_type", "payload"?}` calls
//!   that object and answers its reply, or fails with the kind of the call
//!   error as this old contract names it (a callee's own kind unchanged).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "rio:service/service-object@0.1.0",
});

use exports::rio::service::handler::Guest;
use rio::service::types::{CallError, HandlerError};
use rio::service::{messaging, state};

#[derive(Deserialize)]
struct Increment {
    by: i64,
}

#[derive(Serialize, Deserialize)]
struct Value {
    value: i64,
}

#[derive(Deserialize)]
struct Call {
    service_type: String,
    object_id: String,
    message_type: String,
    /// Absent means `{}`.
    #[serde(default)]
    payload: Option<ciborium::Value>,
}

fn handler_error(kind: &str, message: impl Into<String>) -> HandlerError {
    HandlerError {
        kind: kind.into(),
        message: message.into(),
    }
}

/// An empty payload is `{}`, the convention every SDK keeps.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HandlerError> {
    let payload: &[u8] = if payload.is_empty() { &[0xa0] } else { payload };
    ciborium::from_reader(payload)
        .map_err(|e| handler_error("bad-request", format!("cannot decode the message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, HandlerError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes)
        .map_err(|e| handler_error("internal", format!("cannot encode the reply: {e}")))?;
    Ok(bytes)
}

fn stored_value() -> Result<i64, HandlerError> {
    match state::get("value") {
        None => Ok(0),
        Some(bytes) => ciborium::from_reader(&bytes[..]).map_err(|e| {
            handler_error("bad-data", format!("cannot decode state key `value`: {e}"))
        }),
    }
}

fn increment(message: Increment) -> Result<Value, HandlerError> {
    let value = stored_value()?
        .checked_add(message.by)
        .ok_or_else(|| handler_error("overflow", "the counter would overflow"))?;
    state::set("value", &encode(&value)?);
    Ok(Value { value })
}

/// The words of the 0.1.0 `call-error` cases; a 0.1.0 guest has no
/// `deadlock` or `unavailable`, which the silo reports to it as `internal`.
fn call_error_kind(error: CallError) -> HandlerError {
    match error {
        CallError::Guest(inner) => inner,
        CallError::UnknownType(message) => handler_error("unknown-type", message),
        CallError::Trap(message) => handler_error("trap", message),
        CallError::Timeout(message) => handler_error("timeout", message),
        CallError::Overloaded(message) => handler_error("overloaded", message),
        CallError::Cycle(message) => handler_error("cycle", message),
        CallError::Internal(message) => handler_error("internal", message),
    }
}

fn call(message: Call) -> Result<Vec<u8>, HandlerError> {
    let payload = encode(&message.payload.unwrap_or(ciborium::Value::Map(Vec::new())))?;
    messaging::call(
        &message.service_type,
        &message.object_id,
        &message.message_type,
        &payload,
    )
    .map_err(call_error_kind)
}

struct LegacyCounter;

impl Guest for LegacyCounter {
    fn handle(
        _object_id: String,
        message_type: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, HandlerError> {
        match message_type.as_str() {
            "increment" | "add" => encode(&increment(decode(&payload)?)?),
            "get" => encode(&Value {
                value: stored_value()?,
            }),
            // The callee's reply is passed on as it came, already CBOR.
            "call" => call(decode(&payload)?),
            other => Err(handler_error(
                "unknown-message",
                format!("no handler for message `{other}`"),
            )),
        }
    }

    fn on_activate(_object_id: String) -> Result<(), HandlerError> {
        Ok(())
    }

    fn on_deactivate(_object_id: String) -> Result<(), HandlerError> {
        Ok(())
    }
}

export!(LegacyCounter);
