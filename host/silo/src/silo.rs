//! [`Silo`]: opens the store, builds the engine, restores deployments and
//! serves connections until told to stop.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rio_protocol::{DeploymentInfo, ReplyError, SiloStats};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use wasmtime::Engine;

use crate::activation::Context;
use crate::activation::directory::Directory;
use crate::base::clock::{self, now_ms};
use crate::base::pace;
use crate::cluster::{Cluster, run_agent, run_wait_reports};
use crate::config::auth::{AuthConfig, LiveAuth};
use crate::config::{ConfigError, SiloConfig};
use crate::effects::Effects;
use crate::effects::committer::Committer;
use crate::error::SiloError;
use crate::events::Events;
use crate::events::broadcast::Broadcast;
use crate::observe::Counters;
use crate::routing::Router;
use crate::runtime::component_cache::CompiledCache;
use crate::runtime::deployments::{Deployments, Toolchain};
use crate::runtime::engine;
use crate::storage::{ClusterStore, ComponentStore, StateStore};
use crate::{host, ingress, storage};

/// A silo on one machine: its engine, its store and its activations.
pub struct Silo {
    router: Arc<Router>,
    /// The tokens accepted now (see [`Silo::rotate_tokens`]).
    auth: Arc<LiveAuth>,
    stop: watch::Sender<bool>,
    /// The background services, in the order they were started.
    services: Mutex<Vec<Service>>,
}

/// One background service of the silo (membership, wait reports, the
/// deployments poll, wake-ups, the reply sweep): each watches the stop
/// signal, and a stopping silo waits for them in reverse order.
struct Service {
    name: &'static str,
    task: JoinHandle<()>,
}

/// How long a stopping silo waits for one background service to end.
const SERVICE_STOP_WAIT: Duration = Duration::from_secs(5);

/// A stopping silo waits for its activations at most two turn deadlines
/// (the turn in progress, then the deactivation hook) plus this margin for
/// their commits; then it exits anyway.
const STOP_MARGIN: Duration = Duration::from_secs(1);

