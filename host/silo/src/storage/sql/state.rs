//! Object state on SQL, with a group-commit writer: the commits waiting
//! when the writer is free go into one transaction.
//!
//! Fencing ([`Fencing`]): the transaction first reads who may commit, and
//! writes only the commits of that silo. With placement it reads the
//! placement entries of the batch's objects, locking them against change
//! until it ends (a shared row lock on PostgreSQL and MySQL, the database
//! write lock on SQLite), so a take-over or release waits for the
//! transaction and the new owner loads what it wrote. With a lease it
//! reads the lease row under SQLite's write lock, so no process takes the
//! lease between the check and the writes.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::dialect::Dialect;
use super::replies::PendingLookup;
use super::{Fencing, SqlStore, backend};
use crate::base::ObjectKey;
use crate::storage::{
    Chain, Commit, DeadLetter, DueReminder, LoggedEvent, PendingOutbox, Reminder, ReminderChange,
    ReplyRecord, ShardSlice, SiloId, StateStore, StorageError, StoredEntry, Subscriber,
    gather_batch, stored_entries,
};

pub(crate) struct PendingCommit {
    object: ObjectKey,
    commit: Commit,
    owner: SiloId,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// What the writer writes, in batches.
pub(crate) enum Queued {
    Turn(PendingCommit),
    /// A delivered message's outbox row to delete. Through the writer too:
    /// on SQLite a second connection writing would wait on the writer's
    /// lock with SQLite's busy sleeps (milliseconds each), which made the
    /// deletes, not the deliveries, bound how fast an outbox drains.
    Delivered {
        sender: ObjectKey,
        seq: i64,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
}

pub(crate) async fn run_writer(
    pool: AnyPool,
    dialect: Dialect,
    fencing: Fencing,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    group_commit_max: usize,
    batch_sizes: std::sync::Arc<crate::base::batch_sizes::BatchSizes>,
) {
    let mut carry = None;
    let mut batch = Vec::new();
    let mut delivered = Vec::new();
    loop {
        let first = match carry.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let gathered =
            gather_batch(
                first,
                &mut queue,
                &mut carry,
                group_commit_max,
                |queued| match queued {
                    Queued::Turn(pending) => pending.commit.bytes(),
                    Queued::Delivered { .. } => 0,
                },
            );
        for queued in gathered {
            match queued {
                Queued::Turn(commit) => batch.push(commit),
                Queued::Delivered { sender, seq, done } => delivered.push((sender, seq, done)),
            }
        }
        let removed: Vec<(&ObjectKey, i64)> = delivered
            .iter()
            .map(|(sender, seq, _)| (sender, *seq))
            .collect();
        if !batch.is_empty() {
            batch_sizes.record(batch.len());
        }
        match write_batch(&pool, dialect, fencing, &batch, &removed).await {
            Ok(owned) => {
                for (index, commit) in batch.drain(..).enumerate() {
                    let answer = if owned.contains(&index) {
                        Ok(())
                    } else {
                        Err(StorageError::fenced(&commit.object, &commit.owner))
                    };
                    let _ = commit.done.send(answer);
                }
                for (_, _, done) in delivered.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, commits = batch.len(), "group commit failed");
                for commit in batch.drain(..) {
                    let _ = commit.done.send(Err(error.clone()));
                }
                for (_, _, done) in delivered.drain(..) {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Rows per multi-row upsert: four binds each, under PostgreSQL's 65535
/// and SQLite's 32766 bind limits.
const ROWS_PER_UPSERT: usize = 1000;

/// Reply records per multi-row upsert: five binds each.
const RECORDS_PER_UPSERT: usize = 1000;

/// Objects whose owners one statement reads: two binds each.
const OBJECTS_PER_OWNER_READ: usize = 500;

/// One transaction for the whole batch, with its upserts in as few
/// statements as possible: a round trip per row would cap a remote
/// database at a few thousand commits a second. Answers which commits (by
/// index) were written; the others came from a silo that does not own
/// their object.
///
/// `delivered` are outbox rows whose messages their receivers committed:
/// deleted whoever commits, since a message delivered is delivered and
/// deleting a row twice is no error.
async fn write_batch(
    pool: &AnyPool,
    dialect: Dialect,
    fencing: Fencing,
    batch: &[PendingCommit],
    delivered: &[(&ObjectKey, i64)],
) -> Result<HashSet<usize>, StorageError> {
    let mut transaction = match dialect {
        // Taking the write lock first makes the owner read below current
        // until the commit: no other process writes in between.
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        _ => pool.begin().await,
    }
    .map_err(backend)?;
    let owned: HashSet<usize> = match fencing {
        Fencing::Placement => {
            let owners = read_owners(&mut transaction, dialect, batch).await?;
            batch
                .iter()
                .enumerate()
                .filter(|(_, commit)| owners.get(&commit.object) == Some(&commit.owner))
                .map(|(index, _)| index)
                .collect()
        }
        Fencing::Lease => {
            let lease: Option<i64> =
                sqlx::query_scalar("SELECT generation FROM rio_lease WHERE id = 0")
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(backend)?;
            batch
                .iter()
                .enumerate()
                .filter(|(_, commit)| Some(commit.owner.generation) == lease)
                .map(|(index, _)| index)
                .collect()
        }
    };
    // The last write of a key wins, and a statement may touch a row only
    // once (PostgreSQL refuses otherwise).
    let mut latest: HashMap<(&ObjectKey, &str), Option<&Vec<u8>>> = HashMap::new();
    let mut records: HashMap<(&ObjectKey, &str), &ReplyRecord> = HashMap::new();
    for (_, commit) in batch
        .iter()
        .enumerate()
        .filter(|(index, _)| owned.contains(index))
    {
        for (key, value) in &commit.commit.writes {
            latest.insert((&commit.object, key.as_str()), value.as_ref());
        }
        if let Some(record) = &commit.commit.reply {
            records.insert((&commit.object, record.key.as_str()), record);
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for ((object, key), value) in latest {
        match value {
            Some(value) => upserts.push((object, key, value)),
            None => deletes.push((object, key)),
        }
    }
    let delete = dialect
        .sql("DELETE FROM object_state WHERE service_type = ? AND object_id = ? AND state_key = ?");
    for (object, key) in deletes {
        sqlx::query(delete.clone())
            .bind(&*object.service_type)
            .bind(&*object.object_id)
            .bind(key)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    for chunk in upserts.chunks(ROWS_PER_UPSERT) {
        let statement = dialect.upsert_rows(
            "object_state",
            &["service_type", "object_id", "state_key"],
            &["value"],
            chunk.len(),
        );
        let mut query = sqlx::query(statement);
        for (object, key, value) in chunk {
            query = query
                .bind(&*object.service_type)
                .bind(&*object.object_id)
                .bind(*key)
                .bind((*value).clone());
        }
        query.execute(&mut *transaction).await.map_err(backend)?;
    }
    let records: Vec<_> = records.into_iter().collect();
    for chunk in records.chunks(RECORDS_PER_UPSERT) {
        let statement = dialect.upsert_rows(
            "rio_replies",
            &["service_type", "object_id", "reply_key"],
            &["reply", "stored_at_ms"],
            chunk.len(),
        );
        let mut query = sqlx::query(statement);
        for ((object, key), record) in chunk {
            query = query
                .bind(&*object.service_type)
                .bind(&*object.object_id)
                .bind(*key)
                .bind(record.reply.clone())
                .bind(record.stored_at_ms);
        }
        query.execute(&mut *transaction).await.map_err(backend)?;
    }
    for (_, commit) in batch
        .iter()
        .enumerate()
        .filter(|(index, _)| owned.contains(index))
    {
        super::outbox::write(
            &mut transaction,
            dialect,
            &commit.object,
            &commit.commit.outbox,
        )
        .await?;
        super::reminders::write(
            &mut transaction,
            dialect,
            &commit.object,
            &commit.commit.reminders,
        )
        .await?;
        super::topics::write_subscriptions(
            &mut transaction,
            dialect,
            &commit.object,
            &commit.commit.subscriptions,
        )
        .await?;
    }
    // After the batch's subscriptions: a turn that subscribes and then
    // publishes in the same batch logs its event.
    let events: Vec<(&ObjectKey, &crate::storage::TopicEvent)> = batch
        .iter()
        .enumerate()
        .filter(|(index, _)| owned.contains(index))
        .flat_map(|(_, commit)| commit.commit.events.iter().map(|e| (&commit.object, e)))
        .collect();
    super::topics::write_events(&mut transaction, dialect, &events).await?;
    for (sender, seq) in delivered {
        super::outbox::delete(&mut transaction, dialect, sender, *seq).await?;
    }
    transaction.commit().await.map_err(backend)?;
    Ok(owned)
}

/// The owners of the batch's objects as the placement table has them,
/// locked until the transaction ends; objects without an entry are absent.
async fn read_owners(
    transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    batch: &[PendingCommit],
) -> Result<HashMap<ObjectKey, SiloId>, StorageError> {
    let objects: Vec<&ObjectKey> = batch
        .iter()
        .map(|commit| &commit.object)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let lock = match dialect {
        Dialect::Postgres => " FOR SHARE",
        Dialect::MySql => " LOCK IN SHARE MODE",
        // The write lock taken at BEGIN IMMEDIATE covers the whole file.
        Dialect::Sqlite => "",
    };
    let mut owners = HashMap::with_capacity(objects.len());
    for chunk in objects.chunks(OBJECTS_PER_OWNER_READ) {
        // OR of key equalities rather than a row-value IN: every database
        // (MariaDB included) turns it into index lookups.
        let condition = vec!["(service_type = ? AND object_id = ?)"; chunk.len()].join(" OR ");
        let statement = dialect.sql(&format!(
            "SELECT service_type, object_id, owner_address, owner_generation FROM placement WHERE {condition}{lock}"
        ));
        let mut query = sqlx::query(statement);
        for object in chunk {
            query = query.bind(&*object.service_type).bind(&*object.object_id);
        }
        for row in query.fetch_all(&mut **transaction).await.map_err(backend)? {
            let service_type: String = row.try_get(0).map_err(backend)?;
            let object_id: String = row.try_get(1).map_err(backend)?;
            let owner = SiloId {
                address: row.try_get(2).map_err(backend)?,
                generation: row.try_get(3).map_err(backend)?,
            };
            owners.insert(ObjectKey::new(&service_type, &object_id), owner);
        }
    }
    Ok(owners)
}

#[async_trait]
impl StateStore for SqlStore {
    fn group_commit_sizes(&self) -> Option<crate::base::batch_sizes::BatchSizeReading> {
        Some(self.batch_sizes.read())
    }

    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError> {
        let rows = sqlx::query(self.sql(
            "SELECT state_key, value FROM object_state WHERE service_type = ? AND object_id = ?",
        ))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>(0).map_err(backend)?,
                    row.try_get::<Vec<u8>, _>(1).map_err(backend)?,
                ))
            })
            .collect()
    }

    async fn load_keys(
        &self,
        object: &ObjectKey,
        inline_max: usize,
    ) -> Result<HashMap<String, StoredEntry>, StorageError> {
        let length = self.dialect.byte_length("value");
        let rows = sqlx::query(self.sql(&format!(
            "SELECT state_key, {length}, CASE WHEN {length} <= ? THEN value END
             FROM object_state WHERE service_type = ? AND object_id = ?"
        )))
        .bind(i64::try_from(inline_max).unwrap_or(i64::MAX))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        stored_entries(rows)
    }

    async fn read_value(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let row = sqlx::query(self.sql(
            "SELECT value FROM object_state WHERE service_type = ? AND object_id = ? AND state_key = ?",
        ))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| row.try_get::<Vec<u8>, _>(0).map_err(backend))
            .transpose()
    }

    async fn commit_turn(
        &self,
        object: &ObjectKey,
        commit: Commit,
        owner: &SiloId,
    ) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.commits
            .send(Queued::Turn(PendingCommit {
                object: object.clone(),
                commit,
                owner: owner.clone(),
                done,
            }))
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }

    async fn stored_reply(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let (done, answer) = oneshot::channel();
        let lookup = PendingLookup {
            object: object.clone(),
            key: key.to_string(),
            done,
        };
        self.lookups
            .send(lookup)
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    async fn sweep_replies(
        &self,
        stored_before_ms: i64,
        limit: usize,
    ) -> Result<u64, StorageError> {
        let deleted = sqlx::query(self.dialect.sweep_replies())
            .bind(stored_before_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(deleted.rows_affected())
    }

    async fn pending_outbox(&self, sender: &ObjectKey) -> Result<PendingOutbox, StorageError> {
        super::outbox::pending(&self.pool, self.dialect, sender).await
    }

    async fn remove_outgoing(&self, sender: &ObjectKey, seq: i64) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        let sender = sender.clone();
        self.commits
            .send(Queued::Delivered { sender, seq, done })
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<(), StorageError> {
        super::outbox::bury(&self.pool, self.dialect, letter).await
    }

    async fn dead_letters(
        &self,
        receiver_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        super::outbox::dead_letters(&self.pool, self.dialect, receiver_type, limit).await
    }

    async fn senders_with_pending(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        super::outbox::senders(&self.pool, self.dialect, limit).await
    }

    async fn interrupted_objects(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        let rows =
            sqlx::query(self.sql(
                "SELECT service_type, object_id FROM object_state WHERE state_key = ? LIMIT ?",
            ))
            .bind(crate::base::reserved::INTENT_KEY)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
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

    async fn reminders_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, Reminder)>, StorageError> {
        super::reminders::of_object(&self.pool, self.dialect, object).await
    }

    async fn due_reminders(
        &self,
        slice: ShardSlice,
        from_ms: i64,
        due_by_ms: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DueReminder>, StorageError> {
        let range = (from_ms, due_by_ms);
        super::reminders::due(&self.pool, self.dialect, slice, range, offset, limit).await
    }

    async fn advance_reminder(
        &self,
        object: &ObjectKey,
        name: &str,
        fired_due_ms: i64,
        next_due_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        let change = ReminderChange::Advance {
            name: name.to_string(),
            fired_due_ms,
            next_due_ms,
        };
        super::reminders::apply(&self.pool, self.dialect, object, &change).await
    }

    async fn subscriptions_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, String)>, StorageError> {
        super::topics::of_object(&self.pool, self.dialect, object).await
    }

    async fn has_subscribers(&self, topic: &str) -> Result<bool, StorageError> {
        super::topics::has_subscribers(&self.pool, self.dialect, topic).await
    }

    async fn subscribers(
        &self,
        topic: &str,
        after: Option<&ObjectKey>,
        published_ms: i64,
        limit: usize,
    ) -> Result<Vec<Subscriber>, StorageError> {
        super::topics::subscribers(&self.pool, self.dialect, topic, after, published_ms, limit)
            .await
    }

    async fn logged_events(
        &self,
        chain: &Chain,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        super::topics::logged(&self.pool, self.dialect, chain, limit).await
    }

    async fn event_delivered(
        &self,
        chain: &Chain,
        seq: i64,
        through: Option<&ObjectKey>,
    ) -> Result<(), StorageError> {
        super::topics::delivered(&self.pool, self.dialect, chain, seq, through).await
    }

    async fn touch_logged_event(
        &self,
        chain: &Chain,
        seq: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        super::topics::touch(&self.pool, self.dialect, chain, seq, now_ms).await
    }

    async fn chains_waiting(
        &self,
        slice: ShardSlice,
        published_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Chain>, StorageError> {
        super::topics::waiting(&self.pool, self.dialect, slice, published_by_ms, limit).await
    }
}
