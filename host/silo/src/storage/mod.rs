//! Where the silo keeps what must outlive it: object state, components and
//! deployments. One trait per concern; one module per backend.
//!
//! - [`sql`]: every concern on PostgreSQL, MySQL/MariaDB or a SQLite file
//!   shared by the silos of one machine.
//! - [`embedded`]: the default of a silo on its own: the SQL store's SQLite
//!   dialect on a file in its data directory, fenced by a lease (a lone
//!   silo uses its state and components only).
//! - [`redis`]: every concern on Redis.
//!
//! Invariants: a commit either writes all of a turn's changes or none; and
//! it writes them only if the committing silo owns the object at that
//! moment, checked in the same transaction (or script) as the write, so a
//! silo that lost an object while frozen cannot overwrite the new owner's
//! writes (fencing). A turn run under an idempotency key commits its reply
//! record in that same transaction (or script): the record exists exactly
//! when the turn's writes do. The messages a turn sends one way are stored
//! in that same transaction too (its outbox rows), so they exist exactly
//! when the turn's writes do, and only then are they delivered.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::base::ObjectKey;

pub mod embedded;
pub mod membership;
pub mod placement;
pub mod redis;
pub mod reminders;
pub mod sql;
pub mod topics;

pub use membership::{Member, MembershipStore, SiloId, SiloStatus};

pub use crate::config::SqliteDurability;
pub use placement::PlacementStore;
pub use reminders::{DueReminder, Missed, Reminder, ReminderChange, ShardSlice};
pub use topics::{Chain, LoggedEvent, Subscriber, SubscriptionChange, TopicEvent};

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend reported an error (unreachable, full, corrupt, …).
    #[error("state store error: {0}")]
    Backend(String),
    /// The store is shutting down and takes no more writes.
    #[error("state store is closed")]
    Closed,
    /// The committing silo does not own the object (any more): the commit
    /// changed nothing.
    #[error("commit refused: {object} is not owned by {silo}")]
    Fenced {
        /// The object whose commit was refused.
        object: String,
        /// The silo that tried to commit.
        silo: String,
    },
    /// The cluster URL names no backend this silo has, or is malformed.
    #[error("bad cluster store URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given (without its password).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StorageError {
    /// The refusal of a commit to `object` by `silo`, which does not own it.
    pub fn fenced(object: &ObjectKey, silo: &SiloId) -> StorageError {
        StorageError::Fenced {
            object: object.to_string(),
            silo: silo.to_string(),
        }
    }
}

/// One change to a key of an object's state; `None` deletes the key.
pub type StateWrite = (String, Option<Vec<u8>>);

/// The reply of a turn that ran under an idempotency key, kept so that a
/// retry with the same key gets it instead of running the turn again.
/// Stored per object as `rio_replies(service_type, object_id, reply_key,
/// reply, stored_at_ms)` (Redis: see its module): a later transactional
/// outbox can record the ids of the messages a receiver applied there too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    /// The idempotency key (the caller's, or one derived from its turn's).
    pub key: String,
    /// The reply payload as the caller received it.
    pub reply: Vec<u8>,
    /// When it was committed, in ms since the Unix epoch; retention counts
    /// from here.
    pub stored_at_ms: i64,
}

/// A message a turn sent one way, kept in its sender's outbox
/// (`rio_outbox(sender_type, sender_id, seq, receiver_type, receiver_id,
/// message_type, payload, created_at_ms)`) until the receiver committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its place among the sender's messages: strictly increasing per
    /// sender over the sender's whole life, never reused (the store keeps
    /// the next one), since it names the delivery's idempotency key.
    pub seq: i64,
    /// The object it goes to.
    pub receiver: ObjectKey,
    /// The receiver's message type.
    pub message_type: String,
    /// The message as the receiver gets it.
    pub payload: Vec<u8>,
    /// When the sending turn committed, in ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A sender's undelivered messages, oldest first, and the seq its next
/// message gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingOutbox {
    /// The seq the sender's next message gets.
    pub next_seq: i64,
    /// Messages committed and not yet delivered, by seq.
    pub messages: Vec<Outgoing>,
}

/// A message its receiver refused, moved out of its sender's outbox
/// (`rio_dead_letters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The object that sent it.
    pub sender: ObjectKey,
    /// The message itself.
    pub message: Outgoing,
    /// Why it was given up, as the delivery's last error said.
    pub reason: String,
    /// When it was given up, in ms since the Unix epoch.
    pub failed_at_ms: i64,
}

