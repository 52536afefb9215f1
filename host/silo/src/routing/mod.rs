//! Delivers a message to an object: into its mailbox on this silo,
//! activating it if needed, or, in a cluster, to the silo that owns it.

pub(crate) mod client_call;
mod forward;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use rio_protocol::{MemberInfo, ReplyError};
use tokio::sync::oneshot;

use crate::activation::directory::{Delivery, Vacancy};
use crate::activation::{self, Context, Links};
use crate::base::ObjectKey;
use crate::base::clock::now_us;
use crate::deadlock::{Deadlock, WaitEdge, WaitGraph};
use crate::host::{Messenger, TurnCall};
use crate::message::{Dispatch, Envelope, ReplyTo};
use crate::observe::ResidentGauge;

/// Delivers messages to objects: here, activating them if needed, or to
/// the silo that owns them. The one implementation of `Dispatch` and
/// `Messenger`, which is all that the parts below it see of it.
pub(crate) struct Router {
    pub(crate) ctx: Arc<Context>,
    /// The `Arc` this router lives in, for the tasks and activations it
    /// starts (each holds the router).
    this: Weak<Router>,
    closing: AtomicBool,
    /// Which turns wait on which objects, to refuse calls that would deadlock.
    pub(crate) waits: WaitGraph,
    /// The silo's resident memory, sampled while a memory budget is set.
    resident: ResidentGauge,
}

impl Router {
    pub(crate) fn new(ctx: Arc<Context>) -> Arc<Router> {
        let resident = ResidentGauge::new(ctx.config.memory_budget_bytes.is_some());
        let waits = WaitGraph::counting(ctx.counters.deadlocks_total.clone());
        Arc::new_cyclic(|this| Router {
            ctx,
            this: this.clone(),
            closing: AtomicBool::new(false),
            waits,
            resident,
        })
    }

    /// This router as its `Arc`: `None` only while it is being dropped.
    fn this(&self) -> Option<Arc<Router>> {
        self.this.upgrade()
    }

