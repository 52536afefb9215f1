//! The lone silo's store: the SQL store's SQLite dialect on one file in the
//! data directory, its commits fenced by a lease rather than by placement
//! (a lone silo owns every object of its directory; the lease keeps a
//! second process that opened the directory by mistake, or a frozen one
//! that woke up, from committing).
//!
//! It is [`SqlStore`] itself, so commits, group commit, limits and
//! migrations are written once. What is here is the one thing only this
//! store has: files written before it became the SQL store (their own
//! schema, with a `lease` table) are converted in place, in one
//! transaction, the first time they are opened.

use std::path::Path;
use std::sync::Arc;

use sqlx::AnyPool;

use super::sql::dialect::Dialect;
use super::sql::{Fencing, SqlStore, apply_steps, backend, connect};
use super::{SqliteDurability, StorageError};

/// Opens (creating if needed) the store file at `path`, converts or
/// migrates it, takes the lease for the process `generation` (from then on
/// only commits by that generation are accepted) and starts the
/// group-commit writer; commits are synced as `durability` says.
pub async fn open(
    path: &Path,
    group_commit_max: usize,
    generation: i64,
    durability: SqliteDurability,
) -> Result<Arc<SqlStore>, StorageError> {
    let url = sqlite_url(path);
    // Not a cluster store URL the user gave: say which file failed.
    let (pool, dialect) = connect(&url, durability)
        .await
        .map_err(|error| match error {
            StorageError::BadUrl { reason, .. } => {
                StorageError::Backend(format!("{}: {reason}", path.display()))
            }
            other => other,
        })?;
    convert_earlier_schema(&pool).await?;
    let store = SqlStore::start(pool, dialect, Fencing::Lease, group_commit_max).await?;
    store.take_lease(generation).await?;
    Ok(Arc::new(store))
}

/// The `sqlite:` URL of the file at `path`; sqlx percent-decodes the
/// path, so the characters that would end or escape it are encoded.
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite:");
    for c in path.display().to_string().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// The tables of the earlier embedded schema, each with what its rows
/// become; in the order they are copied (components before deployments).
const EARLIER_TABLES: &[(&str, &str)] = &[
    (
        "object_state",
        "INSERT INTO object_state (service_type, object_id, state_key, value)
         SELECT service_type, object_id, key, value FROM earlier_object_state",
    ),
    (
        "components",
        "INSERT INTO component_chunks (content_hash, seq, bytes)
         SELECT content_hash, 0, bytes FROM earlier_components;
         INSERT INTO components (content_hash, total_bytes, chunks)
         SELECT content_hash, length(bytes), 1 FROM earlier_components",
    ),
    (
        "deployments",
        "INSERT INTO deployments (service_type, content_hash)
         SELECT service_type, content_hash FROM earlier_deployments",
    ),
    (
        "rio_replies",
        "INSERT INTO rio_replies (service_type, object_id, reply_key, reply, stored_at_ms)
         SELECT service_type, object_id, reply_key, reply, stored_at_ms FROM earlier_rio_replies",
    ),
    (
        "rio_outbox",
        "INSERT INTO rio_outbox SELECT * FROM earlier_rio_outbox",
    ),
    (
        "rio_outbox_next",
        "INSERT INTO rio_outbox_next SELECT * FROM earlier_rio_outbox_next",
    ),
    (
        "rio_dead_letters",
        "INSERT INTO rio_dead_letters SELECT * FROM earlier_rio_dead_letters",
    ),
];