/// Everything one turn commits, in one transaction.
///
/// An effect that must happen exactly when the turn's writes do (a
/// message sent, a reminder set, later a publish to a topic) is one more
/// field here, stored by every backend in the same transaction as
/// `writes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Changes to the object's state.
    pub writes: Vec<StateWrite>,
    /// The turn's reply, when it ran under an idempotency key.
    pub reply: Option<ReplyRecord>,
    /// The messages the turn sent one way, by seq; the store also records
    /// the seq after the last as the sender's next.
    pub outbox: Vec<Outgoing>,
    /// The turn's changes to its object's reminders, in order.
    pub reminders: Vec<ReminderChange>,
    /// The turn's changes to its object's subscriptions, in order.
    pub subscriptions: Vec<SubscriptionChange>,
    /// The events the turn published, by seq: each is stored in its
    /// topic's log only if the topic has a subscriber when the commit is
    /// applied (see `topics`).
    pub events: Vec<TopicEvent>,
}

impl Commit {
    /// Nothing to store.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.reply.is_none()
            && self.outbox.is_empty()
            && self.reminders.is_empty()
            && self.subscriptions.is_empty()
            && self.events.is_empty()
    }

    /// About how many bytes it writes: keys, values, reply and messages.
    pub fn bytes(&self) -> usize {
        let writes: usize = self
            .writes
            .iter()
            .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
            .sum();
        let reply = self
            .reply
            .as_ref()
            .map_or(0, |reply| reply.key.len() + reply.reply.len());
        let outbox: usize = self
            .outbox
            .iter()
            .map(|message| message.payload.len() + message.message_type.len())
            .sum();
        let reminders: usize = self.reminders.iter().map(ReminderChange::bytes).sum();
        let subscriptions: usize = self
            .subscriptions
            .iter()
            .map(SubscriptionChange::bytes)
            .sum();
        let events: usize = self
            .events
            .iter()
            .map(|event| event.topic.len() + event.payload.len() + 16)
            .sum();
        writes + reply + outbox + reminders + subscriptions + events
    }
}

/// The bytes one group commit gathers before it takes no more commits: a
/// big commit is written on its own, so the small ones queued before it do
/// not wait for its write in their transaction.
pub(crate) const GROUP_COMMIT_BYTES: usize = 1024 * 1024;

/// Gathers one group commit's batch: `first`, then what waits in `queue`,
/// up to `max` items and [`GROUP_COMMIT_BYTES`]. The item that would pass
/// the bytes (in a batch not empty) is left in `carry`, to start the next
/// batch.
pub(crate) fn gather_batch<T>(
    first: T,
    queue: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    carry: &mut Option<T>,
    max: usize,
    bytes_of: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut bytes = bytes_of(&first);
    let mut batch = vec![first];
    while batch.len() < max && bytes < GROUP_COMMIT_BYTES {
        let Ok(next) = queue.try_recv() else { break };
        let next_bytes = bytes_of(&next);
        if bytes + next_bytes > GROUP_COMMIT_BYTES {
            *carry = Some(next);
            break;
        }
        bytes += next_bytes;
        batch.push(next);
    }
    batch
}

/// One stored key of an object as an activation first sees it: the size
/// of its value, and the value itself if it is small (see
/// [`StateStore::load_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The value's length in bytes.
    pub value_bytes: usize,
    /// The value, if it was loaded with the keys.
    pub value: Option<Vec<u8>>,
}

impl StoredEntry {
    /// The entry for `value`, kept if it is at most `inline_max` bytes.
    pub fn of(value: Vec<u8>, inline_max: usize) -> StoredEntry {
        StoredEntry {
            value_bytes: value.len(),
            value: (value.len() <= inline_max).then_some(value),
        }
    }
}

/// The rows of a `load_keys` query, `(key, value length, value or NULL)`,
/// as every SQL backend reads them.
pub(crate) fn stored_entries<R>(rows: Vec<R>) -> Result<HashMap<String, StoredEntry>, StorageError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let backend = |error: sqlx::Error| StorageError::Backend(error.to_string());
    rows.into_iter()
        .map(|row| {
            let value_bytes: i64 = row.try_get(1).map_err(backend)?;
            let entry = StoredEntry {
                value_bytes: usize::try_from(value_bytes).unwrap_or(0),
                value: row.try_get::<Option<Vec<u8>>, _>(2).map_err(backend)?,
            };
            Ok((row.try_get::<String, _>(0).map_err(backend)?, entry))
        })
        .collect()
}

