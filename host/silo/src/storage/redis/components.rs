//! Components on Redis: each component's bytes under its content hash, and
//! the deployments hash naming the component each service type runs.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, backend};
use crate::storage::{ComponentStore, StorageError};

const DEPLOYMENTS: &str = "rio:deployments";

fn component_key(content_hash: &str) -> String {
    format!("rio:component:{content_hash}")
}

/// Points type `ARGV[1]` at `ARGV[2]` if the component `KEYS[1]` is stored,
/// so a deployment can never name bytes no silo can load.
static SET_DEPLOYMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
",
    )
});

#[async_trait]
impl ComponentStore for RedisStore {
    async fn put_component(&self, content_hash: &str, bytes: &[u8]) -> Result<(), StorageError> {
        redis::cmd("SET")
            .arg(component_key(content_hash))
            .arg(bytes)
            .arg("NX")
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn component(&self, content_hash: &str) -> Result<Option<Vec<u8>>, StorageError> {
        redis::cmd("GET")
            .arg(component_key(content_hash))
            .query_async(&mut self.connection())
            .await
            .map_err(backend)
    }

    async fn set_deployment(
        &self,
        service_type: &str,
        content_hash: &str,
    ) -> Result<(), StorageError> {
        let deployed: bool = SET_DEPLOYMENT
            .key(component_key(content_hash))
            .key(DEPLOYMENTS)
            .arg(service_type)
            .arg(content_hash)
            .invoke_async(&mut self.connection())
            .await
            .map_err(backend)?;
        if deployed {
            Ok(())
        } else {
            Err(StorageError::Backend(format!(
                "cannot deploy {service_type}: no component stored under {content_hash}"
            )))
        }
    }

    async fn deployments(&self) -> Result<Vec<(String, String)>, StorageError> {
        let mut deployments: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(DEPLOYMENTS)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        deployments.sort();
        Ok(deployments)
    }

    async fn remove_deployment(&self, service_type: &str) -> Result<bool, StorageError> {
        let removed: i64 = redis::cmd("HDEL")
            .arg(DEPLOYMENTS)
            .arg(service_type)
            .query_async(&mut self.connection())
            .await
            .map_err(backend)?;
        Ok(removed > 0)
    }
}
