//! The embedded default store: one SQLite file in WAL mode.
//!
//! Commits from all activations go through one writer task that drains its
//! queue into a single transaction (group commit): under load one fsync
//! covers hundreds of turns, and each caller is answered only once its
//! transaction is durable.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{ComponentStore, StateStore, StateWrite, StorageError};
use crate::ObjectKey;

/// Schema steps, applied in order once each; never edit a released step.
const MIGRATIONS: &[&str] = &["CREATE TABLE object_state (
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
    );"];

/// SQLite allows 32766 bound parameters per statement; four per row.
const ROWS_PER_INSERT: usize = 4000;

struct PendingCommit {
    object: ObjectKey,
    writes: Vec<StateWrite>,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// State, components and deployments in one SQLite file.
pub struct SqliteStore {
    readers: SqlitePool,
    commits: mpsc::UnboundedSender<PendingCommit>,
}

fn backend(error: sqlx::Error) -> StorageError {
    StorageError::Backend(error.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it,
    /// and starts the group-commit writer.
    pub async fn open(path: &Path, group_commit_max: usize) -> Result<SqliteStore, StorageError> {
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
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        let (commits, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(writer, queue, group_commit_max.max(1)));
        Ok(SqliteStore { readers, commits })
    }

    async fn write(&self, object: ObjectKey, writes: Vec<StateWrite>) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.commits
            .send(PendingCommit {
                object,
                writes,
                done,
            })
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
    mut queue: mpsc::UnboundedReceiver<PendingCommit>,
    group_commit_max: usize,
) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < group_commit_max {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut connection, &batch).await;
        if let Err(error) = &result {
            tracing::error!(%error, commits = batch.len(), "group commit failed");
        }
        for commit in batch.drain(..) {
            let _ = commit.done.send(result.clone());
        }
    }
}

async fn write_batch(
    connection: &mut SqliteConnection,
    batch: &[PendingCommit],
) -> Result<(), StorageError> {
    let mut transaction = connection.begin().await.map_err(backend)?;
    let mut upserts = Vec::new();
    for commit in batch {
        for (key, value) in &commit.writes {
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
    transaction.commit().await.map_err(backend)
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

    async fn commit(
        &self,
        object: &ObjectKey,
        writes: Vec<StateWrite>,
    ) -> Result<(), StorageError> {
        self.write(object.clone(), writes).await
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
