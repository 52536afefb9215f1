//! Cluster stores for tests that run several silo processes: a SQLite file
//! (always there) and a PostgreSQL database of the test's own (skipped
//! outside CI when the server is down, a failure under `CI=true`).

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A SQLite cluster file in a temporary directory, removed afterwards.
pub struct SqliteFile {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl SqliteFile {
    pub fn create() -> SqliteFile {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("cluster.db").display());
        SqliteFile { url, _dir: dir }
    }
}

/// A database of its own on the local PostgreSQL (trust auth), dropped
/// afterwards.
pub struct PostgresDatabase {
    pub name: String,
    pub url: String,
}

impl PostgresDatabase {
    /// `None` (after saying why) when no server runs, outside CI.
    pub fn create(test: &str) -> Option<PostgresDatabase> {
        if !server_is_up("PostgreSQL", 5432) {
            return None;
        }
        let name = format!("rio_{test}_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name}"));
        psql(&format!("CREATE DATABASE {name}"));
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Some(PostgresDatabase { name, url })
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(sql: &str) {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qc",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether a server answers on a loopback port; outside CI a test skips
/// when it does not, under CI it fails.
pub fn server_is_up(name: &str, port: u16) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is not running on 127.0.0.1:{port}"
    );
    eprintln!("skipping: {name} is not running on 127.0.0.1:{port}");
    false
}
