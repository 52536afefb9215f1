//! `rio silo`: run a silo until Ctrl-C or SIGTERM, then stop it gracefully.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rio_silo::{
    AuthConfig, ClusterConfig, PlacementStrategy, Secret, Silo, SiloConfig, SiloTls,
    SqliteDurability,
};
use tracing_subscriber::EnvFilter;

use crate::config_file::ConfigFile;

#[derive(Args)]
pub(crate) struct SiloArgs {
    /// Address to listen on (port 0 picks a free one) [default: 127.0.0.1:7700].
    #[arg(long, env = "RIO_LISTEN")]
    listen: Option<String>,
    /// Also serve the HTTP/JSON gateway on this address (port 0 picks a
    /// free one): calls, sends and admin routes, same tokens and TLS.
    #[arg(long, env = "RIO_HTTP")]
    http: Option<String>,
    /// Directory for the SQLite store and compiled components [default: ./rio-data].
    #[arg(long, env = "RIO_DATA")]
    data: Option<PathBuf>,
    /// TOML config file; flags override its values.
    #[arg(long, env = "RIO_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds without a message before an object is deactivated [default: 600].
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Milliseconds a guest may run in one turn [default: 5000].
    #[arg(long)]
    turn_deadline_ms: Option<u64>,
    /// Linear memory limit per activation, in MiB [default: 64].
    #[arg(long)]
    memory_limit_mib: Option<usize>,
    /// Use wasmtime's pooling instance allocator.
    #[arg(long)]
    pooling_allocator: bool,
    /// Let wasmtime map memories with copy-on-write images: faster, smaller
    /// Python and JavaScript activations, ~7 memory mappings each.
    #[arg(long)]
    memory_images: bool,
    /// Activations held at most; at the limit a new one first deactivates
    /// the least recently used idle one [default: no limit].
    #[arg(long)]
    max_activations: Option<usize>,
    /// Resident MiB of the silo past which a new activation first
    /// deactivates the least recently used idle one; 0: no budget
    /// [default: three quarters of the machine's (or cgroup's) memory].
    #[arg(long)]
    memory_budget_mib: Option<u64>,
    /// When the lone silo's SQLite file acknowledges a commit: `full` syncs
    /// each group commit to disk (survives power loss), `normal` only at
    /// checkpoints (survives a killed process) [default: full].
    #[arg(long, env = "RIO_SQLITE_DURABILITY")]
    sqlite_durability: Option<SqliteDurability>,
    /// Seconds the reply of a call made with an idempotency key is kept
    /// (a retry after that runs again) [default: 86400].
    #[arg(long)]
    idempotency_retention_secs: Option<u64>,
    /// A limit on what one caller or guest may use, as NAME=VALUE (e.g.
    /// `turn-write-bytes=8MiB`); repeatable. Names and defaults: README,
    /// "Security and limits".
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// Largest frame (request) accepted, in MiB [default: 64].
    #[arg(long)]
    max_frame_mib: Option<usize>,
    /// Milliseconds a new connection has to send its hello [default: 10000].
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Seconds a connection may stay with nothing asked and nothing in
    /// flight, or leave its replies unread, before it is closed [default: 600].
    #[arg(long)]
    connection_idle_secs: Option<u64>,
    /// Open connections at most; more are refused [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections that have not said hello yet, at most; a newer one takes
    /// the oldest's place [default: 256, and below the cap].
    #[arg(long)]
    max_connections_before_hello: Option<usize>,
    /// Milliseconds a wrong or missing token waits for its goodbye,
    /// doubling per recent failure from one address up to 8x [default: 500].
    #[arg(long)]
    failed_hello_delay_ms: Option<u64>,
    /// MiB all connections may hold together in unfinished frames over
    /// 64 KiB [default: 256, at least one frame of --max-frame-mib].
    #[arg(long)]
    max_unfinished_frame_mib: Option<usize>,
    /// Seconds a begun request frame has to arrive whole [default: 60].
    #[arg(long)]
    frame_timeout_secs: Option<u64>,
    /// MiB of replies one connection may leave unread before the silo stops
    /// reading its requests [default: 16].
    #[arg(long)]
    max_unread_reply_mib: Option<usize>,
    /// Published events that may wait for one other silo before they are
    /// dropped for it (its subscribers are told) [default: 100000].
    #[arg(long)]
    peer_event_queue: Option<usize>,
    /// Requests one connection may have in flight before the silo stops
    /// reading its requests [default: 1024].
    #[arg(long)]
    max_requests_in_flight: Option<usize>,
    /// Join a cluster through this store: sqlite:PATH, postgres://…,
    /// mysql://… (or mariadb://…), redis://… [default: no cluster, the
    /// SQLite file in the data directory].
    #[arg(long, env = "RIO_CLUSTER")]
    cluster: Option<String>,
    /// The address other silos reach this one at [default: the listen address].
    #[arg(long, env = "RIO_ADVERTISE")]
    advertise: Option<String>,
    /// Where new activations go: random, prefer-local or hash [default: random].
    #[arg(long, env = "RIO_PLACEMENT")]
    placement: Option<PlacementStrategy>,
    /// The token clients present for calls, sends and listing deployments.
    #[arg(long, env = "RIO_CALL_TOKEN", hide_env_values = true)]
    call_token: Option<String>,
    /// A file holding the call token (its first line).
    #[arg(
        long,
        env = "RIO_CALL_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "call_token"
    )]
    call_token_file: Option<PathBuf>,
    /// The token for everything a call token allows, and deploy, undeploy,
    /// stats, members and dead letters.
    #[arg(long, env = "RIO_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the admin token (its first line).
    #[arg(
        long,
        env = "RIO_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
    /// The secret the silos of a cluster present to each other; needed in a
    /// cluster whose silos require tokens.
    #[arg(long, env = "RIO_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// A file holding the cluster secret (its first line).
    #[arg(
        long,
        env = "RIO_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        conflicts_with = "cluster_secret"
    )]
    cluster_secret_file: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM, the silo's certificate first).
    #[arg(long, env = "RIO_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "RIO_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) peers' certificates are checked against
    /// [default: the certificates of --tls-cert].
    #[arg(long = "tls-ca", env = "RIO_PEER_TLS_CA", value_name = "FILE")]
    peer_tls_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without client tokens (anyone who
    /// reaches the port may deploy code and call every object).
    #[arg(long)]
    allow_unauthenticated: bool,
}

