//! One-way messages on SQL: the rows a turn's commit adds to its sender's
//! outbox, and what delivery does with them afterwards (remove one the
//! receiver committed, move one it refused to the dead letters).

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::backend;
use super::dialect::Dialect;
use crate::base::ObjectKey;
use crate::storage::{DeadLetter, Outgoing, PendingOutbox, StorageError};

const MESSAGE_COLUMNS: &str =
    "sender_type, sender_id, seq, receiver_type, receiver_id, message_type, payload, created_at_ms";

/// Stores a turn's outgoing messages and its sender's next seq, inside the
/// commit's transaction. Sends are few per turn: a statement each.
pub(super) async fn write(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    sender: &ObjectKey,
    outbox: &[Outgoing],
) -> Result<(), StorageError> {
    let Some(last) = outbox.last() else {
        return Ok(());
    };
    let insert = dialect.sql(&format!(
        "INSERT INTO rio_outbox ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ));
    for message in outbox {
        sqlx::query(insert.clone())
            .bind(sender.service_type.to_string())
            .bind(sender.object_id.to_string())
            .bind(message.seq)
            .bind(message.receiver.service_type.to_string())
            .bind(message.receiver.object_id.to_string())
            .bind(message.message_type.clone())
            .bind(message.payload.clone())
            .bind(message.created_at_ms)
            .execute(&mut **transaction)
            .await
            .map_err(backend)?;
    }
    let next = dialect.upsert(
        "rio_outbox_next",
        &["sender_type", "sender_id"],
        &["next_seq"],
    );
    sqlx::query(next)
        .bind(sender.service_type.to_string())
        .bind(sender.object_id.to_string())
        .bind(last.seq + 1)
        .execute(&mut **transaction)
        .await
        .map_err(backend)?;
    Ok(())
}

fn outgoing_of(row: &AnyRow) -> Result<Outgoing, StorageError> {
    let receiver_type: String = row.try_get("receiver_type").map_err(backend)?;
    let receiver_id: String = row.try_get("receiver_id").map_err(backend)?;
    Ok(Outgoing {
        seq: row.try_get("seq").map_err(backend)?,
        receiver: ObjectKey::new(&receiver_type, &receiver_id),
        message_type: row.try_get("message_type").map_err(backend)?,
        payload: row.try_get("payload").map_err(backend)?,
        created_at_ms: row.try_get("created_at_ms").map_err(backend)?,
    })
}

pub(super) async fn pending(
    pool: &AnyPool,
    dialect: Dialect,
    sender: &ObjectKey,
) -> Result<PendingOutbox, StorageError> {
    let rows = sqlx::query(dialect.sql(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM rio_outbox WHERE sender_type = ? AND sender_id = ? ORDER BY seq"
    )))
    .bind(sender.service_type.to_string())
    .bind(sender.object_id.to_string())
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    let messages = rows
        .iter()
        .map(outgoing_of)
        .collect::<Result<Vec<_>, _>>()?;
    let stored_next: Option<i64> = sqlx::query_scalar(
        dialect.sql("SELECT next_seq FROM rio_outbox_next WHERE sender_type = ? AND sender_id = ?"),
    )
    .bind(sender.service_type.to_string())
    .bind(sender.object_id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    let after_last = messages.last().map_or(0, |last| last.seq + 1);
    Ok(PendingOutbox {
        next_seq: stored_next.unwrap_or(0).max(after_last),
        messages,
    })
}

/// Deletes `sender`'s message `seq` inside `transaction` (its receiver
/// committed it); deleting one already gone is no error.
pub(super) async fn delete(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    sender: &ObjectKey,
    seq: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        dialect.sql("DELETE FROM rio_outbox WHERE sender_type = ? AND sender_id = ? AND seq = ?"),
    )
    .bind(sender.service_type.to_string())
    .bind(sender.object_id.to_string())
    .bind(seq)
    .execute(&mut **transaction)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(super) async fn bury(
    pool: &AnyPool,
    dialect: Dialect,
    letter: &DeadLetter,
) -> Result<(), StorageError> {
    let mut transaction = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        _ => pool.begin().await,
    }
    .map_err(backend)?;
    let sender = &letter.sender;
    let message = &letter.message;
    let removed = sqlx::query(
        dialect.sql("DELETE FROM rio_outbox WHERE sender_type = ? AND sender_id = ? AND seq = ?"),
    )
    .bind(sender.service_type.to_string())
    .bind(sender.object_id.to_string())
    .bind(message.seq)
    .execute(&mut *transaction)
    .await
    .map_err(backend)?;
    // Only the delivery that removed the row records it: two silos giving
    // up the same message store one dead letter.
    if removed.rows_affected() > 0 {
        sqlx::query(dialect.sql(&format!(
            "INSERT INTO rio_dead_letters ({MESSAGE_COLUMNS}, reason, failed_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(sender.service_type.to_string())
        .bind(sender.object_id.to_string())
        .bind(message.seq)
        .bind(message.receiver.service_type.to_string())
        .bind(message.receiver.object_id.to_string())
        .bind(message.message_type.clone())
        .bind(message.payload.clone())
        .bind(message.created_at_ms)
        .bind(letter.reason.clone())
        .bind(letter.failed_at_ms)
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
    }
    transaction.commit().await.map_err(backend)
}

pub(super) async fn dead_letters(
    pool: &AnyPool,
    dialect: Dialect,
    receiver_type: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StorageError> {
    let filter = match receiver_type {
        Some(_) => "WHERE receiver_type = ? ",
        None => "",
    };
    let statement = dialect.sql(&format!(
        "SELECT {MESSAGE_COLUMNS}, reason, failed_at_ms FROM rio_dead_letters {filter}
         ORDER BY failed_at_ms, sender_type, sender_id, seq LIMIT ?"
    ));
    let mut query = sqlx::query(statement);
    if let Some(receiver_type) = receiver_type {
        query = query.bind(receiver_type.to_string());
    }
    let rows = query
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|row| {
            let sender_type: String = row.try_get("sender_type").map_err(backend)?;
            let sender_id: String = row.try_get("sender_id").map_err(backend)?;
            Ok(DeadLetter {
                sender: ObjectKey::new(&sender_type, &sender_id),
                message: outgoing_of(row)?,
                reason: row.try_get("reason").map_err(backend)?,
                failed_at_ms: row.try_get("failed_at_ms").map_err(backend)?,
            })
        })
        .collect()
}

pub(super) async fn senders(
    pool: &AnyPool,
    dialect: Dialect,
    limit: usize,
) -> Result<Vec<ObjectKey>, StorageError> {
    let rows =
        sqlx::query(dialect.sql("SELECT DISTINCT sender_type, sender_id FROM rio_outbox LIMIT ?"))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(backend)?;
    rows.iter()
        .map(|row| {
            let service_type: String = row.try_get(0).map_err(backend)?;
            let object_id: String = row.try_get(1).map_err(backend)?;
            Ok(ObjectKey::new(&service_type, &object_id))
        })
        .collect()
}
