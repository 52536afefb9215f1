//! `rio:service/reminders`: a turn sets and cancels its object's durable
//! reminders (committed with its writes, see `time::reminders`), lists them
//! from the store, and learns which fire it handles.

use super::ActivationData;
use super::bindings::reminders::{
    Fire as WitFire, Host, Missed as WitMissed, Reminder as WitReminder,
};
use super::bindings::types::CallError;
use crate::storage::{Missed, Reminder, ReminderChange};
use crate::time::reminders::{MAX_CHANGES_PER_TURN, check};

fn stored(reminder: WitReminder) -> Reminder {
    Reminder {
        due_ms: i64::try_from(reminder.due_ms).unwrap_or(i64::MAX),
        every_ms: reminder
            .every_ms
            .map(|every| i64::try_from(every).unwrap_or(i64::MAX)),
        missed: match reminder.missed {
            WitMissed::Skip => Missed::Skip,
            WitMissed::FireOnce => Missed::FireOnce,
        },
        message_type: reminder.message_type,
        payload: reminder.payload,
    }
}

fn shown(reminder: Reminder) -> WitReminder {
    WitReminder {
        due_ms: u64::try_from(reminder.due_ms).unwrap_or(0),
        every_ms: reminder
            .every_ms
            .map(|every| u64::try_from(every).unwrap_or(0)),
        missed: match reminder.missed {
            Missed::Skip => WitMissed::Skip,
            Missed::FireOnce => WitMissed::FireOnce,
        },
        message_type: reminder.message_type,
        payload: reminder.payload,
    }
}

impl ActivationData {
    fn change_reminders(&mut self, change: ReminderChange) -> Result<(), String> {
        if self.turn.reminders.len() >= MAX_CHANGES_PER_TURN {
            return Err(format!(
                "{}: a turn may make at most {MAX_CHANGES_PER_TURN} reminder changes",
                self.key
            ));
        }
        self.turn.reminders.push(change);
        Ok(())
    }
}

impl Host for ActivationData {
    fn set(&mut self, name: String, reminder: WitReminder) -> Result<(), CallError> {
        let reminder = stored(reminder);
        let now_ms = crate::base::clock::now_ms();
        check(&name, &reminder, now_ms, self.limits.payload_bytes)
            .map_err(|error| CallError::Internal(format!("{}: {error}", self.key)))?;
        self.change_reminders(ReminderChange::Set { name, reminder })
            .map_err(CallError::Internal)
    }

    /// Past the turn's limit of changes the guest is stopped here (a
    /// trap): a cancel it believes done must not be dropped silently. A
    /// name no reminder can have has nothing to cancel.
    fn cancel(&mut self, name: String) -> wasmtime::Result<()> {
        if crate::time::check_name("reminder", &name, crate::time::reminders::MAX_NAME_BYTES)
            .is_err()
        {
            return Ok(());
        }
        self.change_reminders(ReminderChange::Cancel { name })
            .map_err(wasmtime::Error::msg)
    }

    async fn get_all(&mut self) -> Result<Vec<(String, WitReminder)>, CallError> {
        let Some(store) = self.reminder_store.clone() else {
            return Ok(Vec::new());
        };
        let listed = store.reminders_of(&self.key).await.map_err(|error| {
            CallError::Internal(format!(
                "cannot list the reminders of {}: {error}",
                self.key
            ))
        })?;
        Ok(listed
            .into_iter()
            .map(|(name, reminder)| (name, shown(reminder)))
            .collect())
    }

    fn fired(&mut self) -> Option<WitFire> {
        self.turn.fired.as_ref().map(|fire| WitFire {
            name: fire.name.clone(),
            due_ms: u64::try_from(fire.due_ms).unwrap_or(0),
        })
    }

    fn now_ms(&mut self) -> u64 {
        u64::try_from(crate::base::clock::now_ms()).unwrap_or(0)
    }
}
