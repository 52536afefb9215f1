//! Reminders on Redis: a hash per object (`rio:reminders:…`, name → the
//! reminder without its due time) and a sorted set per shard
//! (`rio:reminders-due:{shard}`) whose scores are the due times, so a scan
//! reads only the range that is due. The commit script applies a turn's
//! changes with its writes; [`ADVANCE_LUA`] is shared by it and by an
//! advance outside a turn.

use std::sync::LazyLock;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{RedisStore, backend, corrupt, object_key, object_of_key};
use crate::base::ObjectKey;
use crate::storage::reminders::{REMINDER_SHARDS, shard_of};
use crate::storage::{DueReminder, Missed, Reminder, ReminderChange, ShardSlice, StorageError};

pub(super) fn reminders_key(object: &ObjectKey) -> String {
    object_key("reminders", object)
}

pub(super) fn due_key(shard: u32) -> String {
    format!("rio:reminders-due:{shard}")
}

/// The due set of `object`'s shard.
pub(super) fn due_key_of(object: &ObjectKey) -> String {
    due_key(shard_of(object))
}

/// A Lua function: the member of the due set `name` of the reminders hash
/// `hash` has, and the compare-and-set advance of a fire due at `fired`
/// to `next` (`''`: the reminder ends).
pub(super) const ADVANCE_LUA: &str = r"
local function member_of(hash, name) return string.len(hash) .. ':' .. hash .. name end
local function advance(hash, due_set, name, fired, next)
  local member = member_of(hash, name)
  local due = redis.call('ZSCORE', due_set, member)
  if not due or tonumber(due) ~= tonumber(fired) then return 0 end
  if next == '' then
    redis.call('HDEL', hash, name)
    redis.call('ZREM', due_set, member)
  else
    redis.call('ZADD', due_set, next, member)
  end
  return 1
end
";

/// The part of the commit script that applies `ARGV[at]` reminder changes
/// to the hash `KEYS[8]` and the due set `KEYS[9]`: each is `s`, name, due,
/// reminder; `c`, name; or `a`, name, fired due, next due (`''` for none).
pub(super) const CHANGES_LUA: &str = r"
local changes = tonumber(ARGV[first_set])
first_set = first_set + 1
for _ = 1, changes do
  local op, name = ARGV[first_set], ARGV[first_set + 1]
  if op == 's' then
    redis.call('HSET', KEYS[8], name, ARGV[first_set + 3])
    redis.call('ZADD', KEYS[9], ARGV[first_set + 2], member_of(KEYS[8], name))
    first_set = first_set + 4
  elseif op == 'c' then
    redis.call('HDEL', KEYS[8], name)
    redis.call('ZREM', KEYS[9], member_of(KEYS[8], name))
    first_set = first_set + 2
  else
    advance(KEYS[8], KEYS[9], name, ARGV[first_set + 2], ARGV[first_set + 3])
    first_set = first_set + 4
  end
end
";

static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ADVANCE_LUA}\nreturn advance(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])"
    ))
});

#[derive(Serialize, Deserialize)]
struct StoredReminder {
    every_ms: Option<i64>,
    missed: i64,
    message_type: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

fn encode(reminder: &Reminder) -> Vec<u8> {
    let stored = StoredReminder {
        every_ms: reminder.every_ms,
        missed: reminder.missed.code(),
        message_type: reminder.message_type.clone(),
        payload: reminder.payload.clone(),
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&stored, &mut bytes).expect("writing CBOR to memory cannot fail");
    bytes
}

fn decode(bytes: &[u8], due_ms: i64) -> Result<Reminder, StorageError> {
    let stored: StoredReminder = ciborium::from_reader(bytes)
        .map_err(|error| StorageError::Backend(format!("redis: malformed reminder: {error}")))?;
    Ok(Reminder {
        due_ms,
        every_ms: stored.every_ms,
        missed: Missed::of_code(stored.missed),
        message_type: stored.message_type,
        payload: stored.payload,
    })
}

/// Adds a turn's reminder changes to the commit script's arguments (see
/// [`CHANGES_LUA`]).
pub(super) fn add_changes(
    invocation: &mut redis::ScriptInvocation<'_>,
    changes: &[ReminderChange],
) {
    invocation.arg(changes.len());
    for change in changes {
        match change {
            ReminderChange::Set { name, reminder } => {
                invocation
                    .arg("s")
                    .arg(name)
                    .arg(reminder.due_ms)
                    .arg(encode(reminder));
            }
            ReminderChange::Cancel { name } => {
                invocation.arg("c").arg(name);
            }
            ReminderChange::Advance {
                name,
                fired_due_ms,
                next_due_ms,
            } => {
                let next = next_due_ms.map(|next| next.to_string()).unwrap_or_default();
                invocation.arg("a").arg(name).arg(*fired_due_ms).arg(next);
            }
        }
    }
}

/// The object and reminder name a due-set member names.
fn parse_member(member: &str) -> Result<(ObjectKey, String), StorageError> {
    let malformed = || corrupt("reminder entry", member);
    let (length, rest) = member.split_once(':').ok_or_else(malformed)?;
    let length: usize = length.parse().map_err(|_| malformed())?;
    let hash = rest.get(..length).ok_or_else(malformed)?;
    let name = rest.get(length..).ok_or_else(malformed)?;
    Ok((object_of_key("reminders", hash)?, name.to_string()))
}

impl RedisStore {
    pub(super) async fn reminders_of_object(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, Reminder)>, StorageError> {
        let hash = reminders_key(object);
        let stored: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&hash)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut pipe = redis::pipe();
        for (name, _) in &stored {
            pipe.cmd("ZSCORE")
                .arg(due_key_of(object))
                .arg(format!("{}:{hash}{name}", hash.len()));
        }
        let dues: Vec<Option<i64>> = match stored.is_empty() {
            true => Vec::new(),
            false => pipe
                .query_async(&mut self.connection())
                .await
                .map_err(backend)?,
        };
        let mut reminders = Vec::new();
        for ((name, bytes), due) in stored.into_iter().zip(dues) {
            // Set between the two reads' answers: listed at the next read.
            let Some(due) = due else { continue };
            reminders.push((name, decode(&bytes, due)?));
        }
        reminders.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(reminders)
    }

