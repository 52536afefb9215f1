//! Opens each cluster store backend for one conformance test, or says why it
//! cannot, and hands out names no other test (or earlier run) uses.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rio_silo::ObjectKey;
use rio_silo::storage::{ClusterStore, Member, SiloId, embedded};
use tempfile::TempDir;
use tokio::net::TcpStream;

const GROUP_COMMIT_MAX: usize = 1024;

/// The servers are shared by every test and every run, so nothing a test
/// writes may collide with what another wrote: every name carries this.
fn run_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_nanos() as u64;
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}-{serial}",
        nanos & 0xffff_ffff_ffff,
        std::process::id()
    )
}

/// Milliseconds since the Unix epoch, as a silo would pass them.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

/// The generation the embedded store's lease is taken for: the state
/// cases' writer commits as generation 1 on every backend.
const EMBEDDED_GENERATION: i64 = 1;

/// One backend, reachable, for one test.
pub struct Env {
    /// `embedded`, `sqlite`, `postgres`, `mariadb` or `redis`: the test
    /// module's name.
    pub backend: &'static str,
    url: String,
    run: String,
    generation: i64,
    /// Keeps the SQLite file alive for the whole test.
    _dir: Option<TempDir>,
}

impl Env {
    /// Opens `backend`, or returns `None` after printing why it is skipped.
    /// Under `CI=true` an unreachable server fails the test instead.
    pub async fn start(backend: &'static str) -> Option<(Env, ClusterStore)> {
        let mut dir = None;
        let (port, candidates): (Option<u16>, Vec<String>) = match backend {
            "embedded" => {
                let tmp = tempfile::tempdir().expect("cannot create a temporary directory");
                let path = tmp.path().join("rio.db").display().to_string();
                let env = Env {
                    backend,
                    url: path,
                    run: run_id(),
                    generation: EMBEDDED_GENERATION,
                    _dir: Some(tmp),
                };
                let store = env.open_embedded(EMBEDDED_GENERATION).await;
                return Some((env, store));
            }
            "sqlite" => {
                let tmp = tempfile::tempdir().expect("cannot create a temporary directory");
                let url = format!("sqlite:{}", tmp.path().join("cluster.db").display());
                dir = Some(tmp);
                (None, vec![url])
            }
            // Trust auth; which role exists depends on how the server was set up.
            "postgres" => (
                Some(5432),
                vec![
                    "postgres://postgres@127.0.0.1:5432/test".into(),
                    "postgres://root@127.0.0.1:5432/test".into(),
                ],
            ),
            "mariadb" => (Some(3306), vec!["mysql://root@127.0.0.1:3306/test".into()]),
            "redis" => (Some(6379), vec!["redis://127.0.0.1:6379/0".into()]),
            other => panic!("no such backend in the conformance suite: {other}"),
        };
        if let Some(port) = port
            && let Err(reason) = reachable(port).await
        {
            return skip_or_fail(backend, &reason);
        }
        let mut failures = Vec::new();
        for url in candidates {
            match ClusterStore::open(&url, GROUP_COMMIT_MAX).await {
                Ok(store) => {
                    let env = Env {
                        backend,
                        url,
                        run: run_id(),
                        generation: now_ms(),
                        _dir: dir,
                    };
                    return Some((env, store));
                }
                Err(error) => failures.push(format!("{url}: {error}")),
            }
        }
        panic!(
            "{backend}: the server is up but cannot be opened: {}",
            failures.join("; ")
        );
    }

    /// Another instance on the same database, as a second silo process would
    /// open it.
    pub async fn open(&self) -> ClusterStore {
        if self.backend == "embedded" {
            return self.open_embedded(self.generation).await;
        }
        ClusterStore::open(&self.url, GROUP_COMMIT_MAX)
            .await
            .unwrap_or_else(|error| panic!("{}: reopening {}: {error}", self.backend, self.url))
    }

    /// The embedded store's file opened by a process of `generation`,
    /// which takes the lease: from then on only its commits are accepted.
    pub async fn open_embedded(&self, generation: i64) -> ClusterStore {
        let store = embedded::open(
            Path::new(&self.url),
            GROUP_COMMIT_MAX,
            generation,
            Default::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("embedded: opening {}: {error}", self.url));
        ClusterStore::from_backend(store)
    }

    /// A silo the store refuses commits from, to objects this test's silos
    /// own: one that owns nothing in a cluster store, an earlier process
    /// in the embedded one.
    pub fn stranger(&self) -> SiloId {
        match self.backend {
            "embedded" => SiloId {
                address: String::new(),
                generation: self.generation - 1,
            },
            _ => self.silo("stranger"),
        }
    }

    /// `prefix` made unique to this test.
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.run)
    }

    /// Object `id` of a type named after `type_prefix`, unique to this test.
    pub fn object(&self, type_prefix: &str, id: &str) -> ObjectKey {
        ObjectKey::new(&self.name(type_prefix), id)
    }

    /// A silo unique to this test; the same `name` gives the same silo.
    pub fn silo(&self, name: &str) -> SiloId {
        SiloId {
            address: format!("{name}.{}.test:7070", self.run),
            generation: self.generation,
        }
    }

    /// The members that are this test's silos, sorted: other tests' silos
    /// share the table.
    pub async fn members(&self, store: &ClusterStore) -> Vec<Member> {
        let mine = format!(".{}.test:", self.run);
        let mut members: Vec<Member> = store
            .membership
            .members()
            .await
            .unwrap_or_else(|error| panic!("{}: members(): {error}", self.backend))
            .into_iter()
            .filter(|member| member.silo.address.contains(&mine))
            .collect();
        members.sort_by(|a, b| a.silo.cmp(&b.silo));
        members
    }
}

async fn reachable(port: u16) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(1),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("127.0.0.1:{port} refused the connection: {error}")),
        Err(_) => Err(format!("127.0.0.1:{port} did not answer within 1 s")),
    }
}

fn skip_or_fail<T>(backend: &str, reason: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{backend} must be reachable under CI=true: {reason}");
    }
    // Straight to stderr: the harness hides what `eprintln!` prints in a
    // test that passes, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipping {backend}: {reason}");
    None
}
