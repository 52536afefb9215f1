//! Every concern of a cluster on one SQL database: PostgreSQL,
//! MySQL/MariaDB, or a SQLite file that the silos of one machine share.
//!
//! One implementation for all three through sqlx's `Any` driver; what
//! differs is in [`dialect`]. The lone silo's embedded store is this store
//! too, on a SQLite file in its data directory, fenced by a lease instead
//! of by placement (see [`Fencing`] and `storage::embedded`). Object state
//! goes through a group-commit writer: many turns' commits share one
//! transaction, each caller answered once it is durable.
//!
//! - `state`: object state and the group-commit writer.
//! - `replies`: keyed calls' stored-reply lookups, a batch per query.
//! - `components`: components (chunked) and deployments.
//! - `membership`: silos, heartbeats, suspicions.
//! - `placement`: object → owner, by insert-if-absent and compare-and-set.
//! - `outbox`: one-way messages waiting for delivery, and dead letters.
//! - `reminders`: durable reminders, scanned by due time.
//! - `topics`: object subscriptions and the per-topic event log.

mod components;
pub(crate) mod dialect;
mod membership;
mod outbox;
mod placement;
mod reminders;
mod replies;
mod state;
mod topics;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use tokio::sync::mpsc;

use self::dialect::Dialect;
use super::{ClusterStore, StorageError, redact};

/// State, components, membership and placement in one SQL database.
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    commits: mpsc::UnboundedSender<state::Queued>,
    /// Reply lookups, answered in batches: every keyed call makes one and
    /// nearly all miss, so one query per call (a round trip each) cost a
    /// keyed write a third of its throughput on the embedded store.
    lookups: mpsc::UnboundedSender<replies::PendingLookup>,
    /// Turns' commits per group commit, counted by the writer.
    pub(crate) batch_sizes: std::sync::Arc<crate::base::batch_sizes::BatchSizes>,
}

/// How a commit shows that its silo may write the object; checked in the
/// commit's own transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fencing {
    /// The placement table names the committing silo, address and
    /// generation (a cluster).
    Placement,
    /// The committing silo's generation is the one in `rio_lease`: that of
    /// the process that opened the store last (the lone silo's file, which
    /// a second process may open by mistake, or a frozen one wake up to).
    Lease,
}

/// Opens the store at `url` for all four concerns.
pub async fn open_cluster(
    url: &str,
    group_commit_max: usize,
) -> Result<ClusterStore, StorageError> {
    let store = SqlStore::open(url, group_commit_max).await?;
    Ok(ClusterStore::from_backend(std::sync::Arc::new(store)))
}

pub(crate) fn backend(error: sqlx::Error) -> StorageError {
    StorageError::Backend(error.to_string())
}

impl SqlStore {
    /// Connects to `url` (`sqlite:PATH`, `postgres://…`, `mysql://…`,
    /// `mariadb://…`), migrates the schema and starts the commit writer;
    /// commits are fenced by placement.
    /// A `sqlite:` store syncs every commit ([`super::SqliteDurability::Full`]).
    pub async fn open(url: &str, group_commit_max: usize) -> Result<SqlStore, StorageError> {
        let (pool, dialect) = connect(url, super::SqliteDurability::Full).await?;
        SqlStore::start(pool, dialect, Fencing::Placement, group_commit_max).await
    }

    /// Migrates the database behind `pool` and starts the writer and the
    /// reply lookups.
    pub(crate) async fn start(
        pool: AnyPool,
        dialect: Dialect,
        fencing: Fencing,
        group_commit_max: usize,
    ) -> Result<SqlStore, StorageError> {
        migrate(&pool, dialect).await?;
        let (commits, queue) = mpsc::unbounded_channel();
        let batch_sizes = std::sync::Arc::new(crate::base::batch_sizes::BatchSizes::default());
        tokio::spawn(state::run_writer(
            pool.clone(),
            dialect,
            fencing,
            queue,
            group_commit_max.max(1),
            batch_sizes.clone(),
        ));
        let (lookups, waiting) = mpsc::unbounded_channel();
        tokio::spawn(replies::run_lookups(pool.clone(), dialect, waiting));
        Ok(SqlStore {
            pool,
            dialect,
            commits,
            lookups,
            batch_sizes,
        })
    }

