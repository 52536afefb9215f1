//! Object subscriptions on SQL: the rows a turn's commit subscribes and
//! unsubscribes, the events a batch of commits adds to the topic log (only
//! for topics with a subscriber, asked once per batch), and what delivery
//! reads and records.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::backend;
use super::dialect::Dialect;
use crate::base::ObjectKey;
use crate::storage::reminders::shard_of;
use crate::storage::{
    Chain, LoggedEvent, ShardSlice, StorageError, Subscriber, SubscriptionChange, TopicEvent,
};

/// Topics one statement asks about.
const TOPICS_PER_QUERY: usize = 200;

/// Applies a turn's subscription changes, in order, inside its commit's
/// transaction.
pub(super) async fn write_subscriptions(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    object: &ObjectKey,
    changes: &[SubscriptionChange],
) -> Result<(), StorageError> {
    for change in changes {
        let query = match change {
            SubscriptionChange::Subscribe {
                topic,
                message_type,
                since_ms,
            } => sqlx::query(dialect.upsert(
                "rio_subscriptions",
                &["topic", "service_type", "object_id"],
                &["message_type", "since_ms"],
            ))
            .bind(topic.clone())
            .bind(object.service_type.to_string())
            .bind(object.object_id.to_string())
            .bind(message_type.clone())
            .bind(*since_ms),
            SubscriptionChange::Unsubscribe { topic } => sqlx::query(dialect.sql(
                "DELETE FROM rio_subscriptions WHERE topic = ? AND service_type = ? AND object_id = ?",
            ))
            .bind(topic.clone())
            .bind(object.service_type.to_string())
            .bind(object.object_id.to_string()),
        };
        query.execute(&mut **transaction).await.map_err(backend)?;
    }
    Ok(())
}

/// Adds to the topic log the events of a batch's commits, `(publisher,
/// event)`, whose topics have a subscriber now: one query finds those
/// topics, so a batch publishing only to clients costs one indexed read.
pub(super) async fn write_events(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    events: &[(&ObjectKey, &TopicEvent)],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = events
        .iter()
        .map(|(_, event)| event.topic.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut subscribed = HashSet::new();
    for chunk in topics.chunks(TOPICS_PER_QUERY) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let statement = dialect.sql(&format!(
            "SELECT DISTINCT topic FROM rio_subscriptions WHERE topic IN ({marks})"
        ));
        let mut query = sqlx::query_scalar::<_, String>(statement);
        for topic in chunk {
            query = query.bind(topic.to_string());
        }
        subscribed.extend(query.fetch_all(&mut **transaction).await.map_err(backend)?);
    }
    let insert = dialect.sql(
        "INSERT INTO rio_topic_log (topic, publisher_type, publisher_id, seq, shard, payload, published_ms, touched_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    );
    for (publisher, event) in events {
        if !subscribed.contains(&event.topic) {
            continue;
        }
        sqlx::query(insert.clone())
            .bind(event.topic.clone())
            .bind(publisher.service_type.to_string())
            .bind(publisher.object_id.to_string())
            .bind(event.seq)
            .bind(i64::from(shard_of(publisher)))
            .bind(event.payload.clone())
            .bind(event.published_ms)
            .bind(event.published_ms)
            .execute(&mut **transaction)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) async fn of_object(
    pool: &AnyPool,
    dialect: Dialect,
    object: &ObjectKey,
) -> Result<Vec<(String, String)>, StorageError> {
    let rows = sqlx::query(dialect.sql(
        "SELECT topic, message_type FROM rio_subscriptions WHERE service_type = ? AND object_id = ? ORDER BY topic",
    ))
    .bind(object.service_type.to_string())
    .bind(object.object_id.to_string())
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("topic").map_err(backend)?,
                row.try_get("message_type").map_err(backend)?,
            ))
        })
        .collect()
}

pub(super) async fn has_subscribers(
    pool: &AnyPool,
    dialect: Dialect,
    topic: &str,
) -> Result<bool, StorageError> {
    let found: Option<i64> =
        sqlx::query_scalar(dialect.sql("SELECT 1 FROM rio_subscriptions WHERE topic = ? LIMIT 1"))
            .bind(topic.to_string())
            .fetch_optional(pool)
            .await
            .map_err(backend)?;
    Ok(found.is_some())
}

