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
//! | `rio:reminders:{len(type)}:{type}:{id}` | hash       | one object's reminders: name → reminder (CBOR, without its due time) |
//! | `rio:reminders-due:{shard}`             | sorted set | `{len(hash key)}:{hash key}{name}`, scored by its due time in ms |
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

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ClusterStore, SiloId, StorageError, redact};
use crate::base::ObjectKey;

mod components;
mod membership;
mod outbox;
mod placement;
mod reminders;
mod replies;
mod state;
#[cfg(test)]
mod tests;
mod topics;

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take; generous because a component upload is
/// megabytes, short enough that a hung server fails a turn rather than
/// stalling it forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The object whose state hash is `key` (the inverse of [`state::state_key`]).
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
