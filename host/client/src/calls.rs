//! [`Calls`]: the typed and one-way conveniences every client offers, written
//! once over the one request each client routes its own way.

use std::future::Future;

use rio_protocol::{ENQUEUE_MESSAGE_TYPE, EnqueueRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::ClientError;

/// Calls and one-way sends to objects, for [`Client`](crate::Client) (one
/// silo) and [`ClusterClient`](crate::ClusterClient) (each object's owner).
///
/// A client implements [`Calls::call_raw_keyed`], the one request that
/// differs between them; every other method is provided on top of it.
///
/// Why a trait rather than the same methods on each client: it costs one
/// import (`use rio_client::Calls;`, which the compiler suggests), and in
/// return code written once works against either client (`&impl Calls`,
/// or a wrapper that implements `call_raw_keyed` alone), and a change to a
/// convenience reaches both clients at once. Every future is `Send`, so
/// calls run in spawned tasks as before.
///
/// ```no_run
/// use rio_client::{Calls, Client, ClientError};
///
/// async fn bump(client: &impl Calls, id: &str) -> Result<i64, ClientError> {
///     #[derive(serde::Serialize)] struct Increment { by: i64 }
///     #[derive(serde::Deserialize)] struct Value { value: i64 }
///     let reply: Value = client.call("Counter", id, "increment", &Increment { by: 1 }).await?;
///     Ok(reply.value)
/// }
/// # async fn demo() -> Result<(), ClientError> {
/// let client = Client::connect("127.0.0.1:7700").await?;
/// bump(&client, "alice").await?;
/// # Ok(()) }
/// ```
pub trait Calls: Sync {
    /// Sends an opaque payload to object `service_type/object_id` and
    /// returns its opaque reply, with an idempotency key when one is given
    /// (see [`Calls::call_with_key`]).
    fn call_raw_keyed(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send;

    /// Sends `message` (encoded as CBOR) to object `service_type/object_id`
    /// and decodes its CBOR reply.
    fn call<M: Serialize, R: DeserializeOwned>(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        message: &M,
    ) -> impl Future<Output = Result<R, ClientError>> + Send {
        // Encoded before the future is made, so the message itself need not
        // be `Sync` for the future to be `Send`.
        let payload = to_cbor(message);
        async move {
            let reply = self
                .call_raw_keyed(service_type, object_id, message_type, payload?, None)
                .await?;
            from_cbor(&reply)
        }
    }

    /// Sends an opaque payload and returns the opaque reply.
    fn call_raw(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send {
        self.call_raw_keyed(service_type, object_id, message_type, payload, None)
    }

    /// As [`Calls::call`], made idempotent by `idempotency_key`: if a turn
    /// of this object already committed under that key (an earlier attempt
    /// whose reply was lost), the silo answers its stored reply and runs
    /// nothing. Retry a call whose outcome is unknown (`unavailable`, a
    /// timeout, a broken connection) with the same key. A key names one
    /// call of one object; use a fresh one (e.g. a UUID) per logical call.
    fn call_with_key<M: Serialize, R: DeserializeOwned>(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        message: &M,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<R, ClientError>> + Send {
        let payload = to_cbor(message);
        async move {
            let reply = self
                .call_raw_keyed(
                    service_type,
                    object_id,
                    message_type,
                    payload?,
                    Some(idempotency_key),
                )
                .await?;
            from_cbor(&reply)
        }
    }

    /// Sends `message` (encoded as CBOR) one way to object
    /// `service_type/object_id`: returns once the object's silo has stored
    /// it, and the object handles it afterwards, exactly once; its reply is
    /// dropped. One client's sends to one object take effect in the order
    /// they were acknowledged. A message the object refuses (an unknown
    /// message type, its handler's error three times) ends in the dead
    /// letters. An unknown service type is refused at once.
    fn send<M: Serialize>(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        message: &M,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        let payload = to_cbor(message);
        async move {
            self.send_raw_keyed(service_type, object_id, message_type, payload?, None)
                .await
        }
    }

    /// As [`Calls::send`], with an opaque payload.
    fn send_raw(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        self.send_raw_keyed(service_type, object_id, message_type, payload, None)
    }

    /// As [`Calls::send`], stored at most once per object under
    /// `idempotency_key`: retry a send whose acknowledgement was lost (a
    /// timeout, `unavailable`, a broken connection) with the same key, and
    /// the message is still handled once.
    fn send_with_key<M: Serialize>(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        message: &M,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        let payload = to_cbor(message);
        async move {
            self.send_raw_keyed(
                service_type,
                object_id,
                message_type,
                payload?,
                Some(idempotency_key),
            )
            .await
        }
    }

    /// As [`Calls::send_raw`], with an idempotency key when one is given
    /// (see [`Calls::send_with_key`]).
    fn send_raw_keyed(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        async move {
            let reply = self
                .call_raw_keyed(
                    service_type,
                    object_id,
                    ENQUEUE_MESSAGE_TYPE,
                    enqueue_payload(message_type, payload)?,
                    idempotency_key,
                )
                .await?;
            stored_ack(&reply)
        }
    }
}

/// A message as the CBOR payload every rio SDK expects.
fn to_cbor<M: Serialize>(message: &M) -> Result<Vec<u8>, ClientError> {
    let mut payload = Vec::new();
    ciborium::into_writer(message, &mut payload).map_err(|e| ClientError::Codec(e.to_string()))?;
    Ok(payload)
}

/// The payload of a one-way send: the message for the receiver to store.
fn enqueue_payload(message_type: &str, payload: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    to_cbor(&EnqueueRequest {
        message_type: message_type.to_string(),
        payload: ByteBuf::from(payload),
    })
}

/// A silo that stored a one-way send answers nothing; anything else came
/// from a silo that does not know client sends (and ran a guest).
fn stored_ack(reply: &[u8]) -> Result<(), ClientError> {
    if reply.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Unexpected(format!(
            "a one-way send was answered with {} bytes: the silo does not store client sends",
            reply.len()
        )))
    }
}

/// A CBOR reply payload decoded as `R`.
fn from_cbor<R: DeserializeOwned>(reply: &[u8]) -> Result<R, ClientError> {
    ciborium::from_reader(reply)
        .map_err(|e| ClientError::Codec(format!("cannot decode reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, ClusterClient};

    fn assert_send<T: Send>(_: T) {}

    /// Compile-time: the provided methods' futures are `Send` for both
    /// clients, so calls can run in spawned tasks. The closures are never
    /// run; a future that is not `Send` fails the build.
    #[test]
    fn every_future_is_send() {
        let _ = |client: &Client| {
            assert_send(client.call::<_, i64>("T", "id", "m", &1));
            assert_send(client.send_with_key("T", "id", "m", &1, "key"));
        };
        let _ = |client: &ClusterClient| {
            assert_send(client.call_with_key::<_, i64>("T", "id", "m", &1, "key"));
            assert_send(client.send_raw("T", "id", "m", Vec::new()));
        };
    }
}
