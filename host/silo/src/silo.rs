//! [`Silo`]: opens the store, builds the engine, restores deployments and
//! serves connections until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rio_protocol::{DeploymentInfo, ReplyError, SiloStats};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::component_cache::CompiledCache;
use crate::deployments::Deployments;
use crate::router::Router;
use crate::storage::sqlite::SqliteStore;
use crate::{SiloConfig, SiloError, engine, host, server};

/// A silo on one machine: its engine, its store and its activations.
pub struct Silo {
    router: Arc<Router>,
    stop: watch::Sender<bool>,
}

/// The longest a stopping silo waits for its activations to deactivate.
const STOP_GRACE: Duration = Duration::from_secs(30);

impl Silo {
    /// Opens the data directory (creating it), the SQLite store in it, and
    /// restores the deployed types.
    pub async fn open(config: SiloConfig) -> Result<Silo, SiloError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| SiloError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let engine = engine::build_engine(&config)?;
        engine::spawn_epoch_ticker(&engine);
        engine::warn_if_mappings_are_scarce();
        let store =
            Arc::new(SqliteStore::open(&data_dir.join("rio.db"), config.group_commit_max).await?);
        let cache =
            CompiledCache::new(&engine, &data_dir).map_err(|source| SiloError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        let linker = host::linker(&engine).map_err(|e| SiloError::Engine(format!("{e:#}")))?;
        let deployments = Deployments::new(engine, linker, cache, store.clone());
        deployments.restore().await?;
        let (stop, stopping) = watch::channel(false);
        let router = Arc::new(Router::new(config, deployments, store, stopping));
        Ok(Silo { router, stop })
    }

    /// Serves `listener` until `shutdown` resolves, then stops: refuses new
    /// messages, lets every activation finish its queue, run its
    /// deactivation hook and commit.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        server::serve(listener, self.router.clone(), shutdown).await;
        self.stop().await;
    }

    /// Deactivates every activation and waits (bounded) until they are gone.
    pub async fn stop(&self) {
        self.router.close();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !self.router.directory.lock().is_empty() {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("activations still running after the stop grace period");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deploys a component, as a `Deploy` request would.
    pub async fn deploy(
        &self,
        service_type: &str,
        component: Vec<u8>,
    ) -> Result<DeploymentInfo, ReplyError> {
        self.router
            .deployments
            .deploy(service_type, component)
            .await
    }

    /// The silo's counters.
    pub fn stats(&self) -> SiloStats {
        stats(&self.router)
    }
}

pub(crate) fn stats(router: &Router) -> SiloStats {
    SiloStats {
        live_activations: router.directory.live_count() as u64,
        activations_total: router.counters.activations_total.load(Ordering::Relaxed),
        activation_nanos_total: router
            .counters
            .activation_nanos_total
            .load(Ordering::Relaxed),
        deactivations_total: router.counters.deactivations_total.load(Ordering::Relaxed),
        resident_bytes: resident_bytes(),
        proportional_bytes: proportional_bytes(),
        components_compiled: router.deployments.compiled_total.load(Ordering::Relaxed),
        components_loaded: router.deployments.loaded_total.load(Ordering::Relaxed),
    }
}

/// Proportional set size from `/proc/self/smaps_rollup` (Linux 4.14+); 0
/// elsewhere. Activations of one component map the same copy-on-write
/// memory image, so RSS counts each shared page once per activation.
fn proportional_bytes() -> u64 {
    let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resident set size from `/proc/self/statm` (Linux); 0 elsewhere.
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    resident_pages * 4096
}
