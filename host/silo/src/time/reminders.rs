//! What a turn does with its object's reminders: the changes it sets and
//! cancels (checked here, committed with its writes as
//! `storage::Commit::reminders`), and the idempotency key of a fire, which
//! names the reminder, its due time and its period, so the fire's turn
//! knows what it handles and how its commit moves the reminder on.

use rio_protocol::{ReminderInfo, ReplyError};

use crate::base::ObjectKey;
use crate::base::reserved::PREFIX;
use crate::storage::reminders::next_due;
use crate::storage::{DueReminder, Missed, Reminder, ReminderChange, ShardSlice, StateStore};

/// A reminder's name, at most: with its due time and period it makes the
/// fire's idempotency key, which the stores index (255 bytes).
pub(crate) const MAX_NAME_BYTES: usize = 200;

/// Reminder changes one turn may make.
pub(crate) const MAX_CHANGES_PER_TURN: usize = 64;

/// A due time or period, at most this far from now (about 35 years).
pub(crate) const MAX_DELAY_MS: u64 = 1 << 40;

/// What every fire's idempotency key starts with; a client's call may not
/// use it (see `ingress`).
pub(crate) const FIRE_KEY_PREFIX: &str = "rio:reminder:";

/// The idempotency key of the fire of `name` due at `due_ms` (period
/// `every_ms`): the same for every delivery of that fire, so it runs once.
pub(crate) fn fire_key(name: &str, due_ms: i64, every_ms: Option<i64>) -> String {
    format!("{FIRE_KEY_PREFIX}{due_ms}:{}:{name}", every_ms.unwrap_or(0))
}

/// The fire a turn handles, read back from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fire {
    pub(crate) name: String,
    pub(crate) due_ms: i64,
    pub(crate) every_ms: Option<i64>,
}

impl Fire {
    /// The fire an idempotency key names, `None` for any other key.
    pub(crate) fn of_key(key: &str) -> Option<Fire> {
        let rest = key.strip_prefix(FIRE_KEY_PREFIX)?;
        let (due, rest) = rest.split_once(':')?;
        let (every, name) = rest.split_once(':')?;
        let every: i64 = every.parse().ok()?;
        Some(Fire {
            name: name.to_string(),
            due_ms: due.parse().ok()?,
            every_ms: (every > 0).then_some(every),
        })
    }

    /// How the commit of this fire's turn, at `now_ms`, moves it on.
    pub(crate) fn advance(&self, now_ms: i64) -> ReminderChange {
        let next_due_ms = self
            .every_ms
            .map(|every| next_due(self.due_ms, every, now_ms));
        ReminderChange::Advance {
            name: self.name.clone(),
            fired_due_ms: self.due_ms,
            next_due_ms,
        }
    }
}

/// The most reminders one listing answers.
const MAX_LISTED: u32 = 10_000;

/// What `rio reminders` lists: `object`'s reminders, or with `None` the
/// next due across the cluster, earliest first; at most `limit`.
pub(crate) async fn listing(
    store: &dyn StateStore,
    object: Option<ObjectKey>,
    limit: u32,
) -> Result<Vec<ReminderInfo>, ReplyError> {
    let limit = limit.min(MAX_LISTED) as usize;
    let failed = |error: crate::storage::StorageError| {
        ReplyError::Internal(format!("cannot list the reminders: {error}"))
    };
    let found: Vec<DueReminder> = match object {
        Some(object) => store
            .reminders_of(&object)
            .await
            .map_err(failed)?
            .into_iter()
            .take(limit)
            .map(|(name, reminder)| DueReminder {
                object: object.clone(),
                name,
                reminder,
            })
            .collect(),
        None => store
            .due_reminders(ShardSlice::ALL, i64::MIN, i64::MAX, 0, limit)
            .await
            .map_err(failed)?,
    };
    Ok(found
        .into_iter()
        .map(|due| ReminderInfo {
            object: (
                due.object.service_type.to_string(),
                due.object.object_id.to_string(),
            ),
            name: due.name,
            due_ms: due.reminder.due_ms,
            every_ms: due.reminder.every_ms,
            missed: match due.reminder.missed {
                Missed::Skip => "skip",
                Missed::FireOnce => "fire-once",
            }
            .to_string(),
            message_type: due.reminder.message_type,
            payload: serde_bytes::ByteBuf::from(due.reminder.payload),
        })
        .collect())
}

