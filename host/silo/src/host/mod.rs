//! What the silo provides to guests: the per-activation store data and one
//! file per WIT interface (`state`, `messaging`, `log`, `identity`,
//! `timers`, `reminders`, `events`, `lifecycle`), plus
//! the WASI sandbox and where guest stdout/stderr go.

use std::pin::Pin;
use std::sync::Arc;

use rio_protocol::ReplyError;
use tokio::time::Instant;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::base::{Limits, ObjectKey};
use crate::deadlock::{Deadlock, WaitEdge};
use crate::effects::resume::Intent;
use crate::message::{CallChain, PendingSend};
use crate::storage::{ReminderChange, StateStore};
use crate::time::reminders::Fire;
use crate::time::timers::{PendingTimers, Timers};

pub(crate) mod bindings;
mod events;
mod identity;
mod lifecycle;
pub(crate) mod log;
mod messaging;
mod reminders;
pub(crate) mod state;
mod stdio;
mod timers;

pub(crate) use state::{INLINE_VALUE_BYTES, ObjectState};
pub(crate) use stdio::GuestOutput;

/// What the host imports need of the rest of the silo: sending a call from
/// a turn, and recording the turn's wait. They see nothing else of it (the
/// router implements this), so host code cannot reach into placement,
/// storage or the directory.
pub(crate) trait Messenger: Send + Sync + 'static {
    /// Records that `caller`'s turn (a rerun of an interrupted keyed turn
    /// if `rerun`) waits on `callee`, unless that closes a cycle of waits
    /// in which this wait is the one to refuse.
    fn wait(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        rerun: bool,
    ) -> Result<WaitEdge, Deadlock>;

    /// Sends a message from a turn and waits for its reply until its
    /// deadline. `wait` is the turn's wait on it, if recorded.
    fn call<'a>(
        self: Arc<Self>,
        call: TurnCall,
        wait: Option<&'a WaitEdge>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, ReplyError>> + Send + 'a>>;

    /// Stores `object`'s keyed turn (an encoded `resume::Intent`) before
    /// its first call, fenced like a commit.
    fn record_intent(
        self: Arc<Self>,
        object: ObjectKey,
        intent: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReplyError>> + Send>>;
}

/// A message a turn sends to another object.
pub(crate) struct TurnCall {
    pub(crate) callee: ObjectKey,
    pub(crate) message_type: String,
    pub(crate) payload: Vec<u8>,
    /// The objects whose turns wait on it, the caller last.
    pub(crate) call_chain: CallChain,
    /// The calling turn's deadline, which the callee inherits.
    pub(crate) deadline: Instant,
    /// Derived from the calling turn's key, if it has one.
    pub(crate) idempotency_key: Option<Arc<str>>,
    /// The calling turn is the rerun of an interrupted keyed turn.
    pub(crate) from_rerun: bool,
}

/// What one turn (or hook) carries while it runs: made anew when it
/// starts, so nothing of one turn leaks into the next.
pub(crate) struct TurnScope {
    /// The call chain of the message this turn handles; outgoing calls carry
    /// it with this object appended (built only when a guest does call).
    pub(crate) incoming_chain: CallChain,
    /// When the turn must have ended, in wall time: its guest code, WASI
    /// waits and calls all count.
    pub(crate) deadline: Instant,
    /// A callee's `unknown-message` handed to the guest in this turn. If the
    /// guest returns it unchanged, the caller learns it was the callee's
    /// message that was unknown, not this object's.
    pub(crate) callee_unknown_message: Option<ReplyError>,
    /// The idempotency key the turn runs under, if any: each call it makes
    /// carries a key derived from it and the call's position.
    pub(crate) key: Option<Arc<str>>,
    /// Calls the turn has made so far (the next call's position).
    pub(crate) calls_made: u32,
    /// Whether any call of the turn may have run at its callee (one whose
    /// answer is not a refusal that ran nothing, or that is still out).
    pub(crate) calls_may_have_run: bool,
    /// The turn's request, if it runs under an idempotency key: stored
    /// before its first call (see `effects::resume`).
    pub(crate) intent: Option<Intent>,
    /// Messages the turn sent one way: committed with its writes,
    /// discarded with them.
    pub(crate) sends: Vec<PendingSend>,
    /// The turn reruns an interrupted keyed turn (its calls say so).
    pub(crate) rerun: bool,
    /// Timers the turn set or cancelled: applied when it commits.
    pub(crate) timers: PendingTimers,
    /// The turn asked that its object be deactivated once it commits.
    pub(crate) deactivate: bool,
    /// Reminder changes the turn made, in order: committed with its writes.
    pub(crate) reminders: Vec<ReminderChange>,
    /// The reminder fire the turn handles (read from its key), if any.
    pub(crate) fired: Option<Fire>,
    /// Events the turn published, in order: they leave when it commits.
    pub(crate) published: Vec<crate::events::Pending>,
    /// Subscription changes the turn made, in order: committed with its
    /// writes.
    pub(crate) subscriptions: Vec<crate::storage::SubscriptionChange>,
}

