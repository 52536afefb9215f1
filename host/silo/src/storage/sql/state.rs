//! Object state on SQL, with a group-commit writer: the commits waiting
//! when the writer is free go into one transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{AnyPool, Row, SqlStr};
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
    let upsert = dialect.upsert(
        "object_state",
        &["service_type", "object_id", "state_key"],
        &["value"],
    );
    let delete = dialect
        .sql("DELETE FROM object_state WHERE service_type = ? AND object_id = ? AND state_key = ?");
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < group_commit_max {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = write_batch(&pool, &upsert, &delete, &batch).await;
        if let Err(error) = &result {
            tracing::error!(%error, commits = batch.len(), "group commit failed");
        }
        for commit in batch.drain(..) {
            let _ = commit.done.send(result.clone());
        }
    }
}

async fn write_batch(
    pool: &AnyPool,
    upsert: &SqlStr,
    delete: &SqlStr,
    batch: &[PendingCommit],
) -> Result<(), StorageError> {
    let mut transaction = pool.begin().await.map_err(backend)?;
    for commit in batch {
        for (key, value) in &commit.writes {
            let statement = match value {
                Some(value) => sqlx::query(upsert.clone())
                    .bind(&*commit.object.service_type)
                    .bind(&*commit.object.object_id)
                    .bind(key.as_str())
                    .bind(value.clone()),
                None => sqlx::query(delete.clone())
                    .bind(&*commit.object.service_type)
                    .bind(&*commit.object.object_id)
                    .bind(key.as_str()),
            };
            statement
                .execute(&mut *transaction)
                .await
                .map_err(backend)?;
        }
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
