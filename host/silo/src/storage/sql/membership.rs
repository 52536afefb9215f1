//! Silos, heartbeats and suspicions on SQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, backend};
use crate::storage::{Member, MembershipStore, SiloId, SiloStatus, StorageError};

#[async_trait]
impl MembershipStore for SqlStore {
    async fn join(&self, silo: &SiloId, now_ms: i64) -> Result<(), StorageError> {
        sqlx::query(self.sql(
            "INSERT INTO members (address, generation, status, heartbeat_ms) VALUES (?, ?, ?, ?)",
        ))
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .bind(SiloStatus::Active.as_str())
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn heartbeat(&self, silo: &SiloId, now_ms: i64) -> Result<SiloStatus, StorageError> {
        // A leaving silo keeps its heartbeat going while it hands its
        // objects over; the others take them over once it goes silent.
        sqlx::query(self.sql(
            "UPDATE members SET heartbeat_ms = ? WHERE address = ? AND generation = ? AND status <> 'dead'",
        ))
        .bind(now_ms)
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        let status: Option<String> = sqlx::query_scalar(
            self.sql("SELECT status FROM members WHERE address = ? AND generation = ?"),
        )
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(status.map_or(SiloStatus::Dead, |status| SiloStatus::parse(&status)))
    }

    async fn set_status(&self, silo: &SiloId, status: SiloStatus) -> Result<(), StorageError> {
        sqlx::query(self.sql(
            "UPDATE members SET status = ? WHERE address = ? AND generation = ? AND status = 'active'",
        ))
        .bind(status.as_str())
        .bind(silo.address.as_str())
        .bind(silo.generation)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<Member>, StorageError> {
        let rows = sqlx::query(
            "SELECT address, generation, status, heartbeat_ms FROM members ORDER BY address, generation",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(Member {
                    silo: SiloId {
                        address: row.try_get(0).map_err(backend)?,
                        generation: row.try_get(1).map_err(backend)?,
                    },
                    status: SiloStatus::parse(&row.try_get::<String, _>(2).map_err(backend)?),
                    heartbeat_ms: row.try_get(3).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn suspect(&self, target: &SiloId, by: &SiloId, now_ms: i64) -> Result<(), StorageError> {
        sqlx::query(
            self.dialect
                .upsert_max("suspicions", &["target", "suspector"], "at_ms"),
        )
        .bind(target.to_string())
        .bind(by.to_string())
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn suspicions(&self, target: &SiloId, since_ms: i64) -> Result<usize, StorageError> {
        let count: i64 = sqlx::query_scalar(
            self.sql("SELECT COUNT(*) FROM suspicions WHERE target = ? AND at_ms >= ?"),
        )
        .bind(target.to_string())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(count.max(0) as usize)
    }
}
