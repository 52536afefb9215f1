//! One object's activation: a task that owns the object's mailbox and, while
//! the object is live, its wasm instance; it runs one turn at a time.
//!
//! ```text
//!   mailbox ──► [ activate? ] ──► turn ──► commit ──► reply
//!                   ▲                │ trap / timeout: drop the instance,
//!                   └────────────────┘ next message activates afresh
//!   idle timeout or silo stop ──► on-deactivate ──► commit ──► slot freed
//! ```
//!
//! Invariant: a turn's state writes reach the store before its reply leaves;
//! a turn that errs, traps or times out leaves the store untouched. The
//! messages a turn sends one way are committed with its writes and only
//! then handed to the activation's outbox for delivery; an activation with
//! undelivered messages does not retire for idleness.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use tokio::time::Instant;

use rio_protocol::ReplyError;
use wasmtime::{Store, UpdateDeadline};

use crate::ObjectKey;
use crate::bindings::{Export, Handler};
use crate::client_send;
use crate::deployments::DeployedType;
use crate::directory::ActivationHandle;
use crate::host::{
    ActivationData, DeadlineExceeded, INLINE_VALUE_BYTES, MemoryLimitExceeded, ObjectState,
};
use crate::idempotency::RecentReplies;
use crate::limits::LimitExceeded;
use crate::log_summary::LogSummary;
use crate::mailbox::{CallChain, Envelope, MailboxReceiver};
use crate::outbox::{ENQUEUE, HAS_SENT_KEY, Outbox, WAKE};
use crate::resume::{self, INTENT_KEY, Intent, Interrupted, RESUME_ATTEMPTS};
use crate::router::Router;
use crate::storage::{Commit, ReplyRecord, StorageError};

pub(crate) fn spawn(
    router: Arc<Router>,
    key: ObjectKey,
    deployed: Arc<DeployedType>,
    mailbox: MailboxReceiver,
    handle: Arc<ActivationHandle>,
) {
    let tasks = router.tasks.clone();
    let activation = Activation {
        router,
        key,
        deployed,
        live: None,
        mailbox,
        handle,
        moved_away: false,
        recent_replies: RecentReplies::default(),
        outbox: None,
        has_sent: false,
        interrupted: None,
        rerunning: false,
    };
    tasks.spawn(activation.run());
}

struct Activation {
    router: Arc<Router>,
    key: ObjectKey,
    deployed: Arc<DeployedType>,
    live: Option<LiveInstance>,
    mailbox: MailboxReceiver,
    /// Shared with the directory: busy or idle, and asked to deactivate.
    handle: Arc<ActivationHandle>,
    /// A commit was refused because another silo owns the object now: this
    /// activation retires, and messages go to the owner.
    moved_away: bool,
    /// Replies this activation committed under idempotency keys lately.
    recent_replies: RecentReplies,
    /// The object's outbox, loaded when the object activates if it ever
    /// sent, when a turn first sends, or at a wake-up.
    outbox: Option<Outbox>,
    /// The object's state holds [`HAS_SENT_KEY`]: it has sent one way, so
    /// its activations load its outbox (an object that never sent costs
    /// no outbox read).
    has_sent: bool,
    /// A keyed turn that called out and did not commit: it runs again
    /// before any other turn (see `resume`).
    interrupted: Option<Interrupted>,
    /// The turn running is such a turn, run again.
    rerunning: bool,
}

struct LiveInstance {
    store: Store<ActivationData>,
    handler: Handler,
    _counted: Counted,
}

/// Counts one live instance in `Counters::live_instances` while it exists,
/// whichever way the instance goes.
struct Counted(Arc<Router>);

