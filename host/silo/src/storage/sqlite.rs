//! The embedded default store: one SQLite file in WAL mode.
//!
//! Commits from all activations go through one writer task that drains its
//! queue into a single transaction (group commit): under load one fsync
//! covers hundreds of turns, and each caller is answered only once its
//! transaction is durable.
//!
//! Fencing: a lone silo owns every object of its data directory, but two
//! processes may open one directory by mistake (or a frozen one may wake up
//! after its replacement started). The process that opened the file last
//! holds the lease (a row with its generation); every commit transaction
//! checks the lease first, under the write lock, so only that process
//! commits.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{
    Commit, ComponentStore, DeadLetter, Outgoing, PendingOutbox, SiloId, StateStore, StorageError,
    StoredEntry, gather_batch, stored_entries,
};
use crate::ObjectKey;

/// Schema steps, applied in order once each; never edit a released step.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE object_state (
        service_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (service_type, object_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE components (content_hash TEXT PRIMARY KEY, bytes BLOB NOT NULL);
    CREATE TABLE deployments (
        service_type TEXT PRIMARY KEY,
        content_hash TEXT NOT NULL REFERENCES components (content_hash)
    );",
    // One row: the generation of the process that may commit.
    "CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        generation INTEGER NOT NULL
    );",
    // The replies of turns run under an idempotency key, committed with
    // their writes; swept by age.
    "CREATE TABLE rio_replies (
        service_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        reply_key TEXT NOT NULL,
        reply BLOB NOT NULL,
        stored_at_ms INTEGER NOT NULL,
        PRIMARY KEY (service_type, object_id, reply_key)
    ) WITHOUT ROWID;
    CREATE INDEX rio_replies_by_age ON rio_replies (stored_at_ms);",
    // One-way messages committed with their sender's turn, until their
    // receiver committed them; each sender's next seq, kept after its
    // outbox empties so a seq is never reused; and the messages receivers
    // refused.
    "CREATE TABLE rio_outbox (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        receiver_type TEXT NOT NULL,
        receiver_id TEXT NOT NULL,
        message_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE rio_outbox_next (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        next_seq INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id)
    ) WITHOUT ROWID;
    CREATE TABLE rio_dead_letters (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        receiver_type TEXT NOT NULL,
        receiver_id TEXT NOT NULL,
        message_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        failed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX rio_dead_letters_by_receiver ON rio_dead_letters (receiver_type, failed_at_ms);",
    // State in a table with rowids: a WITHOUT ROWID table is one B-tree of
    // whole rows, and once a few objects held 15 MiB values every later
    // write to any object was about 90 times slower (SQLite alone: 42,500
    // small commits/s before, 475 after twelve such values); with rowids
    // the values stay in the table's leaves and the key index stays small.
    "CREATE TABLE object_state_rows (
        service_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (service_type, object_id, key)
    );
    INSERT INTO object_state_rows (service_type, object_id, key, value)
        SELECT service_type, object_id, key, value FROM object_state;
    DROP TABLE object_state;
    ALTER TABLE object_state_rows RENAME TO object_state;",
];

/// SQLite allows 32766 bound parameters per statement; four per row.
const ROWS_PER_INSERT: usize = 4000;
/// The same limit for reply records, five binds each.
const RECORDS_PER_INSERT: usize = 3000;
/// Reply lookups answered by one query at most (three variables each).
const LOOKUPS_PER_QUERY: usize = 256;

