//! What the silo provides to guests: the per-activation store data and one
//! file per WIT interface (`state`, `messaging`, `log`, `identity`), plus
//! the WASI sandbox and where guest stdout/stderr go.

use std::sync::Arc;

use rio_protocol::ReplyError;
use tokio::time::Instant;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::ObjectKey;
use crate::mailbox::CallChain;
use crate::router::Router;

mod identity;
mod log;
mod messaging;
pub(crate) mod state;
mod stdio;

pub(crate) use state::ObjectState;
pub(crate) use stdio::GuestOutput;

/// Everything one activation's `Store` carries.
pub(crate) struct ActivationData {
    pub(crate) key: ObjectKey,
    pub(crate) router: Arc<Router>,
    pub(crate) state: ObjectState,
    pub(crate) memory: MemoryBudget,
    /// The call chain of the message this turn handles; outgoing calls carry
    /// it with this object appended (built only when a guest does call).
    pub(crate) incoming_chain: CallChain,
    /// When the current turn (or hook) must have ended, in wall time: its
    /// guest code, WASI waits and calls all count.
    pub(crate) turn_deadline: Instant,
    /// A callee's `unknown-message` handed to the guest in this turn. If the
    /// guest returns it unchanged, the caller learns it was the callee's
    /// message that was unknown, not this object's.
    pub(crate) callee_unknown_message: Option<ReplyError>,
    /// The guest's stderr, whose last lines of a turn explain a trap.
    pub(crate) stderr: GuestOutput,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl ActivationData {
    pub(crate) fn new(key: ObjectKey, router: Arc<Router>, state: ObjectState) -> ActivationData {
        let memory = MemoryBudget {
            limit_bytes: router.config.memory_limit_bytes,
        };
        // No preopened directories, no environment, no arguments (the
        // builder's defaults), and no network, said explicitly rather than
        // left to a default. Only stdout and stderr are wired, to tracing.
        let stderr = GuestOutput::new(&key, "stderr");
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestOutput::new(&key, "stdout"))
            .stderr(stderr.clone())
            .build();
        let incoming_chain = router.empty_chain();
        ActivationData {
            key,
            router,
            state,
            memory,
            incoming_chain,
            turn_deadline: Instant::now(),
            callee_unknown_message: None,
            stderr,
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
    crate::bindings::add_to_linker(&mut linker)?;
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
