//! CBOR in and out of the guest, so users never see it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The CBOR encoding of an empty map: what an empty payload means, so a
/// message sent with no body (`rio call T/id get`) decodes as `{}`.
const EMPTY_MAP: &[u8] = &[0xa0];

pub(crate) fn decode_message<M: DeserializeOwned>(payload: &[u8]) -> Result<M, Error> {
    let payload = if payload.is_empty() {
        EMPTY_MAP
    } else {
        payload
    };
    from_cbor(payload).map_err(|e| Error::bad_request(format!("cannot decode the message: {e}")))
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes)
        .map_err(|e| Error::new("internal", format!("cannot encode: {e}")))?;
    Ok(bytes)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    from_cbor(bytes).map_err(|e| Error::new("bad-data", format!("cannot decode {what}: {e}")))
}

/// One CBOR item that is the whole of `bytes`: bytes after it mean the
/// payload is not what its sender meant, as the other SDKs also hold.
fn from_cbor<T: DeserializeOwned>(mut bytes: &[u8]) -> Result<T, String> {
    let value = ciborium::from_reader(&mut bytes).map_err(describe)?;
    if !bytes.is_empty() {
        return Err("bytes follow the first CBOR item".into());
    }
    Ok(value)
}

/// ciborium's own Display is its Debug (`Semantic(None, "missing field ..")`),
/// which a caller should not have to read.
fn describe<T>(error: ciborium::de::Error<T>) -> String {
    use ciborium::de::Error::*;
    match error {
        Io(_) => "the CBOR ends too early".into(),
        Syntax(offset) => format!("invalid CBOR at byte {offset}"),
        Semantic(_, message) => message,
        RecursionLimitExceeded => "the CBOR is nested too deeply".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Increment {
        by: i64,
    }

    #[derive(Deserialize, Debug, PartialEq, Default)]
    struct Optional {
        #[serde(default)]
        by: Option<i64>,
    }

    #[test]
    fn messages_round_trip_and_empty_payload_is_an_empty_map() {
        let bytes = encode(&Increment { by: 2 }).unwrap();
        assert_eq!(
            decode_message::<Increment>(&bytes).unwrap(),
            Increment { by: 2 }
        );
        assert_eq!(
            decode_message::<Optional>(&[]).unwrap(),
            Optional::default()
        );
    }

    #[test]
    fn empty_accepts_nothing_null_an_empty_map_or_anything_and_is_sent_as_a_map() {
        let anything = encode(&Increment { by: 2 }).unwrap();
        for payload in [&[][..], &[0xf6][..], &[0xa0][..], &anything[..]] {
            assert_eq!(
                decode_message::<crate::Empty>(payload).unwrap(),
                crate::Empty
            );
        }
        assert_eq!(encode(&crate::Empty).unwrap(), EMPTY_MAP);
    }

    #[test]
    fn dynamic_values_round_trip() {
        let value = ciborium::Value::Map(vec![
            ("by".into(), 3.into()),
            ("tags".into(), ciborium::Value::Array(vec!["a".into()])),
            ("none".into(), ciborium::Value::Null),
        ]);
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<ciborium::Value>(&bytes, "it").unwrap(), value);
        assert_eq!(
            decode::<Increment>(&bytes, "it").unwrap(),
            Increment { by: 3 }
        );
    }

    #[test]
    fn undecodable_stored_data_is_bad_data() {
        let error = decode::<i64>(&encode("text").unwrap(), "state key `value`").unwrap_err();
        assert_eq!(error.kind, "bad-data");
        assert!(error.message.contains("state key `value`"));
    }

    #[test]
    fn a_message_of_the_wrong_shape_is_a_bad_request() {
        let bytes = encode(&"not a map").unwrap();
        assert_eq!(
            decode_message::<Increment>(&bytes).unwrap_err().kind,
            "bad-request"
        );
        let missing = decode_message::<Increment>(&[]).unwrap_err();
        assert_eq!(
            (missing.kind.as_str(), missing.message.as_str()),
            (
                "bad-request",
                "cannot decode the message: missing field `by`"
            )
        );
        let mut trailing = encode(&Increment { by: 2 }).unwrap();
        trailing.push(0x01);
        assert_eq!(
            decode_message::<Increment>(&trailing).unwrap_err().message,
            "cannot decode the message: bytes follow the first CBOR item"
        );
        let stray_break = decode::<crate::CborValue>(&[0xff, 0x00], "it").unwrap_err();
        assert_eq!(stray_break.kind, "bad-data");
        let truncated = decode_message::<Increment>(&[0xa1]).unwrap_err();
        assert_eq!(
            truncated.message,
            "cannot decode the message: the CBOR ends too early"
        );
    }
}
