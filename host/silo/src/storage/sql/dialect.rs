//! What differs between the SQL databases the cluster store runs on: bind
//! placeholders, upserts, column types and the schema.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// One of the SQL databases the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub(crate) fn of_url(url: &str) -> Option<Dialect> {
        match url.split(':').next()? {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// `text` written with `?` placeholders, in this dialect's placeholders.
    /// Every statement of the store is built from constant text by these
    /// functions, never from data, which is what makes it safe to assert.
    pub(crate) fn sql(self, text: &str) -> SqlStr {
        AssertSqlSafe(self.placeholders(text)).into_sql_str()
    }

    fn placeholders(self, text: &str) -> String {
        if self != Dialect::Postgres {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut index = 0;
        for c in text.chars() {
            if c == '?' {
                index += 1;
                out.push('$');
                out.push_str(&index.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The length in bytes of the binary `column`, as a 64-bit integer
    /// (PostgreSQL's `length` is 32-bit, which the `Any` driver will not
    /// read as `i64`).
    pub(crate) fn byte_length(self, column: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST(length({column}) AS BIGINT)"),
            Dialect::Sqlite | Dialect::MySql => format!("length({column})"),
        }
    }

    /// `INSERT INTO table (columns) VALUES (…)` that does nothing when the
    /// primary key is taken.
    pub(crate) fn insert_or_ignore(self, table: &str, columns: &[&str]) -> SqlStr {
        let values = vec!["?"; columns.len()].join(", ");
        let columns = columns.join(", ");
        self.sql(&match self {
            Dialect::MySql => format!("INSERT IGNORE INTO {table} ({columns}) VALUES ({values})"),
            _ => {
                format!("INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING")
            }
        })
    }

    /// `INSERT` that overwrites `updated` columns when `key` is taken.
    pub(crate) fn upsert(self, table: &str, key: &[&str], updated: &[&str]) -> SqlStr {
        self.upsert_rows(table, key, updated, 1)
    }

    /// [`Dialect::upsert`] of `rows` rows in one statement.
    pub(crate) fn upsert_rows(
        self,
        table: &str,
        key: &[&str],
        updated: &[&str],
        rows: usize,
    ) -> SqlStr {
        let columns: Vec<&str> = key.iter().chain(updated).copied().collect();
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let values = vec![row; rows.max(1)].join(", ");
        let head = format!(
            "INSERT INTO {table} ({}) VALUES {values}",
            columns.join(", ")
        );
        self.sql(&match self {
            Dialect::MySql => {
                let set: Vec<String> = updated
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!("{head} ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
            _ => {
                let set: Vec<String> = updated
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(
                    "{head} ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    set.join(", ")
                )
            }
        })
    }

    /// `INSERT` of `key` and `column` that, when `key` is taken, keeps the
    /// greater of the stored and the new `column`: a late, older write does
    /// not hide a newer one.
    pub(crate) fn upsert_max(self, table: &str, key: &[&str], column: &str) -> SqlStr {
        let columns: Vec<&str> = key.iter().copied().chain([column]).collect();
        let values = vec!["?"; columns.len()].join(", ");
        let head = format!(
            "INSERT INTO {table} ({}) VALUES ({values})",
            columns.join(", ")
        );
        let conflict = format!("ON CONFLICT ({}) DO UPDATE SET", key.join(", "));
        self.sql(&match self {
            Dialect::MySql => format!(
                "{head} ON DUPLICATE KEY UPDATE {column} = GREATEST({column}, VALUES({column}))"
            ),
            Dialect::Postgres => format!(
                "{head} {conflict} {column} = GREATEST({table}.{column}, excluded.{column})"
            ),
            Dialect::Sqlite => {
                format!("{head} {conflict} {column} = MAX({column}, excluded.{column})")
            }
        })
    }

    /// Deletes at most `?2` reply records stored before `?1` (ms). MySQL
    /// cannot delete from a table it reads in a subquery, but has `DELETE
    /// … LIMIT`; the others have no `LIMIT` on `DELETE`.
    pub(crate) fn sweep_replies(self) -> SqlStr {
        self.sql(match self {
            Dialect::MySql => "DELETE FROM rio_replies WHERE stored_at_ms < ? LIMIT ?",
            _ => {
                "DELETE FROM rio_replies WHERE (service_type, object_id, reply_key) IN (
                    SELECT service_type, object_id, reply_key FROM rio_replies
                    WHERE stored_at_ms < ? LIMIT ?)"
            }
        })
    }

    /// The schema, as steps applied in order once each; never edit a
    /// released step. Each step is a list of statements (MySQL cannot run
    /// several in one, nor roll back DDL, so every statement is idempotent).
    pub(crate) fn migrations(self) -> Vec<Vec<String>> {
        let (short, long, blob, table_options) = match self {
            // MySQL keys must have a length; utf8mb4_bin keeps `Alice` and
            // `alice` apart as every other backend does. 128 + 2 * 255
            // characters of 4 bytes fit InnoDB's 3072-byte key limit.
            Dialect::MySql => (
                "VARCHAR(128)",
                "VARCHAR(255)",
                "LONGBLOB",
                " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            ),
            Dialect::Postgres => ("TEXT", "TEXT", "BYTEA", ""),
            Dialect::Sqlite => ("TEXT", "TEXT", "BLOB", ""),
        };
        let owner_index = match self {
            Dialect::MySql => {
                ",\n INDEX placement_by_owner (owner_address, owner_generation)".to_string()
            }
            _ => String::new(),
        };
        let mut first = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS object_state (
                    service_type {short} NOT NULL,
                    object_id {long} NOT NULL,
                    state_key {long} NOT NULL,
                    value {blob} NOT NULL,
                    PRIMARY KEY (service_type, object_id, state_key)
                ){table_options}"
            ),
            // Components are stored in chunks: MariaDB refuses packets over
            // 16 MiB by default, and a Python component is larger.
            format!(
                "CREATE TABLE IF NOT EXISTS component_chunks (
                    content_hash {short} NOT NULL,
                    seq BIGINT NOT NULL,
                    bytes {blob} NOT NULL,
                    PRIMARY KEY (content_hash, seq)
                ){table_options}"
            ),
            // A row here means every chunk of the component is stored.
            format!(
                "CREATE TABLE IF NOT EXISTS components (
                    content_hash {short} NOT NULL PRIMARY KEY,
                    total_bytes BIGINT NOT NULL,
                    chunks BIGINT NOT NULL
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS deployments (
                    service_type {short} NOT NULL PRIMARY KEY,
                    content_hash {short} NOT NULL
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS members (
                    address {short} NOT NULL,
                    generation BIGINT NOT NULL,
                    status {short} NOT NULL,
                    heartbeat_ms BIGINT NOT NULL,
                    PRIMARY KEY (address, generation)
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS suspicions (
                    target {long} NOT NULL,
                    suspector {long} NOT NULL,
                    at_ms BIGINT NOT NULL,
                    PRIMARY KEY (target, suspector)
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS placement (
                    service_type {short} NOT NULL,
                    object_id {long} NOT NULL,
                    owner_address {short} NOT NULL,
                    owner_generation BIGINT NOT NULL,
                    PRIMARY KEY (service_type, object_id){owner_index}
                ){table_options}"
            ),
        ];
        if self != Dialect::MySql {
            first.push(
                "CREATE INDEX IF NOT EXISTS placement_by_owner ON placement (owner_address, owner_generation)"
                    .to_string(),
            );
        }
        // The replies of turns run under an idempotency key, committed with
        // their writes; swept by age, hence the index.
        let age_index = match self {
            Dialect::MySql => ",\n INDEX rio_replies_by_age (stored_at_ms)".to_string(),
            _ => String::new(),
        };
        let mut replies = vec![format!(
            "CREATE TABLE IF NOT EXISTS rio_replies (
                service_type {short} NOT NULL,
                object_id {long} NOT NULL,
                reply_key {long} NOT NULL,
                reply {blob} NOT NULL,
                stored_at_ms BIGINT NOT NULL,
                PRIMARY KEY (service_type, object_id, reply_key){age_index}
            ){table_options}"
        )];
        if self != Dialect::MySql {
            replies.push(
                "CREATE INDEX IF NOT EXISTS rio_replies_by_age ON rio_replies (stored_at_ms)"
                    .to_string(),
            );
        }
        // One-way messages committed with their sender's turn, until the
        // receiver committed them; each sender's next seq, kept after its
        // outbox empties so a seq is never reused; the messages receivers
        // refused, listed by receiver type.
        let message_columns = format!(
            "sender_type {short} NOT NULL,
                sender_id {long} NOT NULL,
                seq BIGINT NOT NULL,
                receiver_type {short} NOT NULL,
                receiver_id {long} NOT NULL,
                message_type {long} NOT NULL,
                payload {blob} NOT NULL,
                created_at_ms BIGINT NOT NULL"
        );
        let receiver_index = match self {
            Dialect::MySql => {
                ",\n INDEX rio_dead_letters_by_receiver (receiver_type, failed_at_ms)".to_string()
            }
            _ => String::new(),
        };
        let mut outbox = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS rio_outbox (
                    {message_columns},
                    PRIMARY KEY (sender_type, sender_id, seq)
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS rio_outbox_next (
                    sender_type {short} NOT NULL,
                    sender_id {long} NOT NULL,
                    next_seq BIGINT NOT NULL,
                    PRIMARY KEY (sender_type, sender_id)
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS rio_dead_letters (
                    {message_columns},
                    reason TEXT NOT NULL,
                    failed_at_ms BIGINT NOT NULL,
                    PRIMARY KEY (sender_type, sender_id, seq){receiver_index}
                ){table_options}"
            ),
        ];
        if self != Dialect::MySql {
            outbox.push(
                "CREATE INDEX IF NOT EXISTS rio_dead_letters_by_receiver ON rio_dead_letters (receiver_type, failed_at_ms)"
                    .to_string(),
            );
        }
        // One row: the generation of the process that may commit, where
        // commits are fenced by lease (the lone silo's file) rather than
        // by placement.
        let lease = vec![format!(
            "CREATE TABLE IF NOT EXISTS rio_lease (
                id BIGINT NOT NULL PRIMARY KEY,
                generation BIGINT NOT NULL
            ){table_options}"
        )];
        // Durable reminders, one row per object and name; the silos scan
        // the index by due time for what is due (see `storage::reminders`).
        let due_index = match self {
            Dialect::MySql => ",\n INDEX rio_reminders_by_due (due_ms)".to_string(),
            _ => String::new(),
        };
        let mut reminders = vec![format!(
            "CREATE TABLE IF NOT EXISTS rio_reminders (
                service_type {short} NOT NULL,
                object_id {long} NOT NULL,
                name {long} NOT NULL,
                shard BIGINT NOT NULL,
                due_ms BIGINT NOT NULL,
                every_ms BIGINT,
                missed BIGINT NOT NULL,
                message_type {long} NOT NULL,
                payload {blob} NOT NULL,
                PRIMARY KEY (service_type, object_id, name){due_index}
            ){table_options}"
        )];
        if self != Dialect::MySql {
            reminders.push(
                "CREATE INDEX IF NOT EXISTS rio_reminders_by_due ON rio_reminders (due_ms)"
                    .to_string(),
            );
        }
        // Object subscriptions and the per-topic event log (see
        // `storage::topics`); events wait by publish time for the sweep.
        let (subscriber_index, log_index) = match self {
            Dialect::MySql => (
                ",\n INDEX rio_subscriptions_by_object (service_type, object_id)",
                ",\n INDEX rio_topic_log_by_time (published_ms)",
            ),
            _ => ("", ""),
        };
        let topic = match self {
            Dialect::MySql => "VARCHAR(255)",
            _ => "TEXT",
        };
        let mut topics = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS rio_subscriptions (
                    topic {topic} NOT NULL,
                    service_type {short} NOT NULL,
                    object_id {long} NOT NULL,
                    message_type {long} NOT NULL,
                    since_ms BIGINT NOT NULL,
                    PRIMARY KEY (topic, service_type, object_id){subscriber_index}
                ){table_options}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS rio_topic_log (
                    topic {topic} NOT NULL,
                    publisher_type {short} NOT NULL,
                    publisher_id {long} NOT NULL,
                    seq BIGINT NOT NULL,
                    shard BIGINT NOT NULL,
                    payload {blob} NOT NULL,
                    published_ms BIGINT NOT NULL,
                    touched_ms BIGINT NOT NULL,
                    through_type {short},
                    through_id {long},
                    PRIMARY KEY (topic, publisher_type, publisher_id, seq){log_index}
                ){table_options}"
            ),
        ];
        if self != Dialect::MySql {
            topics.push(
                "CREATE INDEX IF NOT EXISTS rio_subscriptions_by_object ON rio_subscriptions (service_type, object_id)"
                    .to_string(),
            );
            topics.push(
                "CREATE INDEX IF NOT EXISTS rio_topic_log_by_time ON rio_topic_log (published_ms)"
                    .to_string(),
            );
        }
        vec![first, replies, outbox, lease, reminders, topics]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            Dialect::Postgres
                .sql("SELECT a FROM t WHERE b = ? AND c = ?")
                .as_str(),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(Dialect::MySql.sql("b = ?").as_str(), "b = ?");
    }

    #[test]
    fn many_rows_upsert_in_one_statement() {
        assert_eq!(
            Dialect::Postgres
                .upsert_rows("t", &["k"], &["v"], 2)
                .as_str(),
            "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $4) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        );
    }

    #[test]
    fn upserts_follow_the_dialect() {
        assert_eq!(
            Dialect::Sqlite.upsert("t", &["k"], &["v"]).as_str(),
            "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        );
        assert_eq!(
            Dialect::MySql.upsert("t", &["k"], &["v"]).as_str(),
            "INSERT INTO t (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        );
        assert_eq!(
            Dialect::Postgres
                .insert_or_ignore("t", &["k", "v"])
                .as_str(),
            "INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        );
    }
}
