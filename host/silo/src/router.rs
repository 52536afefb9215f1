//! Delivers a message to an object: into its mailbox on this silo,
//! activating it if needed, or, in a cluster, to the silo that owns it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rio_protocol::{CallRequest, ForwardRequest, MemberInfo, ReplyError};
use serde_bytes::ByteBuf;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::activation;
use crate::cluster::{Cluster, ForwardFailure, Route};
use crate::deadlock::{Deadlock, WaitEdge, WaitGraph, now_us};
use crate::deployments::{DeployedType, Deployments};
use crate::directory::{Delivery, Directory, Settled, Vacancy};
use crate::host::{Messenger, TurnCall};
use crate::mailbox::{CallChain, Envelope, ReplyTo};
use crate::resume::INTENT_KEY;
use crate::stats::ResidentGauge;
use crate::storage::{Commit, SiloId, StateStore, StorageError};
use crate::{ObjectKey, SiloConfig};

/// Counters for `Stats` requests and benchmarks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) activations_total: AtomicU64,
    pub(crate) activation_nanos_total: AtomicU64,
    pub(crate) deactivations_total: AtomicU64,
    pub(crate) forwarded_total: AtomicU64,
    /// Instances alive now (an activation whose instance was dropped after
    /// a trap holds none until its next message).
    pub(crate) live_instances: AtomicU64,
}

pub(crate) struct Router {
    pub(crate) config: SiloConfig,
    pub(crate) deployments: Deployments,
    pub(crate) directory: Directory,
    pub(crate) state_store: Arc<dyn StateStore>,
    pub(crate) counters: Counters,
    /// Flips to `true` once when the silo stops; every activation watches it.
    pub(crate) stopping: watch::Receiver<bool>,
    closing: AtomicBool,
    empty_chain: CallChain,
    /// This process's generation: when it started, in ms since the epoch.
    pub(crate) generation: i64,
    /// Where this silo serves, once it does.
    pub(crate) address: OnceLock<String>,
    /// `None` for a silo on its own.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Every task of the silo's message path (activations, placements,
    /// forwards), which a stopping silo waits for.
    pub(crate) tasks: TaskTracker,
    /// Set when the cluster declared this silo dead: nothing more is committed.
    pub(crate) evicted: AtomicBool,
    /// Which turns wait on which objects, to refuse calls that would deadlock.
    pub(crate) waits: WaitGraph,
    /// The silo's resident memory, sampled while a memory budget is set.
    resident: ResidentGauge,
}

/// A message is passed between silos at most this often: placement races
/// settle in one extra hop.
const MAX_HOPS: u8 = 3;
/// How far apart a message is re-sent to an owner that could not be
/// reached, until the cluster declares that owner dead or the message's
/// deadline passes.
const REDELIVERY_DELAY: Duration = Duration::from_millis(250);

