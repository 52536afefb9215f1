//! Keyed calls' checks for a stored reply, answered a batch per query:
//! while one query runs, the next batch gathers.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::backend;
use super::dialect::Dialect;
use crate::base::ObjectKey;
use crate::storage::StorageError;

/// Lookups answered by one query at most (three binds each).
const LOOKUPS_PER_QUERY: usize = 256;

/// A keyed call's check for a stored reply, waiting to join a batch.
pub(crate) struct PendingLookup {
    pub(crate) object: ObjectKey,
    pub(crate) key: String,
    pub(crate) done: oneshot::Sender<Result<Option<Vec<u8>>, StorageError>>,
}

pub(crate) async fn run_lookups(
    pool: AnyPool,
    dialect: Dialect,
    mut queue: mpsc::UnboundedReceiver<PendingLookup>,
) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < LOOKUPS_PER_QUERY {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match look_up(&pool, dialect, &batch).await {
            Ok(found) => {
                for lookup in batch.drain(..) {
                    // Two lookups of one key may share a batch: each gets
                    // the reply.
                    let id = (lookup.object, lookup.key);
                    let _ = lookup.done.send(Ok(found.get(&id).cloned()));
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
    pool: &AnyPool,
    dialect: Dialect,
    batch: &[PendingLookup],
) -> Result<HashMap<(ObjectKey, String), Vec<u8>>, StorageError> {
    // OR of key equalities rather than a row-value IN: every database
    // turns it into primary-key lookups.
    let condition =
        vec!["(service_type = ? AND object_id = ? AND reply_key = ?)"; batch.len()].join(" OR ");
    let statement = dialect.sql(&format!(
        "SELECT service_type, object_id, reply_key, reply FROM rio_replies WHERE {condition}"
    ));
    let mut query = sqlx::query(statement);
    for lookup in batch {
        query = query
            .bind(&*lookup.object.service_type)
            .bind(&*lookup.object.object_id)
            .bind(lookup.key.as_str());
    }
    let rows = query.fetch_all(pool).await.map_err(backend)?;
    rows.iter()
        .map(|row| {
            let service_type: String = row.try_get(0).map_err(backend)?;
            let object_id: String = row.try_get(1).map_err(backend)?;
            let object = ObjectKey::new(&service_type, &object_id);
            let key: String = row.try_get(2).map_err(backend)?;
            Ok((
                (object, key),
                row.try_get::<Vec<u8>, _>(3).map_err(backend)?,
            ))
        })
        .collect()
}
