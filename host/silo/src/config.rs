//! Every tunable of a silo, with the defaults a single-machine user wants.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Messages that may wait for one object before callers get `overloaded`.
    pub mailbox_capacity: usize,
    /// Use wasmtime's pooling allocator (pre-reserved instance slots)
    /// instead of allocating each instance's memory on demand.
    pub pooling_allocator: bool,
    /// Upper bound on live activations when the pooling allocator is used.
    pub pooling_max_instances: u32,
    /// The most commits written in one SQLite transaction.
    pub group_commit_max: usize,
}

impl SiloConfig {
    /// Defaults, storing everything under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> SiloConfig {
        SiloConfig {
            data_dir: data_dir.into(),
            turn_deadline: Duration::from_secs(5),
            memory_limit_bytes: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_frame_bytes: rio_protocol::DEFAULT_MAX_FRAME_BYTES,
            mailbox_capacity: 4096,
            pooling_allocator: false,
            pooling_max_instances: 1000,
            group_commit_max: 1024,
        }
    }
}
