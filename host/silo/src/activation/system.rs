//! How an activation takes one message: the system messages the silo
//! handles without the guest (wake-ups, a client's one-way send), keyed
//! retries answered from their stored reply, and the rest as turns.

use rio_protocol::ReplyError;

use super::{Activation, Hook};
use crate::base::clock::now_ms;
use crate::base::reserved::{HAS_SENT_KEY, SystemMessage};
use crate::effects::client_send;
use crate::effects::outbox::Outbox;
use crate::message::Envelope;

impl Activation {
    /// Takes one message from the mailbox: a system message the silo
    /// handles itself, a keyed retry answered from its stored reply, or a
    /// turn of the guest.
    pub(super) async fn handle(&mut self, mut envelope: Envelope) {
        // The reply is this turn's from here: a message refused as a
        // deadlock while it waited was answered already and must not run.
        envelope.reply = match envelope.reply.claim() {
            Some(reply) => reply,
            None => return,
        };
        if !self.follow_redeploy().await {
            return envelope.reply.send(Err(self.unknown_type()));
        }
        // Parsed once: the entry points refused these names from clients
        // and guests, so only the silo itself sends them.
        let system = SystemMessage::parse(&envelope.message_type);
        match system {
            Some(SystemMessage::WakeOutbox) => {
                let woken = self.open_outbox().await.map(|_| Vec::new());
                return envelope.reply.send(woken);
            }
            Some(SystemMessage::WakeInterrupted) => {
                let finished = self.ready_for_turn().await.map(|()| Vec::new());
                return envelope.reply.send(finished);
            }
            Some(SystemMessage::Enqueue) | None => {}
        }
        if envelope.expired() || envelope.reply.abandoned() {
            let message = format!("the call to {} passed its deadline before it ran", self.key);
            return envelope.reply.send(Err(ReplyError::Timeout(message)));
        }
        // A retry of a keyed call that committed: its reply, nothing run.
        // The mailbox serializes an object's messages, so a retry sent while
        // the first attempt runs is checked after that attempt committed.
        let ctx = self.ctx.clone();
        let owner = ctx.address.get().map(String::as_str);
        if let Some(key) = &envelope.idempotency_key {
            match self.stored_reply(key).await {
                Ok(Some(reply)) => {
                    ctx.counters
                        .idempotency_hits_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return envelope.reply.send_from(Ok(reply), owner);
                }
                Ok(None) => {}
                Err(error) => return envelope.reply.send(Err(error)),
            }
        }
        if system == Some(SystemMessage::Enqueue) {
            let key = envelope.idempotency_key.as_deref();
            let stored = self.store_client_send(&envelope.payload, key).await;
            return envelope.reply.send_from(stored, owner);
        }
        let ready = if self.lets_in_before_rerun(&envelope) {
            self.ready_without_rerun().await
        } else {
            self.ready_for_turn().await
        };
        if let Err(error) = ready {
            return envelope.reply.send(Err(error));
        }
        // The interrupted turn just finished may be the one this retries.
        let retention = self.ctx.config.idempotency_retention;
        if let Some(key) = &envelope.idempotency_key
            && let Some(reply) = self
                .recent_replies
                .get(key, retention, self.ctx.clock.now())
        {
            return envelope.reply.send_from(Ok(reply), owner);
        }
        let chain = envelope.call_chain;
        let hook = Hook::Handle {
            message_type: envelope.message_type,
            payload: envelope.payload,
            idempotency_key: envelope.idempotency_key,
        };
        let result = self.turn(hook, &chain, envelope.deadline).await;
        envelope.reply.send_from(
            result.map(|reply| reply.unwrap_or_default()),
            self.ctx.address.get().map(String::as_str),
        );
    }

    /// After a redeploy, ends the instance (its timers with it), so the
    /// next turn runs the current code; false if the type is undeployed.
    pub(super) async fn follow_redeploy(&mut self) -> bool {
        if !self.deployed.is_superseded() {
            return true;
        }
        self.deactivate_instance().await;
        match self.ctx.deployments.get(&self.key.service_type) {
            Some(current) => {
                self.deployed = current;
                true
            }
            None => false,
        }
    }

    pub(super) fn unknown_type(&self) -> ReplyError {
        ReplyError::UnknownType {
            service_type: self.key.service_type.to_string(),
        }
    }

    /// Loads the object's outbox, once per activation, which starts
    /// delivering what earlier activations committed and did not deliver.
    pub(super) async fn open_outbox(&mut self) -> Result<&Outbox, ReplyError> {
        let outbox = match self.outbox.take() {
            Some(outbox) => outbox,
            None => Outbox::open(&self.ctx.effects, &self.links.dispatch, &self.key)
                .await
                .map_err(|error| {
                    ReplyError::Internal(format!("cannot load the outbox of {}: {error}", self.key))
                })?,
        };
        Ok(self.outbox.insert(outbox))
    }

    /// Stores a client's one-way send in the object's own outbox without
    /// running the guest (see `client_send`); an empty reply once stored.
    pub(super) async fn store_client_send(
        &mut self,
        payload: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ReplyError> {
        let message = client_send::decode(&self.key, payload, &self.ctx.config.limits)?;
        let outbox = self.open_outbox().await?;
        let now_ms = now_ms();
        let mut commit = client_send::commit(outbox, message, idempotency_key, now_ms);
        // Not known without loading the state: written until it is.
        if !self.has_sent {
            commit
                .writes
                .push((HAS_SENT_KEY.to_string(), Some(Vec::new())));
        }
        if let Err(error) = self.commit_as_owner(commit).await {
            if self.moved_away {
                // The instance's state is another silo's now, as after a
                // turn whose commit was refused.
                self.live = None;
            }
            return Err(error);
        }
        self.has_sent = true;
        Ok(Vec::new())
    }
}