impl Router {
    pub(crate) fn new(
        config: SiloConfig,
        deployments: Deployments,
        state_store: Arc<dyn StateStore>,
        stopping: watch::Receiver<bool>,
        generation: i64,
        cluster: Option<Arc<Cluster>>,
    ) -> Router {
        let directory = Directory::new(config.mailbox_capacity);
        let resident = ResidentGauge::new(config.memory_budget_bytes.is_some());
        Router {
            config,
            deployments,
            directory,
            state_store,
            counters: Counters::default(),
            stopping,
            closing: AtomicBool::new(false),
            empty_chain: Arc::from(Vec::new()),
            generation,
            address: OnceLock::new(),
            cluster,
            tasks: TaskTracker::new(),
            evicted: AtomicBool::new(false),
            waits: WaitGraph::default(),
            resident,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The cluster's silos, or this one alone.
    pub(crate) async fn members(&self) -> Result<Vec<MemberInfo>, ReplyError> {
        let Some(cluster) = &self.cluster else {
            return Ok(vec![MemberInfo {
                address: self.address.get().cloned().unwrap_or_default(),
                generation: self.generation,
                status: "active".into(),
                heartbeat_ms: crate::cluster::now_ms(),
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

    /// Who commits for this silo's activations: in a cluster the placement
    /// store names the owner; a lone silo is known by its process
    /// generation, which holds its data dir's lease.
    pub(crate) fn commit_owner(&self) -> Result<SiloId, ReplyError> {
        match &self.cluster {
            Some(cluster) => cluster.me().cloned(),
            None => Ok(SiloId {
                address: String::new(),
                generation: self.generation,
            }),
        }
    }

    /// Sends `object` a message the silo makes itself, of a reserved type
    /// and without payload (the outbox's and interrupted turns' wake-ups),
    /// and logs its answer if it is an error, as `what` went wrong.
    pub(crate) fn wake(
        self: &Arc<Self>,
        object: ObjectKey,
        message_type: &str,
        what: &'static str,
    ) {
        let (reply, replied) = oneshot::channel();
        let deadline = Instant::now() + self.config.turn_deadline * 2;
        let envelope = Envelope::new(
            message_type.to_string(),
            Vec::new(),
            self.empty_chain(),
            ReplyTo::Caller(reply),
            deadline,
        );
        self.dispatch(object.clone(), envelope);
        self.tasks.spawn(async move {
            if let Ok(Err(error)) = replied.await {
                tracing::info!(%object, %error, "{what}");
            }
        });
    }

    /// The chain of a message from outside the silo: nobody is waiting in a turn.
    pub(crate) fn empty_chain(&self) -> CallChain {
        self.empty_chain.clone()
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
        self.dispatch(key, envelope);
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
    pub(crate) fn dispatch(self: &Arc<Self>, key: ObjectKey, mut envelope: Envelope) {
        // A stopping silo in a cluster still passes messages on.
        if self.cluster.is_none() && self.closing.load(Ordering::Relaxed) {
            return envelope.reply.send(Err(ReplyError::Overloaded(
                "the silo is shutting down".into(),
            )));
        }
        if let Err(error) = self.within_name_limits(&key) {
            return envelope.reply.send(Err(error));
        }
        let payload_limit = self.config.limits.payload_bytes;
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
            match self.waits.wait(caller, &key, Some(since)) {
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
        let delivery = self.directory.deliver(&key, envelope, |occupancy| {
            if self.cluster.is_some() {
                return Vacancy::Place;
            }
            match self.deployments.get(&key.service_type) {
                Some(found) => {
                    deployed = Some(found);
                    Vacancy::Activate {
                        full: self.full(occupancy),
                    }
                }
                None => {
                    let service_type = key.service_type.to_string();
                    Vacancy::Refuse(ReplyError::UnknownType { service_type })
                }
            }
        });
        match delivery {
            Delivery::Queued => {}
            Delivery::Refused(envelope, error) => envelope.reply.send(Err(error)),
            Delivery::Place => {
                let router = self.clone();
                self.tasks
                    .spawn(async move { router.place(key, sent_to_me).await });
            }
            Delivery::Activate(inbox, handle) => match deployed {
                Some(deployed) => activation::spawn(self.clone(), key, deployed, inbox, handle),
                // `Activate` comes only from the branch that found the type.
                None => tracing::error!(object = %key, "a mailbox opened for no deployment"),
            },
        }
    }
}

impl Router {
    /// The refusal a new activation gets when the silo is at capacity
    /// (`occupancy` activations, or resident memory over the budget) and
    /// no activation is idle; `None` while there is room.
    fn full(&self, occupancy: usize) -> Option<ReplyError> {
        if let Some(max) = self.config.max_activations
            && occupancy >= max
        {
            return Some(ReplyError::Overloaded(format!(
                "the silo holds {occupancy} activations, its limit `max-activations`, and none is idle to make room"
            )));
        }
        let budget = self.config.memory_budget_bytes?;
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
        let limits = &self.config.limits;
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
    fn wait(&self, caller: &ObjectKey, callee: &ObjectKey) -> Result<WaitEdge, Deadlock> {
        self.waits.wait(caller, callee, None)
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
            let owner = self.commit_owner()?;
            let commit = Commit {
                writes: vec![(INTENT_KEY.to_string(), Some(intent))],
                ..Commit::default()
            };
            self.state_store
                .commit_turn(&object, commit, &owner)
                .await
                .map_err(|error| match error {
                    StorageError::Fenced { .. } => ReplyError::Unavailable(format!(
                        "{object} moved to another silo; its turn was stopped before its first call"
                    )),
                    error => ReplyError::Internal(format!(
                        "cannot store the keyed turn of {object} before its first call: {error}"
                    )),
                })
        })
    }
}

impl Router {
    /// Asks the cluster where `key` lives and sends the messages waiting in
    /// its `Placing` slot there: into a new activation or to another silo.
    async fn place(self: &Arc<Self>, key: ObjectKey, sent_to_me: bool) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        // Deployments are replaced, never removed: a type known here stays.
        let route = match self.deployed_here(&key).await {
            Ok(deployed) => cluster
                .route(&key, sent_to_me, self.is_closing())
                .await
                .map(|route| (route, deployed)),
            Err(error) => Err(error),
        };
        let here = matches!(route, Ok((Route::Local, _)));
        let full = here && self.full(self.directory.occupancy()).is_some();
        match (self.directory.settle_placement(&key, here, full), route) {
            (Settled::Here(inbox, handle), Ok((_, deployed))) => {
                activation::spawn(self.clone(), key, deployed, inbox, handle);
            }
            (Settled::Elsewhere(waiting), Ok((Route::Remote(owner), _))) => {
                for envelope in waiting {
                    let router = self.clone();
                    let (key, owner) = (key.clone(), owner.clone());
                    self.tasks
                        .spawn(async move { router.forward(key, owner, envelope).await });
                }
            }
            (Settled::Elsewhere(waiting), Err(error)) => {
                for envelope in waiting {
                    envelope.reply.send(Err(error.clone()));
                }
            }
            (Settled::Elsewhere(_), Ok((Route::Local, _))) | (Settled::Here(..), Err(_)) => {
                unreachable!("settled as asked")
            }
        }
    }

    /// The object's type as deployed here, after looking for deployments
    /// made through other silos if it is not.
    async fn deployed_here(&self, key: &ObjectKey) -> Result<Arc<DeployedType>, ReplyError> {
        if let Some(deployed) = self.deployments.get(&key.service_type) {
            return Ok(deployed);
        }
        if let Err(error) = self.deployments.refresh().await {
            tracing::warn!(%error, "cannot read the deployments of the cluster");
        }
        self.deployments
            .get(&key.service_type)
            .ok_or_else(|| ReplyError::UnknownType {
                service_type: key.service_type.to_string(),
            })
    }

    /// Sends one message to the silo that owns its object, and its reply
    /// back where the message came from.
    async fn forward(self: &Arc<Self>, key: ObjectKey, owner: SiloId, mut envelope: Envelope) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if envelope.hops >= MAX_HOPS {
            let message =
                format!("{key} was passed between silos {MAX_HOPS} times without settling");
            return envelope.reply.send(Err(ReplyError::Unavailable(message)));
        }
        let client = match cluster.peers.call_connection(&owner.address).await {
            Ok(client) => client,
            Err(reason) => {
                cluster.forget_route(&key);
                if Instant::now() + REDELIVERY_DELAY >= envelope.deadline {
                    let message = format!(
                        "{key} is on {owner}, which could not be reached before the call's deadline ({reason}); the message was not delivered"
                    );
                    return envelope.reply.send(Err(ReplyError::Unavailable(message)));
                }
                // Nothing was sent, so trying again is safe. The owner may be
                // dead and not yet declared so: ask again shortly, until the
                // cluster moves the object.
                tokio::time::sleep(REDELIVERY_DELAY).await;
                return self.dispatch(key, envelope);
            }
        };
        // From here the message leaves for good, so its payload moves along,
        // and its reply is this task's to give (unless a deadlock was found
        // while it waited to be placed: then it was answered already).
        envelope.reply = match envelope.reply.claim() {
            Some(reply) => reply,
            None => return,
        };
        let remaining = envelope.deadline.saturating_duration_since(Instant::now());
        let request = ForwardRequest {
            call: CallRequest {
                service_type: key.service_type.to_string(),
                object_id: key.object_id.to_string(),
                message_type: std::mem::take(&mut envelope.message_type),
                payload: ByteBuf::from(std::mem::take(&mut envelope.payload)),
                timeout_ms: Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)),
                idempotency_key: envelope.idempotency_key.as_deref().map(str::to_string),
            },
            call_chain: envelope
                .call_chain
                .iter()
                .map(|key| (key.service_type.to_string(), key.object_id.to_string()))
                .collect(),
            hops: envelope.hops + 1,
            waiting_since_us: envelope.waiting_since_us,
        };
        self.counters
            .forwarded_total
            .fetch_add(1, Ordering::Relaxed);
        match cluster
            .peers
            .forward(&owner.address, client, request, remaining)
            .await
        {
            Ok(reply) => envelope.reply.send_from(Ok(reply), Some(&owner.address)),
            Err(ForwardFailure::Reply(error)) => envelope.reply.send(Err(error)),
            Err(ForwardFailure::Lost(reason)) => {
                cluster.forget_route(&key);
                let message = format!(
                    "the connection to {owner}, which owns {key}, broke after the message was sent ({reason}); it may or may not have run"
                );
                envelope.reply.send(Err(ReplyError::Unavailable(message)));
            }
        }
    }
}
