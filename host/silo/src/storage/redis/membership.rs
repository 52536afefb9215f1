//! Membership on Redis: one hash of member records, `{status}:{heartbeat_ms}`
//! by silo, and a sorted set of suspectors per suspected silo.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, backend, corrupt, parse_silo};
use crate::storage::{Member, MembershipStore, SiloId, SiloStatus, StorageError};

pub(super) const MEMBERS: &str = "rio:members";

fn suspicions_key(silo: &SiloId) -> String {
    format!("rio:suspicions:{silo}")
}

/// Adds member `ARGV[1]` as active at `ARGV[2]`, or refreshes its heartbeat
/// if it is active; a left or dead member stays so.
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HGET', KEYS[1], ARGV[1])
if record and string.match(record, '^([^:]*):') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'active:' .. ARGV[2])
return 1
",
    )
});

/// Sets member `ARGV[1]`'s heartbeat to `ARGV[2]` keeping its status, and
/// answers the status; an unknown member stays unknown and reads as dead.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 'dead' end
local status = string.match(record, '^([^:]*):') or 'dead'
redis.call('HSET', KEYS[1], ARGV[1], status .. ':' .. ARGV[2])
return status
",
    )
});

/// Moves member `ARGV[1]` to status `ARGV[2]` only if it is active.
static SET_STATUS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local status, heartbeat = string.match(record, '^([^:]*):(.*)$')
if status ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. heartbeat)
return 1
",
    )
});

/// A member record, `{status}:{heartbeat_ms}`.
pub(super) fn parse_member(field: &str, record: &str) -> Result<Member, StorageError> {
    let (status, heartbeat) = record
        .split_once(':')
        .ok_or_else(|| corrupt("member record", record))?;
    Ok(Member {
        silo: parse_silo(field)?,
        status: SiloStatus::parse(status),
        heartbeat_ms: heartbeat
            .parse()
            .map_err(|_| corrupt("member record", record))?,
    })
}

#[async_trait]
impl MembershipStore for RedisStore {
    async fn join(&self, silo: &SiloId, now_ms: i64) -> Result<(), StorageError> {
        // A silo already left or dead stays so (the status never moves
        // back); its next heartbeat tells it.
        JOIN.key(MEMBERS)
            .arg(silo.to_string())
            .arg(now_ms)
            .invoke_async::<()>(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn heartbeat(&self, silo: &SiloId, now_ms: i64) -> Result<SiloStatus, StorageError> {
        let status: String = HEARTBEAT
            .key(MEMBERS)
            .arg(silo.to_string())
            .arg(now_ms)
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        Ok(SiloStatus::parse(&status))
    }

    async fn set_status(&self, silo: &SiloId, status: SiloStatus) -> Result<(), StorageError> {
        if status == SiloStatus::Active {
            // Only ever a move away from active; to active is never one.
            return Ok(());
        }
        SET_STATUS
            .key(MEMBERS)
            .arg(silo.to_string())
            .arg(status.as_str())
            .invoke_async::<()>(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn members(&self) -> Result<Vec<Member>, StorageError> {
        let records: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(MEMBERS)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        let mut members = records
            .iter()
            .map(|(field, record)| parse_member(field, record))
            .collect::<Result<Vec<_>, _>>()?;
        members.sort_by(|a, b| a.silo.cmp(&b.silo));
        Ok(members)
    }

    async fn suspect(&self, target: &SiloId, by: &SiloId, now_ms: i64) -> Result<(), StorageError> {
        // GT: a suspicion delivered late must not push back a newer one.
        redis::cmd("ZADD")
            .arg(suspicions_key(target))
            .arg("GT")
            .arg(now_ms)
            .arg(by.to_string())
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn suspicions(&self, target: &SiloId, since_ms: i64) -> Result<usize, StorageError> {
        redis::cmd("ZCOUNT")
            .arg(suspicions_key(target))
            .arg(since_ms)
            .arg("+inf")
            .query_async(&mut self.connection())
            .await
            .map_err(backend)
    }
}
