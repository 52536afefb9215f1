//! Every tunable of a silo, with the defaults a single-machine user wants.

use std::path::PathBuf;
use std::time::Duration;

pub mod auth;
pub mod tls;

use self::auth::AuthConfig;
use self::tls::SiloTls;
use crate::base::Limits;

/// A configuration the silo refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TLS certificate, key or CA could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The silo would listen on the network without requiring tokens.
    #[error("{0}")]
    Unprotected(String),
    /// A token is too short to resist guessing, or serves two scopes.
    #[error("{0}")]
    WeakToken(String),
}

/// How a silo runs. Build one with [`SiloConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct SiloConfig {
    /// Where the SQLite database and the compiled-component cache live.
    pub data_dir: PathBuf,
    /// The longest a guest may run in one turn before it is stopped.
    pub turn_deadline: Duration,
    /// The most linear memory one activation may grow to.
    pub memory_limit_bytes: usize,
    /// An activation with no message for this long is deactivated.
    pub idle_timeout: Duration,
    /// Frames above this size are refused and the connection closed.
    pub max_frame_bytes: usize,
    /// A connection that has not sent a valid hello this long after it
    /// opened is closed.
    pub handshake_timeout: Duration,
    /// A connection with no request and nothing in flight for this long is
    /// closed with a goodbye; so is one whose replies stay unread this long.
    pub connection_idle_timeout: Duration,
    /// Open connections at most; beyond them a new connection gets a
    /// goodbye ("too many connections") and is closed. Lowered at start to
    /// fit the process's open-files limit (after raising it to the hard one).
    pub max_connections: usize,
    /// Connections that have not said hello yet, at most: past it a new
    /// connection takes the place of the oldest, which is closed. Kept
    /// below `max_connections`, so connections without a token can never
    /// crowd out the ones that said hello.
    pub max_connections_before_hello: usize,
    /// How long a wrong or missing token waits for its goodbye (doubling
    /// per recent failure from the same address, up to eight times):
    /// guessing tokens one hello after another is slowed down.
    pub failed_hello_delay: Duration,
    /// Bytes all connections together may hold in unfinished request
    /// frames bigger than 64 KiB (each reserves its length first; more
    /// wait); at least one frame of `max_frame_bytes`.
    pub max_unfinished_frame_bytes: usize,
    /// A request frame begun must arrive whole within this long, or the
    /// connection is closed.
    pub frame_timeout: Duration,
    /// Reply bytes one connection may leave unread before the silo stops
    /// reading its requests (until it reads).
    pub max_unread_reply_bytes: usize,
    /// Event bytes that may wait unsent on a subscriber's connection; past
    /// them its subscriptions miss events (and are told how many) rather
    /// than slow publishers down.
    pub subscription_buffer_bytes: usize,
    /// Published events that may wait for one other silo of the cluster;
    /// past them events are dropped for that silo, and its subscribers of
    /// their topics are told how many they missed.
    pub peer_event_queue: usize,
    /// Requests one connection may have in flight before the silo stops
    /// reading its requests (until replies go out).
    pub max_requests_in_flight: usize,
    /// Messages that may wait for one object before callers get `overloaded`.
    pub mailbox_capacity: usize,
    /// Use wasmtime's pooling allocator (pre-reserved instance slots)
    /// instead of allocating each instance's memory on demand.
    pub pooling_allocator: bool,
    /// Upper bound on live activations when the pooling allocator is used.
    pub pooling_max_instances: u32,
    /// Let wasmtime allocate linear memories and stacks, with copy-on-write
    /// memory images, instead of the silo's own (see `mappings`): guests
    /// with images of megabytes (Python, JavaScript) activate faster and
    /// share their image's pages, but every activation takes about seven
    /// kernel memory mappings (`vm.max_map_count`).
    pub memory_images: bool,
    /// Activations this silo holds at most; `None`: no limit but memory.
    /// At the limit a new activation first deactivates the least recently
    /// used idle one; with none idle it is refused with `overloaded`.
    pub max_activations: Option<usize>,
    /// Resident memory of the silo past which a new activation first
    /// deactivates the least recently used idle one, and with none idle
    /// is refused with `overloaded`; `None`: no budget. By default three
    /// quarters of the machine's memory (or of the cgroup's limit, if
    /// lower), so a flood of new objects meets `overloaded`, not the OOM
    /// killer.
    pub memory_budget_bytes: Option<u64>,
    /// The most commits written in one SQLite transaction.
    pub group_commit_max: usize,
    /// Whether the lone silo's SQLite file syncs every group commit before
    /// acknowledging it (the default: survives power loss) or only at
    /// checkpoints (survives a killed process only).
    pub sqlite_durability: SqliteDurability,
    /// How long the reply of a call made with an idempotency key is kept
    /// (a retry after that runs the call again).
    pub idempotency_retention: Duration,
    /// How often expired replies are swept from the store.
    pub idempotency_sweep_interval: Duration,
    /// The most expired replies one sweep deletes.
    pub idempotency_sweep_batch: usize,
    /// What one caller or guest may use: sizes, depths, rates.
    pub limits: Limits,
    /// The tokens clients and peers must present; none by default.
    pub auth: AuthConfig,
    /// Serve TLS (and speak it to peers); `None`: plain TCP.
    pub tls: Option<SiloTls>,
    /// Join a cluster through this store; `None` runs the silo on its own
    /// with the embedded SQLite store in `data_dir`.
    pub cluster: Option<ClusterConfig>,
}

