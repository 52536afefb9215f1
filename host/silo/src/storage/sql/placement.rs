//! Object → owner on SQL. A claim is an insert that does nothing when the
//! object has an owner, followed by a read of whoever owns it; a take-over
//! is an update conditional on the old owner. Both are single statements,
//! atomic in every database.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, backend};
use crate::base::ObjectKey;
use crate::storage::{PlacementStore, SiloId, StorageError};

#[async_trait]
impl PlacementStore for SqlStore {
    async fn owner(&self, object: &ObjectKey) -> Result<Option<SiloId>, StorageError> {
        let row = sqlx::query(self.sql(
            "SELECT owner_address, owner_generation FROM placement WHERE service_type = ? AND object_id = ?",
        ))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok(SiloId {
                address: row.try_get(0).map_err(backend)?,
                generation: row.try_get(1).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn claim(&self, object: &ObjectKey, silo: &SiloId) -> Result<SiloId, StorageError> {
        let insert = self.dialect.insert_or_ignore(
            "placement",
            &[
                "service_type",
                "object_id",
                "owner_address",
                "owner_generation",
            ],
        );
        // The owner may release between our insert and our read; then the
        // object is free again and we try once more.
        for _ in 0..8 {
            sqlx::query(insert.clone())
                .bind(&*object.service_type)
                .bind(&*object.object_id)
                .bind(silo.address.as_str())
                .bind(silo.generation)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            if let Some(owner) = self.owner(object).await? {
                return Ok(owner);
            }
        }
        Err(StorageError::Backend(format!(
            "the placement of {object} keeps changing"
        )))
    }

    async fn take_over(
        &self,
        object: &ObjectKey,
        from: &SiloId,
        to: &SiloId,
    ) -> Result<Option<SiloId>, StorageError> {
        sqlx::query(self.sql(
            "UPDATE placement SET owner_address = ?, owner_generation = ?
             WHERE service_type = ? AND object_id = ? AND owner_address = ? AND owner_generation = ?",
        ))
        .bind(to.address.as_str())
        .bind(to.generation)
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .bind(from.address.as_str())
        .bind(from.generation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.owner(object).await
    }

    async fn release(&self, object: &ObjectKey, silo: &SiloId) -> Result<(), StorageError> {
        sqlx::query(self.sql(
            "DELETE FROM placement
             WHERE service_type = ? AND object_id = ? AND owner_address = ? AND owner_generation = ?",
        ))
        .bind(&*object.service_type)
        .bind(&*object.object_id)
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn release_all(&self, silo: &SiloId) -> Result<u64, StorageError> {
        let done = sqlx::query(
            self.sql("DELETE FROM placement WHERE owner_address = ? AND owner_generation = ?"),
        )
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
