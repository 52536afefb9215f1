//! Placement on Redis: one string per placed object naming its owner, and
//! per silo a set of the placement keys it owns, so a dead silo's objects
//! can be released without scanning the keyspace.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, backend, object_key, parse_silo};
use crate::base::ObjectKey;
use crate::storage::{PlacementStore, SiloId, StorageError};

/// Placement keys `release_all` drops per script run: one run blocks the
/// whole server, so a dead silo's thousands of objects go in slices.
pub(super) const RELEASE_BATCH: usize = 500;

pub(super) fn placement_key(object: &ObjectKey) -> String {
    object_key("placement", object)
}

fn owned_key(silo: &SiloId) -> String {
    format!("rio:owned:{silo}")
}

/// Gives `ARGV[1]` the key `KEYS[1]` unless someone has it; answers the owner.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], KEYS[1])
return ARGV[1]
",
    )
});

/// Moves `KEYS[1]` from `ARGV[1]` to `ARGV[2]` if `ARGV[1]` still has it;
/// answers the owner afterwards, nil if there is none.
static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
if not owner then return false end
if owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], KEYS[1])
redis.call('SADD', KEYS[3], KEYS[1])
return ARGV[2]
",
    )
});

/// Drops `KEYS[1]` if `ARGV[1]` owns it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], KEYS[1])
return 0
",
    )
});

/// Pops up to `ARGV[2]` keys from the owned set `KEYS[1]` and drops those
/// `ARGV[1]` still owns; answers {dropped, popped}.
static RELEASE_SOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local keys = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
local released = 0
for _, key in ipairs(keys) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return {released, #keys}
",
    )
});

#[async_trait]
impl PlacementStore for RedisStore {
    async fn owner(&self, object: &ObjectKey) -> Result<Option<SiloId>, StorageError> {
        let owner: Option<String> = redis::cmd("GET")
            .arg(placement_key(object))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        owner.as_deref().map(parse_silo).transpose()
    }

    async fn claim(&self, object: &ObjectKey, silo: &SiloId) -> Result<SiloId, StorageError> {
        let owner: String = CLAIM
            .key(placement_key(object))
            .key(owned_key(silo))
            .arg(silo.to_string())
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        parse_silo(&owner)
    }

    async fn take_over(
        &self,
        object: &ObjectKey,
        from: &SiloId,
        to: &SiloId,
    ) -> Result<Option<SiloId>, StorageError> {
        let owner: Option<String> = TAKE_OVER
            .key(placement_key(object))
            .key(owned_key(from))
            .key(owned_key(to))
            .arg(from.to_string())
            .arg(to.to_string())
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        owner.as_deref().map(parse_silo).transpose()
    }

    async fn release(&self, object: &ObjectKey, silo: &SiloId) -> Result<(), StorageError> {
        RELEASE
            .key(placement_key(object))
            .key(owned_key(silo))
            .arg(silo.to_string())
            .invoke_async::<()>(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn release_all(&self, silo: &SiloId) -> Result<u64, StorageError> {
        let owned = owned_key(silo);
        let silo = silo.to_string();
        let mut connection = self.connection();
        let mut released = 0;
        loop {
            let (dropped, popped): (u64, u64) = RELEASE_SOME
                .key(&owned)
                .arg(&silo)
                .arg(RELEASE_BATCH)
                .invoke_async(&mut connection)
                .await
                .map_err(backend)?;
            released += dropped;
            if popped == 0 {
                return Ok(released);
            }
        }
    }
}