/// Checks a reminder a guest sets at `now_ms`, with `payload_limit` the
/// silo's payload limit.
pub(crate) fn check(
    name: &str,
    reminder: &Reminder,
    now_ms: i64,
    payload_limit: usize,
) -> Result<(), String> {
    super::check_name("reminder", name, MAX_NAME_BYTES)?;
    let shown = crate::base::text::one_line(name, 200);
    if reminder.message_type.is_empty() {
        return Err(format!("reminder `{shown}` has an empty message type"));
    }
    if reminder.message_type.starts_with(PREFIX) {
        return Err(format!(
            "reminder `{shown}`: message types starting with `{PREFIX}` are reserved to the silo"
        ));
    }
    if reminder.payload.len() > payload_limit {
        return Err(format!(
            "reminder `{shown}` has a payload of {} bytes: over the silo's limit `payload-bytes` of {payload_limit}",
            reminder.payload.len()
        ));
    }
    let farthest = now_ms.saturating_add(MAX_DELAY_MS as i64);
    if reminder.due_ms > farthest {
        return Err(format!(
            "reminder `{shown}` is due more than {MAX_DELAY_MS} ms from now"
        ));
    }
    match reminder.every_ms {
        Some(every) if every < 1 => Err(format!(
            "reminder `{shown}` has a period of {every} ms; it must be at least 1"
        )),
        Some(every) if every > MAX_DELAY_MS as i64 => Err(format!(
            "reminder `{shown}`: a period may be at most {MAX_DELAY_MS} ms"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reminder(due_ms: i64, every_ms: Option<i64>) -> Reminder {
        Reminder {
            due_ms,
            every_ms,
            missed: Missed::Skip,
            message_type: "expire".into(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn a_fire_key_names_its_reminder_back_even_with_colons() {
        for (name, due, every) in [
            ("expire", 5, None),
            ("a:b:", 1_796_000_000_000, Some(60_000)),
        ] {
            let key = fire_key(name, due, every);
            assert!(key.len() <= 255);
            let fire = Fire::of_key(&key).unwrap();
            assert_eq!(
                (fire.name.as_str(), fire.due_ms, fire.every_ms),
                (name, due, every)
            );
        }
        assert_eq!(Fire::of_key("pay-1"), None);
        assert_eq!(Fire::of_key("rio:reminder:x:0:n"), None);
        let longest = fire_key(
            &"n".repeat(MAX_NAME_BYTES),
            i64::MAX,
            Some(MAX_DELAY_MS as i64),
        );
        assert!(longest.len() <= 255, "{}", longest.len());
    }

    #[test]
    fn a_fire_moves_a_periodic_reminder_past_now_and_ends_a_one_shot_one() {
        let fire = Fire::of_key(&fire_key("tick", 1_000, Some(100))).unwrap();
        assert_eq!(
            fire.advance(1_250),
            ReminderChange::Advance {
                name: "tick".into(),
                fired_due_ms: 1_000,
                next_due_ms: Some(1_300)
            }
        );
        let once = Fire::of_key(&fire_key("end", 1_000, None)).unwrap();
        assert_eq!(
            once.advance(1_250),
            ReminderChange::Advance {
                name: "end".into(),
                fired_due_ms: 1_000,
                next_due_ms: None
            }
        );
    }

    #[test]
    fn reminders_no_fire_could_have_are_refused() {
        let now = 1_000;
        assert!(check("expire", &reminder(0, None), now, 10).is_ok());
        assert!(check("expire", &reminder(now, Some(0)), now, 10).is_err());
        assert!(check("expire", &reminder(now + (1 << 41), None), now, 10).is_err());
        let mut big = reminder(now, None);
        big.payload = vec![0; 11];
        assert!(check("expire", &big, now, 10).is_err());
        let mut reserved = reminder(now, None);
        reserved.message_type = "rio:wake-outbox".into();
        assert!(check("expire", &reserved, now, 10).is_err());
        assert!(check("rio:x", &reminder(now, None), now, 10).is_err());
        assert!(check("a\u{7}", &reminder(now, None), now, 10).is_err());
    }
}