/// Objects' keys and values, and the replies of their keyed turns.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Every key and value of `object`.
    async fn load(&self, object: &ObjectKey) -> Result<HashMap<String, Vec<u8>>, StorageError>;
    /// Every key of `object` with the size of its value, and the values of
    /// at most `inline_max` bytes; bigger ones are left for
    /// [`StateStore::read_value`], so activating an object with big values
    /// costs neither their transfer nor their memory. (This default loads
    /// everything and drops the big values; the backends read only what
    /// they return.)
    async fn load_keys(
        &self,
        object: &ObjectKey,
        inline_max: usize,
    ) -> Result<HashMap<String, StoredEntry>, StorageError> {
        Ok(self
            .load(object)
            .await?
            .into_iter()
            .map(|(key, value)| (key, StoredEntry::of(value, inline_max)))
            .collect())
    }
    /// The committed value of `key` of `object`.
    async fn read_value(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.load(object).await?.remove(key))
    }
    /// Applies `commit` to `object` atomically and durably (its writes and
    /// its reply record together, or nothing), if `owner` owns `object`
    /// when the commit is applied; otherwise changes nothing and answers
    /// [`StorageError::Fenced`]. In a cluster store the placement entry must
    /// name exactly `owner` (address and generation; no entry refuses too);
    /// the embedded store checks `owner`'s generation against the lease of
    /// the process that opened the file last. Commits batched together fail
    /// or succeed each on their own ownership. A reply record replaces one
    /// stored under the same key.
    async fn commit_turn(
        &self,
        object: &ObjectKey,
        commit: Commit,
        owner: &SiloId,
    ) -> Result<(), StorageError>;
    /// How many commits the store's group commits wrote at once, if it
    /// groups them (for the metrics).
    fn group_commit_sizes(&self) -> Option<crate::base::batch_sizes::BatchSizeReading> {
        None
    }
    /// [`StateStore::commit_turn`] of writes alone.
    async fn commit(
        &self,
        object: &ObjectKey,
        writes: Vec<StateWrite>,
        owner: &SiloId,
    ) -> Result<(), StorageError> {
        let commit = Commit {
            writes,
            ..Commit::default()
        };
        self.commit_turn(object, commit, owner).await
    }
    /// The reply committed for `object` under idempotency key `key`, if one
    /// was and has not been swept.
    async fn stored_reply(
        &self,
        object: &ObjectKey,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Deletes at most `limit` reply records stored before
    /// `stored_before_ms` (any object's), and answers how many it deleted:
    /// fewer than `limit` means none of that age are left.
    async fn sweep_replies(&self, stored_before_ms: i64, limit: usize)
    -> Result<u64, StorageError>;
    /// `sender`'s undelivered messages by seq, and its next seq.
    async fn pending_outbox(&self, sender: &ObjectKey) -> Result<PendingOutbox, StorageError>;
    /// Removes `sender`'s message `seq` from its outbox: the receiver
    /// committed it. Removing one already gone is no error.
    async fn remove_outgoing(&self, sender: &ObjectKey, seq: i64) -> Result<(), StorageError>;
    /// Moves a message from its sender's outbox to the dead letters, in one
    /// transaction. Moving one already gone stores nothing.
    async fn bury(&self, letter: &DeadLetter) -> Result<(), StorageError>;
    /// At most `limit` dead letters, of receivers of `receiver_type` if
    /// given, oldest first.
    async fn dead_letters(
        &self,
        receiver_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError>;
    /// At most `limit` senders that have undelivered messages.
    async fn senders_with_pending(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError>;
    /// At most `limit` objects whose state holds an interrupted keyed turn
    /// (the reserved key `rio:interrupted-turn`, see `resume`). The SQL
    /// stores scan their state table for it (run only when a silo starts or
    /// declares another dead); Redis keeps a set, updated by commits that
    /// write that key.
    async fn interrupted_objects(&self, limit: usize) -> Result<Vec<ObjectKey>, StorageError>;
    /// `object`'s reminders, by name.
    async fn reminders_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, Reminder)>, StorageError>;
    /// At most `limit` reminders of the shards in `slice` due from
    /// `from_ms` to `due_by_ms` (both included), earliest first (ties in a
    /// fixed order), after skipping the first `offset`: read from the index
    /// by due time, never by scanning them all.
    async fn due_reminders(
        &self,
        slice: ShardSlice,
        from_ms: i64,
        due_by_ms: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DueReminder>, StorageError>;
    /// Applies a [`ReminderChange::Advance`] outside a turn (a fire whose
    /// handler failed, or a missed time skipped): compare and set on the
    /// due time, so a reminder replaced meanwhile stays as it is.
    async fn advance_reminder(
        &self,
        object: &ObjectKey,
        name: &str,
        fired_due_ms: i64,
        next_due_ms: Option<i64>,
    ) -> Result<(), StorageError>;
    /// `object`'s subscriptions: (topic, message type), by topic.
    async fn subscriptions_of(
        &self,
        object: &ObjectKey,
    ) -> Result<Vec<(String, String)>, StorageError>;
    /// Whether any object subscribes to `topic`.
    async fn has_subscribers(&self, topic: &str) -> Result<bool, StorageError>;
    /// At most `limit` subscribers of `topic` whose subscriptions date from
    /// `published_ms` or before, in key order (type, then id), after
    /// `after` if given.
    async fn subscribers(
        &self,
        topic: &str,
        after: Option<&ObjectKey>,
        published_ms: i64,
        limit: usize,
    ) -> Result<Vec<Subscriber>, StorageError>;
    /// The events of `chain` in its topic's log not yet delivered to every
    /// subscriber, by seq, at most `limit`.
    async fn logged_events(
        &self,
        chain: &Chain,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError>;
    /// Records that event `seq` of `chain` reached every subscriber up to
    /// `through` (in key order), or with `None` every one: the event leaves
    /// the log. Recording progress on one already gone stores nothing.
    async fn event_delivered(
        &self,
        chain: &Chain,
        seq: i64,
        through: Option<&ObjectKey>,
    ) -> Result<(), StorageError>;
    /// Marks event `seq` of `chain` as being delivered at `now_ms`, so the
    /// sweep leaves its chain to the deliverer working on it.
    async fn touch_logged_event(
        &self,
        chain: &Chain,
        seq: i64,
        now_ms: i64,
    ) -> Result<(), StorageError>;
    /// At most `limit` chains of the shards in `slice` (by publisher) with
    /// an event in the log published at or before `published_by_ms` and
    /// none touched (see [`StateStore::touch_logged_event`]) after it.
    async fn chains_waiting(
        &self,
        slice: ShardSlice,
        published_by_ms: i64,
        limit: usize,
    ) -> Result<Vec<Chain>, StorageError>;
}

/// Component bytes (content-addressed) and which type names point at them.
#[async_trait]
pub trait ComponentStore: Send + Sync + 'static {
    /// Stores a component under its content hash (a no-op if present).
    async fn put_component(&self, content_hash: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// The bytes stored under `content_hash`.
    async fn component(&self, content_hash: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Points `service_type` at a stored component.
    async fn set_deployment(
        &self,
        service_type: &str,
        content_hash: &str,
    ) -> Result<(), StorageError>;
    /// Every (service type, content hash) deployed.
    async fn deployments(&self) -> Result<Vec<(String, String)>, StorageError>;
    /// Removes `service_type`'s deployment (its component bytes stay, as
    /// other types may share them); false if there was none.
    async fn remove_deployment(&self, service_type: &str) -> Result<bool, StorageError>;
}

/// Every concern of a cluster, each behind its trait; one backend usually
/// serves all four.
#[derive(Clone)]
pub struct ClusterStore {
    /// Objects' state.
    pub state: Arc<dyn StateStore>,
    /// Components and deployments, shared by every silo.
    pub components: Arc<dyn ComponentStore>,
    /// Which silos exist and whether they are alive.
    pub membership: Arc<dyn MembershipStore>,
    /// Which silo owns which object.
    pub placement: Arc<dyn PlacementStore>,
}

impl ClusterStore {
    /// One backend for all four concerns.
    pub fn from_backend<B>(backend: Arc<B>) -> ClusterStore
    where
        B: StateStore + ComponentStore + MembershipStore + PlacementStore,
    {
        ClusterStore {
            state: backend.clone(),
            components: backend.clone(),
            membership: backend.clone(),
            placement: backend,
        }
    }

    /// Opens (and migrates) the store a cluster URL names: `sqlite:PATH`,
    /// `postgres://…`, `mysql://…` (or `mariadb://…`), `redis://…`.
    pub async fn open(url: &str, group_commit_max: usize) -> Result<ClusterStore, StorageError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => {
                sql::open_cluster(url, group_commit_max).await
            }
            "redis" | "rediss" => redis::open_cluster(url).await,
            _ => Err(StorageError::BadUrl {
                url: redact(url),
                reason: "expected sqlite:PATH, postgres://, mysql://, mariadb:// or redis://"
                    .into(),
            }),
        }
    }
}

/// `url` with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_big_commit_is_written_on_its_own() {
        let (sender, mut queue) = tokio::sync::mpsc::unbounded_channel();
        for bytes in [10, GROUP_COMMIT_BYTES * 2, 10, 20] {
            sender.send(bytes).unwrap();
        }
        let mut carry = None;
        let mut batches = Vec::new();
        loop {
            let first = match carry.take() {
                Some(first) => first,
                None => match queue.try_recv() {
                    Ok(first) => first,
                    Err(_) => break,
                },
            };
            batches.push(gather_batch(first, &mut queue, &mut carry, 100, |b| *b));
        }
        assert_eq!(
            batches,
            [vec![10], vec![GROUP_COMMIT_BYTES * 2], vec![10, 20]]
        );
        // The count bound holds too.
        for _ in 0..5 {
            sender.send(1).unwrap();
        }
        let first = queue.try_recv().unwrap();
        assert_eq!(
            gather_batch(first, &mut queue, &mut carry, 3, |b| *b).len(),
            3
        );
    }
}
