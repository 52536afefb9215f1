//! Components and deployments on SQL. A component is stored in chunks, and
//! its `components` row, written last in the same transaction, says it is
//! whole.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, backend};
use crate::storage::{ComponentStore, StorageError};

/// Below MariaDB's default 16 MiB packet limit with room to spare.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

#[async_trait]
impl ComponentStore for SqlStore {
    async fn put_component(&self, content_hash: &str, bytes: &[u8]) -> Result<(), StorageError> {
        if self.component_row(content_hash).await?.is_some() {
            return Ok(());
        }
        let chunk_insert = self
            .dialect
            .insert_or_ignore("component_chunks", &["content_hash", "seq", "bytes"]);
        let mut transaction = self.pool.begin().await.map_err(backend)?;
        let mut chunks = 0i64;
        for (seq, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            sqlx::query(chunk_insert.clone())
                .bind(content_hash)
                .bind(seq as i64)
                .bind(chunk.to_vec())
                .execute(&mut *transaction)
                .await
                .map_err(backend)?;
            chunks += 1;
        }
        sqlx::query(
            self.dialect
                .insert_or_ignore("components", &["content_hash", "total_bytes", "chunks"]),
        )
        .bind(content_hash)
        .bind(bytes.len() as i64)
        .bind(chunks)
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
        transaction.commit().await.map_err(backend)
    }

    async fn component(&self, content_hash: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some((total_bytes, chunks)) = self.component_row(content_hash).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            self.sql("SELECT bytes FROM component_chunks WHERE content_hash = ? ORDER BY seq"),
        )
        .bind(content_hash)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        if rows.len() as i64 != chunks {
            return Err(StorageError::Backend(format!(
                "component {content_hash} has {} of its {chunks} chunks",
                rows.len()
            )));
        }
        let mut bytes = Vec::with_capacity(total_bytes.max(0) as usize);
        for row in rows {
            bytes.extend_from_slice(&row.try_get::<Vec<u8>, _>(0).map_err(backend)?);
        }
        Ok(Some(bytes))
    }

    async fn set_deployment(
        &self,
        service_type: &str,
        content_hash: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            self.dialect
                .upsert("deployments", &["service_type"], &["content_hash"]),
        )
        .bind(service_type)
        .bind(content_hash)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn deployments(&self) -> Result<Vec<(String, String)>, StorageError> {
        let rows =
            sqlx::query("SELECT service_type, content_hash FROM deployments ORDER BY service_type")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>(0).map_err(backend)?,
                    row.try_get::<String, _>(1).map_err(backend)?,
                ))
            })
            .collect()
    }

    async fn remove_deployment(&self, service_type: &str) -> Result<bool, StorageError> {
        let removed = sqlx::query(self.sql("DELETE FROM deployments WHERE service_type = ?"))
            .bind(service_type)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(removed.rows_affected() > 0)
    }
}

impl SqlStore {
    /// `(total_bytes, chunks)` of a whole stored component.
    async fn component_row(&self, content_hash: &str) -> Result<Option<(i64, i64)>, StorageError> {
        let row = sqlx::query(
            self.sql("SELECT total_bytes, chunks FROM components WHERE content_hash = ?"),
        )
        .bind(content_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok((
                row.try_get::<i64, _>(0).map_err(backend)?,
                row.try_get::<i64, _>(1).map_err(backend)?,
            ))
        })
        .transpose()
    }
}