struct PendingCommit {
    object: ObjectKey,
    commit: Commit,
    owner: SiloId,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// What the one writer connection writes, in batches.
enum Queued {
    Turn(PendingCommit),
    /// A delivered message's outbox row to delete. Through the writer too:
    /// a second connection writing would wait on the writer's lock with
    /// SQLite's busy sleeps (milliseconds each), which made the deletes,
    /// not the deliveries, bound how fast an outbox drains.
    Delivered {
        sender: ObjectKey,
        seq: i64,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// A keyed call's check for a stored reply, waiting to join a batch.
struct PendingLookup {
    object: ObjectKey,
    key: String,
    done: oneshot::Sender<Result<Option<Vec<u8>>, StorageError>>,
}

/// State, components and deployments in one SQLite file.
pub struct SqliteStore {
    readers: SqlitePool,
    commits: mpsc::UnboundedSender<Queued>,
    /// Reply lookups, answered in batches: every keyed call makes one, and
    /// nearly all miss, so one query per call (a round trip to a reader
    /// thread each) cost a keyed write a third of its throughput.
    lookups: mpsc::UnboundedSender<PendingLookup>,
    /// One connection for the rare writes that are not turns' commits
    /// (outbox rows given up), outside the group-commit queue.
    maintenance: SqlitePool,
}

fn backend(error: sqlx::Error) -> StorageError {
    StorageError::Backend(error.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it,
    /// takes the lease for the process `generation` (from then on only
    /// commits by that generation are accepted), and starts the
    /// group-commit writer.
    pub async fn open(
        path: &Path,
        group_commit_max: usize,
        generation: i64,
    ) -> Result<SqliteStore, StorageError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL survives a killed process (the silo dying);
            // only an OS crash or power loss can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        migrate(&mut writer).await?;
        sqlx::query(
            "INSERT INTO lease (id, generation) VALUES (0, ?)
             ON CONFLICT (id) DO UPDATE SET generation = excluded.generation",
        )
        .bind(generation)
        .execute(&mut writer)
        .await
        .map_err(backend)?;
        let maintenance = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        let (commits, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(writer, queue, group_commit_max.max(1)));
        let (lookups, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run_lookups(readers.clone(), waiting));
        Ok(SqliteStore {
            readers,
            commits,
            lookups,
            maintenance,
        })
    }

    async fn write(
        &self,
        object: ObjectKey,
        commit: Commit,
        owner: SiloId,
    ) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.commits
            .send(Queued::Turn(PendingCommit {
                object,
                commit,
                owner,
                done,
            }))
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }
}

async fn migrate(connection: &mut SqliteConnection) -> Result<(), StorageError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS rio_schema (version INTEGER NOT NULL)")
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    let applied: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM rio_schema")
        .fetch_one(&mut *connection)
        .await
        .map_err(backend)?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let mut transaction = connection.begin().await.map_err(backend)?;
        sqlx::raw_sql(*step)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO rio_schema (version) VALUES (?)")
            .bind(index as i64 + 1)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
    }
    Ok(())
}