pub(crate) async fn run(args: SiloArgs) -> anyhow::Result<()> {
    rio_silo::return_big_buffers_to_the_os();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RIO_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let file = match &args.config {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| crate::DEFAULT_SILO.to_string());
    let data_dir = args
        .data
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("rio-data"));
    let mut config = SiloConfig::new(data_dir);
    if let Some(secs) = args.idle_timeout_secs.or(file.idle_timeout_secs) {
        config.idle_timeout = Duration::from_secs(secs);
    }
    if let Some(ms) = args.turn_deadline_ms.or(file.turn_deadline_ms) {
        config.turn_deadline = Duration::from_millis(ms);
    }
    if let Some(mib) = args.memory_limit_mib.or(file.memory_limit_mib) {
        config.memory_limit_bytes = mib_to_bytes("--memory-limit-mib", mib)?;
    }
    if let Some(capacity) = file.mailbox_capacity {
        config.mailbox_capacity = capacity;
    }
    if let Some(mib) = args.max_frame_mib.or(file.max_frame_mib) {
        config.max_frame_bytes = mib_to_bytes("--max-frame-mib", mib)?;
    }
    if let Some(secs) = args
        .idempotency_retention_secs
        .or(file.idempotency_retention_secs)
    {
        config.idempotency_retention = Duration::from_secs(secs);
    }
    if let Some(secs) = file.idempotency_sweep_secs {
        config.idempotency_sweep_interval = Duration::from_secs(secs.max(1));
    }
    for (name, value) in &file.limits {
        set_limit(&mut config, name, &value.to_string())?;
    }
    for limit in &args.limits {
        let (name, value) = limit
            .split_once('=')
            .with_context(|| format!("`--limit {limit}`: expected NAME=VALUE"))?;
        set_limit(&mut config, name, value)?;
    }
    if let Some(ms) = args.handshake_timeout_ms.or(file.handshake_timeout_ms) {
        config.handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(secs) = args.connection_idle_secs.or(file.connection_idle_secs) {
        config.connection_idle_timeout = Duration::from_secs(secs);
    }
    if let Some(max) = args.max_connections.or(file.max_connections) {
        config.max_connections = max;
    }
    if let Some(max) = args
        .max_connections_before_hello
        .or(file.max_connections_before_hello)
    {
        config.max_connections_before_hello = max.max(1);
    }
    if let Some(ms) = args.failed_hello_delay_ms.or(file.failed_hello_delay_ms) {
        config.failed_hello_delay = Duration::from_millis(ms);
    }
    if let Some(mib) = args
        .max_unfinished_frame_mib
        .or(file.max_unfinished_frame_mib)
    {
        config.max_unfinished_frame_bytes = mib_to_bytes("--max-unfinished-frame-mib", mib)?;
    }
    if let Some(secs) = args.frame_timeout_secs.or(file.frame_timeout_secs) {
        config.frame_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(mib) = args.max_unread_reply_mib.or(file.max_unread_reply_mib) {
        config.max_unread_reply_bytes = mib_to_bytes("--max-unread-reply-mib", mib)?;
    }
    if let Some(max) = args.peer_event_queue.or(file.peer_event_queue) {
        config.peer_event_queue = max.max(1);
    }
    if let Some(max) = args.max_requests_in_flight.or(file.max_requests_in_flight) {
        // Zero would stop reading requests for good.
        config.max_requests_in_flight = max.max(1);
    }
    if let Some(durability) = args.sqlite_durability {
        config.sqlite_durability = durability;
    } else if let Some(durability) = file.sqlite_durability {
        config.sqlite_durability = durability.parse().map_err(anyhow::Error::msg)?;
    }
    config.pooling_allocator = args.pooling_allocator || file.pooling_allocator.unwrap_or(false);
    config.memory_images = args.memory_images || file.memory_images.unwrap_or(false);
    config.max_activations = args.max_activations.or(file.max_activations);
    if let Some(mib) = args.memory_budget_mib.or(file.memory_budget_mib) {
        config.memory_budget_bytes = match mib {
            0 => None,
            mib => Some(mib_to_bytes("--memory-budget-mib", mib)?),
        };
    }
    if let Some(url) = args.cluster.or(file.cluster) {
        let mut cluster = ClusterConfig::new(url);
        cluster.advertise = args.advertise.or(file.advertise);
        if let Some(placement) = args.placement {
            cluster.placement = placement;
        } else if let Some(placement) = file.placement {
            cluster.placement = placement.parse().map_err(anyhow::Error::msg)?;
        }
        config.cluster = Some(cluster);
    }

    let tokens = TokenSources {
        call: (
            args.call_token,
            args.call_token_file.or(file.call_token_file),
        ),
        admin: (
            args.admin_token,
            args.admin_token_file.or(file.admin_token_file),
        ),
        cluster: (
            args.cluster_secret,
            args.cluster_secret_file.or(file.cluster_secret_file),
        ),
    };
    config.auth = tokens.read()?;
    let tls_cert = args.tls_cert.or(file.tls_cert);
    let tls_key = args.tls_key.or(file.tls_key);
    let peer_tls_ca = args.peer_tls_ca.or(file.tls_ca);
    config.tls = match (tls_cert, tls_key) {
        (None, None) => {
            anyhow::ensure!(
                peer_tls_ca.is_none(),
                "--tls-ca needs --tls-cert and --tls-key"
            );
            None
        }
        (Some(cert), Some(key)) => Some(SiloTls::from_pem_files(
            &cert,
            &key,
            peer_tls_ca.as_deref(),
        )?),
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    let allow_unauthenticated =
        args.allow_unauthenticated || file.allow_unauthenticated.unwrap_or(false);

    let listener = rio_silo::listen(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    config.check_protection(address, allow_unauthenticated)?;
    let http_listener = match args.http.or(file.http) {
        Some(http) => {
            let listener = rio_silo::listen(&http)
                .await
                .with_context(|| format!("cannot listen on {http} (--http)"))?;
            config.check_protection(listener.local_addr()?, allow_unauthenticated)?;
            Some(listener)
        }
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let silo = Silo::open(config).await.with_context(|| {
        format!(
            "cannot open the silo (data directory {})",
            data_dir.display()
        )
    })?;
    // Scripts (and `rio bench`) read this line to find the silo.
    println!("rio silo listening on {address}");
    if let Some(http) = &http_listener {
        println!("rio silo HTTP gateway on {}", http.local_addr()?);
    }
    std::io::stdout().flush()?;
    tracing::info!(%address, data_dir = %data_dir.display(), "silo started");
    // Ends only with the silo: `serve` must finish its stop undisturbed.
    let http = async {
        if let Some(listener) = http_listener {
            silo.serve_http(listener).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = silo.serve(listener, stop_signal()) => {}
        _ = rotate_on_hangup(&silo, &tokens) => {}
        _ = http => {}
    }
    if silo.was_evicted() {
        anyhow::bail!("the cluster declared this silo dead; it stopped (start it again to rejoin)");
    }
    tracing::info!("silo stopped");
    Ok(())
}

/// Where each of the silo's tokens comes from: its flag (or variable), or
/// its file, which is read again on SIGHUP.
struct TokenSources {
    call: (Option<String>, Option<PathBuf>),
    admin: (Option<String>, Option<PathBuf>),
    cluster: (Option<String>, Option<PathBuf>),
}

impl TokenSources {
    fn read(&self) -> anyhow::Result<AuthConfig> {
        Ok(AuthConfig {
            call_token: secret(&self.call)?,
            admin_token: secret(&self.admin)?,
            cluster_secret: secret(&self.cluster)?,
        })
    }
}

/// Reads the token files again on each SIGHUP and rotates to what they
/// hold (a file may list several tokens, one per line, all accepted; the
/// first is the one presented to peers). Never returns.
async fn rotate_on_hangup(silo: &Silo, tokens: &TokenSources) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP; tokens cannot be rotated without a restart");
                return std::future::pending().await;
            }
        };
        while hangup.recv().await.is_some() {
            let rotated = tokens
                .read()
                .and_then(|auth| silo.rotate_tokens(auth).map_err(anyhow::Error::from));
            match rotated {
                Ok(()) => tracing::info!(
                    "SIGHUP: token files read again; their tokens are accepted from now on"
                ),
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "SIGHUP: tokens not rotated; the earlier ones stay")
                }
            }
        }
    }
    std::future::pending().await
}

