//! Object state on Redis: a hash per object, written by one Lua script per
//! commit together with the turn's reply record and outgoing messages, and
//! the set of state hashes that hold an interrupted keyed turn. Also the
//! `StateStore` impl, whose reply and outbox methods call `replies` and
//! `outbox`.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::placement::placement_key;
use super::replies::{self, REPLY_AGES, replies_key};
use super::{RedisStore, backend, object_key, object_of_key, outbox, parsing, reminders, topics};
use crate::base::ObjectKey;
use crate::storage::{
    Chain, Commit, DeadLetter, DueReminder, LoggedEvent, PendingOutbox, Reminder, ShardSlice,
    SiloId, StateStore, StorageError, StoredEntry, Subscriber,
};

/// The state hashes that hold an interrupted keyed turn (see `resume`).
const INTERRUPTED: &str = "rio:interrupted";

fn state_key(object: &ObjectKey) -> String {
    object_key("state", object)
}

/// Applies a turn to the state hash `KEYS[1]` if the placement entry
/// `KEYS[2]` names `ARGV[1]`: `ARGV[2]` fields to set follow as field, value
/// pairs, then the fields to delete. Answers 1, or 0 (nothing written) when
/// another silo or none owns the object. Every write happens after the
/// check, and a script runs whole, so a refused commit changes nothing.
/// With a reply record (`ARGV[3]` = 1), `ARGV[4..6]` are its key, reply and
/// time: stored in the object's replies hash `KEYS[3]` and indexed by age
/// in `KEYS[4]`, in the same script as the writes. Next comes the number of
/// messages the turn sent, then seq and message pairs for the outbox hash
/// `KEYS[5]` and the sender's next seq (kept in `KEYS[7]`; the outbox joins
/// the senders set `KEYS[6]`), then the turn's reminder changes (see
/// `reminders::CHANGES_LUA`, on the object's reminders `KEYS[8]` and its
/// shard's due set `KEYS[9]`), then the turn's subscriptions and events
/// (see `topics::COMMIT_LUA`), and only then the fields to set. A commit
/// that writes the interrupted-turn intent passes the set `KEYS[10]`, which
/// then lists the state hash exactly while it holds an intent.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{advance}
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local first_set = 4
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[4], ARGV[6], string.len(KEYS[3]) .. ':' .. KEYS[3] .. ARGV[4])
  first_set = 7
end
local sent = tonumber(ARGV[first_set])
first_set = first_set + 1
if sent > 0 then
  for i = first_set, first_set + 2 * sent - 1, 2 do
    redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
  end
  first_set = first_set + 2 * sent
  redis.call('HSET', KEYS[7], KEYS[5], ARGV[first_set])
  redis.call('SADD', KEYS[6], KEYS[5])
  first_set = first_set + 1
end
{changes}
{topics}
-- unpack has a stack limit of a few thousand values: go in slices.
local first_delete = first_set + 2 * tonumber(ARGV[2])
for i = first_set, first_delete - 1, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, first_delete - 1)))
end
for i = first_delete, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if KEYS[10] then
  if redis.call('HEXISTS', KEYS[1], 'rio:interrupted-turn') == 1 then
    redis.call('SADD', KEYS[10], KEYS[1])
  else
    redis.call('SREM', KEYS[10], KEYS[1])
  end
end
return 1
",
        advance = reminders::ADVANCE_LUA,
        changes = reminders::CHANGES_LUA,
        topics = topics::COMMIT_LUA,
    ))
});

