//! What the [`service!`](crate::service) macro expands to call: decode the
//! message, run the handler, encode the reply. Not for direct use.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::rio::service::types::HandlerError;
use crate::{Error, codec};

/// A function that can handle one message type: `fn(Message) -> Result<Reply,
/// Error>`, or `fn() -> Result<Reply, Error>` for a message that carries
/// nothing. `Args` is only there so both shapes can implement the trait
/// without overlapping; it is inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a rio message handler",
    label = "not a message handler",
    note = "a handler is `fn(Message) -> Result<Reply, Error>` or `fn() -> Result<Reply, Error>`, \
            with `Message: Deserialize` and `Reply: Serialize`"
)]
pub trait Handler<Args> {
    /// Decodes `payload`, runs the handler and encodes its reply.
    fn call(self, payload: &[u8]) -> Result<Vec<u8>, Error>;
}

impl<F, R> Handler<()> for F
where
    F: FnOnce() -> Result<R, Error>,
    R: Serialize,
{
    fn call(self, _payload: &[u8]) -> Result<Vec<u8>, Error> {
        // Whatever was sent (nothing, null, {}) carries no information here.
        codec::encode(&self()?)
    }
}

impl<F, M, R> Handler<(M,)> for F
where
    F: FnOnce(M) -> Result<R, Error>,
    M: DeserializeOwned,
    R: Serialize,
{
    fn call(self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let message = codec::decode_message(payload)?;
        codec::encode(&self(message)?)
    }
}

/// Runs one message handler on a raw payload.
pub fn handle<Args, H: Handler<Args>>(payload: &[u8], handler: H) -> Result<Vec<u8>, HandlerError> {
    Ok(handler.call(payload)?)
}

/// Runs a lifecycle hook.
pub fn hook(hook: fn() -> Result<(), Error>) -> Result<(), HandlerError> {
    Ok(hook()?)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::Empty;

    #[derive(Deserialize)]
    struct Increment {
        by: i64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Value {
        value: i64,
    }

    fn increment(message: Increment) -> Result<Value, Error> {
        Ok(Value { value: message.by })
    }

    fn get() -> Result<Value, Error> {
        Ok(Value { value: 7 })
    }

    fn get_empty(_: Empty) -> Result<Value, Error> {
        get()
    }

    fn refuse(_: Empty) -> Result<Value, Error> {
        Err(Error::new("refused", "no"))
    }

    fn reply(bytes: Result<Vec<u8>, HandlerError>) -> Value {
        codec::decode(&bytes.unwrap(), "the reply").unwrap()
    }

    #[test]
    fn handlers_with_and_without_a_message_decode_and_encode() {
        let by_three = codec::encode(&by_map(3)).unwrap();
        assert_eq!(reply(handle(&by_three, increment)), Value { value: 3 });
        // Nothing, CBOR null, an empty map, or an unrelated message.
        for payload in [&[][..], &[0xf6][..], &[0xa0][..], &by_three[..]] {
            assert_eq!(reply(handle(payload, get)), Value { value: 7 });
            assert_eq!(reply(handle(payload, get_empty)), Value { value: 7 });
        }
    }

    #[test]
    fn a_bad_message_and_a_handler_error_reach_the_caller_as_kinds() {
        assert_eq!(handle(&[], increment).unwrap_err().kind, "bad-request");
        assert_eq!(
            handle(&[0xff, 0x00], increment).unwrap_err().kind,
            "bad-request"
        );
        let error = handle(&[], refuse).unwrap_err();
        assert_eq!(
            (error.kind.as_str(), error.message.as_str()),
            ("refused", "no")
        );
    }

    /// `{"by": n}` as a bare CBOR map, the way the CLI sends it from JSON.
    fn by_map(by: i64) -> ciborium::Value {
        ciborium::Value::Map(vec![("by".into(), by.into())])
    }
}
