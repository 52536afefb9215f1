//! [`Silo`]: opens the store, builds the engine, restores deployments and
//! serves connections until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rio_protocol::{DeploymentInfo, ReplyError, SiloStats};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmtime::Engine;

use crate::cluster::{Cluster, now_ms, run_agent, run_wait_reports};
use crate::component_cache::CompiledCache;
use crate::connection::ConnectionCounters;
use crate::deployments::{Deployments, Toolchain};
use crate::router::Router;
use crate::storage::{ClusterStore, ComponentStore, StateStore};
use crate::{SiloConfig, SiloError, engine, host, server, storage};

/// A silo on one machine: its engine, its store and its activations.
pub struct Silo {
    router: Arc<Router>,
    stop: watch::Sender<bool>,
    connections: Arc<ConnectionCounters>,
}

/// A stopping silo waits for its activations at most two turn deadlines
/// (the turn in progress, then the deactivation hook) plus this margin for
/// their commits; then it exits anyway.
const STOP_MARGIN: Duration = Duration::from_secs(1);

impl Silo {
    /// Opens the data directory (creating it), the store (the SQLite file in
    /// it, or the cluster store), and restores the deployed types.
    pub async fn open(config: SiloConfig) -> Result<Silo, SiloError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| SiloError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let engine = engine::build_engine(&config, false)?;
        engine::spawn_epoch_ticker(&engine);
        let own_engine = match engine::uses_own_mappings(&config) {
            true => {
                let own = engine::build_engine(&config, true)?;
                engine::spawn_epoch_ticker(&own);
                Some(own)
            }
            false => None,
        };
        engine::warn_if_mappings_are_scarce(&config);
        let generation = now_ms();
        let (state_store, component_store, cluster): (
            Arc<dyn StateStore>,
            Arc<dyn ComponentStore>,
            _,
        ) = match &config.cluster {
            None => {
                let store = storage::embedded::open(
                    &data_dir.join("rio.db"),
                    config.group_commit_max,
                    generation,
                )
                .await?;
                (store.clone(), store, None)
            }
            Some(cluster_config) => {
                let store =
                    ClusterStore::open(&cluster_config.url, config.group_commit_max).await?;
                let (state, components) = (store.state.clone(), store.components.clone());
                let peer_options = rio_client::ConnectOptions {
                    token: config
                        .auth
                        .cluster_secret
                        .as_ref()
                        .map(|secret| secret.expose().to_string()),
                    tls: config.tls.as_ref().map(|tls| tls.peers.clone()),
                    max_reply_payload_bytes: config.limits.payload_bytes,
                };
                let cluster = Cluster::new(store, cluster_config.clone(), generation, peer_options);
                (state, components, Some(Arc::new(cluster)))
            }
        };
        let toolchain = |engine: Engine| -> Result<Toolchain, SiloError> {
            let cache =
                CompiledCache::new(&engine, &data_dir).map_err(|source| SiloError::DataDir {
                    path: data_dir.clone(),
                    source,
                })?;
            let linker = host::linker(&engine).map_err(|e| SiloError::Engine(format!("{e:#}")))?;
            Ok(Toolchain {
                engine,
                linker,
                cache: Arc::new(cache),
            })
        };
        let own_mappings = own_engine.map(toolchain).transpose()?;
        let deployments = Deployments::new(toolchain(engine)?, own_mappings, component_store);
        deployments.refresh().await?;
        let (stop, stopping) = watch::channel(false);
        let router = Arc::new(Router::new(
            config,
            deployments,
            state_store,
            stopping,
            generation,
            cluster,
        ));
        Ok(Silo {
            router,
            stop,
            connections: Arc::default(),
        })
    }

    /// Serves `listener` until `shutdown` resolves, then stops: refuses new
    /// messages, lets every activation finish its queue, run its
    /// deactivation hook and commit.
    ///
    /// In a cluster it first joins (under the advertised address, or the one
    /// it listens on) and starts failure detection; if the others declare
    /// it dead it stops at once.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let listening = listener
            .local_addr()
            .map(|address| address.to_string())
            .unwrap_or_default();
        let router = &self.router;
        let mut evicted = None;
        if let Some(cluster) = &router.cluster {
            let address = cluster.config.advertise.clone().unwrap_or(listening);
            let _ = router.address.set(address.clone());
            cluster.join(address).await;
            tokio::spawn(run_agent(cluster.clone(), self.stop.subscribe()));
            tokio::spawn(run_wait_reports(
                cluster.clone(),
                router.waits.clone(),
                self.stop.subscribe(),
            ));
            tokio::spawn(poll_deployments(
                router.clone(),
                cluster.config.deployment_poll,
                self.stop.subscribe(),
            ));
            evicted = Some(cluster.evicted.subscribe());
        } else {
            let _ = router.address.set(listening);
        }
        let deaths = router
            .cluster
            .as_ref()
            .map(|cluster| cluster.deaths.subscribe());
        tokio::spawn(crate::outbox::run_wake_ups(
            router.clone(),
            deaths,
            self.stop.subscribe(),
        ));
        let config = &router.config;
        tokio::spawn(crate::idempotency::run_sweep(
            router.state_store.clone(),
            config.idempotency_retention,
            config.idempotency_sweep_interval,
            config.idempotency_sweep_batch,
            self.stop.subscribe(),
        ));
        let was_evicted = async move {
            match evicted {
                Some(mut evicted) => drop(evicted.wait_for(|dead| *dead).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(was_evicted);
        let stop_now = async {
            tokio::select! {
                _ = shutdown => {}
                _ = &mut was_evicted => {
                    self.router.evicted.store(true, Ordering::SeqCst);
                }
            }
        };
        server::serve(
            listener,
            self.router.clone(),
            self.connections.clone(),
            stop_now,
        )
        .await;
        self.stop().await;
    }

    /// Deactivates every activation and waits (bounded) until they are gone.
    /// In a cluster the silo first marks itself as leaving, so the others
    /// place nothing new here, and afterwards keeps passing on messages for
    /// a moment, until the others have read that it left.
    pub async fn stop(&self) {
        let cluster = self.router.cluster.clone();
        let evicted = self.router.evicted.load(Ordering::SeqCst);
        if let Some(cluster) = &cluster
            && !evicted
        {
            cluster.leave().await;
        }
        self.router.close();
        let _ = self.stop.send(true);
        let deadline =
            tokio::time::Instant::now() + self.router.config.turn_deadline * 2 + STOP_MARGIN;
        let tasks = &self.router.tasks;
        // Closing only means `wait` ends once the tracker is empty; forwards
        // may still start while the cluster learns that this silo left.
        tasks.close();
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "activations still running after the stop grace period"
            );
            return;
        }
        if let Some(cluster) = cluster
            && !evicted
        {
            tokio::time::sleep(cluster.config.probe_interval * 2).await;
            let _ = tokio::time::timeout_at(deadline, tasks.wait()).await;
            // Everything is handed over: the heartbeat may stop.
            let _ = cluster.retired.send(true);
        }
    }

    /// True once the cluster declared this silo dead (it then stops).
    pub fn was_evicted(&self) -> bool {
        self.router.evicted.load(Ordering::SeqCst)
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
        crate::stats::stats(&self.router, &self.connections)
    }
}

/// Picks up types deployed through other silos of the cluster.
async fn poll_deployments(
    router: Arc<Router>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = router.deployments.refresh().await {
            tracing::warn!(%error, "cannot read the deployments of the cluster");
        }
    }
}
