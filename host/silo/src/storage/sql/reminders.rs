//! Reminders on SQL: the rows a turn's commit sets, cancels or advances,
//! and the scan of the index by due time that finds what is due.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::backend;
use super::dialect::Dialect;
use crate::base::ObjectKey;
use crate::storage::reminders::shard_of;
use crate::storage::{DueReminder, Missed, Reminder, ReminderChange, ShardSlice, StorageError};

const COLUMNS: &str =
    "service_type, object_id, name, due_ms, every_ms, missed, message_type, payload";

/// Applies a turn's reminder changes, in order, inside its commit's
/// transaction. A turn changes few: a statement each.
pub(super) async fn write(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    object: &ObjectKey,
    changes: &[ReminderChange],
) -> Result<(), StorageError> {
    for change in changes {
        apply(&mut **transaction, dialect, object, change).await?;
    }
    Ok(())
}

/// Applies one change on `executor` (a transaction, or the pool for an
/// advance outside a turn).
pub(super) async fn apply<'e, E>(
    executor: E,
    dialect: Dialect,
    object: &ObjectKey,
    change: &ReminderChange,
) -> Result<(), StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let (service_type, object_id) = (
        object.service_type.to_string(),
        object.object_id.to_string(),
    );
    let query = match change {
        ReminderChange::Set { name, reminder } => sqlx::query(dialect.upsert(
            "rio_reminders",
            &["service_type", "object_id", "name"],
            &["shard", "due_ms", "every_ms", "missed", "message_type", "payload"],
        ))
        .bind(service_type)
        .bind(object_id)
        .bind(name.clone())
        .bind(i64::from(shard_of(object)))
        .bind(reminder.due_ms)
        .bind(reminder.every_ms)
        .bind(reminder.missed.code())
        .bind(reminder.message_type.clone())
        .bind(reminder.payload.clone()),
        ReminderChange::Cancel { name } => sqlx::query(dialect.sql(
            "DELETE FROM rio_reminders WHERE service_type = ? AND object_id = ? AND name = ?",
        ))
        .bind(service_type)
        .bind(object_id)
        .bind(name.clone()),
        ReminderChange::Advance {
            name,
            fired_due_ms,
            next_due_ms: Some(next),
        } => sqlx::query(dialect.sql(
            "UPDATE rio_reminders SET due_ms = ? WHERE service_type = ? AND object_id = ? AND name = ? AND due_ms = ?",
        ))
        .bind(*next)
        .bind(service_type)
        .bind(object_id)
        .bind(name.clone())
        .bind(*fired_due_ms),
        ReminderChange::Advance {
            name,
            fired_due_ms,
            next_due_ms: None,
        } => sqlx::query(dialect.sql(
            "DELETE FROM rio_reminders WHERE service_type = ? AND object_id = ? AND name = ? AND due_ms = ?",
        ))
        .bind(service_type)
        .bind(object_id)
        .bind(name.clone())
        .bind(*fired_due_ms),
    };
    query.execute(executor).await.map_err(backend)?;
    Ok(())
}

fn due_of(row: &AnyRow) -> Result<DueReminder, StorageError> {
    let service_type: String = row.try_get("service_type").map_err(backend)?;
    let object_id: String = row.try_get("object_id").map_err(backend)?;
    Ok(DueReminder {
        object: ObjectKey::new(&service_type, &object_id),
        name: row.try_get("name").map_err(backend)?,
        reminder: Reminder {
            due_ms: row.try_get("due_ms").map_err(backend)?,
            every_ms: row.try_get("every_ms").map_err(backend)?,
            missed: Missed::of_code(row.try_get("missed").map_err(backend)?),
            message_type: row.try_get("message_type").map_err(backend)?,
            payload: row.try_get("payload").map_err(backend)?,
        },
    })
}

pub(super) async fn of_object(
    pool: &AnyPool,
    dialect: Dialect,
    object: &ObjectKey,
) -> Result<Vec<(String, Reminder)>, StorageError> {
    let rows = sqlx::query(dialect.sql(&format!(
        "SELECT {COLUMNS} FROM rio_reminders WHERE service_type = ? AND object_id = ? ORDER BY name"
    )))
    .bind(object.service_type.to_string())
    .bind(object.object_id.to_string())
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|row| due_of(row).map(|due| (due.name, due.reminder)))
        .collect()
}

pub(super) async fn due(
    pool: &AnyPool,
    dialect: Dialect,
    slice: ShardSlice,
    (from_ms, due_by_ms): (i64, i64),
    offset: usize,
    limit: usize,
) -> Result<Vec<DueReminder>, StorageError> {
    // The range on `due_ms` comes from its index; the shard is a filter
    // on the rows in that range; ties are ordered by key, so pages meet.
    let rows = sqlx::query(dialect.sql(&format!(
        "SELECT {COLUMNS} FROM rio_reminders WHERE due_ms >= ? AND due_ms <= ? AND shard % ? = ? ORDER BY due_ms, service_type, object_id, name LIMIT ? OFFSET ?"
    )))
    .bind(from_ms)
    .bind(due_by_ms)
    .bind(i64::from(slice.count.max(1)))
    .bind(i64::from(slice.index))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter().map(due_of).collect()
}
