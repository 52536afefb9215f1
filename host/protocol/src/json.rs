//! JSON for people and HTTP, CBOR on the wire: the one conversion the CLI
//! and the silo's HTTP gateway share, so a payload means the same through
//! `rio call` and through `curl`.

use ciborium::Value as Cbor;
use serde_json::Value as Json;

/// Why a payload could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The text given as JSON is not JSON.
    #[error("the body is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// A reply (or event) that should be CBOR is not.
    #[error("the payload is not CBOR: {0}")]
    NotCbor(String),
}

/// Encodes a JSON text as a CBOR payload; an empty (or all-blank) text is
/// the empty payload, what a message without arguments carries.
pub fn json_to_cbor(json: &[u8]) -> Result<Vec<u8>, JsonError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Json = serde_json::from_slice(json)?;
    let mut payload = Vec::new();
    // Writing a JSON value into a Vec cannot fail.
    ciborium::into_writer(&value, &mut payload)
        .map_err(|error| JsonError::NotCbor(error.to_string()))?;
    Ok(payload)
}

/// Decodes a CBOR payload into JSON; the empty payload is `null`. Bytes
/// become an array of numbers, a tag its content, integers past 64 bits
/// (and other values JSON has no word for) their decimal text or `null`.
pub fn cbor_to_json(payload: &[u8]) -> Result<Json, JsonError> {
    if payload.is_empty() {
        return Ok(Json::Null);
    }
    let value: Cbor =
        ciborium::from_reader(payload).map_err(|error| JsonError::NotCbor(error.to_string()))?;
    Ok(to_json(value))
}

/// An event as one JSON object, as `rio subscribe` prints it and the
/// gateway's event stream sends it; a payload that is not CBOR is shown as
/// its bytes.
pub fn event_to_json(event: &crate::Event) -> Json {
    let payload =
        cbor_to_json(&event.payload).unwrap_or_else(|_| Json::from(event.payload.to_vec()));
    serde_json::json!({
        "topic": event.topic,
        "publisher": event.publisher,
        "seq": event.seq,
        "published_at_ms": event.published_at_ms,
        "event": payload,
    })
}

fn to_json(value: Cbor) -> Json {
    match value {
        Cbor::Integer(integer) => {
            let wide = i128::from(integer);
            i64::try_from(wide)
                .map(Json::from)
                .or_else(|_| u64::try_from(wide).map(Json::from))
                .unwrap_or_else(|_| Json::String(wide.to_string()))
        }
        Cbor::Float(float) => serde_json::Number::from_f64(float)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Cbor::Text(text) => Json::String(text),
        Cbor::Bool(flag) => Json::Bool(flag),
        Cbor::Null => Json::Null,
        Cbor::Bytes(bytes) => Json::Array(bytes.into_iter().map(Json::from).collect()),
        Cbor::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Cbor::Map(entries) => Json::Object(
            entries
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Cbor::Text(text) => text,
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        Cbor::Tag(_, inner) => to_json(*inner),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) {
        let payload = json_to_cbor(json.as_bytes()).unwrap();
        let back = cbor_to_json(&payload).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<Json>(json).unwrap(),
            "round trip of {json}"
        );
    }

    #[test]
    fn json_round_trips_through_cbor() {
        check(r#"{"by": 2}"#);
        check(r#"{"nested": {"list": [1, -2, 3.5, "x", null, true]}}"#);
        check(r#"18446744073709551615"#);
    }

    #[test]
    fn empty_payload_is_null_and_bad_json_is_an_error() {
        assert!(json_to_cbor(b"").unwrap().is_empty());
        assert!(json_to_cbor(b" \n").unwrap().is_empty());
        assert_eq!(cbor_to_json(&[]).unwrap(), Json::Null);
        assert!(matches!(
            json_to_cbor(b"{by: 2"),
            Err(JsonError::NotJson(_))
        ));
        assert!(matches!(
            cbor_to_json(&[0xff, 0x00]),
            Err(JsonError::NotCbor(_))
        ));
    }
}
