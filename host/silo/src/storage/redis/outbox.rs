//! One-way messages on Redis: each sender's outbox is a hash (seq → the
//! message in CBOR) written by the commit script with the turn's writes;
//! a set lists the outboxes that hold messages, and each receiver type has
//! a sorted set of dead letters scored by when they were given up.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::{backend, object_key, object_of_key};
use crate::base::ObjectKey;
use crate::storage::{DeadLetter, Outgoing, PendingOutbox, StorageError};

/// The outboxes (keys) that hold undelivered messages.
pub(super) const SENDERS: &str = "rio:outbox-senders";
/// Outbox key → the seq its sender's next message gets.
pub(super) const NEXT_SEQ: &str = "rio:outbox-next";
/// The receiver types that have dead letters.
const DEAD_LETTER_TYPES: &str = "rio:dead-letter-types";

pub(super) fn outbox_key(sender: &ObjectKey) -> String {
    object_key("outbox", sender)
}

fn dead_letters_key(receiver_type: &str) -> String {
    format!("rio:dead-letters:{receiver_type}")
}

/// The sender an outbox key names (`rio:outbox:{len(type)}:{type}:{id}`).
fn sender_of(key: &str) -> Result<ObjectKey, StorageError> {
    object_of_key("outbox", key)
}

#[derive(Serialize, Deserialize)]
struct StoredMessage {
    receiver_type: String,
    receiver_id: String,
    message_type: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    created_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredLetter {
    sender_type: String,
    sender_id: String,
    seq: i64,
    message: StoredMessage,
    reason: String,
    failed_at_ms: i64,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("writing CBOR to memory cannot fail");
    bytes
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    ciborium::from_reader(bytes)
        .map_err(|error| StorageError::Backend(format!("redis: malformed {what}: {error}")))
}

/// The message as the outbox hash holds it.
pub(super) fn encode_message(message: &Outgoing) -> Vec<u8> {
    encode(&StoredMessage {
        receiver_type: message.receiver.service_type.to_string(),
        receiver_id: message.receiver.object_id.to_string(),
        message_type: message.message_type.clone(),
        payload: message.payload.clone(),
        created_at_ms: message.created_at_ms,
    })
}

fn outgoing_of(seq: i64, stored: StoredMessage) -> Outgoing {
    Outgoing {
        seq,
        receiver: ObjectKey::new(&stored.receiver_type, &stored.receiver_id),
        message_type: stored.message_type,
        payload: stored.payload,
        created_at_ms: stored.created_at_ms,
    }
}

/// Deletes seq `ARGV[1]` from the outbox `KEYS[1]`, and the outbox from the
/// senders set `KEYS[2]` once empty. With `ARGV[2]` (a dead letter, scored
/// `ARGV[3]`), records it in `KEYS[3]` and its type `ARGV[4]` in `KEYS[4]`,
/// only if this call removed the message.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
if removed == 1 and ARGV[2] then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[4])
end
return removed
",
    )
});

pub(super) async fn pending(
    mut connection: ConnectionManager,
    sender: &ObjectKey,
) -> Result<PendingOutbox, StorageError> {
    let key = outbox_key(sender);
    let (entries, stored_next): (Vec<(i64, Vec<u8>)>, Option<i64>) = redis::pipe()
        .cmd("HGETALL")
        .arg(&key)
        .cmd("HGET")
        .arg(NEXT_SEQ)
        .arg(&key)
        .query_async(&mut connection)
        .await
        .map_err(backend)?;
    let mut messages = entries
        .into_iter()
        .map(|(seq, bytes)| Ok(outgoing_of(seq, decode(&bytes, "outbox message")?)))
        .collect::<Result<Vec<_>, StorageError>>()?;
    messages.sort_by_key(|message| message.seq);
    let after_last = messages.last().map_or(0, |last| last.seq + 1);
    Ok(PendingOutbox {
        next_seq: stored_next.unwrap_or(0).max(after_last),
        messages,
    })
}

pub(super) async fn remove(
    mut connection: ConnectionManager,
    sender: &ObjectKey,
    seq: i64,
) -> Result<(), StorageError> {
    REMOVE
        .key(outbox_key(sender))
        .key(SENDERS)
        .arg(seq)
        .invoke_async::<i64>(&mut connection)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn bury(
    mut connection: ConnectionManager,
    letter: &DeadLetter,
) -> Result<(), StorageError> {
    let message = &letter.message;
    let receiver_type = message.receiver.service_type.to_string();
    let stored = StoredLetter {
        sender_type: letter.sender.service_type.to_string(),
        sender_id: letter.sender.object_id.to_string(),
        seq: message.seq,
        message: StoredMessage {
            receiver_type: receiver_type.clone(),
            receiver_id: message.receiver.object_id.to_string(),
            message_type: message.message_type.clone(),
            payload: message.payload.clone(),
            created_at_ms: message.created_at_ms,
        },
        reason: letter.reason.clone(),
        failed_at_ms: letter.failed_at_ms,
    };
    REMOVE
        .key(outbox_key(&letter.sender))
        .key(SENDERS)
        .key(dead_letters_key(&receiver_type))
        .key(DEAD_LETTER_TYPES)
        .arg(message.seq)
        .arg(encode(&stored))
        .arg(letter.failed_at_ms)
        .arg(&receiver_type)
        .invoke_async::<i64>(&mut connection)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn dead_letters(
    mut connection: ConnectionManager,
    receiver_type: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let types: Vec<String> = match receiver_type {
        Some(receiver_type) => vec![receiver_type.to_string()],
        None => redis::cmd("SMEMBERS")
            .arg(DEAD_LETTER_TYPES)
            .query_async(&mut connection)
            .await
            .map_err(backend)?,
    };
    let mut letters = Vec::new();
    for receiver_type in types {
        let entries: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(dead_letters_key(&receiver_type))
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut connection)
            .await
            .map_err(backend)?;
        for bytes in entries {
            let stored: StoredLetter = decode(&bytes, "dead letter")?;
            letters.push(DeadLetter {
                sender: ObjectKey::new(&stored.sender_type, &stored.sender_id),
                message: outgoing_of(stored.seq, stored.message),
                reason: stored.reason,
                failed_at_ms: stored.failed_at_ms,
            });
        }
    }
    letters.sort_by_key(|letter| letter.failed_at_ms);
    letters.truncate(limit);
    Ok(letters)
}

pub(super) async fn senders(
    mut connection: ConnectionManager,
    limit: usize,
) -> Result<Vec<ObjectKey>, StorageError> {
    let keys: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg(SENDERS)
        .arg(limit)
        .query_async(&mut connection)
        .await
        .map_err(backend)?;
    keys.iter().map(|key| sender_of(key)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keys_name_their_sender_back() {
        for (service_type, object_id) in [("Bank", "a"), ("a:b", "c"), ("a", "b:c"), ("T", "")] {
            let sender = ObjectKey::new(service_type, object_id);
            assert_eq!(sender_of(&outbox_key(&sender)).unwrap(), sender);
        }
        assert!(sender_of("rio:outbox:9:ab").is_err());
    }
}
