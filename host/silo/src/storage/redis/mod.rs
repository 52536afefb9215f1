//! Every concern of a cluster (state, components, membership, placement) on
//! one Redis server.
//!
//! # Key layout
//!
//! Everything lives under the prefix `rio:`, so a Redis database may be
//! shared with other users as long as they stay out of it:
//!
//! | key                                     | type       | contents                                               |
//! |-----------------------------------------|------------|--------------------------------------------------------|
//! | `rio:state:{len(type)}:{type}:{id}`     | hash       | one object's state: key → value                        |
//! | `rio:component:{hash}`                  | string     | a component's bytes                                    |
//! | `rio:deployments`                       | hash       | service type → content hash                            |
//! | `rio:members`                           | hash       | `address#generation` → `{status}:{heartbeat_ms}`       |
//! | `rio:suspicions:{address#generation}`   | sorted set | suspector's `address#generation`, scored by time in ms |
//! | `rio:placement:{len(type)}:{type}:{id}` | string     | the owner's `address#generation`                       |
//! | `rio:owned:{address#generation}`        | set        | the `rio:placement:…` keys that silo owns              |
//! | `rio:replies:{len(type)}:{type}:{id}`   | hash       | one object's reply records: idempotency key → reply    |
//! | `rio:reply-ages`                        | sorted set | `{len(hash key)}:{hash key}{idempotency key}`, scored by the ms it was stored |
//! | `rio:outbox:{len(type)}:{type}:{id}`    | hash       | one sender's undelivered messages: seq → message (CBOR) |
//! | `rio:outbox-next`                       | hash       | outbox key → the seq of its sender's next message      |
//! | `rio:outbox-senders`                    | set        | the outbox keys that hold messages                     |
//! | `rio:dead-letters:{receiver type}`      | sorted set | refused messages (CBOR, with the reason), scored by ms |
//! | `rio:dead-letter-types`                 | set        | the receiver types that have dead letters              |
//!
//! `len(type)` is the type's length in bytes: types and ids may contain `:`,
//! and without it `("a:b", "c")` and `("a", "b:c")` would share a key. Keys
//! with a single variable segment at their end need no such care. A silo id
//! is split at its last `#`, since the generation is a number.
//!
//! # Atomicity
//!
//! Every read-then-write (a commit, which first checks that the committing
//! silo owns the object, claim, take-over, release, status and heartbeat
//! updates, deployments) is a Lua script, which
//! Redis runs without interleaving anything else. The scripts touch keys they
//! derive at run time, so this backend needs a single Redis server (or a
//! primary with replicas), not Redis Cluster, and Redis 6.2 or newer
//! (`ZADD … GT`).
//!
//! # Durability
//!
//! A commit is as durable as the server is configured to make it: run Redis
//! with `appendonly yes` (and `appendfsync always` to lose nothing on a
//! power cut) and `maxmemory-policy noeviction`, or evicted placement and
//! state keys will silently vanish.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use self::placement::placement_key;
use self::replies::{REPLY_AGES, replies_key};
#[cfg(test)]
use super::StateWrite;
use super::{
    ClusterStore, Commit, DeadLetter, PendingOutbox, SiloId, StateStore, StorageError, StoredEntry,
    redact,
};
use crate::ObjectKey;

mod components;
mod membership;
mod outbox;
mod placement;
mod replies;
#[cfg(test)]
mod tests;

/// The state hashes that hold an interrupted keyed turn (see `resume`).
const INTERRUPTED: &str = "rio:interrupted";

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take; generous because a component upload is
/// megabytes, short enough that a hung server fails a turn rather than
/// stalling it forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

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
/// the senders set `KEYS[6]`), and only then the fields to set. A commit
/// that writes the interrupted-turn intent passes the set `KEYS[8]`, which
/// then lists the state hash exactly while it holds an intent.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
-- unpack has a stack limit of a few thousand values: go in slices.
local first_delete = first_set + 2 * tonumber(ARGV[2])
for i = first_set, first_delete - 1, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, first_delete - 1)))
end
for i = first_delete, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if KEYS[8] then
  if redis.call('HEXISTS', KEYS[1], 'rio:interrupted-turn') == 1 then
    redis.call('SADD', KEYS[8], KEYS[1])
  else
    redis.call('SREM', KEYS[8], KEYS[1])
  end
