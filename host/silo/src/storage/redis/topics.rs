//! Object subscriptions on Redis. Per topic, a sorted set of its
//! subscribers (`rio:topic-subs:…`, members `type\0id` at score 0, read in
//! key order by range) and a hash of what each receives
//! (`rio:topic-sub-types:…`, member → message type and since); per object,
//! a hash of its topics (`rio:subscriptions:…`). The topic log is a hash
//! per chain (`rio:topic-log:` + the chain's member; field seq → event,
//! field `t` + seq → the subscriber delivered through), and the sorted set
//! `rio:topic-log-chains` lists the chains with events for the sweep,
//! scored by the publish time of the first event of a chain that was
//! empty, then by the last time a deliverer touched it.
//! The commit script applies a turn's subscriptions, then logs each of its
//! events whose topic's subscriber set exists.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{RedisStore, backend, corrupt, object_key};
use crate::base::ObjectKey;
use crate::storage::reminders::shard_of;
use crate::storage::{
    Chain, LoggedEvent, ShardSlice, StorageError, Subscriber, SubscriptionChange, TopicEvent,
};

/// The chains with events in the log.
const CHAINS: &str = "rio:topic-log-chains";

fn subscribers_key(topic: &str) -> String {
    format!("rio:topic-subs:{}:{topic}", topic.len())
}

fn types_key(topic: &str) -> String {
    format!("rio:topic-sub-types:{}:{topic}", topic.len())
}

fn object_topics_key(object: &ObjectKey) -> String {
    object_key("subscriptions", object)
}

fn member_of(object: &ObjectKey) -> String {
    format!("{}\0{}", object.service_type, object.object_id)
}

fn object_of_member(member: &str) -> Result<ObjectKey, StorageError> {
    let (service_type, object_id) = member
        .split_once('\0')
        .ok_or_else(|| corrupt("subscriber", member))?;
    Ok(ObjectKey::new(service_type, object_id))
}

/// The member of [`CHAINS`] naming `chain`: lengths first, so any topic
/// and id read back.
fn chain_member(topic: &str, publisher: &ObjectKey) -> String {
    format!(
        "{}:{topic}{}:{}{}",
        topic.len(),
        publisher.service_type.len(),
        publisher.service_type,
        publisher.object_id
    )
}

fn chain_of_member(member: &str) -> Result<Chain, StorageError> {
    let malformed = || corrupt("topic log chain", member);
    let (length, rest) = member.split_once(':').ok_or_else(malformed)?;
    let length: usize = length.parse().map_err(|_| malformed())?;
    let topic = rest.get(..length).ok_or_else(malformed)?;
    let rest = rest.get(length..).ok_or_else(malformed)?;
    let (length, rest) = rest.split_once(':').ok_or_else(malformed)?;
    let length: usize = length.parse().map_err(|_| malformed())?;
    let service_type = rest.get(..length).ok_or_else(malformed)?;
    let object_id = rest.get(length..).ok_or_else(malformed)?;
    Ok(Chain {
        topic: topic.to_string(),
        publisher: ObjectKey::new(service_type, object_id),
    })
}

fn log_key(chain: &Chain) -> String {
    format!(
        "rio:topic-log:{}",
        chain_member(&chain.topic, &chain.publisher)
    )
}

#[derive(Serialize, Deserialize)]
struct StoredSubscription {
    message_type: String,
    since_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    published_ms: i64,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("writing CBOR to memory cannot fail");
    bytes
}

fn uncbor<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    ciborium::from_reader(bytes)
        .map_err(|error| StorageError::Backend(format!("redis: malformed {what}: {error}")))
}

/// The part of the commit script that applies the turn's subscription
/// changes, then logs its events: `ARGV[first_set]` changes, each `s`,
/// subscribers set, types hash, member, stored subscription, object's
/// topics hash, topic, message type; or `u` and the same but the last two
/// values. Then the number of events, each subscribers set, log hash,
/// chain member, seq, stored event, publish time.
pub(super) const COMMIT_LUA: &str = r"
local subscriptions = tonumber(ARGV[first_set])
first_set = first_set + 1
for _ = 1, subscriptions do
  local op = ARGV[first_set]
  local set, types, member = ARGV[first_set + 1], ARGV[first_set + 2], ARGV[first_set + 3]
  if op == 's' then
    redis.call('ZADD', set, 0, member)
    redis.call('HSET', types, member, ARGV[first_set + 4])
    redis.call('HSET', ARGV[first_set + 5], ARGV[first_set + 6], ARGV[first_set + 7])
    first_set = first_set + 8
  else
    redis.call('ZREM', set, member)
    redis.call('HDEL', types, member)
    redis.call('HDEL', ARGV[first_set + 4], ARGV[first_set + 5])
    first_set = first_set + 6
  end
end
local events = tonumber(ARGV[first_set])
first_set = first_set + 1
for _ = 1, events do
  if redis.call('EXISTS', ARGV[first_set]) == 1 then
    redis.call('HSET', ARGV[first_set + 1], ARGV[first_set + 3], ARGV[first_set + 4])
    redis.call('ZADD', 'rio:topic-log-chains', 'NX', ARGV[first_set + 5], ARGV[first_set + 2])
  end
  first_set = first_set + 6
end
";

