//! Cluster stores for tests that run several silo processes: a SQLite file
//! (always there), and a PostgreSQL database, a MariaDB database or a Redis
//! database number of the test's own (skipped outside CI when the server is
//! down, a failure under `CI=true`).

use std::io::Write as _;
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

/// A database of its own on the local MariaDB (root, no password),
/// dropped afterwards.
pub struct MariaDatabase {
    pub name: String,
    pub url: String,
}

impl MariaDatabase {
    /// `None` (after saying why) when no server runs, outside CI.
    pub fn create(test: &str) -> Option<MariaDatabase> {
        if !server_is_up("MariaDB", 3306) {
            return None;
        }
        let name = format!("rio_{test}_{}", std::process::id());
        mariadb(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        let url = format!("mysql://root@127.0.0.1:3306/{name}");
        Some(MariaDatabase { name, url })
    }
}

impl Drop for MariaDatabase {
    fn drop(&mut self) {
        let _ = mariadb(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

fn mariadb(sql: &str) -> Result<(), String> {
    let output = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-e", sql])
        .output()
        .expect("the mariadb client runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mariadb {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A Redis database number of the test's own on the local server, emptied
/// before and after. Numbers in use: 0 (the storage conformance suite),
/// 9 (`cluster.rs`); a test using this one gives its own.
pub struct RedisDatabase {
    number: u8,
    pub url: String,
}

impl RedisDatabase {
    /// `None` (after saying why) when no server runs, outside CI.
    pub fn create(number: u8) -> Option<RedisDatabase> {
        if !server_is_up("Redis", 6379) {
            return None;
        }
        flush_redis(number);
        let url = format!("redis://127.0.0.1:6379/{number}");
        Some(RedisDatabase { number, url })
    }
}

impl Drop for RedisDatabase {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-n", &self.number.to_string(), "FLUSHDB"])
            .output();
    }
}

fn flush_redis(number: u8) {
    let flushed = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-n", &number.to_string(), "FLUSHDB"])
        .output()
        .expect("redis-cli runs");
    assert!(flushed.status.success(), "redis-cli FLUSHDB failed");
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

/// Whether every one of `programs` runs here (`PROGRAM --version`); outside
/// CI a test skips when one does not, under CI it fails. `install` says
/// how to get them.
pub fn programs_installed(programs: &[&str], install: &str) -> bool {
    let runs = |program: &str| {
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    let Some(missing) = programs.iter().find(|program| !runs(program)) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing} is not installed (scripts/test installs it: {install})"
    );
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {missing} is not installed ({install})"
    );
    false
}

/// A loopback port free now, for a helper server to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    // Straight to stderr: the harness hides what `eprintln!` prints in a
    // test that passes, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {name} is not running on 127.0.0.1:{port}"
    );
    false
}