impl TurnScope {
    /// A turn handling a message of `incoming_chain`, until `deadline`; a
    /// keyed turn has its `intent`, whose key it runs under.
    pub(crate) fn new(
        incoming_chain: CallChain,
        deadline: Instant,
        intent: Option<Intent>,
    ) -> TurnScope {
        let fired = intent.as_ref().and_then(|intent| Fire::of_key(&intent.key));
        TurnScope {
            incoming_chain,
            deadline,
            callee_unknown_message: None,
            key: intent.as_ref().map(|intent| intent.key.clone()),
            calls_made: 0,
            calls_may_have_run: false,
            intent,
            sends: Vec::new(),
            rerun: false,
            timers: PendingTimers::default(),
            deactivate: false,
            reminders: Vec::new(),
            fired,
            published: Vec::new(),
            subscriptions: Vec::new(),
        }
    }
}

/// Everything one activation's `Store` carries.
pub(crate) struct ActivationData {
    pub(crate) key: ObjectKey,
    pub(crate) messenger: Arc<dyn Messenger>,
    pub(crate) state: ObjectState,
    pub(crate) memory: MemoryBudget,
    /// What the turn running now carries, made fresh for each turn.
    pub(crate) turn: TurnScope,
    /// The key of the intent the store holds for this object (loaded with
    /// its state, or stored by a turn's first call), until a commit
    /// deletes it.
    pub(crate) intent_stored: Option<Arc<str>>,
    /// The silo's limits on calls and logs (state limits live in `state`).
    pub(crate) limits: Limits,
    /// How many more log lines this activation may write this second.
    pub(crate) log: Arc<log::GuestLog>,
    /// The guest's stderr, whose last lines of a turn explain a trap.
    pub(crate) stderr: GuestOutput,
    /// The instance's timers: they live and end with it.
    pub(crate) timers: Timers,
    /// Where `reminders.get-all` reads from; `None` lists nothing (a test's
    /// instance without a store).
    pub(crate) reminder_store: Option<Arc<dyn StateStore>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl ActivationData {
    /// `empty_chain` is the silo's shared empty call chain, what a turn with
    /// no waiting caller carries.
    pub(crate) fn new(
        key: ObjectKey,
        messenger: Arc<dyn Messenger>,
        state: ObjectState,
        memory_limit_bytes: usize,
        limits: &Limits,
        empty_chain: CallChain,
    ) -> ActivationData {
        let memory = MemoryBudget {
            limit_bytes: memory_limit_bytes,
        };
        // No preopened directories, no environment, no arguments (the
        // builder's defaults), and no network, said explicitly rather than
        // left to a default. Only stdout and stderr are wired, to tracing.
        let log = Arc::new(log::GuestLog::new(&key, limits));
        let stderr = GuestOutput::new(log.clone(), "stderr");
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(log.clone(), "stdout"))
            .stderr(stderr.clone())
            .build();
        ActivationData {
            key,
            messenger,
            state,
            memory,
            turn: TurnScope::new(empty_chain, Instant::now(), None),
            intent_stored: None,
            limits: limits.clone(),
            log,
            stderr,
            timers: Timers::default(),
            reminder_store: None,
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for ActivationData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A linker with WASI 0.2 and every rio interface.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<ActivationData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    self::bindings::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The guest grew its memory past the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit_bytes} bytes exceeded (asked for {desired_bytes})")]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) limit_bytes: usize,
    pub(crate) desired_bytes: usize,
}

/// The guest's code was still running at its turn's deadline.
#[derive(Debug, thiserror::Error)]
#[error("turn deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// Caps linear memory per activation; growing past it traps the instance
/// (rather than returning -1 to the guest, which most guests turn into an
/// abort with a less clear message).
pub(crate) struct MemoryBudget {
    limit_bytes: usize,
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit_bytes: self.limit_bytes,
                desired_bytes: desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real guest.
        Ok(desired <= 1_000_000)
    }
}