    pub(super) async fn due(
        &self,
        slice: ShardSlice,
        (from_ms, due_by_ms): (i64, i64),
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DueReminder>, StorageError> {
        // Each shard's first `offset + limit`, merged by (due, member): the
        // order a sorted set keeps its ties in.
        let wanted = offset.saturating_add(limit);
        let mut found: Vec<(i64, String)> = Vec::new();
        // One round trip for all the shards this slice holds.
        let mut ranges = redis::pipe();
        for shard in (0..REMINDER_SHARDS).filter(|shard| slice.holds(*shard)) {
            ranges
                .cmd("ZRANGE")
                .arg(due_key(shard))
                .arg(from_ms)
                .arg(due_by_ms)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(wanted)
                .arg("WITHSCORES");
        }
        let shards: Vec<Vec<(String, f64)>> = ranges
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        for members in shards {
            found.extend(
                members
                    .into_iter()
                    .map(|(member, due)| (due as i64, member)),
            );
        }
        found.sort();
        let found: Vec<(i64, String)> = found.into_iter().skip(offset).take(limit).collect();
        let mut entries = Vec::with_capacity(found.len());
        let mut pipe = redis::pipe();
        for (due, member) in &found {
            let (object, name) = parse_member(member)?;
            pipe.cmd("HGET").arg(reminders_key(&object)).arg(&name);
            entries.push((*due, object, name));
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut due = Vec::with_capacity(entries.len());
        for ((due_ms, object, name), value) in entries.into_iter().zip(values) {
            // Cancelled between the two reads.
            let Some(value) = value else { continue };
            due.push(DueReminder {
                object,
                name,
                reminder: decode(&value, due_ms)?,
            });
        }
        Ok(due)
    }

    pub(super) async fn advance(
        &self,
        object: &ObjectKey,
        name: &str,
        fired_due_ms: i64,
        next_due_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        let next = next_due_ms.map(|next| next.to_string()).unwrap_or_default();
        let _: i64 = ADVANCE
            .key(reminders_key(object))
            .key(due_key_of(object))
            .arg(name)
            .arg(fired_due_ms)
            .arg(next)
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_name_their_object_and_reminder_back() {
        for (service_type, object_id, name) in [
            ("Session", "a", "expire"),
            ("a:b", "c:", ":x:"),
            ("T", "", ""),
        ] {
            let object = ObjectKey::new(service_type, object_id);
            let hash = reminders_key(&object);
            let member = format!("{}:{hash}{name}", hash.len());
            assert_eq!(parse_member(&member).unwrap(), (object, name.to_string()));
        }
        assert!(parse_member("9:rio:x").is_err());
    }

    #[test]
    fn a_stored_reminder_reads_back_with_its_due_time() {
        let reminder = Reminder {
            due_ms: 77,
            every_ms: Some(5),
            missed: Missed::FireOnce,
            message_type: "expire".into(),
            payload: vec![1, 2],
        };
        assert_eq!(decode(&encode(&reminder), 77).unwrap(), reminder);
    }
}
