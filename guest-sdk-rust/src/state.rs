//! This object's state: serde values under string keys.
//!
//! Reads see this turn's own writes. Writes are committed together when the
//! handler returns `Ok`, and discarded if it returns an error or traps.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::rio::service::state as host;
use crate::{Error, codec};

/// The value under `key`, or `None` if there is none.
pub fn load<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match host::get(key) {
        Some(bytes) => codec::decode(&bytes, &format!("state key `{key}`")).map(Some),
        None => Ok(None),
    }
}

/// Stores `value` under `key`.
pub fn save<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    host::set(key, &codec::encode(value)?);
    Ok(())
}

/// Removes `key`.
pub fn delete(key: &str) {
    host::delete(key);
}

/// Every key with a value.
pub fn keys() -> Vec<String> {
    host::keys()
}