/// A token from its flag (or variable), or every line of its file; `None`
/// if neither.
fn secret((text, file): &(Option<String>, Option<PathBuf>)) -> anyhow::Result<Option<Secret>> {
    match (text, file) {
        (Some(text), _) => Secret::new(text.clone())
            .map(Some)
            .context("a token must not be empty"),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let tokens = text.lines().map(str::to_string);
            Secret::accepting(tokens)
                .map(Some)
                .with_context(|| format!("the token file {} is empty", path.display()))
        }
        (None, None) => Ok(None),
    }
}

/// `mib` MiB in bytes; an error naming the setting (`--flag`, or its
/// `flag` key in the config file) if that does not fit, rather than a
/// wrapped (in release builds, silently tiny) value.
fn mib_to_bytes<T>(name: &str, mib: T) -> anyhow::Result<T>
where
    T: TryInto<u64> + TryFrom<u64> + Copy + std::fmt::Display,
{
    const MIB: u64 = 1024 * 1024;
    mib.try_into()
        .ok()
        .and_then(|mib: u64| mib.checked_mul(MIB))
        .and_then(|bytes| T::try_from(bytes).ok())
        .with_context(|| {
            format!(
                "`{name}` ({} in the config file) = {mib} is too large: \
                 {mib} MiB in bytes does not fit in {} bits",
                name.trim_start_matches("--").replace('-', "_"),
                8 * std::mem::size_of::<T>()
            )
        })
}