pub(super) async fn subscribers(
    pool: &AnyPool,
    dialect: Dialect,
    topic: &str,
    after: Option<&ObjectKey>,
    published_ms: i64,
    limit: usize,
) -> Result<Vec<Subscriber>, StorageError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let base = "SELECT service_type, object_id, message_type FROM rio_subscriptions WHERE topic = ? AND since_ms <= ?";
    let order = "ORDER BY service_type, object_id LIMIT ?";
    let query = match after {
        None => sqlx::query(dialect.sql(&format!("{base} {order}")))
            .bind(topic.to_string())
            .bind(published_ms)
            .bind(limit),
        Some(after) => sqlx::query(dialect.sql(&format!(
            "{base} AND (service_type > ? OR (service_type = ? AND object_id > ?)) {order}"
        )))
        .bind(topic.to_string())
        .bind(published_ms)
        .bind(after.service_type.to_string())
        .bind(after.service_type.to_string())
        .bind(after.object_id.to_string())
        .bind(limit),
    };
    let rows = query.fetch_all(pool).await.map_err(backend)?;
    rows.iter()
        .map(|row| {
            let service_type: String = row.try_get("service_type").map_err(backend)?;
            let object_id: String = row.try_get("object_id").map_err(backend)?;
            Ok(Subscriber {
                object: ObjectKey::new(&service_type, &object_id),
                message_type: row.try_get("message_type").map_err(backend)?,
            })
        })
        .collect()
}

fn logged_of(row: &AnyRow, topic: &str) -> Result<LoggedEvent, StorageError> {
    let through_type: Option<String> = row.try_get("through_type").map_err(backend)?;
    let through_id: Option<String> = row.try_get("through_id").map_err(backend)?;
    Ok(LoggedEvent {
        event: TopicEvent {
            topic: topic.to_string(),
            seq: row.try_get("seq").map_err(backend)?,
            payload: row.try_get("payload").map_err(backend)?,
            published_ms: row.try_get("published_ms").map_err(backend)?,
        },
        delivered_through: through_type
            .zip(through_id)
            .map(|(service_type, object_id)| ObjectKey::new(&service_type, &object_id)),
    })
}

pub(super) async fn logged(
    pool: &AnyPool,
    dialect: Dialect,
    chain: &Chain,
    limit: usize,
) -> Result<Vec<LoggedEvent>, StorageError> {
    let rows = sqlx::query(dialect.sql(
        "SELECT seq, payload, published_ms, through_type, through_id FROM rio_topic_log WHERE topic = ? AND publisher_type = ? AND publisher_id = ? ORDER BY seq LIMIT ?",
    ))
    .bind(chain.topic.clone())
    .bind(chain.publisher.service_type.to_string())
    .bind(chain.publisher.object_id.to_string())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|row| logged_of(row, &chain.topic))
        .collect()
}

pub(super) async fn delivered(
    pool: &AnyPool,
    dialect: Dialect,
    chain: &Chain,
    seq: i64,
    through: Option<&ObjectKey>,
) -> Result<(), StorageError> {
    let query = match through {
        Some(through) => sqlx::query(dialect.sql(
            "UPDATE rio_topic_log SET through_type = ?, through_id = ? WHERE topic = ? AND publisher_type = ? AND publisher_id = ? AND seq = ?",
        ))
        .bind(through.service_type.to_string())
        .bind(through.object_id.to_string()),
        None => sqlx::query(dialect.sql(
            "DELETE FROM rio_topic_log WHERE topic = ? AND publisher_type = ? AND publisher_id = ? AND seq = ?",
        )),
    };
    query
        .bind(chain.topic.clone())
        .bind(chain.publisher.service_type.to_string())
        .bind(chain.publisher.object_id.to_string())
        .bind(seq)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn waiting(
    pool: &AnyPool,
    dialect: Dialect,
    slice: ShardSlice,
    published_by_ms: i64,
    limit: usize,
) -> Result<Vec<Chain>, StorageError> {
    // Chains with an old event (from the index by publish time) on which
    // nobody has worked since: a chain being delivered has its current
    // event touched.
    let rows = sqlx::query(dialect.sql(
        "SELECT topic, publisher_type, publisher_id FROM rio_topic_log WHERE published_ms <= ? AND shard % ? = ? GROUP BY topic, publisher_type, publisher_id HAVING MAX(touched_ms) <= ? LIMIT ?",
    ))
    .bind(published_by_ms)
    .bind(i64::from(slice.count.max(1)))
    .bind(i64::from(slice.index))
    .bind(published_by_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rows.iter()
        .map(|row| {
            let service_type: String = row.try_get("publisher_type").map_err(backend)?;
            let object_id: String = row.try_get("publisher_id").map_err(backend)?;
            Ok(Chain {
                topic: row.try_get("topic").map_err(backend)?,
                publisher: ObjectKey::new(&service_type, &object_id),
            })
        })
        .collect()
}

pub(super) async fn touch(
    pool: &AnyPool,
    dialect: Dialect,
    chain: &Chain,
    seq: i64,
    now_ms: i64,
) -> Result<(), StorageError> {
    sqlx::query(dialect.sql(
        "UPDATE rio_topic_log SET touched_ms = ? WHERE topic = ? AND publisher_type = ? AND publisher_id = ? AND seq = ?",
    ))
    .bind(now_ms)
    .bind(chain.topic.clone())
    .bind(chain.publisher.service_type.to_string())
    .bind(chain.publisher.object_id.to_string())
    .bind(seq)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}
