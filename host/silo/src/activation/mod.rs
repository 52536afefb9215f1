//! One object's activation: a task that owns the object's mailbox and, while
//! the object is live, its wasm instance; it runs one turn at a time.
//!
//! ```text
//!   mailbox ──► [ activate? ] ──► turn ──► commit ──► reply
//!                   ▲                │ trap / timeout: drop the instance,
//!                   └────────────────┘ next message activates afresh
//!   idle timeout, silo stop or the guest's `deactivate`
//!                ──► on-deactivate ──► commit ──► slot freed
//!   timer due ──► tick: a turn like a message's, between messages
//! ```
//!
//! Invariant: a turn's state writes reach the store before its reply leaves;
//! a turn that errs, traps or times out leaves the store untouched. The
//! messages a turn sends one way are committed with its writes and only
//! then handed to the activation's outbox for delivery; an activation with
//! undelivered messages does not retire for idleness.
//!
//! The activation sees the silo only through its [`Context`] and its
//! [`Links`] (the router as `Dispatch` and `Messenger`), so it depends on
//! nothing above it. Its files follow its seams: this one the lifecycle
//! (activate, the idle timer, deactivate, retire), `system` how a message
//! is taken, `turn` a turn and its commit, `keyed` keyed and interrupted
//! turns, `ticks` timers' ticks, `traps` what a failure is called.

mod context;
pub(crate) mod directory;
mod keyed;
mod system;
#[cfg(test)]
mod tests;
mod ticks;
#[cfg(test)]
mod timer_tests;
mod traps;
mod turn;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rio_protocol::ReplyError;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};

pub(crate) use self::context::{Context, Links};
use self::directory::ActivationHandle;
use self::traps::classify_instantiation_error;
use self::turn::within;
use crate::base::ObjectKey;
use crate::base::clock::Sleep;
use crate::base::reserved::{HAS_SENT_KEY, INTENT_KEY};
use crate::effects::idempotency::RecentReplies;
use crate::effects::outbox::Outbox;
use crate::effects::resume::Interrupted;
use crate::host::bindings::Handler;
use crate::host::{ActivationData, DeadlineExceeded, INLINE_VALUE_BYTES, ObjectState};
use crate::message::{Envelope, MailboxReceiver, empty_chain};
use crate::observe::Counters;
use crate::runtime::deployments::DeployedType;

/// Starts the activation of `key`, which owns `mailbox` from now on.
pub(crate) fn spawn(
    ctx: &Arc<Context>,
    links: Links,
    key: ObjectKey,
    deployed: Arc<DeployedType>,
    mailbox: MailboxReceiver,
    handle: Arc<ActivationHandle>,
) {
    let activation = Activation {
        ctx: ctx.clone(),
        links,
        key,
        deployed,
        live: None,
        mailbox,
        handle,
        moved_away: false,
        recent_replies: RecentReplies::new(ctx.effects.reply_memory.clone()),
        outbox: None,
        has_sent: false,
        published_seq: 0,
        interrupted: None,
        rerunning: false,
        deactivate_requested: false,
    };
    ctx.effects.tasks.spawn(activation.run());
}

struct Activation {
    ctx: Arc<Context>,
    links: Links,
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
    /// The sequence number of the last event the object published, as its
    /// state holds it (loaded at activation).
    published_seq: u64,
    /// A keyed turn that called out and did not commit: it runs again
    /// before any other turn (see `resume`).
    interrupted: Option<Interrupted>,
    /// The turn running is such a turn, run again.
    rerunning: bool,
    /// A committed turn asked that the object be deactivated: it retires
    /// after that turn, and what waits in its mailbox goes to the next
    /// activation.
    deactivate_requested: bool,
}

struct LiveInstance {
    store: Store<ActivationData>,
    handler: Handler,
    _counted: Counted,
}

/// Counts one live instance in `Counters::live_instances` while it exists,
/// whichever way the instance goes.
struct Counted(Arc<Counters>);