    /// Makes `generation` the lease holder: from now on only commits by
    /// that generation are accepted (with [`Fencing::Lease`]).
    pub(crate) async fn take_lease(&self, generation: i64) -> Result<(), StorageError> {
        sqlx::query(self.dialect.upsert("rio_lease", &["id"], &["generation"]))
            .bind(0i64)
            .bind(generation)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn sql(&self, text: &str) -> sqlx::SqlStr {
        self.dialect.sql(text)
    }
}

/// A pool on the database at `url`, and its dialect.
pub(crate) async fn connect(
    url: &str,
    durability: super::SqliteDurability,
) -> Result<(AnyPool, Dialect), StorageError> {
    let bad_url = |reason: String| StorageError::BadUrl {
        url: redact(url),
        reason,
    };
    let dialect = Dialect::of_url(url)
        .ok_or_else(|| bad_url("not a sqlite:, postgres:// or mysql:// URL".into()))?;
    let url = connect_url(dialect, url);
    install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(match dialect {
            // The writer, and readers beside it (WAL lets them share the
            // file).
            Dialect::Sqlite => 6,
            _ => 8,
        })
        .acquire_timeout(Duration::from_secs(10))
        // A local file's connection does not go stale, and the ping sqlx
        // sends before lending one out cost every query a round trip to
        // SQLite's worker thread; a server's may be closed on its side.
        .test_before_acquire(dialect != Dialect::Sqlite)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // Several silo processes may share the file: wait for
                    // the lock rather than fail, and let readers run beside
                    // the writer. WAL with FULL syncs every commit (one per
                    // group of turns); with NORMAL a killed process loses
                    // nothing, but an OS crash or power loss may lose the
                    // last commits.
                    connection.execute("PRAGMA busy_timeout = 10000").await?;
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute(durability.pragma()).await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|error| bad_url(format!("cannot connect: {error}")))?;
    Ok((pool, dialect))
}

/// The URL sqlx wants: `mariadb://` is spelled `mysql://`, and a SQLite
/// file is created when missing.
fn connect_url(dialect: Dialect, url: &str) -> String {
    match dialect {
        Dialect::MySql => url.replacen("mariadb://", "mysql://", 1),
        Dialect::Sqlite if !url.contains("mode=") => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rwc")
        }
        _ => url.to_string(),
    }
}

/// Applies the schema steps not applied yet. Silos starting together take
/// a database lock first (SQLite serialises writers by itself).
async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<(), StorageError> {
    let mut connection = pool.acquire().await.map_err(backend)?;
    match dialect {
        Dialect::Postgres => {
            sqlx::query("SELECT pg_advisory_lock(7700)")
                .execute(&mut *connection)
                .await
                .map_err(backend)?;
        }
        Dialect::MySql => {
            sqlx::query("SELECT GET_LOCK('rio_migrate', 60)")
                .execute(&mut *connection)
                .await
                .map_err(backend)?;
        }
        Dialect::Sqlite => {}
    }
    let result = apply_steps(&mut connection, dialect).await;
    let unlock = match dialect {
        Dialect::Postgres => Some("SELECT pg_advisory_unlock(7700)"),
        Dialect::MySql => Some("SELECT RELEASE_LOCK('rio_migrate')"),
        Dialect::Sqlite => None,
    };
    if let Some(unlock) = unlock {
        sqlx::query(unlock)
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    result
}

pub(crate) async fn apply_steps(
    connection: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<(), StorageError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS rio_schema (version BIGINT NOT NULL)")
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    let applied: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM rio_schema")
        .fetch_one(&mut *connection)
        .await
        .map_err(backend)?;
    for (index, step) in dialect
        .migrations()
        .into_iter()
        .enumerate()
        .skip(applied.max(0) as usize)
    {
        for statement in step {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *connection)
                .await
                .map_err(backend)?;
        }
        sqlx::query(dialect.sql("INSERT INTO rio_schema (version) VALUES (?)"))
            .bind(index as i64 + 1)
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_created_and_mariadb_is_spelled_mysql() {
        assert_eq!(
            connect_url(Dialect::Sqlite, "sqlite:/tmp/x.db"),
            "sqlite:/tmp/x.db?mode=rwc"
        );
        assert_eq!(
            connect_url(Dialect::MySql, "mariadb://root@localhost/test"),
            "mysql://root@localhost/test"
        );
    }
}