impl Silo {
    /// Opens the data directory (creating it), the store (the SQLite file in
    /// it, or the cluster store), and restores the deployed types.
    pub async fn open(config: SiloConfig) -> Result<Silo, SiloError> {
        config.auth.check_strength()?;
        let auth = LiveAuth::new(config.auth.clone());
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| SiloError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let engine_error = |e: wasmtime::Error| SiloError::Engine(format!("{e:#}"));
        let engine = engine::build_engine(&config, false).map_err(engine_error)?;
        engine::spawn_epoch_ticker(&engine);
        let own_engine = match engine::uses_own_mappings(&config) {
            true => {
                let own = engine::build_engine(&config, true).map_err(engine_error)?;
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
                    config.sqlite_durability,
                )
                .await?;
                (store.clone(), store, None)
            }
            Some(cluster_config) => {
                let store =
                    ClusterStore::open(&cluster_config.url, config.group_commit_max).await?;
                let (state, components) = (store.state.clone(), store.components.clone());
                let peer_options = rio_client::ConnectOptions {
                    // Set from `auth` for each connection.
                    token: None,
                    tls: config.tls.as_ref().map(|tls| tls.peers.clone()),
                    max_reply_payload_bytes: config.limits.payload_bytes,
                    // Set by `Peers` for each kind of connection.
                    ..rio_client::ConnectOptions::default()
                };
                let cluster = Cluster::new(
                    store,
                    cluster_config.clone(),
                    generation,
                    peer_options,
                    auth.clone(),
                );
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
        let counters = Arc::new(Counters::default());
        let deployments = Deployments::new(
            toolchain(engine)?,
            own_mappings,
            component_store,
            counters.clone(),
        );
        deployments.refresh().await?;
        let (stop, stopping) = watch::channel(false);
        let effects = Arc::new(Effects {
            committer: Committer::new(state_store, cluster.clone(), generation),
            tasks: TaskTracker::new(),
            stopping,
            turn_deadline: config.turn_deadline,
            reply_memory: crate::effects::idempotency::ReplyMemory::new(
                crate::effects::idempotency::RECENT_REPLIES_BUDGET_BYTES,
            ),
            outbox_counters: counters.outbox.clone(),
        });
        let broadcast = cluster.clone().map(|cluster| {
            Broadcast::new(cluster, config.peer_event_queue, counters.events.clone())
        });
        let objects = crate::events::objects::ObjectDelivery::new(
            effects.store().clone(),
            clock::system(),
            counters.events.clone(),
            effects.tasks.clone(),
            config.turn_deadline,
        );
        let events = Events::new(
            counters.events.clone(),
            config.subscription_buffer_bytes,
            broadcast,
            objects,
        );
        let context = Context {
            directory: Directory::new(config.mailbox_capacity),
            config,
            deployments,
            effects,
            counters,
            address: OnceLock::new(),
            cluster,
            clock: clock::system(),
            events: Arc::new(events),
        };
        Ok(Silo {
            router: Router::new(Arc::new(context)),
            auth,
            stop,
            services: Mutex::new(Vec::new()),
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
        let ctx = &router.ctx;
        let mut evicted = None;
        let mut services = Vec::new();
        let mut start =
            |name: &'static str, task: JoinHandle<()>| services.push(Service { name, task });
        if let Some(cluster) = &ctx.cluster {
            let address = cluster.config.advertise.clone().unwrap_or(listening);
            let _ = ctx.address.set(address.clone());
            cluster.join(address).await;
            start(
                "membership",
                tokio::spawn(run_agent(cluster.clone(), self.stop.subscribe())),
            );
            start(
                "wait reports",
                tokio::spawn(run_wait_reports(
                    cluster.clone(),
                    router.waits.clone(),
                    self.stop.subscribe(),
                )),
            );
            start(
                "deployments poll",
                tokio::spawn(poll_deployments(
                    router.clone(),
                    cluster.config.deployment_poll,
                    self.stop.subscribe(),
                )),
            );
            evicted = Some(cluster.evicted.subscribe());
        } else {
            let _ = ctx.address.set(listening);
        }
        let deaths = ctx
            .cluster
            .as_ref()
            .map(|cluster| cluster.deaths.subscribe());
        start(
            "wake-ups",
            tokio::spawn(crate::effects::wake::run_wake_ups(
                ctx.effects.clone(),
                router.clone(),
                deaths,
            )),
        );
        let slice: crate::time::firing::Slice = match ctx.cluster.clone() {
            // A silo fires the shards of its place among the active silos.
            Some(cluster) => Arc::new(move || {
                let me = cluster.me().ok()?;
                let active = cluster.active_silos();
                let index = active.iter().position(|silo| silo == me)?;
                Some(crate::storage::ShardSlice {
                    index: u32::try_from(index).ok()?,
                    count: u32::try_from(active.len()).ok()?,
                })
            }),
            None => Arc::new(|| Some(crate::storage::ShardSlice::ALL)),
        };
        let delivery = ctx.events.objects.start(crate::events::objects::Wiring {
            dispatch: router.clone(),
            slice: slice.clone(),
            stopping: self.stop.subscribe(),
        });
        start("object events", tokio::spawn(delivery));
        let firing = crate::time::firing::Firing::new(
            ctx.effects.store().clone(),
            router.clone(),
            ctx.clock.clone(),
            ctx.counters.clone(),
            ctx.effects.tasks.clone(),
            slice,
            ctx.config.turn_deadline,
        );
        start("reminders", tokio::spawn(firing.run(self.stop.subscribe())));
        let config = &ctx.config;
        start(
            "reply sweep",
            tokio::spawn(crate::effects::idempotency::run_sweep(
                ctx.effects.store().clone(),
                config.idempotency_retention,
                config.idempotency_sweep_interval,
                config.idempotency_sweep_batch,
                self.stop.subscribe(),
            )),
        );
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(services);
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
                _ = &mut was_evicted => self.router.ctx.effects.committer.evict(),
            }
        };
        let connections = self.router.ctx.counters.connections.clone();
        ingress::serve(
            listener,
            self.router.clone(),
            connections,
            self.auth.clone(),
            stop_now,
        )
        .await;
        self.stop().await;
    }

    /// Accepts `auth`'s tokens from the next hello on, without a restart:
    /// give a scope both its old and its new token (`Secret::accepting`)
    /// while clients move over, then the new one alone. Refused (nothing
    /// changes) for weak tokens or another set of scopes than the silo
    /// started with. Open connections keep what their hello proved.
    pub fn rotate_tokens(&self, auth: AuthConfig) -> Result<(), ConfigError> {
        self.auth.rotate(auth)
    }

    /// Deactivates every activation and waits (bounded) until they are gone.
    /// In a cluster the silo first marks itself as leaving, so the others
    /// place nothing new here, and afterwards keeps passing on messages for
    /// a moment, until the others have read that it left.
    pub async fn stop(&self) {
        let ctx = &self.router.ctx;
        let cluster = ctx.cluster.clone();
        let evicted = ctx.effects.committer.is_evicted();
        if let Some(cluster) = &cluster
            && !evicted
        {
            cluster.leave().await;
        }
        self.router.close();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + ctx.config.turn_deadline * 2 + STOP_MARGIN;
        let tasks = &ctx.effects.tasks;
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
        self.stop_services().await;
    }

    /// Waits for the background services to end, the last started first.
    async fn stop_services(&self) {
        let services = std::mem::take(
            &mut *self
                .services
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for Service { name, task } in services.into_iter().rev() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SERVICE_STOP_WAIT, task).await.is_err() {
                tracing::warn!(service = name, "a background service did not stop; aborted");
                abort.abort();
            }
        }
    }

    /// Serves the HTTP/JSON gateway on `listener` until the silo stops
    /// (see `ingress::http`); run it beside [`Silo::serve`].
    pub async fn serve_http(&self, listener: TcpListener) {
        let mut stop = self.stop.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        ingress::http::serve(listener, self.router.clone(), self.auth.clone(), stopped).await;
    }

    /// True once the cluster declared this silo dead (it then stops).
    pub fn was_evicted(&self) -> bool {
        self.router.ctx.effects.committer.is_evicted()
    }

    /// Deploys a component, as a `Deploy` request would.
    pub async fn deploy(
        &self,
        service_type: &str,
        component: Vec<u8>,
    ) -> Result<DeploymentInfo, ReplyError> {
        self.router
            .ctx
            .deployments
            .deploy(service_type, component)
            .await
    }

    /// The silo's counters.
    pub fn stats(&self) -> SiloStats {
        self.router.ctx.counters.stats()
    }
}

/// Picks up types deployed through other silos of the cluster.
async fn poll_deployments(
    router: Arc<Router>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    while pace::pause(interval, &mut stopping).await {
        if let Err(error) = router.ctx.deployments.refresh().await {
            tracing::warn!(%error, "cannot read the deployments of the cluster");
        }
    }
}