/// Adds a turn's subscription changes and events to the commit script's
/// arguments (see [`COMMIT_LUA`]).
pub(super) fn add_to_commit(
    invocation: &mut redis::ScriptInvocation<'_>,
    object: &ObjectKey,
    changes: &[SubscriptionChange],
    events: &[TopicEvent],
) {
    invocation.arg(changes.len());
    for change in changes {
        match change {
            SubscriptionChange::Subscribe {
                topic,
                message_type,
                since_ms,
            } => {
                let stored = StoredSubscription {
                    message_type: message_type.clone(),
                    since_ms: *since_ms,
                };
                invocation
                    .arg("s")
                    .arg(subscribers_key(topic))
                    .arg(types_key(topic))
                    .arg(member_of(object))
                    .arg(cbor(&stored))
                    .arg(object_topics_key(object))
                    .arg(topic)
                    .arg(message_type);
            }
            SubscriptionChange::Unsubscribe { topic } => {
                invocation
                    .arg("u")
                    .arg(subscribers_key(topic))
                    .arg(types_key(topic))
                    .arg(member_of(object))
                    .arg(object_topics_key(object))
                    .arg(topic);
            }
        }
    }
    invocation.arg(events.len());
    for event in events {
        let chain = Chain {
            topic: event.topic.clone(),
            publisher: object.clone(),
        };
        let stored = StoredEvent {
            payload: event.payload.clone(),
            published_ms: event.published_ms,
        };
        invocation
            .arg(subscribers_key(&event.topic))
            .arg(log_key(&chain))
            .arg(chain_member(&event.topic, object))
            .arg(event.seq)
            .arg(cbor(&stored))
            .arg(event.published_ms);
    }
}

/// Records delivery progress on event `ARGV[1]` of the log hash `KEYS[1]`:
/// through `ARGV[2]`, or with `''` removes it, and the chain `ARGV[3]`
/// from [`CHAINS`] once its log is empty.
static DELIVERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1], 't' .. ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[3]) end
elseif redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 't' .. ARGV[1], ARGV[2])
end
return 1
",
    )
});

impl RedisStore {
    pub(super) async fn subscriptions_of_object(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let mut listed: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(object_topics_key(object))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        listed.sort();
        Ok(listed)
    }

    pub(super) async fn topic_has_subscribers(&self, topic: &str) -> Result<bool, StorageError> {
        redis::cmd("EXISTS")
            .arg(subscribers_key(topic))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)
    }

    pub(super) async fn topic_subscribers(
        &self,
        topic: &str,
        after: Option<&ObjectKey>,
        published_ms: i64,
        limit: usize,
    ) -> Result<Vec<Subscriber>, StorageError> {
        let from = match after {
            Some(after) => format!("({}", member_of(after)),
            None => "-".to_string(),
        };
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(subscribers_key(topic))
            .arg(from)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(types_key(topic))
            .arg(&members)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut subscribers = Vec::with_capacity(members.len());
        for (member, stored) in members.iter().zip(stored) {
            // One unsubscribed between the two reads has no type left.
            let Some(stored) = stored else { continue };
            let stored: StoredSubscription = uncbor(&stored, "subscription")?;
            if stored.since_ms <= published_ms {
                subscribers.push(Subscriber {
                    object: object_of_member(member)?,
                    message_type: stored.message_type,
                });
            }
        }
        Ok(subscribers)
    }

    pub(super) async fn logged_of_chain(
        &self,
        chain: &Chain,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(log_key(chain))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut logged = Vec::new();
        for (field, value) in &fields {
            if field.starts_with('t') {
                continue;
            }
            let seq: i64 = field
                .parse()
                .map_err(|_| corrupt("topic log field", field))?;
            let stored: StoredEvent = uncbor(value, "logged event")?;
            let through = match fields.get(&format!("t{seq}")) {
                Some(member) => Some(object_of_member(&String::from_utf8_lossy(member))?),
                None => None,
            };
            logged.push(LoggedEvent {
                event: TopicEvent {
                    topic: chain.topic.clone(),
                    seq,
                    payload: stored.payload,
                    published_ms: stored.published_ms,
                },
                delivered_through: through,
            });
        }
        logged.sort_by_key(|logged| logged.event.seq);
        logged.truncate(limit);
        Ok(logged)
    }

    pub(super) async fn record_delivered(
        &self,
        chain: &Chain,
        seq: i64,
        through: Option<&ObjectKey>,
    ) -> Result<(), StorageError> {
        let _: i64 = DELIVERED
            .key(log_key(chain))
            .key(CHAINS)
            .arg(seq)
            .arg(through.map(member_of).unwrap_or_default())
            .arg(chain_member(&chain.topic, &chain.publisher))
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn touch_chain(&self, chain: &Chain, now_ms: i64) -> Result<(), StorageError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(CHAINS)
            .arg("XX")
            .arg(now_ms)
            .arg(chain_member(&chain.topic, &chain.publisher))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn waiting_chains(
        &self,
        slice: ShardSlice,
        published_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Chain>, StorageError> {
        // Other silos' shards are filtered out here: read enough of them.
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(CHAINS)
            .arg("-inf")
            .arg(published_by_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.saturating_mul(slice.count.max(1) as usize))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut chains = Vec::new();
        for member in members {
            let chain = chain_of_member(&member)?;
            if slice.holds(shard_of(&chain.publisher)) && chains.len() < limit {
                chains.push(chain);
            }
        }
        Ok(chains)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_member_reads_back_whatever_its_names_hold() {
        for (topic, service_type, object_id) in [
            ("Room/lobby", "Member", "ada"),
            ("a:b:3:c", "T", "x:y"),
            ("", "T", ""),
        ] {
            let publisher = ObjectKey::new(service_type, object_id);
            let chain = chain_of_member(&chain_member(topic, &publisher)).unwrap();
            assert_eq!(chain.topic, topic);
            assert_eq!(chain.publisher, publisher);
        }
        let object = ObjectKey::new("T", "a\u{1}b");
        assert_eq!(object_of_member(&member_of(&object)).unwrap(), object);
    }
}
