//! A silo's part in a cluster: who the other silos are and whether they
//! live, which silo owns an object, and passing calls to it.
//!
//! - `membership`: joining, heartbeats, probing peers, declaring the dead.
//! - `placement`: where an object's activation is, or goes.
//! - `peers`: connections to other silos, for forwarded calls and probes.
//! - `wait_reports`: telling the others of long waits, to find deadlocks
//!   across silos.
//!
//! Invariants: an object is activated only by the silo the placement store
//! names as its owner, and a silo claims only for itself. A silo that
//! learns it was declared dead stops at once, committing nothing more.

mod membership;
mod peers;
mod placement;
mod wait_reports;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio::sync::watch;

pub(crate) use self::membership::run_agent;
pub(crate) use self::peers::{ForwardFailure, Peers};
pub(crate) use self::placement::Route;
pub(crate) use self::wait_reports::{note_wait_report, run_wait_reports};
use crate::base::ObjectKey;
use crate::base::pace::Backoff;
use crate::config::ClusterConfig;
use crate::storage::{ClusterStore, Member, SiloId, SiloStatus, StorageError};

/// Remote owners remembered, at most; past that the memory starts afresh.
const ROUTE_CACHE_MAX: usize = 200_000;

pub(crate) struct Cluster {
    pub(crate) store: ClusterStore,
    pub(crate) config: ClusterConfig,
    generation: i64,
    me: OnceLock<SiloId>,
    /// The membership table as last read: each silo's status and heartbeat.
    view: RwLock<HashMap<SiloId, (SiloStatus, i64)>>,
    pub(crate) peers: Peers,
    /// Objects known to live on other silos.
    routes: Mutex<HashMap<ObjectKey, SiloId>>,
    /// Flips to `true` when the others declared this silo dead.
    pub(crate) evicted: watch::Sender<bool>,
    /// Flips to `true` when this silo has handed over all its objects after
    /// leaving; its heartbeat stops then.
    pub(crate) retired: watch::Sender<bool>,
    /// Counts the silos this one declared dead: each declaration wakes the
    /// senders with undelivered messages (some were the dead silo's).
    pub(crate) deaths: watch::Sender<u64>,
    /// Suspicions this silo raised against peers that did not answer its
    /// probes (for the metrics).
    pub(crate) suspicions: std::sync::atomic::AtomicU64,
}

pub(crate) use crate::base::clock::now_ms;

fn storage(error: StorageError) -> ReplyError {
    ReplyError::Internal(format!("cluster store: {error}"))
}

impl Cluster {
    /// `peer_options` are how this silo connects to its peers (see
    /// [`Peers::new`]).
    pub(crate) fn new(
        store: ClusterStore,
        config: ClusterConfig,
        generation: i64,
        peer_options: rio_client::ConnectOptions,
        auth: std::sync::Arc<crate::config::auth::LiveAuth>,
    ) -> Cluster {
        Cluster {
            store,
            config,
            generation,
            me: OnceLock::new(),
            view: RwLock::default(),
            peers: Peers::new(peer_options, auth),
            routes: Mutex::default(),
            evicted: watch::channel(false).0,
            retired: watch::channel(false).0,
            deaths: watch::channel(0).0,
            suspicions: Default::default(),
        }
    }