impl Counted {
    fn new(router: &Arc<Router>) -> Counted {
        router
            .counters
            .live_instances
            .fetch_add(1, Ordering::Relaxed);
        Counted(router.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .counters
            .live_instances
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A failed turn, and whether the instance survived it.
struct TurnFailure {
    error: ReplyError,
    instance_lost: bool,
}

enum Event {
    Stop,
    Received(Option<Box<Envelope>>),
    TimerFired,
    /// The silo is full and this is its least recently used idle activation.
    Evicted,
}

enum Hook {
    Handle {
        message_type: String,
        payload: Vec<u8>,
        idempotency_key: Option<Arc<str>>,
    },
    Activate,
    Deactivate,
}

impl Activation {
    async fn run(mut self) {
        let idle_timeout = self.router.config.idle_timeout;
        let mut stopping = self.router.stopping.clone();
        // One timer for the activation's life, re-armed only when it fires:
        // re-arming it on every message would cost a timer-wheel update per turn.
        let idle_timer = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle_timer);
        let mut last_message = Instant::now();
        loop {
            let event = tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => Event::Stop,
                received = self.mailbox.recv() => Event::Received(received),
                _ = self.handle.evicted() => Event::Evicted,
                _ = &mut idle_timer => Event::TimerFired,
            };
            match event {
                Event::Stop => break,
                Event::Received(Some(envelope)) => {
                    last_message = Instant::now();
                    self.handle.set_busy(true);
                    self.handle(*envelope).await;
                    self.handle.set_busy(false);
                    if self.moved_away {
                        break;
                    }
                }
                Event::Evicted => {
                    let delivering = self
                        .outbox
                        .as_ref()
                        .is_some_and(|outbox| !outbox.is_drained());
                    if !delivering
                        && self
                            .router
                            .directory
                            .retire_if_idle(&self.key, &mut self.mailbox)
                    {
                        return self.retire().await;
                    }
                    self.router.directory.keep(&self.handle);
                }
                // Only this task removes the slot holding the sender.
                Event::Received(None) => break,
                Event::TimerFired => {
                    let now = Instant::now();
                    let idle_until = last_message + idle_timeout;
                    let delivering = self
                        .outbox
                        .as_ref()
                        .is_some_and(|outbox| !outbox.is_drained());
                    if now >= idle_until
                        && !delivering
                        && self
                            .router
                            .directory
                            .retire_if_idle(&self.key, &mut self.mailbox)
                    {
                        return self.retire().await;
                    }
                    idle_timer
                        .as_mut()
                        .reset(idle_until.max(now + idle_timeout / 8));
                }
            }
        }
        self.router
            .directory
            .start_deactivating(&self.key, &mut self.mailbox);
        self.retire().await;
    }

    async fn handle(&mut self, mut envelope: Envelope) {
        // The reply is this turn's from here: a message refused as a
        // deadlock while it waited was answered already and must not run.
        envelope.reply = match envelope.reply.claim() {
            Some(reply) => reply,
            None => return,
        };
        if self.deployed.is_superseded() {
            self.deactivate_instance().await;
            match self.router.deployments.get(&self.key.service_type) {
                Some(current) => self.deployed = current,
                None => return envelope.reply.send(Err(self.unknown_type())),
            }
        }
        if envelope.message_type == WAKE {
            let woken = self.open_outbox().await.map(|()| Vec::new());
            return envelope.reply.send(woken);
        }
        if envelope.message_type == resume::WAKE {
            let finished = self.ready_for_turn().await.map(|()| Vec::new());
            return envelope.reply.send(finished);
        }
        if envelope.expired() || envelope.reply.abandoned() {
            let message = format!("the call to {} passed its deadline before it ran", self.key);
            return envelope.reply.send(Err(ReplyError::Timeout(message)));
        }
        // A retry of a keyed call that committed: its reply, nothing run.
        // The mailbox serializes an object's messages, so a retry sent while
        // the first attempt runs is checked after that attempt committed.
        let router = self.router.clone();
        let owner = router.address.get().map(String::as_str);
        if let Some(key) = &envelope.idempotency_key {
            match self.stored_reply(key).await {
                Ok(Some(reply)) => return envelope.reply.send_from(Ok(reply), owner),
                Ok(None) => {}
                Err(error) => return envelope.reply.send(Err(error)),
            }
        }
        if envelope.message_type == ENQUEUE {
            let key = envelope.idempotency_key.as_deref();
            let stored = self.store_client_send(&envelope.payload, key).await;
            return envelope.reply.send_from(stored, owner);
        }
        if let Err(error) = self.ready_for_turn().await {
            return envelope.reply.send(Err(error));
        }
        // The interrupted turn just finished may be the one this retries.
        let retention = self.router.config.idempotency_retention;
        if let Some(key) = &envelope.idempotency_key
            && let Some(reply) = self.recent_replies.get(key, retention)
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
            self.router.address.get().map(String::as_str),
        );
    }

