//! What the caller of a turn that trapped, timed out or could not be
//! instantiated hears: one line with the cause, never a wasm backtrace.

use rio_protocol::ReplyError;

use crate::base::ObjectKey;
use crate::base::limits::LimitExceeded;
use crate::base::log_summary::LogSummary;
use crate::base::text;
use crate::host::{DeadlineExceeded, MemoryLimitExceeded};

/// `overloaded` refusals at instantiation, logged as a periodic summary:
/// at capacity every new activation is refused, and one line each would
/// flood the log.
static OVERLOADED_LOG: LogSummary = LogSummary::new();

/// The longest cause a caller gets: one line, without a backtrace.
const MAX_CAUSE_CHARS: usize = 600;

/// An instantiation fails either in the guest (its start code trapped) or in
/// the host (no memory or address space for one more instance); the latter
/// is the silo being full, not the guest crashing.
pub(super) fn classify_instantiation_error(
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
pub(super) fn classify_trap(
    key: &ObjectKey,
    error: wasmtime::Error,
    panic: Option<String>,
) -> ReplyError {
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
pub(super) fn cut(text: String) -> String {
    text::cut(text, MAX_GUEST_ERROR_BYTES)
}

/// `text` on one line, at most [`MAX_CAUSE_CHARS`] long.
fn one_line(text: &str) -> String {
    text::one_line(text, MAX_CAUSE_CHARS)
}
