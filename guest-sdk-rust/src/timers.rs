//! Timers: messages this object has the silo deliver to itself later, as
//! ordinary turns, while it is active.
//!
//! ```no_run
//! # use rio_sdk::prelude::*;
//! # use std::time::Duration;
//! # fn on_activate() -> Result<(), Error> {
//! // Every minute, `flush` reaches this object as a turn of its own.
//! timers::set("flush", Timer::every(Duration::from_secs(60)), "flush", &Empty)?;
//! # Ok(()) }
//! ```
//!
//! A timer lives as long as the activation that set it: idle deactivation,
//! [`lifecycle::deactivate`](crate::lifecycle::deactivate), a trap or a
//! redeploy ends it, so set the timers an object always has in its
//! `on_activate` hook. Setting and cancelling take effect when the turn
//! commits. Ticks never overlap and never pile up: a periodic tick that
//! comes due while the previous one still waits or runs is skipped. By
//! default a tick does not keep an idle object active
//! ([`Timer::keep_active`] changes that).

use std::time::Duration;

use serde::Serialize;

use crate::bindings::rio::service::timers as host;
use crate::{Error, codec};

/// When a timer ticks, and whether its ticks keep the object active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    after: Duration,
    every: Option<Duration>,
    keep_active: bool,
}

impl Timer {
    /// One tick, `after` from now.
    pub fn once(after: Duration) -> Timer {
        Timer {
            after,
            every: None,
            keep_active: false,
        }
    }

    /// A tick every `period`, the first one `period` from now.
    pub fn every(period: Duration) -> Timer {
        Timer {
            after: period,
            every: Some(period),
            keep_active: false,
        }
    }

    /// The first tick comes `after` from now instead.
    pub fn first_after(self, after: Duration) -> Timer {
        Timer { after, ..self }
    }

    /// Each tick counts as activity: an object that receives nothing else
    /// stays active (and its timer with it) instead of being deactivated
    /// when idle.
    pub fn keep_active(self) -> Timer {
        Timer {
            keep_active: true,
            ..self
        }
    }
}

/// Sets the timer `name` (replacing one of that name) to deliver `message`
/// as `message_type` to this object at each tick, once this turn commits.
/// Fails with the kind `internal` for arguments no timer can have (an
/// empty or reserved name, a period of 0, more than 64 timers, or their
/// payloads over 1 MiB together).
pub fn set<M: Serialize + ?Sized>(
    name: &str,
    timer: Timer,
    message_type: &str,
    message: &M,
) -> Result<(), Error> {
    let payload = codec::encode(message)?;
    set_raw(name, timer, message_type, &payload)
}

/// Like [`set`], with the payload as raw bytes.
pub fn set_raw(name: &str, timer: Timer, message_type: &str, payload: &[u8]) -> Result<(), Error> {
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let timer = host::Timer {
        after_ms: millis(timer.after),
        every_ms: timer.every.map(millis),
        message_type: message_type.to_string(),
        payload: payload.to_vec(),
        keep_active: timer.keep_active,
    };
    Ok(host::set(name, &timer)?)
}

/// Cancels the timer `name` once this turn commits; none of that name is no
/// error.
pub fn cancel(name: &str) {
    host::cancel(name);
}