    /// Registers this silo as active under `address`; retried with backoff,
    /// since a store that is briefly away must not keep a silo from starting.
    pub(crate) async fn join(&self, address: String) -> SiloId {
        let me = self
            .me
            .get_or_init(|| SiloId {
                address,
                generation: self.generation,
            })
            .clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while let Err(error) = self.store.membership.join(&me, now_ms()).await {
            tracing::warn!(%error, "cannot join the cluster yet; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        }
        match self.refresh_view().await {
            Ok(members) => self.bury_earlier_generations(&me, &members).await,
            Err(error) => tracing::warn!(%error, "cannot read the membership table"),
        }
        tracing::info!(silo = %me, "joined the cluster");
        me
    }

    /// Declares dead the earlier generations of this silo at its own
    /// address: this process listens there now, so they have stopped
    /// (killed, and restarted at once by a supervisor). Waiting for the
    /// others to find out by probing would leave their objects unreachable
    /// for the failure-detection time, with messages bouncing to this silo.
    async fn bury_earlier_generations(&self, me: &SiloId, members: &[Member]) {
        for member in members {
            let earlier = &member.silo;
            if earlier.address == me.address
                && earlier.generation < me.generation
                && member.status != SiloStatus::Dead
            {
                membership::declare_dead(self, earlier, "this silo restarted at its address").await;
            }
        }
    }

    pub(crate) fn me(&self) -> Result<&SiloId, ReplyError> {
        self.me.get().ok_or_else(|| {
            ReplyError::Unavailable("this silo has not joined its cluster yet".into())
        })
    }

    /// Marks this silo as leaving: the others place nothing new here.
    pub(crate) async fn leave(&self) {
        if let Some(me) = self.me.get()
            && let Err(error) = self.store.membership.set_status(me, SiloStatus::Left).await
        {
            tracing::warn!(%error, "cannot mark this silo as left");
        }
    }

    /// How many silos the membership table, as last read, has in each
    /// status (active, left, dead), for the metrics.
    pub(crate) fn members_by_status(&self) -> [(&'static str, u64); 3] {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        [SiloStatus::Active, SiloStatus::Left, SiloStatus::Dead].map(|status| {
            let count = view.values().filter(|(s, _)| *s == status).count();
            (status.as_str(), count as u64)
        })
    }

    pub(crate) async fn refresh_view(&self) -> Result<Vec<Member>, StorageError> {
        let members = self.store.membership.members().await?;
        let view: HashMap<SiloId, (SiloStatus, i64)> = members
            .iter()
            .map(|member| (member.silo.clone(), (member.status, member.heartbeat_ms)))
            .collect();
        // Routes to silos that are no longer active are stale.
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, owner| {
                view.get(owner).map(|(status, _)| *status) == Some(SiloStatus::Active)
            });
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        Ok(members)
    }

    /// The status of `silo` as last read; a silo missing from the view is
    /// looked up once more (it may have just joined), then counts as dead.
    pub(crate) async fn status_of(&self, silo: &SiloId) -> SiloStatus {
        if let Some(status) = self.cached_status(silo) {
            return status;
        }
        if let Err(error) = self.refresh_view().await {
            tracing::warn!(%error, "cannot read the membership table");
        }
        self.cached_status(silo).unwrap_or(SiloStatus::Dead)
    }

    fn cached_status(&self, silo: &SiloId) -> Option<SiloStatus> {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(silo)
            .map(|(status, _)| *status)
    }

    /// True if `silo`'s heartbeat, as last read, is older than the time in
    /// which a live silo writes a few: a silo that left and fell silent was
    /// killed (or frozen) before it handed all its objects over.
    pub(crate) fn fell_silent(&self, silo: &SiloId) -> bool {
        let silence = self.config.probe_interval * (self.config.missed_probes + 1);
        let heartbeat = self
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(silo)
            .map(|(_, heartbeat)| *heartbeat);
        match heartbeat {
            Some(heartbeat) => now_ms() - heartbeat > silence.as_millis() as i64,
            None => true,
        }
    }

    pub(crate) fn active_silos(&self) -> Vec<SiloId> {
        let mut active: Vec<SiloId> = self
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (status, _))| *status == SiloStatus::Active)
            .map(|(silo, _)| silo.clone())
            .collect();
        active.sort();
        active
    }

    fn cached_route(&self, key: &ObjectKey) -> Option<SiloId> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember_route(&self, key: &ObjectKey, owner: &SiloId) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.len() >= ROUTE_CACHE_MAX {
            routes.clear();
        }
        routes.insert(key.clone(), owner.clone());
    }

    pub(crate) fn forget_route(&self, key: &ObjectKey) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Gives up ownership of `key` after its activation ended.
    pub(crate) async fn release(&self, key: &ObjectKey) {
        let Some(me) = self.me.get() else { return };
        if let Err(error) = self.store.placement.release(key, me).await {
            // The entry stays ours; a message for the object comes back
            // here and activates it again, so nothing is lost.
            tracing::warn!(object = %key, %error, "cannot release the placement");
        }
    }
}
