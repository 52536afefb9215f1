//! Durable reminders as the stores keep them: one row (Redis: one hash
//! field and one sorted-set member) per object and name, with its next due
//! time in an index by due time, so that a silo reads only what is due and
//! never the whole table. The changes a turn makes are part of its
//! [`Commit`](super::Commit), written in the same transaction as its state.

use sha2::{Digest, Sha256};

use crate::base::ObjectKey;

/// Reminders are divided among the active silos by shard: an object's
/// shard is a stable hash of its key, and silo `i` of `n` fires the
/// reminders of the shards `s` with `s % n == i`.
pub const REMINDER_SHARDS: u32 = 64;

/// The shard of `object`'s reminders; the same on every silo and release.
pub fn shard_of(object: &ObjectKey) -> u32 {
    let mut hash = Sha256::new();
    hash.update(object.service_type.as_bytes());
    hash.update(b"/");
    hash.update(object.object_id.as_bytes());
    let digest = hash.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % REMINDER_SHARDS
}

/// The shards one silo fires: those `s` with `s % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSlice {
    /// This silo's place among the active silos, sorted.
    pub index: u32,
    /// How many silos are active.
    pub count: u32,
}

impl ShardSlice {
    /// Every shard: a lone silo, or a listing across the cluster.
    pub const ALL: ShardSlice = ShardSlice { index: 0, count: 1 };

    /// Whether this slice holds `shard`.
    pub fn holds(&self, shard: u32) -> bool {
        shard % self.count.max(1) == self.index
    }
}

/// What a periodic reminder does when it is found a whole period or more
/// after its due time (its silo was down, the cluster was stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missed {
    /// Fire nothing for the missed times; go on at the next due time after
    /// now (the default).
    #[default]
    Skip,
    /// Fire once now for all of them, then go on at the next due time.
    FireOnce,
}

impl Missed {
    /// As the stores keep it.
    pub fn code(self) -> i64 {
        match self {
            Missed::Skip => 0,
            Missed::FireOnce => 1,
        }
    }

    /// From the stored code; an unknown one reads as the default.
    pub fn of_code(code: i64) -> Missed {
        match code {
            1 => Missed::FireOnce,
            _ => Missed::Skip,
        }
    }
}

/// One reminder of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    /// When it fires next, in ms since the Unix epoch.
    pub due_ms: i64,
    /// Its period, if it recurs.
    pub every_ms: Option<i64>,
    /// What a periodic one does with missed times.
    pub missed: Missed,
    /// The message type it delivers.
    pub message_type: String,
    /// The payload it delivers.
    pub payload: Vec<u8>,
}

impl Reminder {
    /// The first due time of a periodic reminder strictly after `now_ms`
    /// (on its schedule from `due_ms`); `None` for a one-shot one.
    pub fn next_after(&self, now_ms: i64) -> Option<i64> {
        Some(next_due(self.due_ms, self.every_ms?, now_ms))
    }

    /// Whether, found at `now_ms`, it is late by a whole period or more and
    /// so skips rather than fires (its policy being [`Missed::Skip`]).
    pub fn skips_at(&self, now_ms: i64) -> bool {
        match self.every_ms {
            Some(every) => self.missed == Missed::Skip && now_ms >= self.due_ms + every.max(1),
            None => false,
        }
    }
}

/// The first time on the schedule `due_ms`, `due_ms + every_ms`, … that
/// is strictly after both `now_ms` and `due_ms`.
pub fn next_due(due_ms: i64, every_ms: i64, now_ms: i64) -> i64 {
    let every = every_ms.max(1);
    let from = now_ms.max(due_ms);
    due_ms + every * ((from - due_ms) / every + 1)
}

/// A reminder as a silo's scan finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReminder {
    /// Whose reminder it is.
    pub object: ObjectKey,
    /// Its name, unique per object.
    pub name: String,
    /// The reminder.
    pub reminder: Reminder,
}

/// One change a turn makes to its object's reminders, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderChange {
    /// Sets (or replaces) the reminder `name`.
    Set {
        /// Its name.
        name: String,
        /// The reminder.
        reminder: Reminder,
    },
    /// Removes the reminder `name`, if it exists.
    Cancel {
        /// Its name.
        name: String,
    },
    /// The fire of `name` due at `fired_due_ms` took effect: a periodic
    /// reminder moves on to `next_due_ms`, a one-shot one (`None`) is
    /// removed. Only if it is still due at `fired_due_ms` (compare and
    /// set): one replaced meanwhile stays as it was replaced.
    Advance {
        /// Its name.
        name: String,
        /// The due time the fire was for.
        fired_due_ms: i64,
        /// Its next due time, if it recurs.
        next_due_ms: Option<i64>,
    },
}

impl ReminderChange {
    /// About how many bytes it writes.
    pub fn bytes(&self) -> usize {
        match self {
            ReminderChange::Set { name, reminder } => {
                name.len() + reminder.message_type.len() + reminder.payload.len() + 32
            }
            ReminderChange::Cancel { name } | ReminderChange::Advance { name, .. } => {
                name.len() + 16
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(due_ms: i64, every_ms: i64, missed: Missed) -> Reminder {
        Reminder {
            due_ms,
            every_ms: Some(every_ms),
            missed,
            message_type: "tick".into(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn a_periodic_reminder_goes_on_at_its_next_time_after_now() {
        let reminder = every(1_000, 100, Missed::Skip);
        // On time: the next period.
        assert_eq!(reminder.next_after(1_000), Some(1_100));
        assert_eq!(reminder.next_after(1_099), Some(1_100));
        // Late by several periods: the first time on its schedule after now.
        assert_eq!(reminder.next_after(1_350), Some(1_400));
        assert_eq!(reminder.next_after(1_400), Some(1_500));
        // A clock behind the due time never gives one at or before it.
        assert_eq!(reminder.next_after(900), Some(1_100));
        let once = Reminder {
            every_ms: None,
            ..reminder.clone()
        };
        assert_eq!(once.next_after(5_000), None);
    }

    #[test]
    fn only_a_skipping_periodic_reminder_a_period_late_skips() {
        let skip = every(1_000, 100, Missed::Skip);
        assert!(!skip.skips_at(1_099));
        assert!(skip.skips_at(1_100));
        assert!(!every(1_000, 100, Missed::FireOnce).skips_at(9_999));
        let once = Reminder {
            every_ms: None,
            ..skip
        };
        assert!(!once.skips_at(1_000_000));
    }

    #[test]
    fn shards_are_stable_and_divided_without_overlap() {
        let object = ObjectKey::new("Session", "alice");
        assert_eq!(
            shard_of(&object),
            shard_of(&ObjectKey::new("Session", "alice"))
        );
        for count in 1..5 {
            for shard in 0..REMINDER_SHARDS {
                let holders = (0..count)
                    .filter(|index| {
                        ShardSlice {
                            index: *index,
                            count,
                        }
                        .holds(shard)
                    })
                    .count();
                assert_eq!(holders, 1, "shard {shard} of {count} silos");
            }
        }
        // Objects spread over the shards.
        let shards: std::collections::HashSet<u32> = (0..1000)
            .map(|n| shard_of(&ObjectKey::new("Session", &n.to_string())))
            .collect();
        assert_eq!(shards.len(), REMINDER_SHARDS as usize);
    }
}
