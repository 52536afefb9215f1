//! An envelope and the wire's requests, converted in one place: a client's
//! call or a peer's forward arriving, and an envelope leaving for the silo
//! that owns its object.

use std::sync::Arc;

use rio_protocol::{CallRequest, ForwardRequest};
use serde_bytes::ByteBuf;
use tokio::time::Instant;

use super::{Envelope, ReplyTo, empty_chain};
use crate::base::ObjectKey;

impl Envelope {
    /// A client's call: nobody waits on it in a turn.
    pub(crate) fn from_call(
        call: CallRequest,
        idempotency_key: Option<Arc<str>>,
        reply: ReplyTo,
        deadline: Instant,
    ) -> Envelope {
        let mut envelope = Envelope::new(
            call.message_type,
            call.payload.into_vec(),
            empty_chain(),
            reply,
            deadline,
        );
        envelope.idempotency_key = idempotency_key;
        envelope
    }

    /// A call another silo passed on, with the chain of turns waiting on it.
    pub(crate) fn from_forward(
        forward: ForwardRequest,
        idempotency_key: Option<Arc<str>>,
        reply: ReplyTo,
        deadline: Instant,
    ) -> Envelope {
        let chain: Vec<ObjectKey> = forward
            .call_chain
            .iter()
            .map(|(service_type, object_id)| ObjectKey::new(service_type, object_id))
            .collect();
        let mut envelope = Envelope::new(
            forward.call.message_type,
            forward.call.payload.into_vec(),
            chain.into(),
            reply,
            deadline,
        );
        envelope.hops = forward.hops;
        envelope.waiting_since_us = forward.waiting_since_us;
        envelope.from_rerun = forward.from_rerun;
        envelope.idempotency_key = idempotency_key;
        envelope
    }

    /// The request that passes this message on to `key`'s owner, one hop
    /// further; its type and payload move along (the envelope keeps only
    /// its reply).
    pub(crate) fn take_forward(&mut self, key: &ObjectKey) -> ForwardRequest {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        ForwardRequest {
            call: CallRequest {
                service_type: key.service_type.to_string(),
                object_id: key.object_id.to_string(),
                message_type: std::mem::take(&mut self.message_type),
                payload: ByteBuf::from(std::mem::take(&mut self.payload)),
                timeout_ms: Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)),
                idempotency_key: self.idempotency_key.as_deref().map(str::to_string),
            },
            call_chain: self
                .call_chain
                .iter()
                .map(|key| (key.service_type.to_string(), key.object_id.to_string()))
                .collect(),
            hops: self.hops + 1,
            waiting_since_us: self.waiting_since_us,
            from_rerun: self.from_rerun,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_forward_carries_what_arrives_as_the_same_envelope_one_hop_on() {
        let (sender, _) = tokio::sync::oneshot::channel();
        let chain: Arc<[ObjectKey]> = Arc::from(vec![ObjectKey::new("A", "1")]);
        let mut envelope = Envelope::new(
            "transfer".into(),
            vec![1, 2, 3],
            chain,
            ReplyTo::Caller(sender),
            Instant::now() + Duration::from_secs(5),
        );
        envelope.hops = 1;
        envelope.waiting_since_us = Some(42);
        envelope.idempotency_key = Some("k".into());
        let key = ObjectKey::new("B", "2");
        let forward = envelope.take_forward(&key);
        assert_eq!(forward.call.service_type, "B");
        assert_eq!(forward.call.object_id, "2");
        assert_eq!(forward.hops, 2);
        assert!(
            forward
                .call
                .timeout_ms
                .is_some_and(|ms| ms > 4_000 && ms <= 5_000)
        );
        assert!(
            envelope.payload.is_empty(),
            "the payload left with the forward"
        );

        let (sender, _) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(5);
        let arrived =
            Envelope::from_forward(forward, Some("k".into()), ReplyTo::Caller(sender), deadline);
        assert_eq!(arrived.message_type, "transfer");
        assert_eq!(arrived.payload, [1, 2, 3]);
        assert_eq!(&*arrived.call_chain, [ObjectKey::new("A", "1")]);
        assert_eq!((arrived.hops, arrived.waiting_since_us), (2, Some(42)));
        assert_eq!(arrived.idempotency_key.as_deref(), Some("k"));
        assert_eq!(arrived.caller(), Some(&ObjectKey::new("A", "1")));
    }
}