end
return 1
",
    )
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

/// State, components, membership and placement on one Redis server.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed and self-reconnecting; each call works on a cheap clone.
    connection: ConnectionManager,
}

/// Opens the store at `url` (`redis://[user:password@]host[:port][/db]`) as
/// every concern of a cluster.
pub async fn open_cluster(url: &str) -> Result<ClusterStore, StorageError> {
    let store = RedisStore::open(url).await?;
    Ok(ClusterStore::from_backend(std::sync::Arc::new(store)))
}

fn backend(error: RedisError) -> StorageError {
    StorageError::Backend(format!("redis: {error}"))
}

fn parsing(error: redis::ParsingError) -> StorageError {
    StorageError::Backend(format!("redis: unexpected reply: {error}"))
}

fn corrupt(what: &str, text: &str) -> StorageError {
    StorageError::Backend(format!("redis: malformed {what} `{text}` under rio:"))
}

/// Prefixes a key's variable part with the type's length, so ':' inside the
/// type or id cannot make two objects share a key.
fn object_key(kind: &str, object: &ObjectKey) -> String {
    format!(
        "rio:{kind}:{}:{}:{}",
        object.service_type.len(),
        object.service_type,
        object.object_id
    )
}

fn state_key(object: &ObjectKey) -> String {
    object_key("state", object)
}

/// The object whose state hash is `key` (the inverse of [`state_key`]).
/// The object a key made by [`object_key`] with `kind` names (its inverse).
fn object_of_key(kind: &str, key: &str) -> Result<ObjectKey, StorageError> {
    let malformed = || corrupt(&format!("{kind} key"), key);
    let rest = key
        .strip_prefix("rio:")
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(malformed)?;
    let (length, rest) = rest.split_once(':').ok_or_else(malformed)?;
    let length: usize = length.parse().map_err(|_| malformed())?;
    let service_type = rest.get(..length).ok_or_else(malformed)?;
    let object_id = rest
        .get(length..)
        .and_then(|tail| tail.strip_prefix(':'))
        .ok_or_else(malformed)?;
    Ok(ObjectKey::new(service_type, object_id))
}

/// The silo written as `address#generation`.
fn parse_silo(text: &str) -> Result<SiloId, StorageError> {
    let (address, generation) = text
        .rsplit_once('#')
        .ok_or_else(|| corrupt("silo id", text))?;
    let generation = generation.parse().map_err(|_| corrupt("silo id", text))?;
    Ok(SiloId {
        address: address.to_string(),
        generation,
    })
}

impl RedisStore {
    /// Connects to the server at `url` (retrying briefly) and checks that it
    /// answers.
    pub async fn open(url: &str) -> Result<RedisStore, StorageError> {
        let client = redis::Client::open(url).map_err(|error| StorageError::BadUrl {
            url: redact(url),
            reason: error.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let unreachable = |error: RedisError| {
            StorageError::Backend(format!("cannot reach Redis at {}: {error}", redact(url)))
        };
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unreachable)?;
        // Connecting proves little when AUTH or SELECT is refused later;
        // one round trip surfaces that here rather than at the first turn.
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(RedisStore { connection })
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

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
            .any(|(field, _)| field == crate::resume::INTENT_KEY);
        let mut invocation = COMMIT.key(state_key(object));
        invocation
            .key(placement_key(object))
            .key(replies_key(object))
            .key(REPLY_AGES)
            .key(outbox::outbox_key(object))
            .key(outbox::SENDERS)
            .key(outbox::NEXT_SEQ);
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
}