/// The fields of the state hash `KEYS[1]`, each with its value's length
/// and the value itself when it is at most `ARGV[1]` bytes (nil otherwise),
/// as one flat list of triples.
static LOAD_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local inline_max = tonumber(ARGV[1])
local out = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local length = redis.call('HSTRLEN', KEYS[1], field)
  out[#out + 1] = field
  out[#out + 1] = length
  if length <= inline_max then
    out[#out + 1] = redis.call('HGET', KEYS[1], field)
  else
    out[#out + 1] = false
  end
end
return out
",
    )
});

#[async_trait]
impl StateStore for RedisStore {
    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError> {
        redis::cmd("HGETALL")
            .arg(state_key(object))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn load_keys(
        &self,
        object: &ObjectKey,
        inline_max: usize,
    ) -> Result<HashMap<String, StoredEntry>, StorageError> {
        let flat: Vec<redis::Value> = LOAD_KEYS
            .key(state_key(object))
            .arg(inline_max)
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut entries = HashMap::with_capacity(flat.len() / 3);
        for triple in flat.chunks(3) {
            let [key, length, value] = triple else {
                return Err(StorageError::Backend(
                    "a state listing of the wrong shape".into(),
                ));
            };
            let key: String = redis::from_redis_value_ref(key).map_err(parsing)?;
            let length: usize = redis::from_redis_value_ref(length).map_err(parsing)?;
            let value: Option<Vec<u8>> = redis::from_redis_value_ref(value).map_err(parsing)?;
            entries.insert(
                key,
                StoredEntry {
                    value_bytes: length,
                    value,
                },
            );
        }
        Ok(entries)
    }

    async fn read_value(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        redis::cmd("HGET")
            .arg(state_key(object))
            .arg(key)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn commit_turn(
        &self,
        object: &ObjectKey,
        commit: Commit,
        owner: &SiloId,
    ) -> Result<(), StorageError> {
        let writes = &commit.writes;
        // The last write of a key wins; collapsing first lets one HSET and
        // one HDEL carry the whole turn whatever order the writes came in.
        let mut latest: HashMap<&str, Option<&[u8]>> = HashMap::with_capacity(writes.len());
        for (key, value) in writes {
            latest.insert(key, value.as_deref());
        }
        let mut sets = Vec::new();
        let mut deletes = Vec::new();
        for (field, value) in latest {
            match value {
                Some(value) => sets.push((field, value)),
                None => deletes.push(field),
            }
        }
        let writes_intent = writes
            .iter()
            .any(|(field, _)| field == crate::base::reserved::INTENT_KEY);
        let mut invocation = COMMIT.key(state_key(object));
        invocation
            .key(placement_key(object))
            .key(replies_key(object))
            .key(REPLY_AGES)
            .key(outbox::outbox_key(object))
            .key(outbox::SENDERS)
            .key(outbox::NEXT_SEQ)
            .key(reminders::reminders_key(object))
            .key(reminders::due_key_of(object));
        if writes_intent {
            invocation.key(INTERRUPTED);
        }
        invocation.arg(owner.to_string()).arg(sets.len());
        match &commit.reply {
            Some(record) => invocation
                .arg(1)
                .arg(&record.key)
                .arg(record.reply.as_slice())
                .arg(record.stored_at_ms),
            None => invocation.arg(0),
        };
        invocation.arg(commit.outbox.len());
        for message in &commit.outbox {
            invocation
                .arg(message.seq)
                .arg(outbox::encode_message(message));
        }
        if let Some(last) = commit.outbox.last() {
            invocation.arg(last.seq + 1);
        }
        reminders::add_changes(&mut invocation, &commit.reminders);
        topics::add_to_commit(
            &mut invocation,
            object,
            &commit.subscriptions,
            &commit.events,
        );
        for (field, value) in sets {
            invocation.arg(field).arg(value);
        }
        for field in deletes {
            invocation.arg(field);
        }
        let written: bool = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        if written {
            Ok(())
        } else {
            Err(StorageError::fenced(object, owner))
        }
    }

    async fn stored_reply(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        replies::stored(self.connection(), object, key).await
    }

    async fn sweep_replies(
        &self,
        stored_before_ms: i64,
        limit: usize,
    ) -> Result<u64, StorageError> {
        replies::sweep(self.connection(), stored_before_ms, limit).await
    }

    async fn pending_outbox(&self, sender: &ObjectKey) -> Result<PendingOutbox, StorageError> {
        outbox::pending(self.connection(), sender).await
    }

    async fn remove_outgoing(&self, sender: &ObjectKey, seq: i64) -> Result<(), StorageError> {
        outbox::remove(self.connection(), sender, seq).await
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<(), StorageError> {
        outbox::bury(self.connection(), letter).await
    }

    async fn dead_letters(
        &self,
        receiver_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        outbox::dead_letters(self.connection(), receiver_type, limit).await
    }

    async fn senders_with_pending(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        outbox::senders(self.connection(), limit).await
    }

    async fn interrupted_objects(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        let keys: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(INTERRUPTED)
            .arg(limit)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        keys.iter().map(|key| object_of_key("state", key)).collect()
    }

    async fn reminders_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, Reminder)>, StorageError> {
        self.reminders_of_object(object).await
    }

    async fn due_reminders(
        &self,
        slice: ShardSlice,
        from_ms: i64,
        due_by_ms: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DueReminder>, StorageError> {
        self.due(slice, (from_ms, due_by_ms), offset, limit).await
    }

    async fn advance_reminder(
        &self,
        object: &ObjectKey,
        name: &str,
        fired_due_ms: i64,
        next_due_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        self.advance(object, name, fired_due_ms, next_due_ms).await
    }

    async fn subscriptions_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, String)>, StorageError> {
        self.subscriptions_of_object(object).await
    }

    async fn has_subscribers(&self, topic: &str) -> Result<bool, StorageError> {
        self.topic_has_subscribers(topic).await
    }

    async fn subscribers(
        &self,
        topic: &str,
        after: Option<&ObjectKey>,
        published_ms: i64,
        limit: usize,
    ) -> Result<Vec<Subscriber>, StorageError> {
        self.topic_subscribers(topic, after, published_ms, limit)
            .await
    }

    async fn logged_events(
        &self,
        chain: &Chain,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        self.logged_of_chain(chain, limit).await
    }

    async fn event_delivered(
        &self,
        chain: &Chain,
        seq: i64,
        through: Option<&ObjectKey>,
    ) -> Result<(), StorageError> {
        self.record_delivered(chain, seq, through).await
    }

    async fn touch_logged_event(
        &self,
        chain: &Chain,
        _seq: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.touch_chain(chain, now_ms).await
    }

    async fn chains_waiting(
        &self,
        slice: ShardSlice,
        published_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Chain>, StorageError> {
        self.waiting_chains(slice, published_by_ms, limit).await
    }
}
