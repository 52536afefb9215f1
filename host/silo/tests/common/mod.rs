//! Shared by the integration tests: builds the test guests once, and runs
//! real silos on ephemeral loopback ports with their own data directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rio_client::{Calls, Client};
use rio_silo::{Silo, SiloConfig};
use tokio::sync::oneshot;

mod guest_build;

pub use guest_build::guest;

/// A silo serving on a loopback port, stopped gracefully by [`TestSilo::stop`].
pub struct TestSilo {
    pub address: String,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    silo: std::sync::Arc<Silo>,
}

/// A fresh data directory, removed when dropped.
pub struct DataDir(pub tempfile::TempDir);

impl DataDir {
    pub fn new() -> DataDir {
        DataDir(tempfile::tempdir().unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A config for tests: short deadline, otherwise defaults.
pub fn config(data_dir: &DataDir) -> SiloConfig {
    let mut config = SiloConfig::new(data_dir.path());
    config.turn_deadline = Duration::from_millis(500);
    config
}

impl TestSilo {
    pub async fn start(config: SiloConfig) -> TestSilo {
        let data_dir = config.data_dir.clone();
        let silo = std::sync::Arc::new(Silo::open(config).await.expect("silo opens"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = silo.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        TestSilo {
            address,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            silo,
        }
    }

    pub fn silo(&self) -> &Silo {
        &self.silo
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.address)
            .await
            .expect("client connects")
            .with_timeout(Duration::from_secs(60))
    }

    pub async fn deploy(&self, service_type: &str, package: &str) {
        self.silo
            .deploy(service_type, guest(package))
            .await
            .expect("deploy succeeds");
    }

    /// Stops gracefully: activations deactivate and commit.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Counter messages, as the guests define them.
#[derive(serde::Serialize)]
pub struct Increment {
    pub by: i64,
}

#[derive(serde::Serialize)]
pub struct Empty {}

#[derive(serde::Deserialize, Debug, PartialEq)]
pub struct Value {
    pub value: i64,
}

pub async fn counter_value(client: &Client, service_type: &str, id: &str) -> i64 {
    client
        .call::<Empty, Value>(service_type, id, "get", &Empty {})
        .await
        .expect("get succeeds")
        .value
}

/// Polls `condition` every 20 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
