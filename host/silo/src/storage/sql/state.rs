//! Object state on SQL, with a group-commit writer: the commits waiting
//! when the writer is free go into one transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::dialect::Dialect;
use super::{SqlStore, backend};
use crate::ObjectKey;
use crate::storage::{StateStore, StateWrite, StorageError};

pub(crate) struct PendingCommit {
    object: ObjectKey,
    writes: Vec<StateWrite>,
    done: oneshot::Sender<Result<(), StorageError>>,
}

pub(crate) async fn run_writer(
    pool: AnyPool,
    dialect: Dialect,
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
        let result = write_batch(&pool, dialect, &batch).await;
        if let Err(error) = &result {
            tracing::error!(%error, commits = batch.len(), "group commit failed");
        }
        for commit in batch.drain(..) {
            let _ = commit.done.send(result.clone());
        }
    }
}

/// Rows per multi-row upsert: four binds each, under PostgreSQL's 65535
/// and SQLite's 32766 bind limits.
const ROWS_PER_UPSERT: usize = 1000;

/// One transaction for the whole batch, with its upserts in as few
/// statements as possible: a round trip per row would cap a remote
/// database at a few thousand commits a second.
async fn write_batch(
    pool: &AnyPool,
    dialect: Dialect,
    batch: &[PendingCommit],
) -> Result<(), StorageError> {
    // The last write of a key wins, and a statement may touch a row only
    // once (PostgreSQL refuses otherwise).
    let mut latest: HashMap<(&ObjectKey, &str), Option<&Vec<u8>>> = HashMap::new();
    for commit in batch {
        for (key, value) in &commit.writes {
            latest.insert((&commit.object, key.as_str()), value.as_ref());
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
    let mut transaction = pool.begin().await.map_err(backend)?;
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
    transaction.commit().await.map_err(backend)
}

#[async_trait]
impl StateStore for SqlStore {
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

    async fn commit(
        &self,
        object: &ObjectKey,
        writes: Vec<StateWrite>,
    ) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.commits
            .send(PendingCommit {
                object: object.clone(),
                writes,
                done,
            })
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }
}
