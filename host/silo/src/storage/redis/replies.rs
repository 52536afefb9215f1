//! Keyed calls' reply records on Redis: a hash per object (idempotency key
//! → reply), written by the commit script with the turn's writes, and one
//! sorted set indexing every record by when it was stored, for the sweep.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{backend, object_key};
use crate::base::ObjectKey;
use crate::storage::StorageError;

pub(super) const REPLY_AGES: &str = "rio:reply-ages";

pub(super) fn replies_key(object: &ObjectKey) -> String {
    object_key("replies", object)
}

/// Deletes at most `ARGV[2]` reply records scored below `ARGV[1]` in the
/// age index `KEYS[1]`, from their objects' hashes and from the index;
/// answers how many.
static SWEEP_REPLIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, entry in ipairs(entries) do
  local colon = string.find(entry, ':', 1, true)
  local length = tonumber(string.sub(entry, 1, colon - 1))
  local hash = string.sub(entry, colon + 1, colon + length)
  redis.call('HDEL', hash, string.sub(entry, colon + length + 1))
  redis.call('ZREM', KEYS[1], entry)
end
return #entries
",
    )
});

pub(super) async fn stored(
    mut connection: ConnectionManager,
    object: &ObjectKey,
    key: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    redis::cmd("HGET")
        .arg(replies_key(object))
        .arg(key)
        .query_async(&mut connection)
        .await
        .map_err(backend)
}

pub(super) async fn sweep(
    mut connection: ConnectionManager,
    stored_before_ms: i64,
    limit: usize,
) -> Result<u64, StorageError> {
    SWEEP_REPLIES
        .key(REPLY_AGES)
        .arg(stored_before_ms)
        .arg(limit)
        .invoke_async(&mut connection)
        .await
        .map_err(backend)
}