    /// A live instance with no unfinished keyed turn: activates the object
    /// if needed, then runs an interrupted keyed turn again if there is
    /// one. While that turn stays unfinished, other messages are refused
    /// `unavailable` (nothing of theirs ran), so that it alone sees the
    /// state its first attempt saw.
    async fn ready_for_turn(&mut self) -> Result<(), ReplyError> {
        if self.live.is_none() {
            self.activate().await?;
        }
        if self.interrupted.is_none() {
            return Ok(());
        }
        self.finish_interrupted().await?;
        if self.live.is_none() {
            self.activate().await?;
        }
        match &self.interrupted {
            None => Ok(()),
            Some(interrupted) => Err(self.unfinished(interrupted, "its intent was loaded again")),
        }
    }

    /// Runs the interrupted keyed turn once more; `Err` while it is still
    /// unfinished. After [`RESUME_ATTEMPTS`] it is given up (an error in
    /// the log): its calls' effects stand without it.
    async fn finish_interrupted(&mut self) -> Result<(), ReplyError> {
        let Some(Interrupted { intent, attempts }) = self.interrupted.take() else {
            return Ok(());
        };
        let attempt = attempts + 1;
        // Committed after all (its commit's answer was lost): nothing to run.
        match self.stored_reply(&intent.key).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                let live = self.live.as_ref();
                if live.is_some_and(|live| live.store.data().intent_stored.is_some()) {
                    self.forget_intent().await;
                }
                return Ok(());
            }
            Err(error) => {
                self.interrupted = Some(Interrupted { intent, attempts });
                return Err(error);
            }
        }
        tracing::info!(object = %self.key, key = %intent.key, attempt, "running an interrupted keyed turn again before any other turn");
        let hook = Hook::Handle {
            message_type: intent.message_type.clone(),
            payload: intent.payload.clone(),
            idempotency_key: Some(intent.key.clone()),
        };
        let deadline = Instant::now() + self.router.config.turn_deadline;
        self.rerunning = true;
        let result = self.turn(hook, &self.router.empty_chain(), deadline).await;
        self.rerunning = false;
        let error = match result {
            Ok(_) => {
                tracing::info!(object = %self.key, key = %intent.key, "interrupted keyed turn finished");
                return Ok(());
            }
            Err(error) => error,
        };
        let Some(again) = self.interrupted.as_mut() else {
            // It ended for good (its intent is deleted), or the object moved.
            tracing::info!(object = %self.key, key = %intent.key, %error, "interrupted keyed turn ended with an error");
            return Ok(());
        };
        again.attempts = attempt;
        if attempt < RESUME_ATTEMPTS {
            let interrupted = self.interrupted.as_ref().expect("just set");
            return Err(self.unfinished(interrupted, &error.to_string()));
        }
        tracing::error!(object = %self.key, key = %intent.key, attempt, %error, "gave up an interrupted keyed turn: the effects of its calls may stand without its own");
        self.interrupted = None;
        self.forget_intent().await;
        Ok(())
    }

    fn unfinished(&self, interrupted: &Interrupted, why: &str) -> ReplyError {
        ReplyError::Unavailable(format!(
            "{} is finishing an interrupted keyed turn first (attempt {} of {RESUME_ATTEMPTS}: {why}); nothing of this message ran, retry it",
            self.key, interrupted.attempts
        ))
    }

    /// A keyed turn failed after its intent was stored: it either ended for
    /// good (its intent is deleted) or runs again before the next turn.
    async fn after_failed_keyed_turn(&mut self, error: &ReplyError) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let data = live.store.data_mut();
        let Some(intent) = data.turn_intent.take() else {
            return;
        };
        if data.intent_stored.as_ref() != Some(&intent.key) || self.moved_away {
            // It never called out, or the object's new owner finishes it.
            return;
        }
        let ends = match self.rerunning {
            true => resume::ends_a_rerun(error),
            false => resume::ends_the_turn(error),
        };
        if ends {
            self.forget_intent().await;
        } else {
            self.interrupted = Some(Interrupted {
                intent,
                attempts: 0,
            });
        }
    }

    /// Deletes the object's stored intent. If that fails the intent stays,
    /// and the next activation runs its turn again (which ends the same way).
    async fn forget_intent(&mut self) {
        let commit = Commit {
            writes: vec![(INTENT_KEY.to_string(), None)],
            ..Commit::default()
        };
        let result = match self.router.commit_owner() {
            Ok(owner) => self
                .router
                .state_store
                .commit_turn(&self.key, commit, &owner)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(()) => {
                if let Some(live) = self.live.as_mut() {
                    live.store.data_mut().intent_stored = None;
                }
            }
            Err(error) => {
                tracing::warn!(object = %self.key, %error, "cannot delete an ended keyed turn's intent; the object's next activation runs it again");
            }
        }
    }

    /// The reply committed under idempotency key `key`: remembered here, or
    /// read from the store (an earlier activation or another silo may have
    /// committed it).
    async fn stored_reply(&mut self, key: &str) -> Result<Option<Vec<u8>>, ReplyError> {
        let retention = self.router.config.idempotency_retention;
        if let Some(reply) = self.recent_replies.get(key, retention) {
            return Ok(Some(reply));
        }
        self.router
            .state_store
            .stored_reply(&self.key, key)
            .await
            .map_err(|error| {
                ReplyError::Internal(format!(
                    "cannot read the stored replies of {}: {error}",
                    self.key
                ))
            })
    }

    fn unknown_type(&self) -> ReplyError {
        ReplyError::UnknownType {
            service_type: self.key.service_type.to_string(),
        }
    }

    /// Loads the object's outbox, once per activation, which starts
    /// delivering what earlier activations committed and did not deliver.
    async fn open_outbox(&mut self) -> Result<(), ReplyError> {
        if self.outbox.is_some() {
            return Ok(());
        }
        let outbox = Outbox::open(&self.router, &self.key)
            .await
            .map_err(|error| {
                ReplyError::Internal(format!("cannot load the outbox of {}: {error}", self.key))
            })?;
        self.outbox = Some(outbox);
        Ok(())
    }

    /// Stores a client's one-way send in the object's own outbox without
    /// running the guest (see `client_send`); an empty reply once stored.
    async fn store_client_send(
        &mut self,
        payload: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ReplyError> {
        let message = client_send::decode(&self.key, payload, &self.router.config.limits)?;
        self.open_outbox().await?;
        let outbox = self.outbox.as_ref().expect("opened just above");
        let now_ms = crate::cluster::now_ms();
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

    /// Instantiates the component, loads the object's state and runs `on-activate`.
    async fn activate(&mut self) -> Result<(), ReplyError> {
        let started = Instant::now();
        let store = self.router.state_store.clone();
        let entries = store
            .load_keys(&self.key, INLINE_VALUE_BYTES)
            .await
            .map_err(|e| {
                ReplyError::Internal(format!("cannot load the state of {}: {e}", self.key))
            })?;
        let limits = &self.router.config.limits;
        let mut state = ObjectState::from_store(entries, limits, store, self.key.clone());
        let object = self.key.clone();
        let reserved_error = move |e: String| {
            ReplyError::Internal(format!("cannot load the state of {object}: {e}"))
        };
        self.has_sent = state
            .take_reserved(HAS_SENT_KEY)
            .await
            .map_err(reserved_error.clone())?
            .is_some();
        if self.has_sent {
            self.open_outbox().await?;
        }
        let stored_intent = state
            .take_reserved(INTENT_KEY)
            .await
            .map_err(reserved_error)?
            .map(|bytes| self.loaded_intent(&bytes));
        if stored_intent.is_none() {
            // The store is the truth: a commit whose answer was lost may
            // have finished the turn this activation took as interrupted.
            self.interrupted = None;
        }
        let mut data = ActivationData::new(
            self.key.clone(),
            self.router.clone(),
            state,
            self.router.config.memory_limit_bytes,
            &self.router.config.limits,
            self.router.empty_chain(),
        );
        // An intent that is not one is deleted by the next commit.
        data.intent_stored = stored_intent.map(|intent| match intent {
            Some(intent) => intent.key,
            None => Arc::from(""),
        });
        let mut store = Store::new(&self.deployed.engine, data);
        store.limiter(|data| &mut data.memory);
        // Checked at every epoch tick while guest code runs; waits outside
        // guest code are bounded by `within` around each call in.
        store.epoch_deadline_callback(|context| {
            if Instant::now() >= context.data().turn_deadline {
                return Err(wasmtime::Error::new(DeadlineExceeded));
            }
            // Yielding lets a long turn share its worker thread with others.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let deadline = Instant::now() + self.router.config.turn_deadline;
        store.data_mut().turn_deadline = deadline;
        let instantiated = within(deadline, self.deployed.pre.instantiate(&mut store)).await;
        let handler = match instantiated {
            Some(Ok(handler)) => handler,
            Some(Err(error)) => {
                let panic = store.data().stderr.panic_message();
                return Err(classify_instantiation_error(&self.key, error, panic));
            }
            None => return Err(self.timed_out()),
        };
        self.live = Some(LiveInstance {
            store,
            handler,
            _counted: Counted::new(&self.router),
        });
        let deadline = Instant::now() + self.router.config.turn_deadline;
        if let Err(failure) = self
            .turn(Hook::Activate, &self.router.empty_chain(), deadline)
            .await
        {
            self.live = None;
            return Err(failure);
        }
        let counters = &self.router.counters;
        counters.activations_total.fetch_add(1, Ordering::Relaxed);
        counters
            .activation_nanos_total
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// An intent loaded with the object's state: its turn runs again before
    /// any other (keeping the count of attempts this activation made).
    fn loaded_intent(&mut self, bytes: &[u8]) -> Option<Intent> {
        let Some(intent) = Intent::decode(bytes) else {
            tracing::warn!(object = %self.key, "dropping a stored keyed-turn intent that cannot be read");
            return None;
        };
        let attempts = match self.interrupted.take() {
            Some(interrupted) if interrupted.intent.key == intent.key => interrupted.attempts,
            _ => 0,
        };
        self.interrupted = Some(Interrupted {
            intent: intent.clone(),
            attempts,
        });
        Some(intent)
    }

    /// Runs one call into the guest and commits its writes if it succeeded.
    /// `Ok(None)` is a hook's success (hooks reply nothing).
    async fn turn(
        &mut self,
        hook: Hook,
        incoming_chain: &CallChain,
        caller_deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ReplyError> {
        let deadline = caller_deadline.min(Instant::now() + self.router.config.turn_deadline);
        let outcome = self.call_guest(hook, incoming_chain, deadline).await;
        match outcome {
            Ok(reply) => Ok(reply),
            Err(TurnFailure {
                error,
                instance_lost,
            }) => {
                self.after_failed_keyed_turn(&error).await;
                if instance_lost {
                    self.live = None;
                }
                Err(error)
            }
        }
    }

    async fn call_guest(
        &mut self,
        hook: Hook,
        incoming_chain: &CallChain,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, TurnFailure> {
        let live = self.live.as_mut().expect("a turn runs on a live instance");
        let data = live.store.data_mut();
        data.incoming_chain = incoming_chain.clone();
        data.turn_deadline = deadline;
        data.callee_unknown_message = None;
        data.calls_made = 0;
        data.sends.clear();
        (data.turn_key, data.turn_intent) = match &hook {
            Hook::Handle {
                message_type,
                payload,
                idempotency_key: Some(key),
            } => {
                let intent = Intent {
                    key: key.clone(),
                    message_type: message_type.clone(),
                    payload: payload.clone(),
                };
                (Some(key.clone()), Some(intent))
            }
            Hook::Handle { .. } | Hook::Activate | Hook::Deactivate => (None, None),
        };
        data.stderr.clear_recent();

        let object_id = &*self.key.object_id;
        let (export, message_type) = match &hook {
            Hook::Handle {
                message_type,
                payload,
                ..
            } => (
                Export::Handle {
                    message_type,
                    payload,
                },
                Some(message_type.as_str()),
            ),
            Hook::Activate => (Export::OnActivate, None),
            Hook::Deactivate => (Export::OnDeactivate, None),
        };
        let call = live.handler.call(&mut live.store, object_id, export);
        // The wall-clock bound: a guest waiting in WASI or on a call is
        // stopped here; one running code is stopped by the epoch callback.
        let called = match within(deadline, call).await {
            Some(called) => called,
            None => {
                return Err(TurnFailure {
                    error: self.timed_out(),
                    instance_lost: true,
                });
            }
        };
        match called {
            Ok(Ok(Some(reply))) if reply.len() > self.router.config.limits.payload_bytes => {
                let live = self.live.as_mut().expect("still live");
                let data = live.store.data_mut();
                data.state.discard_pending();
                data.sends.clear();
                let limit = self.router.config.limits.payload_bytes;
                let cause = format!(
                    "was stopped: its reply of {} bytes is over the silo's limit `payload-bytes` of {limit} bytes; the turn's writes were discarded",
                    reply.len()
                );
                tracing::warn!(object = %self.key, %cause, "reply refused");
                Err(TurnFailure {
                    error: ReplyError::Trap(format!("{} {cause}", self.key)),
                    instance_lost: false,
                })
            }
            Ok(Ok(reply)) => {
                let keyed_reply = match (&hook, &reply) {
                    (
                        Hook::Handle {
                            idempotency_key: Some(key),
                            ..
                        },
                        Some(reply),
                    ) => Some((key.clone(), reply.clone())),
                    _ => None,
                };
                let is_handler = matches!(hook, Hook::Handle { .. });
                self.commit(keyed_reply, is_handler).await?;
                Ok(reply)
            }
            Ok(Err((kind, message))) => {
                let live = self.live.as_mut().expect("still live");
                let data = live.store.data_mut();
                data.state.discard_pending();
                data.sends.clear();
                let callee_unknown_message = data.callee_unknown_message.take();
                Err(TurnFailure {
                    error: self.guest_error(kind, message, message_type, callee_unknown_message),
                    instance_lost: false,
                })
            }
            Err(error) => {
                let panic = self
                    .live
                    .as_ref()
                    .and_then(|live| live.store.data().stderr.panic_message());
                Err(TurnFailure {
                    error: classify_trap(&self.key, error, panic),
                    instance_lost: true,
                })
            }
        }
    }

    fn timed_out(&self) -> ReplyError {
        tracing::warn!(object = %self.key, "turn stopped at its deadline");
        ReplyError::Timeout(format!(
            "{} ran past its deadline and was stopped; its writes were discarded",
            self.key
        ))
    }

    /// What the caller sees of the guest's own error. `unknown-message` is the
    /// object's own unless it is, word for word, what a callee answered.
    fn guest_error(
        &self,
        kind: String,
        message: String,
        message_type: Option<&str>,
        callee_unknown_message: Option<ReplyError>,
    ) -> ReplyError {
        let (kind, message) = (cut(kind), cut(message));
        if kind != "unknown-message" {
            return ReplyError::Guest { kind, message };
        }
        match (callee_unknown_message, message_type) {
            (Some(callee), _) if callee.to_string() == message => callee,
            (_, Some(message_type)) => ReplyError::UnknownMessage {
                service_type: self.key.service_type.to_string(),
                message_type: message_type.to_string(),
            },
            (_, None) => ReplyError::Guest { kind, message },
        }
    }

    /// Makes the turn's writes durable. On failure the instance is dropped:
    /// its guest-side memory may assume writes that never happened. The
    /// store accepts the writes only from the object's owner (fencing).
    /// A turn run under an idempotency key commits its reply with its
    /// writes, even when it wrote nothing. A handler's commit deletes a
    /// stored intent: no handler runs while another's is unfinished, so it
    /// is this turn's own (or one that cannot be read).
    async fn commit(
        &mut self,
        keyed_reply: Option<(Arc<str>, Vec<u8>)>,
        is_handler: bool,
    ) -> Result<(), TurnFailure> {
        let live = self.live.as_mut().expect("still live");
        let data = live.store.data_mut();
        let clears_intent = is_handler && data.intent_stored.is_some();
        if !data.state.has_pending()
            && keyed_reply.is_none()
            && data.sends.is_empty()
            && !clears_intent
        {
            return Ok(());
        }
        let now_ms = crate::cluster::now_ms();
        let sends = std::mem::take(&mut data.sends);
        // The seqs go on from the stored outbox's; opening it also starts
        // delivering what it still holds.
        if !sends.is_empty()
            && let Err(error) = self.open_outbox().await
        {
            return Err(TurnFailure {
                error,
                instance_lost: true,
            });
        }
        let outbox = match &self.outbox {
            Some(outbox) if !sends.is_empty() => outbox.number(sends, now_ms),
            _ => Vec::new(),
        };
        let live = self.live.as_mut().expect("still live");
        let data = live.store.data_mut();
        let mut writes = data.state.pending_writes();
        if clears_intent {
            writes.push((INTENT_KEY.to_string(), None));
        }
        let marks_sender = !outbox.is_empty() && !self.has_sent;
        if marks_sender {
            writes.push((HAS_SENT_KEY.to_string(), Some(Vec::new())));
        }
        let commit = Commit {
            writes,
            reply: keyed_reply.map(|(key, reply)| ReplyRecord {
                key: key.to_string(),
                reply,
                stored_at_ms: now_ms,
            }),
            outbox,
        };
        self.commit_as_owner(commit)
            .await
            .map_err(|error| TurnFailure {
                error,
                instance_lost: true,
            })?;
        let live = self.live.as_mut().expect("still live");
        let data = live.store.data_mut();
        data.state.apply_pending();
        if clears_intent {
            data.intent_stored = None;
        }
        self.has_sent |= marks_sender;
        Ok(())
    }

    /// Stores `commit` if this silo owns the object (the store refuses a
    /// commit from any other: fencing), then remembers its reply and hands
    /// its messages to the outbox. A refusal means the object moved: this
    /// activation retires and stops delivering.
    async fn commit_as_owner(&mut self, commit: Commit) -> Result<(), ReplyError> {
        let sent = commit.outbox.clone();
        let keyed_reply = commit
            .reply
            .as_ref()
            .map(|record| (Arc::<str>::from(record.key.as_str()), record.reply.clone()));
        let owner = self.router.commit_owner()?;
        let result = self
            .router
            .state_store
            .commit_turn(&self.key, commit, &owner)
            .await;
        match result {
            Ok(()) => {
                if let Some((key, reply)) = keyed_reply {
                    self.recent_replies.insert(key, reply);
                }
                if let Some(outbox) = &mut self.outbox {
                    outbox.committed(sent);
                }
                Ok(())
            }
            Err(StorageError::Fenced { .. }) => {
                self.moved_away = true;
                if let Some(outbox) = &self.outbox {
                    outbox.stop();
                }
                tracing::warn!(object = %self.key, "commit refused: the object moved to another silo; turn discarded");
                Err(ReplyError::Unavailable(format!(
                    "{} moved to another silo; the turn's writes were discarded",
                    self.key
                )))
            }
            Err(error) => {
                tracing::error!(object = %self.key, %error, "commit failed; turn discarded");
                // The commit may have been stored after all (its answer
                // was lost): the outbox is loaded again with the next
                // instance, so no seq is handed out twice.
                self.outbox = None;
                let message = format!("cannot commit the state of {}: {error}", self.key);
                Err(ReplyError::Internal(message))
            }
        }
    }

    /// Runs `on-deactivate` and commits, then drops the instance.
    async fn deactivate_instance(&mut self) {
        if self.live.is_none() {
            return;
        }
        if self.router.evicted.load(Ordering::Relaxed) {
            // Declared dead: another silo may own the object by now, so
            // this one writes nothing more.
            self.live = None;
            return;
        }
        let deadline = Instant::now() + self.router.config.turn_deadline;
        if let Err(error) = self
            .turn(Hook::Deactivate, &self.router.empty_chain(), deadline)
            .await
        {
            tracing::warn!(object = %self.key, %error, "on-deactivate failed");
        }
        self.live = None;
        self.router
            .counters
            .deactivations_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Serves what was queued before the mailbox closed, deactivates, frees
    /// the slot and sends on the messages that came meanwhile, in order
    /// (they activate the object again, here or where it is placed next).
    async fn retire(mut self) {
        while let Ok(envelope) = self.mailbox.try_recv() {
            if self.moved_away {
                // Its slot is `Deactivating`: the message waits there and
                // is sent on, in order, to wherever the object is now.
                self.router.dispatch(self.key.clone(), *envelope);
            } else {
                self.handle(*envelope).await;
            }
        }
        self.deactivate_instance().await;
        // Committed first, released second: whoever activates the object
        // next loads the final state.
        if let Some(cluster) = &self.router.cluster {
            cluster.release(&self.key).await;
        }
        for envelope in self.router.directory.finish_deactivation(&self.key) {
            self.router.dispatch(self.key.clone(), envelope);
        }
    }
}

/// Runs `future` until `deadline`, `None` if it had not finished by then.
/// Like `tokio::time::timeout_at`, except that a future done at its first
/// poll (most turns: the guest runs to the end without waiting) never
/// registers a timer, which would cost every turn a timer-wheel update.
async fn within<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|context| Poll::Ready(future.as_mut().poll(context))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout_at(deadline, future).await.ok(),
    }
}

/// `overloaded` refusals at instantiation, logged as a periodic summary:
/// at capacity every new activation is refused, and one line each would
/// flood the log.
static OVERLOADED_LOG: LogSummary = LogSummary::new();

/// The longest cause a caller gets: one line, without a backtrace.
const MAX_CAUSE_CHARS: usize = 600;

/// An instantiation fails either in the guest (its start code trapped) or in
/// the host (no memory or address space for one more instance); the latter
/// is the silo being full, not the guest crashing.
fn classify_instantiation_error(
    key: &ObjectKey,
    error: wasmtime::Error,
    panic: Option<String>,
) -> ReplyError {
    let guest_fault = error.downcast_ref::<wasmtime::Trap>().is_some()
        || error.downcast_ref::<DeadlineExceeded>().is_some()
        || error.downcast_ref::<MemoryLimitExceeded>().is_some()
        || error.downcast_ref::<wasmtime_wasi::I32Exit>().is_some();
    if guest_fault {
        return classify_trap(key, error, panic);
    }
    let cause = one_line(&format!("{error:#}"));
    if let Some(refused) = OVERLOADED_LOG.note() {
        tracing::error!(object = %key, %cause, refused, "cannot instantiate; the silo is out of resources (refusals counted since the last such line)");
    }
    ReplyError::Overloaded(format!(
        "the silo cannot instantiate {key}: {cause} (out of memory, or of memory mappings: see vm.max_map_count)"
    ))
}

/// Turns a wasmtime error out of a guest call into what the caller sees:
/// one line with the cause, never the wasm backtrace (that goes to the
/// debug log). `panic` is the panic message the guest printed in the turn.
fn classify_trap(key: &ObjectKey, error: wasmtime::Error, panic: Option<String>) -> ReplyError {
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        tracing::warn!(object = %key, "turn stopped at its deadline");
        return ReplyError::Timeout(format!(
            "{key} ran past its deadline and was stopped; its writes were discarded"
        ));
    }
    let cause = one_line(&trap_cause(&error, panic));
    tracing::warn!(object = %key, %cause, "guest trapped");
    tracing::debug!(object = %key, error = format!("{error:?}"), "trap details");
    ReplyError::Trap(format!("{key} {cause}"))
}

fn trap_cause(error: &wasmtime::Error, panic: Option<String>) -> String {
    if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
        return format!("was stopped: {exceeded}; the turn's writes were discarded");
    }
    if let Some(exceeded) = error.downcast_ref::<MemoryLimitExceeded>() {
        return format!(
            "exceeded its memory limit of {} bytes",
            exceeded.limit_bytes
        );
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("exited with status {}", exit.0);
    }
    // Wasmtime words a trap "wasm trap: call stack exhausted".
    let trap_words = |trap: &wasmtime::Trap| {
        let text = trap.to_string();
        text.strip_prefix("wasm trap: ")
            .unwrap_or(&text)
            .to_string()
    };
    match (error.downcast_ref::<wasmtime::Trap>(), panic) {
        // "call stack exhausted" says more than the panic it may have caused.
        (Some(trap @ wasmtime::Trap::StackOverflow), _) => format!("trapped: {}", trap_words(trap)),
        (_, Some(panic)) => format!("trapped: {panic}"),
        (Some(trap), None) => format!("trapped: {}", trap_words(trap)),
        // A host function failed the call (not a wasm trap): its own words.
        (None, None) => format!("failed: {}", error.root_cause()),
    }
}

/// The most of a guest's error kind or message a caller gets: with the
/// rest of the reply it stays within `REPLY_FRAME_OVERHEAD_BYTES`.
const MAX_GUEST_ERROR_BYTES: usize = 16 * 1024;

/// `text` cut to [`MAX_GUEST_ERROR_BYTES`] at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_GUEST_ERROR_BYTES {
        let mut end = MAX_GUEST_ERROR_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `text` on one line (control characters as spaces), at most
/// `MAX_CAUSE_CHARS` long.
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CAUSE_CHARS)
        .collect();
    if text.chars().count() > MAX_CAUSE_CHARS {
        line.push('…');
    }
    line
}