impl Counted {
    fn new(counters: &Arc<Counters>) -> Counted {
        counters.live_instances.fetch_add(1, Ordering::Relaxed);
        Counted(counters.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.live_instances.fetch_sub(1, Ordering::Relaxed);
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
    /// One of the instance's timers is due.
    Tick,
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
        let idle_timeout = self.ctx.config.idle_timeout;
        let mut stopping = self.ctx.effects.stopping.clone();
        // One timer at a time, made anew only when it fires: re-arming it
        // on every message would cost a timer-wheel update per turn.
        let clock = self.ctx.clock.clone();
        let mut last_message = clock.now();
        let mut idle_timer = clock.sleep_until(last_message + idle_timeout);
        // The sleep until the next tick, made anew only when that changes.
        let mut next_tick: Option<(Instant, Sleep)> = None;
        loop {
            let due = self.next_tick_due();
            if next_tick.as_ref().map(|(at, _)| *at) != due {
                next_tick = due.map(|at| (at, clock.sleep_until(at)));
            }
            let event = tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => Event::Stop,
                // Before the mailbox, so a busy object still ticks; a tick
                // never comes due at once again, so messages go on too.
                _ = until_due(&mut next_tick) => Event::Tick,
                received = self.mailbox.recv() => Event::Received(received),
                _ = self.handle.evicted() => Event::Evicted,
                _ = &mut idle_timer => Event::TimerFired,
            };
            match event {
                Event::Stop => break,
                Event::Received(Some(envelope)) => {
                    last_message = clock.now();
                    self.handle.set_busy(true);
                    self.handle(*envelope).await;
                    self.handle.set_busy(false);
                    if self.moved_away || self.deactivate_requested {
                        break;
                    }
                }
                Event::Tick => {
                    next_tick = None;
                    let now = clock.now();
                    if let Some(tick) = self.take_due_tick(now) {
                        if tick.keep_active {
                            last_message = now;
                        }
                        self.handle.set_busy(true);
                        self.tick(tick).await;
                        self.handle.set_busy(false);
                        if self.moved_away || self.deactivate_requested {
                            break;
                        }
                    }
                }
                Event::Evicted => {
                    let delivering = self
                        .outbox
                        .as_ref()
                        .is_some_and(|outbox| !outbox.is_drained());
                    if !delivering
                        && self
                            .ctx
                            .directory
                            .retire_if_idle(&self.key, &mut self.mailbox)
                    {
                        return self.retire().await;
                    }
                    self.ctx.directory.keep(&self.handle);
                }
                // Only this task removes the slot holding the sender.
                Event::Received(None) => break,
                Event::TimerFired => {
                    let now = clock.now();
                    let idle_until = last_message + idle_timeout;
                    let delivering = self
                        .outbox
                        .as_ref()
                        .is_some_and(|outbox| !outbox.is_drained());
                    if now >= idle_until
                        && !delivering
                        && self
                            .ctx
                            .directory
                            .retire_if_idle(&self.key, &mut self.mailbox)
                    {
                        return self.retire().await;
                    }
                    idle_timer = clock.sleep_until(idle_until.max(now + idle_timeout / 8));
                }
            }
        }
        self.ctx
            .directory
            .start_deactivating(&self.key, &mut self.mailbox);
        self.retire().await;
    }

    /// Instantiates the component, loads the object's state and runs `on-activate`.
    async fn activate(&mut self) -> Result<(), ReplyError> {
        let started = Instant::now();
        let store = self.ctx.effects.store().clone();
        let entries = store
            .load_keys(&self.key, INLINE_VALUE_BYTES)
            .await
            .map_err(|e| {
                ReplyError::Internal(format!("cannot load the state of {}: {e}", self.key))
            })?;
        let limits = &self.ctx.config.limits;
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
        self.published_seq = state
            .take_reserved(crate::events::SEQ_KEY)
            .await
            .map_err(reserved_error.clone())?
            .map_or(0, |bytes| crate::events::decode_seq(&bytes));
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
            self.links.messenger.clone(),
            state,
            self.ctx.config.memory_limit_bytes,
            &self.ctx.config.limits,
            empty_chain(),
        );
        data.reminder_store = Some(self.ctx.effects.store().clone());
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
            if Instant::now() >= context.data().turn.deadline {
                return Err(wasmtime::Error::new(DeadlineExceeded));
            }
            // Yielding lets a long turn share its worker thread with others.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let deadline = Instant::now() + self.ctx.config.turn_deadline;
        store.data_mut().turn.deadline = deadline;
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
            _counted: Counted::new(&self.ctx.counters),
        });
        let deadline = Instant::now() + self.ctx.config.turn_deadline;
        if let Err(failure) = self.turn(Hook::Activate, &empty_chain(), deadline).await {
            self.live = None;
            return Err(failure);
        }
        let counters = &self.ctx.counters;
        counters.activations_total.fetch_add(1, Ordering::Relaxed);
        counters
            .activation_nanos_total
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `on-deactivate` and commits, then drops the instance.
    async fn deactivate_instance(&mut self) {
        if self.live.is_none() {
            return;
        }
        if self.ctx.effects.committer.is_evicted() {
            // Declared dead: another silo may own the object by now, so
            // this one writes nothing more.
            self.live = None;
            return;
        }
        let deadline = Instant::now() + self.ctx.config.turn_deadline;
        if let Err(error) = self.turn(Hook::Deactivate, &empty_chain(), deadline).await {
            tracing::warn!(object = %self.key, %error, "on-deactivate failed");
        }
        self.live = None;
        self.ctx
            .counters
            .deactivations_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Serves what was queued before the mailbox closed, deactivates, frees
    /// the slot and sends on the messages that came meanwhile, in order
    /// (they activate the object again, here or where it is placed next).
    async fn retire(mut self) {
        while let Ok(envelope) = self.mailbox.try_recv() {
            if self.moved_away || self.deactivate_requested {
                // Its slot is `Deactivating`: the message waits there and
                // is sent on, in order, to wherever the object is now (or
                // to its next activation, after a `deactivate`).
                self.links.dispatch.dispatch(self.key.clone(), *envelope);
            } else {
                self.handle(*envelope).await;
            }
        }
        self.deactivate_instance().await;
        // Committed first, released second: whoever activates the object
        // next loads the final state.
        if let Some(cluster) = &self.ctx.cluster {
            cluster.release(&self.key).await;
        }
        for envelope in self.ctx.directory.finish_deactivation(&self.key) {
            self.links.dispatch.dispatch(self.key.clone(), envelope);
        }
    }
}

/// Resolves when `next_tick` is due; never if no timer waits.
async fn until_due(next_tick: &mut Option<(Instant, Sleep)>) {
    match next_tick {
        Some((_, sleep)) => sleep.await,
        None => std::future::pending().await,
    }
}
