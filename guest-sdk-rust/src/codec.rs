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
    ciborium::from_reader(payload)
        .map_err(|e| Error::bad_request(format!("cannot decode the message: {e}")))
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes)
        .map_err(|e| Error::new("internal", format!("cannot encode: {e}")))?;
    Ok(bytes)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    ciborium::from_reader(bytes)
        .map_err(|e| Error::new("bad-data", format!("cannot decode {what}: {e}")))
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
        assert_eq!(decode_message::<crate::Empty>(&[]).unwrap(), crate::Empty);
    }

    #[test]
    fn a_message_of_the_wrong_shape_is_a_bad_request() {
        let bytes = encode(&"not a map").unwrap();
        assert_eq!(
            decode_message::<Increment>(&bytes).unwrap_err().kind,
            "bad-request"
        );
        assert_eq!(
            decode_message::<Increment>(&[]).unwrap_err().kind,
            "bad-request"
        );
    }
}
