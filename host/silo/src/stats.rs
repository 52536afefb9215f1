//! The silo's counters and memory use, as a `Stats` request answers them.

use std::sync::atomic::Ordering;

use rio_protocol::SiloStats;

use crate::connection::ConnectionCounters;
use crate::router::Router;

pub(crate) fn stats(router: &Router, connections: &ConnectionCounters) -> SiloStats {
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
        forwarded_total: router.counters.forwarded_total.load(Ordering::Relaxed),
        connections_open: connections.open.load(Ordering::Relaxed),
        connections_refused: connections.refused.load(Ordering::Relaxed),
        connections_closed_misbehaving: connections.closed_misbehaving.load(Ordering::Relaxed),
        connections_closed_idle: connections.closed_idle.load(Ordering::Relaxed),
        connections_unauthorized: connections.unauthorized.load(Ordering::Relaxed),
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
