//! Reminders: durable messages this object has the silo deliver to itself
//! at a time, once or periodically, even when it is not active or its silo
//! died.
//!
//! ```no_run
//! # use rio_sdk::prelude::*;
//! # use std::time::Duration;
//! # fn handle() -> Result<(), Error> {
//! // Thirty minutes from now (even across a restart), `expire` reaches
//! // this object as a turn of its own.
//! reminders::set("expire", Reminder::after(Duration::from_secs(1800)), "expire", &Empty)?;
//! # Ok(()) }
//! ```
//!
//! A reminder is stored with the commit of the turn that sets it (a turn
//! that fails sets nothing). Each fire runs once in effect, however often
//! it is delivered; its commit moves a periodic reminder on to its next
//! time and removes a one-shot one. In the handler, [`fired`] says which
//! reminder fired and for which time. Reminders fire within about a second
//! of their time; for sub-second work while active, use timers.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::rio::service::reminders as host;
use crate::{Error, codec};

pub use host::Missed;

/// When a reminder fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    due_ms: u64,
    every: Option<Duration>,
    missed: Missed,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Reminder {
    /// Once, `after` from now.
    pub fn after(after: Duration) -> Reminder {
        Reminder::at_ms(now_ms().saturating_add(millis(after)))
    }

    /// Once, at `due_ms` (milliseconds since the Unix epoch; a time past
    /// fires at once).
    pub fn at_ms(due_ms: u64) -> Reminder {
        Reminder {
            due_ms,
            every: None,
            missed: Missed::Skip,
        }
    }

    /// Every `period`, the first time `period` from now.
    pub fn every(period: Duration) -> Reminder {
        Reminder {
            every: Some(period),
            ..Reminder::after(period)
        }
    }

    /// The first time comes `after` from now instead.
    pub fn first_after(self, after: Duration) -> Reminder {
        Reminder {
            due_ms: now_ms().saturating_add(millis(after)),
            ..self
        }
    }

    /// A periodic reminder found a whole period late (its silo was down)
    /// fires once now, then goes on; by default it skips to its next time.
    pub fn fire_once_when_missed(self) -> Reminder {
        Reminder {
            missed: Missed::FireOnce,
            ..self
        }
    }
}

/// Sets the reminder `name` (replacing one of that name) to deliver
/// `message` as `message_type` to this object, once this turn commits.
/// Fails with the kind `internal` for arguments no reminder can have (an
/// empty or reserved name, one over 200 bytes, a period of 0, more than 64
/// reminder changes in a turn).
pub fn set<M: Serialize + ?Sized>(
    name: &str,
    reminder: Reminder,
    message_type: &str,
    message: &M,
) -> Result<(), Error> {
    let payload = codec::encode(message)?;
    set_raw(name, reminder, message_type, &payload)
}

/// Like [`set`], with the payload as raw bytes.
pub fn set_raw(
    name: &str,
    reminder: Reminder,
    message_type: &str,
    payload: &[u8],
) -> Result<(), Error> {
    let reminder = host::Reminder {
        due_ms: reminder.due_ms,
        every_ms: reminder.every.map(millis),
        missed: reminder.missed,
        message_type: message_type.to_string(),
        payload: payload.to_vec(),
    };
    Ok(host::set(name, &reminder)?)
}

/// Removes the reminder `name` once this turn commits; none of that name is
/// no error.
pub fn cancel(name: &str) {
    host::cancel(name);
}

/// One of this object's reminders as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// When it fires next, in ms since the Unix epoch.
    pub due_ms: u64,
    /// Its period in ms, if it recurs.
    pub every_ms: Option<u64>,
    /// The message type it delivers.
    pub message_type: String,
}

/// This object's reminders as stored, by name (this turn's own changes are
/// not in it until it commits).
pub fn list() -> Result<Vec<Listed>, Error> {
    Ok(host::get_all()?
        .into_iter()
        .map(|(name, reminder)| Listed {
            name,
            due_ms: reminder.due_ms,
            every_ms: reminder.every_ms,
            message_type: reminder.message_type,
        })
        .collect())
}

/// The reminder whose fire this turn handles, and the time it was due:
/// `None` in a turn that is no fire.
pub fn fired() -> Option<(String, u64)> {
    host::fired().map(|fire| (fire.name, fire.due_ms))
}

/// The silo's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::now_ms()
}