async fn run_writer(
    mut connection: SqliteConnection,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    group_commit_max: usize,
) {
    let mut batch = Vec::new();
    let mut delivered = Vec::new();
    let mut carry = None;
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
        match write_batch(&mut connection, &batch, &delivered).await {
            Ok(lease) => {
                for commit in batch.drain(..) {
                    let answer = if commit.owner.generation == lease {
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

/// Answers reply lookups a batch at a time, each batch in one query: while
/// one runs, the next gathers.
async fn run_lookups(readers: SqlitePool, mut queue: mpsc::UnboundedReceiver<PendingLookup>) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < LOOKUPS_PER_QUERY {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match look_up(&readers, &batch).await {
            Ok(mut found) => {
                for lookup in batch.drain(..) {
                    let id = (lookup.object, lookup.key);
                    let _ = lookup.done.send(Ok(found.remove(&id)));
                }
            }
            Err(error) => {
                for lookup in batch.drain(..) {
                    let _ = lookup.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The stored replies among `batch`'s (object, key) pairs.
async fn look_up(
    readers: &SqlitePool,
    batch: &[PendingLookup],
) -> Result<HashMap<(ObjectKey, String), Vec<u8>>, StorageError> {
    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT service_type, object_id, reply_key, reply FROM rio_replies
         WHERE (service_type, object_id, reply_key) IN (VALUES ",
    );
    let mut rows = query.separated(", ");
    for lookup in batch {
        rows.push("(")
            .push_bind_unseparated(&*lookup.object.service_type)
            .push_unseparated(", ")
            .push_bind_unseparated(&*lookup.object.object_id)
            .push_unseparated(", ")
            .push_bind_unseparated(lookup.key.as_str())
            .push_unseparated(")");
    }
    query.push(")");
    let found = query.build().fetch_all(readers).await.map_err(backend)?;
    Ok(found
        .into_iter()
        .map(|row| {
            let object = ObjectKey::new(row.get::<&str, _>(0), row.get::<&str, _>(1));
            ((object, row.get::<String, _>(2)), row.get::<Vec<u8>, _>(3))
        })
        .collect())
}

/// Writes the commits of `batch` made by the lease holder in one
/// transaction; answers the lease holder's generation, which tells the
/// others apart (their writes were left out).
async fn write_batch(
    connection: &mut SqliteConnection,
    batch: &[PendingCommit],
    delivered: &[(ObjectKey, i64, oneshot::Sender<Result<(), StorageError>>)],
) -> Result<i64, StorageError> {
    // IMMEDIATE takes the write lock before the lease is read, so no other
    // process can take the lease between the check and the writes.
    let mut transaction = connection
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(backend)?;
    let lease: i64 = sqlx::query_scalar("SELECT generation FROM lease WHERE id = 0")
        .fetch_one(&mut *transaction)
        .await
        .map_err(backend)?;
    let mut upserts = Vec::new();
    let mut records = Vec::new();
    for commit in batch
        .iter()
        .filter(|commit| commit.owner.generation == lease)
    {
        if let Some(record) = &commit.commit.reply {
            records.push((&commit.object, record));
        }
        for (key, value) in &commit.commit.writes {
            match value {
                Some(value) => upserts.push((&commit.object, key, value)),
                None => {
                    sqlx::query("DELETE FROM object_state WHERE service_type = ? AND object_id = ? AND key = ?")
                        .bind(&*commit.object.service_type)
                        .bind(&*commit.object.object_id)
                        .bind(key)
                        .execute(&mut *transaction)
                        .await
                        .map_err(backend)?;
                }
            }
        }
    }
    for chunk in upserts.chunks(ROWS_PER_INSERT) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO object_state (service_type, object_id, key, value) ");
        insert.push_values(chunk, |mut row, (object, key, value)| {
            row.push_bind(&*object.service_type)
                .push_bind(&*object.object_id)
                .push_bind(key.as_str())
                .push_bind(value.as_slice());
        });
        insert.push(
            " ON CONFLICT (service_type, object_id, key) DO UPDATE SET value = excluded.value",
        );
        insert
            .build()
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    for chunk in records.chunks(RECORDS_PER_INSERT) {
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO rio_replies (service_type, object_id, reply_key, reply, stored_at_ms) ",
        );
        insert.push_values(chunk, |mut row, (object, record)| {
            row.push_bind(&*object.service_type)
                .push_bind(&*object.object_id)
                .push_bind(record.key.as_str())
                .push_bind(record.reply.as_slice())
                .push_bind(record.stored_at_ms);
        });
        insert.push(
            " ON CONFLICT (service_type, object_id, reply_key)
              DO UPDATE SET reply = excluded.reply, stored_at_ms = excluded.stored_at_ms",
        );
        insert
            .build()
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    for commit in batch
        .iter()
        .filter(|commit| commit.owner.generation == lease)
    {
        write_outbox(&mut transaction, &commit.object, &commit.commit.outbox).await?;
    }
    // Delivered rows go whoever holds the lease: a message delivered is
    // delivered, and deleting a row twice is no error.
    for (sender, seq, _) in delivered {
        sqlx::query("DELETE FROM rio_outbox WHERE sender_type = ? AND sender_id = ? AND seq = ?")
            .bind(&*sender.service_type)
            .bind(&*sender.object_id)
            .bind(seq)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    transaction.commit().await.map_err(backend)?;
    Ok(lease)
}

/// Stores a turn's outgoing messages and its sender's next seq. Sends are
/// few per turn, so a statement per message is cheap enough.
async fn write_outbox(
    transaction: &mut SqliteConnection,
    sender: &ObjectKey,
    outbox: &[Outgoing],
) -> Result<(), StorageError> {
    let Some(last) = outbox.last() else {
        return Ok(());
    };
    for message in outbox {
        sqlx::query(
            "INSERT INTO rio_outbox (sender_type, sender_id, seq, receiver_type, receiver_id,
                message_type, payload, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&*sender.service_type)
        .bind(&*sender.object_id)
        .bind(message.seq)
        .bind(&*message.receiver.service_type)
        .bind(&*message.receiver.object_id)
        .bind(message.message_type.as_str())
        .bind(message.payload.as_slice())
        .bind(message.created_at_ms)
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
    }
    sqlx::query(
        "INSERT INTO rio_outbox_next (sender_type, sender_id, next_seq) VALUES (?, ?, ?)
         ON CONFLICT (sender_type, sender_id) DO UPDATE SET next_seq = excluded.next_seq",
    )
    .bind(&*sender.service_type)
    .bind(&*sender.object_id)
    .bind(last.seq + 1)
    .execute(&mut *transaction)
    .await
    .map_err(backend)?;
    Ok(())
}

/// An outbox or dead-letter row's message columns, from the receiver's
/// type on: receiver type and id, message type, payload, created at.
fn outgoing_of(row: &sqlx::sqlite::SqliteRow, seq: i64) -> Outgoing {
    let receiver_type: String = row.get("receiver_type");
    let receiver_id: String = row.get("receiver_id");
    Outgoing {
        seq,
        receiver: ObjectKey::new(&receiver_type, &receiver_id),
        message_type: row.get("message_type"),
        payload: row.get("payload"),
        created_at_ms: row.get("created_at_ms"),
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError> {
        let rows = sqlx::query(
            "SELECT key, value FROM object_state WHERE service_type = ? AND object_id = ?",
        )
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get::<String, _>(0), row.get::<Vec<u8>, _>(1)))
            .collect())
    }

    async fn load_keys(
        &self,
        object: &ObjectKey,
        inline_max: usize,
    ) -> Result<HashMap<String, StoredEntry>, StorageError> {
        let rows = sqlx::query(
            "SELECT key, length(value), CASE WHEN length(value) <= ? THEN value END
             FROM object_state WHERE service_type = ? AND object_id = ?",
        )
        .bind(i64::try_from(inline_max).unwrap_or(i64::MAX))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        stored_entries(rows)
    }

    async fn read_value(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        sqlx::query_scalar(
            "SELECT value FROM object_state WHERE service_type = ? AND object_id = ? AND key = ?",
        )
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .bind(key)
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)
    }

    async fn commit_turn(
        &self,
        object: &ObjectKey,
        commit: Commit,
        owner: &SiloId,
    ) -> Result<(), StorageError> {
        self.write(object.clone(), commit, owner.clone()).await
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
        // Outside the group-commit queue: a sweep is rare and must not
        // delay turns' commits behind a large delete.
        let mut connection = self.writer_connection().await?;
        let deleted = sqlx::query(
            "DELETE FROM rio_replies WHERE (service_type, object_id, reply_key) IN (
                SELECT service_type, object_id, reply_key FROM rio_replies
                WHERE stored_at_ms < ? LIMIT ?)",
        )
        .bind(stored_before_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&mut connection)
        .await
        .map_err(backend)?;
        Ok(deleted.rows_affected())
    }

    async fn pending_outbox(&self, sender: &ObjectKey) -> Result<PendingOutbox, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, receiver_type, receiver_id, message_type, payload, created_at_ms
             FROM rio_outbox WHERE sender_type = ? AND sender_id = ? ORDER BY seq",
        )
        .bind(&*sender.service_type)
        .bind(&*sender.object_id)
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let stored_next: Option<i64> = sqlx::query_scalar(
            "SELECT next_seq FROM rio_outbox_next WHERE sender_type = ? AND sender_id = ?",
        )
        .bind(&*sender.service_type)
        .bind(&*sender.object_id)
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        let messages: Vec<Outgoing> = rows
            .iter()
            .map(|row| outgoing_of(row, row.get("seq")))
            .collect();
        let after_last = messages.last().map_or(0, |last| last.seq + 1);
        Ok(PendingOutbox {
            next_seq: stored_next.unwrap_or(0).max(after_last),
            messages,
        })
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
        let mut transaction = self.maintenance.begin().await.map_err(backend)?;
        let sender = &letter.sender;
        let removed = sqlx::query(
            "DELETE FROM rio_outbox WHERE sender_type = ? AND sender_id = ? AND seq = ?",
        )
        .bind(&*sender.service_type)
        .bind(&*sender.object_id)
        .bind(letter.message.seq)
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
        if removed.rows_affected() > 0 {
            let message = &letter.message;
            sqlx::query(
                "INSERT INTO rio_dead_letters (sender_type, sender_id, seq, receiver_type,
                    receiver_id, message_type, payload, created_at_ms, reason, failed_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&*sender.service_type)
            .bind(&*sender.object_id)
            .bind(message.seq)
            .bind(&*message.receiver.service_type)
            .bind(&*message.receiver.object_id)
            .bind(message.message_type.as_str())
            .bind(message.payload.as_slice())
            .bind(message.created_at_ms)
            .bind(letter.reason.as_str())
            .bind(letter.failed_at_ms)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
        }
        transaction.commit().await.map_err(backend)
    }

    async fn dead_letters(
        &self,
        receiver_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        let rows = sqlx::query(
            "SELECT sender_type, sender_id, seq, receiver_type, receiver_id, message_type,
                payload, created_at_ms, reason, failed_at_ms
             FROM rio_dead_letters WHERE ? IS NULL OR receiver_type = ?
             ORDER BY failed_at_ms, sender_type, sender_id, seq LIMIT ?",
        )
        .bind(receiver_type)
        .bind(receiver_type)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| {
                let sender_type: String = row.get("sender_type");
                let sender_id: String = row.get("sender_id");
                DeadLetter {
                    sender: ObjectKey::new(&sender_type, &sender_id),
                    message: outgoing_of(row, row.get("seq")),
                    reason: row.get("reason"),
                    failed_at_ms: row.get("failed_at_ms"),
                }
            })
            .collect())
    }

    async fn interrupted_objects(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT service_type, object_id FROM object_state WHERE key = ? LIMIT ?",
        )
        .bind(crate::resume::INTENT_KEY)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|(service_type, object_id)| ObjectKey::new(service_type, object_id))
            .collect())
    }

    async fn senders_with_pending(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT DISTINCT sender_type, sender_id FROM rio_outbox LIMIT ?")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.readers)
                .await
                .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|(service_type, object_id)| ObjectKey::new(service_type, object_id))
            .collect())
    }
}