    /// How the parts below reach this router.
    fn links(self: Arc<Self>) -> Links {
        Links {
            dispatch: self.clone(),
            messenger: self,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The cluster's silos, or this one alone.
    pub(crate) async fn members(&self) -> Result<Vec<MemberInfo>, ReplyError> {
        let Some(cluster) = &self.ctx.cluster else {
            return Ok(vec![MemberInfo {
                address: self.ctx.address.get().cloned().unwrap_or_default(),
                generation: self.ctx.effects.committer.generation(),
                status: "active".into(),
                heartbeat_ms: crate::base::clock::now_ms(),
            }]);
        };
        let members = cluster
            .refresh_view()
            .await
            .map_err(|error| ReplyError::Internal(format!("cluster store: {error}")))?;
        Ok(members
            .into_iter()
            .map(|member| MemberInfo {
                address: member.silo.address,
                generation: member.silo.generation,
                status: member.status.as_str().into(),
                heartbeat_ms: member.heartbeat_ms,
            })
            .collect())
    }

    /// This silo's metrics as OpenMetrics text.
    pub(crate) fn metrics(&self) -> Result<String, ReplyError> {
        use crate::observe::metrics::{MembershipReading, Readings};
        let membership = self.ctx.cluster.as_ref().map(|cluster| MembershipReading {
            by_status: cluster.members_by_status().to_vec(),
            suspicions: cluster
                .suspicions
                .load(std::sync::atomic::Ordering::Relaxed),
            declared_dead: *cluster.deaths.borrow(),
        });
        let readings = Readings {
            census: self.ctx.directory.census(),
            membership,
            batch_sizes: self.ctx.effects.store().group_commit_sizes(),
        };
        crate::observe::metrics::encode(&self.ctx.counters, readings)
            .map_err(|_| ReplyError::Internal("cannot encode the metrics".into()))
    }

    /// The metrics of every member of the cluster, each with what the
    /// membership store says of it: this silo's own, and the others' as
    /// they answer within `timeout` (a silo not active is not asked).
    pub(crate) async fn cluster_metrics(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<(MemberInfo, Result<String, String>)>, ReplyError> {
        let members = self.members().await?;
        let own = self.ctx.address.get().map(String::as_str);
        let generation = self.ctx.effects.committer.generation();
        let asks = members.into_iter().map(|member| async move {
            let answer = match &self.ctx.cluster {
                _ if Some(member.address.as_str()) == own && member.generation == generation => {
                    self.metrics().map_err(|error| error.to_string())
                }
                _ if member.status != "active" => Err(format!("{} silo", member.status)),
                Some(cluster) => cluster.peers.metrics(&member.address, timeout).await,
                None => Err("not in this silo's cluster".into()),
            };
            (member, answer)
        });
        Ok(futures_util::future::join_all(asks).await)
    }

    /// Refuse new messages from now on; used when the silo stops.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Sends a message from a guest's turn and waits for the reply, at most
    /// until `deadline` (the turn's own). `wait` is the turn's wait in the
    /// wait-for graph (none for a call back into its own chain): while the
    /// message waits in a mailbox here, the graph may refuse it.
    async fn call_from_turn(
        self: &Arc<Self>,
        call: TurnCall,
        wait: Option<&WaitEdge>,
    ) -> Result<Vec<u8>, ReplyError> {
        let (reply, reply_received) = oneshot::channel();
        let mut reply = ReplyTo::Caller(reply);
        if let Some(wait) = wait {
            let (refusable, refusal) = reply.make_refusable();
            reply = refusable;
            if let Some(refusal) = refusal {
                wait.arm(refusal);
            }
        }
        let key = call.callee;
        let mut envelope = Envelope::new(
            call.message_type,
            call.payload,
            call.call_chain,
            reply,
            call.deadline,
        );
        envelope.waiting_since_us = Some(wait.map_or_else(now_us, WaitEdge::since_us));
        envelope.idempotency_key = call.idempotency_key;
        envelope.from_rerun = call.from_rerun;
        self.route(key, envelope);
        reply_received.await.unwrap_or_else(|_| {
            Err(ReplyError::Internal(
                "the callee dropped the message".into(),
            ))
        })
    }

    /// Puts `envelope` in the mailbox of `key`, activating the object if it
    /// has no activation. Never waits on a turn: failures go to the envelope's
    /// reply, and a message for an object being deactivated waits in its
    /// slot and is sent again, in order, once the deactivation is done.
    pub(crate) fn route(&self, key: ObjectKey, mut envelope: Envelope) {
        // A stopping silo in a cluster still passes messages on.
        if self.ctx.cluster.is_none() && self.closing.load(Ordering::Relaxed) {
            return envelope.reply.send(Err(ReplyError::Overloaded(
                "the silo is shutting down".into(),
            )));
        }
        if let Err(error) = self.within_name_limits(&key) {
            return envelope.reply.send(Err(error));
        }
        let limits = &self.ctx.config.limits;
        if let Err(message) = limits.check_message_type(&envelope.message_type, &key) {
            return envelope.reply.send(Err(ReplyError::BadRequest(message)));
        }
        let payload_limit = self.ctx.config.limits.payload_bytes;
        if envelope.payload.len() > payload_limit {
            return envelope.reply.send(Err(ReplyError::BadRequest(format!(
                "the message to {key} is {} bytes, over the silo's limit `payload-bytes` of {payload_limit} bytes",
                envelope.payload.len()
            ))));
        }
        if envelope.call_chain.contains(&key) {
            let chain: Vec<String> = envelope
                .call_chain
                .iter()
                .map(ToString::to_string)
                .collect();
            let message = format!("{} -> {key}", chain.join(" -> "));
            return envelope.reply.send(Err(ReplyError::Cycle(message)));
        }
        if envelope.expired() {
            let message = format!("the call to {key} passed its deadline before it ran");
            return envelope.reply.send(Err(ReplyError::Timeout(message)));
        }
        // A call from a turn on another silo: record its wait here, where it
        // may close a cycle with this silo's own waits. (A local caller's
        // wait was recorded when its guest called.)
        if envelope.hops > 0
            && envelope.wait_edge.is_none()
            && let (Some(caller), Some(since)) = (envelope.caller(), envelope.waiting_since_us)
        {
            match self
                .waits
                .wait_from(caller, &key, Some(since), envelope.from_rerun)
            {
                Ok(edge) => {
                    let (reply, refusal) = envelope.reply.make_refusable();
                    envelope.reply = reply;
                    if let Some(refusal) = refusal {
                        edge.arm(refusal);
                    }
                    envelope.wait_edge = Some(edge);
                }
                Err(Deadlock(message)) => {
                    return envelope.reply.send(Err(ReplyError::Deadlock(message)));
                }
            }
        }
        // Another silo chose this one for the object, if it opens a placement.
        let sent_to_me = envelope.hops > 0;
        // Looked up only for an object without a slot: a live activation
        // implies its type.
        let mut deployed = None;
        // A refusal of an object without a slot, while the silo is full, is
        // an activation refused.
        let mut at_capacity = false;
        let delivery = self.ctx.directory.deliver(&key, envelope, |occupancy| {
            if self.ctx.cluster.is_some() {
                return Vacancy::Place;
            }
            match self.ctx.deployments.get(&key.service_type) {
                Some(found) => {
                    deployed = Some(found);
                    let full = self.full(occupancy);
                    at_capacity = full.is_some();
                    Vacancy::Activate { full }
                }
                None => {
                    let service_type = key.service_type.to_string();
                    Vacancy::Refuse(ReplyError::UnknownType { service_type })
                }
            }
        });
        // Only a new placement or activation holds the router (its `Arc`
        // counted once per message would be a shared cache line between
        // cores); one being dropped starts nothing more, and the messages
        // in the slot go with it (their callers hear `internal`).
        match delivery {
            Delivery::Queued => {}
            Delivery::Refused(envelope, error) => {
                let counters = &self.ctx.counters;
                counters
                    .messages_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                if at_capacity {
                    counters
                        .activations_refused_total
                        .fetch_add(1, Ordering::Relaxed);
                }
                envelope.reply.send(Err(error))
            }
            Delivery::Place => {
                if let Some(router) = self.this() {
                    self.ctx
                        .effects
                        .tasks
                        .spawn(async move { router.place(key, sent_to_me).await });
                }
            }
            Delivery::Activate(inbox, handle) => match (deployed, self.this()) {
                (Some(deployed), Some(router)) => {
                    activation::spawn(&self.ctx, router.links(), key, deployed, inbox, handle)
                }
                // `Activate` comes only from the branch that found the type.
                (None, _) => tracing::error!(object = %key, "a mailbox opened for no deployment"),
                (Some(_), None) => {}
            },
        }
    }
}

impl Router {
    /// The refusal a new activation gets when the silo is at capacity
    /// (`occupancy` activations, or resident memory over the budget) and
    /// no activation is idle; `None` while there is room.
    fn full(&self, occupancy: usize) -> Option<ReplyError> {
        if let Some(max) = self.ctx.config.max_activations
            && occupancy >= max
        {
            return Some(ReplyError::Overloaded(format!(
                "the silo holds {occupancy} activations, its limit `max-activations`, and none is idle to make room"
            )));
        }
        let budget = self.ctx.config.memory_budget_bytes?;
        let resident = self.resident.bytes();
        (resident > budget).then(|| {
            ReplyError::Overloaded(format!(
                "the silo's resident memory of {} MiB is over its budget of {} MiB, and no activation is idle to make room",
                resident >> 20,
                budget >> 20
            ))
        })
    }

    /// Refuses an object whose type or id is longer than the limits allow,
    /// before it takes a slot in the directory (or a row in a store).
    fn within_name_limits(&self, key: &ObjectKey) -> Result<(), ReplyError> {
        let limits = &self.ctx.config.limits;
        let checks = [
            (
                "service type",
                "service-type-bytes",
                key.service_type.len(),
                limits.service_type_bytes,
            ),
            (
                "object id",
                "object-id-bytes",
                key.object_id.len(),
                limits.object_id_bytes,
            ),
        ];
        for (what, name, size, limit) in checks {
            if size > limit {
                return Err(ReplyError::BadRequest(format!(
                    "the {what} is {size} bytes, over the silo's limit `{name}` of {limit} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// The host imports' view of the router.
impl Messenger for Router {
    fn wait(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        rerun: bool,
    ) -> Result<WaitEdge, Deadlock> {
        self.waits.wait_from(caller, callee, None, rerun)
    }

    fn call<'a>(
        self: Arc<Self>,
        call: TurnCall,
        wait: Option<&'a WaitEdge>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, ReplyError>> + Send + 'a>> {
        Box::pin(async move { self.call_from_turn(call, wait).await })
    }

    fn record_intent(
        self: Arc<Self>,
        object: ObjectKey,
        intent: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReplyError>> + Send>> {
        Box::pin(async move {
            self.ctx
                .effects
                .committer
                .record_intent(&object, intent)
                .await
        })
    }
}

/// What activations, outboxes and wake-ups see of the router.
impl Dispatch for Router {
    fn dispatch(&self, key: ObjectKey, envelope: Envelope) {
        self.route(key, envelope);
    }
}