/// When a SQLite commit counts as written (its `synchronous` setting, in
/// WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// Each commit (one group commit: a batch of turns) is synced to disk
    /// before it is acknowledged: it survives power loss and an OS crash.
    #[default]
    Full,
    /// Commits are synced at WAL checkpoints only: they survive the silo
    /// process being killed, but an OS crash or power loss may lose the
    /// last ones. Faster on slow disks.
    Normal,
}

impl SqliteDurability {
    /// The `PRAGMA synchronous` value.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            SqliteDurability::Full => "PRAGMA synchronous = FULL",
            SqliteDurability::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

impl std::str::FromStr for SqliteDurability {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "full" => Ok(SqliteDurability::Full),
            "normal" => Ok(SqliteDurability::Normal),
            other => Err(format!(
                "unknown SQLite durability `{other}`: expected full or normal"
            )),
        }
    }
}

/// The memory this process may use: the machine's (`MemTotal`), or its
/// cgroup's limit if lower; `None` where neither can be read.
pub(crate) fn machine_memory_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    // cgroup v2; "max" (no limit) does not parse.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

/// How a silo takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster store: `sqlite:PATH`, `postgres://…`, `mysql://…`,
    /// `mariadb://…` or `redis://…`.
    pub url: String,
    /// The address other silos reach this one at; default: the address the
    /// silo listens on.
    pub advertise: Option<String>,
    /// Where a new activation goes.
    pub placement: PlacementStrategy,
    /// How often each silo probes its peers and writes its heartbeat.
    pub probe_interval: Duration,
    /// How long a probe may take before it counts as missed.
    pub probe_timeout: Duration,
    /// Missed probes in a row before a silo suspects a peer.
    pub missed_probes: u32,
    /// Suspicions older than this no longer count.
    pub suspicion_window: Duration,
    /// Distinct suspecting silos needed to declare one dead (fewer when the
    /// cluster has fewer other silos).
    pub votes_to_kill: usize,
    /// How often a silo looks for types deployed through other silos.
    pub deployment_poll: Duration,
}

impl ClusterConfig {
    /// Defaults that detect a killed silo in about three seconds.
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            advertise: None,
            placement: PlacementStrategy::Random,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            missed_probes: 2,
            suspicion_window: Duration::from_secs(20),
            votes_to_kill: 2,
            deployment_poll: Duration::from_secs(2),
        }
    }
}

/// Which silo a new activation goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// Any active silo, at random: spreads load.
    #[default]
    Random,
    /// The silo that received the call: no hop for the first call.
    PreferLocal,
    /// A silo chosen by hashing the object's key over the active silos:
    /// the same object lands on the same silo while membership is stable.
    Hash,
}

impl std::str::FromStr for PlacementStrategy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "random" => Ok(PlacementStrategy::Random),
            "prefer-local" => Ok(PlacementStrategy::PreferLocal),
            "hash" => Ok(PlacementStrategy::Hash),
            other => Err(format!(
                "unknown placement `{other}`: expected random, prefer-local or hash"
            )),
        }
    }
}

impl SiloConfig {
    /// Refuses weak or shared tokens (`AuthConfig::check_strength`), and a
    /// configuration that would serve anyone who reaches
    /// `listen`: a non-loopback address without client tokens, unless
    /// `allow_unauthenticated`; and a cluster whose silos require tokens
    /// from clients but share no secret among themselves (their forwarded
    /// calls would be refused).
    pub fn check_protection(
        &self,
        listen: std::net::SocketAddr,
        allow_unauthenticated: bool,
    ) -> Result<(), ConfigError> {
        self.auth.check_strength()?;
        if self.cluster.is_some()
            && self.auth.requires_client_tokens()
            && self.auth.cluster_secret.is_none()
        {
            return Err(ConfigError::Unprotected(
                "a cluster silo that requires tokens needs the cluster secret too (--cluster-secret), \
                 which its peers present to each other"
                    .into(),
            ));
        }
        if !listen.ip().is_loopback()
            && !self.auth.requires_client_tokens()
            && !allow_unauthenticated
        {
            return Err(ConfigError::Unprotected(format!(
                "refusing to listen on {listen} without tokens: anyone who reaches it could deploy \
                 code and call every object. Set --call-token and --admin-token (or their \
                 RIO_*_TOKEN variables or files), or pass --allow-unauthenticated"
            )));
        }
        Ok(())
    }

    /// Defaults, storing everything under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> SiloConfig {
        SiloConfig {
            data_dir: data_dir.into(),
            turn_deadline: Duration::from_secs(5),
            memory_limit_bytes: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_frame_bytes: rio_protocol::DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(10),
            connection_idle_timeout: Duration::from_secs(600),
            max_connections: 1024,
            max_connections_before_hello: 256,
            failed_hello_delay: Duration::from_millis(500),
            max_unfinished_frame_bytes: 256 * 1024 * 1024,
            frame_timeout: Duration::from_secs(60),
            max_unread_reply_bytes: 16 * 1024 * 1024,
            subscription_buffer_bytes: 256 * 1024,
            peer_event_queue: 100_000,
            max_requests_in_flight: 1024,
            mailbox_capacity: 4096,
            pooling_allocator: false,
            pooling_max_instances: 1000,
            memory_images: false,
            max_activations: None,
            memory_budget_bytes: machine_memory_bytes().map(|total| total / 4 * 3),
            group_commit_max: 1024,
            sqlite_durability: SqliteDurability::Full,
            idempotency_retention: Duration::from_secs(24 * 60 * 60),
            idempotency_sweep_interval: Duration::from_secs(60),
            idempotency_sweep_batch: 1000,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: None,
            cluster: None,
        }
    }
}