#[async_trait]
impl ComponentStore for SqliteStore {
    async fn put_component(&self, content_hash: &str, bytes: &[u8]) -> Result<(), StorageError> {
        // Components are rare and large; they bypass the group-commit queue
        // with a connection of their own.
        let mut connection = self.writer_connection().await?;
        sqlx::query(
            "INSERT INTO components (content_hash, bytes) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(content_hash)
        .bind(bytes)
        .execute(&mut connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn component(&self, content_hash: &str) -> Result<Option<Vec<u8>>, StorageError> {
        sqlx::query_scalar("SELECT bytes FROM components WHERE content_hash = ?")
            .bind(content_hash)
            .fetch_optional(&self.readers)
            .await
            .map_err(backend)
    }

    async fn set_deployment(
        &self,
        service_type: &str,
        content_hash: &str,
    ) -> Result<(), StorageError> {
        let mut connection = self.writer_connection().await?;
        sqlx::query(
            "INSERT INTO deployments (service_type, content_hash) VALUES (?, ?)
             ON CONFLICT (service_type) DO UPDATE SET content_hash = excluded.content_hash",
        )
        .bind(service_type)
        .bind(content_hash)
        .execute(&mut connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn deployments(&self) -> Result<Vec<(String, String)>, StorageError> {
        sqlx::query_as("SELECT service_type, content_hash FROM deployments ORDER BY service_type")
            .fetch_all(&self.readers)
            .await
            .map_err(backend)
    }

    async fn remove_deployment(&self, service_type: &str) -> Result<bool, StorageError> {
        let mut connection = self.writer_connection().await?;
        let removed = sqlx::query("DELETE FROM deployments WHERE service_type = ?")
            .bind(service_type)
            .execute(&mut connection)
            .await
            .map_err(backend)?;
        Ok(removed.rows_affected() > 0)
    }
}

impl SqliteStore {
    async fn writer_connection(&self) -> Result<SqliteConnection, StorageError> {
        let options = self
            .readers
            .connect_options()
            .as_ref()
            .clone()
            .read_only(false);
        SqliteConnection::connect_with(&options)
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ReplyRecord;

    fn process(generation: i64) -> SiloId {
        SiloId {
            address: String::new(),
            generation,
        }
    }

    /// A file made before state moved to a rowid table keeps its state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_moves_to_a_rowid_table_and_keeps_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rio.db");
        {
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .unwrap()
                .create_if_missing(true);
            let mut old = SqliteConnection::connect_with(&options).await.unwrap();
            sqlx::query("CREATE TABLE rio_schema (version INTEGER NOT NULL)")
                .execute(&mut old)
                .await
                .unwrap();
            let before_rowids = MIGRATIONS.len() - 1;
            for (index, step) in MIGRATIONS[..before_rowids].iter().enumerate() {
                sqlx::raw_sql(*step).execute(&mut old).await.unwrap();
                sqlx::query("INSERT INTO rio_schema (version) VALUES (?)")
                    .bind(index as i64 + 1)
                    .execute(&mut old)
                    .await
                    .unwrap();
            }
            sqlx::query("INSERT INTO object_state VALUES ('Counter', 'a', 'n', x'07')")
                .execute(&mut old)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path, 64, 1).await.unwrap();
        let object = ObjectKey::new("Counter", "a");
        assert_eq!(store.read_value(&object, "n").await.unwrap(), Some(vec![7]));
        let table: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'object_state'")
                .fetch_one(&store.readers)
                .await
                .unwrap();
        assert!(!table.contains("WITHOUT ROWID"), "{table}");
        // Writes still replace a key's value.
        let put = vec![("n".to_string(), Some(vec![8]))];
        store.commit(&object, put, &process(1)).await.unwrap();
        assert_eq!(store.read_value(&object, "n").await.unwrap(), Some(vec![8]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_process_that_opened_the_file_last_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rio.db");
        let object = ObjectKey::new("Counter", "a");
        let put = |value: &str| vec![("n".to_string(), Some(value.as_bytes().to_vec()))];

        let first = SqliteStore::open(&path, 64, 100).await.unwrap();
        first
            .commit(&object, put("1"), &process(100))
            .await
            .unwrap();
        let refused = first.commit(&object, put("x"), &process(99)).await;
        assert!(
            matches!(refused, Err(StorageError::Fenced { .. })),
            "{refused:?}"
        );

        // A second process opens the same data directory: from now on only
        // it commits, whatever the first believes.
        let second = SqliteStore::open(&path, 64, 200).await.unwrap();
        let stale = first.commit(&object, put("stale"), &process(100)).await;
        assert!(
            matches!(stale, Err(StorageError::Fenced { .. })),
            "{stale:?}"
        );
        second
            .commit(&object, put("2"), &process(200))
            .await
            .unwrap();
        let state = first.load(&object).await.unwrap();
        assert_eq!(state.get("n").map(Vec::as_slice), Some(&b"2"[..]));

        // In one group-commit batch a refused commit fails only itself.
        let others: Vec<ObjectKey> = (0..20)
            .map(|i| ObjectKey::new("Counter", &format!("o{i}")))
            .collect();
        let second = std::sync::Arc::new(second);
        let tasks: Vec<_> = others
            .iter()
            .enumerate()
            .map(|(i, object)| {
                let generation = if i % 4 == 0 { 100 } else { 200 };
                let (second, object) = (second.clone(), object.clone());
                tokio::spawn(async move {
                    let result = second.commit(&object, put("v"), &process(generation)).await;
                    (generation, result)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        for ((generation, result), object) in results.into_iter().zip(&others) {
            let state = second.load(object).await.unwrap();
            if generation == 200 {
                result.unwrap();
                assert_eq!(state.len(), 1, "{object}");
            } else {
                assert!(
                    matches!(result, Err(StorageError::Fenced { .. })),
                    "{result:?}"
                );
                assert!(state.is_empty(), "{object}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reply_records_commit_with_the_writes_and_expire_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("rio.db"), 64, 100)
            .await
            .unwrap();
        let object = ObjectKey::new("Counter", "a");
        let record = |key: &str, stored_at_ms: i64| ReplyRecord {
            key: key.to_string(),
            reply: key.as_bytes().to_vec(),
            stored_at_ms,
        };
        let keyed = |writes: Vec<(String, Option<Vec<u8>>)>, reply| Commit {
            writes,
            reply: Some(reply),
            outbox: Vec::new(),
        };
        let now = crate::cluster::now_ms();
        let put = vec![("n".to_string(), Some(b"1".to_vec()))];

        store
            .commit_turn(
                &object,
                keyed(put.clone(), record("k1", now)),
                &process(100),
            )
            .await
            .unwrap();
        store
            .commit_turn(&object, keyed(Vec::new(), record("old", 0)), &process(100))
            .await
            .unwrap();
        assert_eq!(store.load(&object).await.unwrap().len(), 1);
        assert_eq!(
            store.stored_reply(&object, "k1").await.unwrap(),
            Some(b"k1".to_vec())
        );
        assert_eq!(store.stored_reply(&object, "k2").await.unwrap(), None);

        // A process that lost the lease commits neither writes nor reply.
        let stale = keyed(vec![("m".into(), Some(b"x".to_vec()))], record("k2", now));
        let refused = store.commit_turn(&object, stale, &process(99)).await;
        assert!(
            matches!(refused, Err(StorageError::Fenced { .. })),
            "{refused:?}"
        );
        assert_eq!(store.stored_reply(&object, "k2").await.unwrap(), None);
        assert!(!store.load(&object).await.unwrap().contains_key("m"));

        // The sweep takes the expired record only, at most `limit` a pass.
        assert_eq!(store.sweep_replies(now - 1000, 10).await.unwrap(), 1);
        assert_eq!(store.sweep_replies(now - 1000, 10).await.unwrap(), 0);
        assert_eq!(store.stored_reply(&object, "old").await.unwrap(), None);
        assert!(store.stored_reply(&object, "k1").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_rows_commit_with_the_turn_and_seqs_outlive_them() {
        use crate::storage::{DeadLetter, Outgoing};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("rio.db"), 64, 100)
            .await
            .unwrap();
        let sender = ObjectKey::new("Counter", "a");
        let receiver = ObjectKey::new("Counter", "r");
        let message = |seq: i64| Outgoing {
            seq,
            receiver: receiver.clone(),
            message_type: "append".into(),
            payload: vec![seq as u8],
            created_at_ms: 7,
        };
        let turn = |outbox: Vec<Outgoing>| Commit {
            writes: vec![("n".to_string(), Some(b"1".to_vec()))],
            reply: None,
            outbox,
        };
        store
            .commit_turn(&sender, turn(vec![message(0), message(1)]), &process(100))
            .await
            .unwrap();
        // A process that lost the lease stores no message.
        let refused = store
            .commit_turn(&sender, turn(vec![message(2)]), &process(99))
            .await;
        assert!(
            matches!(refused, Err(StorageError::Fenced { .. })),
            "{refused:?}"
        );
        let pending = store.pending_outbox(&sender).await.unwrap();
        assert_eq!(pending.messages, vec![message(0), message(1)]);
        assert_eq!(pending.next_seq, 2);
        assert_eq!(
            store.senders_with_pending(10).await.unwrap(),
            vec![sender.clone()]
        );

        store.remove_outgoing(&sender, 0).await.unwrap();
        let letter = DeadLetter {
            sender: sender.clone(),
            message: message(1),
            reason: "trap: no".into(),
            failed_at_ms: 9,
        };
        store.bury(&letter).await.unwrap();
        store.bury(&letter).await.unwrap();
        let pending = store.pending_outbox(&sender).await.unwrap();
        assert!(pending.messages.is_empty());
        assert_eq!(pending.next_seq, 2, "a seq is never reused");
        assert!(store.senders_with_pending(10).await.unwrap().is_empty());
        assert_eq!(
            store.dead_letters(Some("Counter"), 10).await.unwrap(),
            vec![letter.clone()]
        );
        assert_eq!(store.dead_letters(None, 10).await.unwrap(), vec![letter]);
        assert!(
            store
                .dead_letters(Some("Other"), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
