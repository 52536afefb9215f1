//! `rio:service/log`, and [`GuestLog`], through which every line a guest
//! writes reaches the silo log, by the `log` import or on stdout or stderr:
//! each becomes one `tracing` event tagged with the object's type and id;
//! control characters (newlines included) are escaped, so a guest cannot
//! forge a silo line; long lines are cut; lines past the activation's one
//! rate, shared by every stream, are dropped and counted, and the count is
//! logged with the next line let through.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ActivationData;
use super::bindings::log::{Host, Level};
use crate::base::{Limits, ObjectKey};

/// One activation's way into the silo log, shared by its `log` import and
/// its stdout and stderr, so that together they stay within its limits.
pub(crate) struct GuestLog {
    key: ObjectKey,
    line_bytes: usize,
    per_second: usize,
    budget: Mutex<LogBudget>,
}

impl GuestLog {
    pub(crate) fn new(key: &ObjectKey, limits: &Limits) -> GuestLog {
        GuestLog {
            key: key.clone(),
            line_bytes: limits.log_line_bytes,
            per_second: limits.log_lines_per_second,
            budget: Mutex::new(LogBudget::new(limits.log_lines_per_second)),
        }
    }

    /// Logs one line of the guest's at `level`; `stream` names stdout or
    /// stderr (none for the `log` import). Dropped if over the rate.
    pub(crate) fn write(&self, level: Level, stream: Option<&'static str>, message: &str) {
        let taken = self
            .budget
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(Instant::now());
        let Some(dropped) = taken else {
            return;
        };
        let service_type = &*self.key.service_type;
        let object_id = &*self.key.object_id;
        if dropped > 0 {
            tracing::warn!(
                target: "rio::guest",
                service_type,
                object_id,
                dropped,
                "log lines dropped: over the limit `log-lines-per-second` of {}",
                self.per_second
            );
        }
        let message = one_line(message, self.line_bytes);
        if let Some(stream) = stream {
            return tracing::info!(target: "rio::guest", service_type, object_id, stream, "{message}");
        }
        match level {
            Level::Trace => {
                tracing::trace!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "rio::guest", service_type, object_id, "{message}")
            }
        }
    }
}

/// A per-activation allowance of log lines: `per_second` lines each second
/// (a fixed window, enough to stop a flood and cheap to keep).
pub(crate) struct LogBudget {
    per_second: usize,
    window_start: Option<Instant>,
    used: usize,
    dropped: u64,
}

impl LogBudget {
    pub(crate) fn new(per_second: usize) -> LogBudget {
        LogBudget {
            per_second,
            window_start: None,
            used: 0,
            dropped: 0,
        }
    }

    /// Whether one more line may go out now; when it may, also how many
    /// were dropped since the last one that went out.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_second {
            self.dropped += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.dropped))
    }
}

/// `message` on one line, at most `limit` bytes of it kept (cut at a
/// character boundary), control characters escaped as `\n`, `\u{1b}`.
fn one_line(message: &str, limit: usize) -> String {
    let mut cut = message.len().min(limit);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut line = String::with_capacity(cut + 16);
    for character in message[..cut].chars() {
        if character.is_control() {
            line.extend(character.escape_default());
        } else {
            line.push(character);
        }
    }
    if cut < message.len() {
        let _ = write!(line, " … ({} more bytes cut)", message.len() - cut);
    }
    line
}

impl Host for ActivationData {
    fn write(&mut self, level: Level, message: String) {
        self.log.write(level, None, &message);
    }
}

/// Components built against 0.1.0 log the same way.
impl super::bindings::legacy::log::Host for ActivationData {
    fn write(&mut self, level: super::bindings::legacy::log::Level, message: String) {
        use super::bindings::legacy::log::Level as Legacy;
        let level = match level {
            Legacy::Trace => Level::Trace,
            Legacy::Debug => Level::Debug,
            Legacy::Info => Level::Info,
            Legacy::Warn => Level::Warn,
            Legacy::Error => Level::Error,
        };
        <Self as Host>::write(self, level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_stays_one_line_and_is_cut_at_the_limit() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR rio_silo: fake \u{1b}[31m";
        let line = one_line(forged, 1000);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(
            line.contains(r"ok\n2026") && line.contains(r"\u{1b}[31m"),
            "{line}"
        );
        let cut = one_line("ééééé", 3);
        assert_eq!(cut, "é … (8 more bytes cut)");
    }

    #[test]
    fn lines_past_the_rate_are_dropped_and_counted() {
        let mut budget = LogBudget::new(2);
        let start = Instant::now();
        assert_eq!(budget.take(start), Some(0));
        assert_eq!(budget.take(start), Some(0));
        assert_eq!(budget.take(start), None);
        assert_eq!(budget.take(start), None);
        let next_second = start + Duration::from_secs(1);
        assert_eq!(budget.take(next_second), Some(2));
    }
}