/// Converts a file of the earlier embedded schema (it has a `lease` table)
/// to the SQL store's schema, keeping every row; a file without one is
/// left alone. One transaction, under the write lock from its start: a
/// silo killed halfway leaves the earlier file as it was and converts it
/// at its next start, and of two processes opening it at once one converts
/// and the other finds it done.
async fn convert_earlier_schema(pool: &AnyPool) -> Result<(), StorageError> {
    let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let earlier: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'lease'",
    )
    .fetch_one(&mut *transaction)
    .await
    .map_err(backend)?;
    if earlier == 0 {
        return transaction.commit().await.map_err(backend);
    }
    tracing::info!("converting the store file of an earlier version to the SQL store's schema");
    // The earlier indexes would keep their names on the renamed tables and
    // stop the new schema from creating its own.
    for statement in [
        "DROP INDEX IF EXISTS rio_replies_by_age",
        "DROP INDEX IF EXISTS rio_dead_letters_by_receiver",
        "DROP TABLE lease",
        "DROP TABLE rio_schema",
    ] {
        sqlx::query(statement)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    for (table, _) in EARLIER_TABLES {
        let rename = format!("ALTER TABLE {table} RENAME TO earlier_{table}");
        sqlx::query(sqlx::AssertSqlSafe(rename))
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    apply_steps(&mut transaction, Dialect::Sqlite).await?;
    for (_, copy) in EARLIER_TABLES {
        for statement in copy.split(';') {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut *transaction)
                .await
                .map_err(backend)?;
        }
    }
    // Deployments name components: dropped first.
    for (table, _) in EARLIER_TABLES.iter().rev() {
        let drop = format!("DROP TABLE earlier_{table}");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
    }
    transaction.commit().await.map_err(backend)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection, SqliteConnection};

    use super::*;
    use crate::base::ObjectKey;
    use crate::storage::{
        Commit, ComponentStore, DeadLetter, Outgoing, ReplyRecord, SiloId, StateStore,
    };

    /// The schema steps of the embedded store before it became the SQL
    /// store, as its files have them.
    const EARLIER_MIGRATIONS: &[&str] = &[
        "CREATE TABLE object_state (
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
    );",
        // One row: the generation of the process that may commit.
        "CREATE TABLE lease (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        generation INTEGER NOT NULL
    );",
        // The replies of turns run under an idempotency key, committed with
        // their writes; swept by age.
        "CREATE TABLE rio_replies (
        service_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        reply_key TEXT NOT NULL,
        reply BLOB NOT NULL,
        stored_at_ms INTEGER NOT NULL,
        PRIMARY KEY (service_type, object_id, reply_key)
    ) WITHOUT ROWID;
    CREATE INDEX rio_replies_by_age ON rio_replies (stored_at_ms);",
        // One-way messages committed with their sender's turn, until their
        // receiver committed them; each sender's next seq, kept after its
        // outbox empties so a seq is never reused; and the messages receivers
        // refused.
        "CREATE TABLE rio_outbox (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        receiver_type TEXT NOT NULL,
        receiver_id TEXT NOT NULL,
        message_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE rio_outbox_next (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        next_seq INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id)
    ) WITHOUT ROWID;
    CREATE TABLE rio_dead_letters (
        sender_type TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        receiver_type TEXT NOT NULL,
        receiver_id TEXT NOT NULL,
        message_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        failed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sender_type, sender_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX rio_dead_letters_by_receiver ON rio_dead_letters (receiver_type, failed_at_ms);",
        // State in a table with rowids: a WITHOUT ROWID table is one B-tree of
        // whole rows, and once a few objects held 15 MiB values every later
        // write to any object was about 90 times slower (SQLite alone: 42,500
        // small commits/s before, 475 after twelve such values); with rowids
        // the values stay in the table's leaves and the key index stays small.
        "CREATE TABLE object_state_rows (
        service_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (service_type, object_id, key)
    );
    INSERT INTO object_state_rows (service_type, object_id, key, value)
        SELECT service_type, object_id, key, value FROM object_state;
    DROP TABLE object_state;
    ALTER TABLE object_state_rows RENAME TO object_state;",
    ];

    /// Writes a file as the earlier embedded store left it, with a row in
    /// every table.
    async fn write_earlier_file(path: &Path) {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        let mut old = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE rio_schema (version INTEGER NOT NULL)")
            .execute(&mut old)
            .await
            .unwrap();
        for (index, step) in EARLIER_MIGRATIONS.iter().enumerate() {
            sqlx::raw_sql(*step).execute(&mut old).await.unwrap();
            sqlx::query("INSERT INTO rio_schema (version) VALUES (?)")
                .bind(index as i64 + 1)
                .execute(&mut old)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO lease VALUES (0, 5);
             INSERT INTO object_state VALUES ('Counter', 'a', 'n', x'07');
             INSERT INTO object_state VALUES ('Counter', 'a', 'big', zeroblob(100000));
             INSERT INTO components VALUES ('h1', x'0061736d');
             INSERT INTO deployments VALUES ('Counter', 'h1');
             INSERT INTO rio_replies VALUES ('Counter', 'a', 'k1', x'01', 123);
             INSERT INTO rio_outbox VALUES ('Counter', 'a', 3, 'Counter', 'b', 'add', x'02', 9);
             INSERT INTO rio_outbox_next VALUES ('Counter', 'a', 4);
             INSERT INTO rio_dead_letters
                 VALUES ('Counter', 'a', 1, 'Counter', 'c', 'add', x'03', 8, 'trap: no', 10);",
        )
        .execute(&mut old)
        .await
        .unwrap();
    }

    fn process(generation: i64) -> SiloId {
        SiloId {
            address: String::new(),
            generation,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-directory").join("rio.db");
        let Err(error) = open(&path, 64, 1, SqliteDurability::Full).await else {
            panic!("opened a file in a directory that does not exist");
        };
        let message = error.to_string();
        assert!(message.contains("missing-directory"), "{message}");
        assert!(!message.contains("cluster"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_directory_may_have_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a 50%?b#c");
        std::fs::create_dir(&odd).unwrap();
        let path = odd.join("rio.db");
        let store = open(&path, 64, 1, SqliteDurability::Full).await.unwrap();
        let object = ObjectKey::new("Counter", "a");
        let put = vec![("n".to_string(), Some(vec![1]))];
        store.commit(&object, put, &process(1)).await.unwrap();
        assert!(path.exists(), "the file is where it was asked to be");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_of_the_earlier_schema_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rio.db");
        write_earlier_file(&path).await;
        let store = open(&path, 64, 1, SqliteDurability::Full).await.unwrap();
        let object = ObjectKey::new("Counter", "a");

        let state = store.load(&object).await.unwrap();
        assert_eq!(state.get("n"), Some(&vec![7]));
        assert_eq!(state.get("big").map(Vec::len), Some(100_000));
        assert_eq!(
            store.component("h1").await.unwrap(),
            Some(b"\0asm".to_vec())
        );
        assert_eq!(
            store.deployments().await.unwrap(),
            vec![("Counter".to_string(), "h1".to_string())]
        );
        assert_eq!(
            store.stored_reply(&object, "k1").await.unwrap(),
            Some(vec![1])
        );
        let pending = store.pending_outbox(&object).await.unwrap();
        let message = Outgoing {
            seq: 3,
            receiver: ObjectKey::new("Counter", "b"),
            message_type: "add".into(),
            payload: vec![2],
            created_at_ms: 9,
        };
        assert_eq!(pending.messages, vec![message]);
        assert_eq!(pending.next_seq, 4);
        let letters = store.dead_letters(None, 10).await.unwrap();
        let buried = DeadLetter {
            sender: object.clone(),
            message: Outgoing {
                seq: 1,
                receiver: ObjectKey::new("Counter", "c"),
                message_type: "add".into(),
                payload: vec![3],
                created_at_ms: 8,
            },
            reason: "trap: no".into(),
            failed_at_ms: 10,
        };
        assert_eq!(letters, vec![buried]);

        // The converted file takes commits (the earlier lease is gone, the
        // new one is this process's), and indexes were made anew.
        let turn = Commit {
            writes: vec![("n".to_string(), Some(vec![8]))],
            reply: Some(ReplyRecord {
                key: "k2".into(),
                reply: vec![4],
                stored_at_ms: 200,
            }),
            outbox: Vec::new(),
            reminders: Vec::new(),
            ..Commit::default()
        };
        store.commit_turn(&object, turn, &process(1)).await.unwrap();
        assert_eq!(store.read_value(&object, "n").await.unwrap(), Some(vec![8]));
        assert_eq!(store.sweep_replies(150, 10).await.unwrap(), 1);
        drop(store);

        // Opened again, nothing is converted twice.
        let again = open(&path, 64, 2, SqliteDurability::Full).await.unwrap();
        let state: HashMap<String, Vec<u8>> = again.load(&object).await.unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(
            again.stored_reply(&object, "k2").await.unwrap(),
            Some(vec![4])
        );
        let mut connection = again_connection(&path).await;
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'rio_%' ORDER BY name",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "rio_dead_letters_by_receiver",
                "rio_reminders_by_due",
                "rio_replies_by_age",
                "rio_subscriptions_by_object",
                "rio_topic_log_by_time"
            ]
        );
        let earlier: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'earlier_%' OR name = 'lease'",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        assert_eq!(earlier, 0);
    }

    async fn again_connection(path: &Path) -> SqliteConnection {
        let options =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap();
        SqliteConnection::connect_with(&options).await.unwrap()
    }
}
