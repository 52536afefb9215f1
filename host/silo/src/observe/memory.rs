//! The silo's memory use, read from `/proc`: resident and proportional
//! set sizes, and a gauge of the resident size sampled for the memory budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the resident memory is sampled for the memory budget.
const RESIDENT_SAMPLE: Duration = Duration::from_millis(10);

/// The silo's resident memory, sampled by a thread of its own (reading it
/// where a new activation is decided would cost every activation a read
/// of `/proc`); it lags by at most [`RESIDENT_SAMPLE`].
pub(crate) struct ResidentGauge(Option<Arc<AtomicU64>>);

impl ResidentGauge {
    /// A gauge that samples only when `sampled`, and reads 0 otherwise.
    pub(crate) fn new(sampled: bool) -> ResidentGauge {
        if !sampled {
            return ResidentGauge(None);
        }
        let bytes = Arc::new(AtomicU64::new(resident_bytes()));
        let weak = Arc::downgrade(&bytes);
        let spawned = std::thread::Builder::new()
            .name("rio-resident".into())
            .spawn(move || {
                while let Some(bytes) = weak.upgrade() {
                    bytes.store(resident_bytes(), Ordering::Relaxed);
                    drop(bytes);
                    std::thread::sleep(RESIDENT_SAMPLE);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start sampling resident memory; the memory budget reads the start's figure");
        }
        ResidentGauge(Some(bytes))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |bytes| bytes.load(Ordering::Relaxed))
    }
}

/// Proportional set size from `/proc/self/smaps_rollup` (Linux 4.14+); 0
/// elsewhere. Activations of one component map the same copy-on-write
/// memory image, so RSS counts each shared page once per activation.
pub(crate) fn proportional_bytes() -> u64 {
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
pub(crate) fn resident_bytes() -> u64 {
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

/// Allocations of at least this size get pages of their own from the OS,
/// given back when freed.
const OWN_PAGES_FROM_BYTES: i32 = 1024 * 1024;

/// Makes glibc's allocator give big buffers (replies, frames, component
/// bytes) back to the OS when they are freed. By default it raises its
/// threshold for that to the size of the biggest buffer freed (up to
/// 32 MiB), after which buffers of megabytes come from the heaps of the
/// worker threads and their memory stays resident once freed: a few big
/// replies would grow the silo for good. Call once, at start.
pub fn return_big_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; a fixed
    // threshold also turns off its dynamic adjustment.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_FROM_BYTES);
    }
}
