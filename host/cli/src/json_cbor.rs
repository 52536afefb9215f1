//! JSON on the command line, CBOR on the wire.

use anyhow::Context;
use ciborium::Value as Cbor;
use serde_json::Value as Json;

/// Encodes a JSON text as a CBOR payload; `None` is the empty payload.
pub(crate) fn json_text_to_cbor(json: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let value: Json =
        serde_json::from_str(json).with_context(|| format!("`{json}` is not valid JSON"))?;
    let mut payload = Vec::new();
    ciborium::into_writer(&value, &mut payload).context("cannot encode the message as CBOR")?;
    Ok(payload)
}

/// Decodes a CBOR reply into JSON; an empty reply is `null`.
pub(crate) fn cbor_to_json(payload: &[u8]) -> anyhow::Result<Json> {
    if payload.is_empty() {
        return Ok(Json::Null);
    }
    let value: Cbor = ciborium::from_reader(payload).context("the reply is not CBOR")?;
    Ok(to_json(value))
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
        let payload = json_text_to_cbor(Some(json)).unwrap();
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
        assert!(json_text_to_cbor(None).unwrap().is_empty());
        assert_eq!(cbor_to_json(&[]).unwrap(), Json::Null);
        assert!(json_text_to_cbor(Some("{by: 2")).is_err());
    }
}