/// Sets one limit from text: a number, optionally with a `KiB`, `MiB` or
/// `GiB` suffix.
fn set_limit(config: &mut SiloConfig, name: &str, value: &str) -> anyhow::Result<()> {
    let value = value.trim();
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    let scale: usize = match unit.trim() {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        other => anyhow::bail!("limit `{name}`: unknown unit `{other}` (use KiB, MiB or GiB)"),
    };
    let number: usize = number
        .parse()
        .with_context(|| format!("limit `{name}`: `{value}` is not a number"))?;
    let value = number
        .checked_mul(scale)
        .with_context(|| format!("limit `{name}`: `{value}` is too large"))?;
    config.limits.set(name, value)?;
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    // Without a SIGTERM handler the silo can still be
                    // stopped gracefully from a terminal, so keep Ctrl-C.
                    tracing::warn!(%error, "cannot handle SIGTERM; stop the silo with Ctrl-C");
                    if let Err(error) = ctrl_c.await {
                        // Neither signal can be handled: run until killed
                        // rather than stop the moment it starts.
                        tracing::warn!(%error, "cannot handle Ctrl-C either");
                        std::future::pending::<()>().await;
                    }
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_settings_in_range_are_scaled() {
        assert_eq!(mib_to_bytes("--max-frame-mib", 64usize).unwrap(), 64 << 20);
        assert_eq!(mib_to_bytes("--memory-budget-mib", 1u64).unwrap(), 1 << 20);
    }

    #[test]
    fn mib_settings_that_overflow_are_named_errors() {
        let error = mib_to_bytes("--memory-limit-mib", usize::MAX).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("--memory-limit-mib"), "{message}");
        assert!(message.contains("memory_limit_mib"), "{message}");
        assert!(message.contains("too large"), "{message}");
        assert!(mib_to_bytes("--memory-budget-mib", u64::MAX >> 19).is_err());
    }
}
