//! The figures `rio bench` prints, as a table or as JSON.

use std::fmt::Write;

use serde::Serialize;

use super::load::LoadResult;

#[derive(Serialize)]
pub(crate) struct Throughput {
    pub(crate) per_second: f64,
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

impl From<&LoadResult> for Throughput {
    fn from(result: &LoadResult) -> Throughput {
        let seconds = result.elapsed.as_secs_f64();
        Throughput {
            per_second: result.completed as f64 / seconds,
            completed: result.completed,
            errors: result.errors,
            seconds,
        }
    }
}

/// State-writing calls each carrying a fresh idempotency key.
#[derive(Serialize)]
pub(crate) struct KeyedWrites {
    pub(crate) throughput: Throughput,
    /// Their calls/s divided by the plain writes' calls/s.
    pub(crate) of_plain_writes: f64,
    /// The sum of all counters grew by exactly the acknowledged increments.
    pub(crate) verified: bool,
}

/// With `--transfers`: random transfers between bank accounts, each with a
/// fresh idempotency key, through a call and through the outbox.
#[derive(Serialize)]
pub(crate) struct Transfers {
    pub(crate) accounts: usize,
    /// `transfer`: the withdrawing turn calls the receiver's `deposit`.
    pub(crate) call: TransferRun,
    /// `transfer-send`: the deposit leaves through the outbox.
    pub(crate) send: TransferRun,
}

#[derive(Serialize)]
pub(crate) struct TransferRun {
    /// Acknowledged transfers; refusals count as errors.
    pub(crate) throughput: Throughput,
    /// Transfers/s divided by the plain writes' calls/s.
    pub(crate) of_plain_writes: f64,
    /// Refused with `insufficient-funds` (none expected: the accounts are
    /// funded far beyond what a run moves).
    pub(crate) refused: u64,
    /// Refused with `deadlock` (two transfers crossing between the same
    /// accounts; only `call` waits on the other account).
    pub(crate) deadlocks: u64,
    /// From the end of the run until a sum of the balances found every
    /// transfer delivered (for `send`, the outbox's backlog).
    pub(crate) drain_seconds: f64,
    /// Acknowledged transfers over the run's seconds plus the drain: for
    /// `send`, the rate the outbox delivered at, not only accepted at.
    pub(crate) delivered_per_second: f64,
    /// The balances add up to what was funded and none is negative.
    pub(crate) verified: bool,
}

#[derive(Serialize)]
pub(crate) struct Figures {
    /// Silos measured (their counters added up; connections spread over them).
    pub(crate) silos: usize,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) objects: usize,
    pub(crate) read_only: Throughput,
    pub(crate) writes: Throughput,
    /// The sum of all counters grew by exactly the acknowledged increments.
    pub(crate) writes_verified: bool,
    /// With `--keyed-writes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) keyed_writes: Option<KeyedWrites>,
    /// With `--transfers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transfers: Option<Transfers>,
    /// With `--timers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timers: Option<super::timers::TimerRun>,
    /// With `--reminders`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reminders: Option<super::reminders::ReminderRun>,
    /// With `--pubsub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pubsub: Option<super::pubsub::PubSubRun>,
    /// With `--object-subscribers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) object_events: Option<super::object_events::ObjectEventsRun>,
    pub(crate) latency_p50_us: f64,
    pub(crate) latency_p99_us: f64,
    /// One request at a time that involves no guest (listing deployments).
    pub(crate) protocol_round_trip_p50_us: f64,
    /// Round trip of the first call to a new object (includes activation).
    pub(crate) first_call_p50_us: f64,
    pub(crate) first_call_p99_us: f64,
    /// Mean time inside the silo to activate (instantiate, load state, hook).
    pub(crate) silo_activation_mean_us: f64,
    pub(crate) activations_per_second: f64,
    pub(crate) idle_activations: u64,
    /// Growth of the silo's RSS per idle activation added.
    pub(crate) resident_bytes_per_idle_activation: u64,
    /// Growth of its proportional set size (shared pages divided among
    /// sharers) per idle activation: what an activation really costs.
    pub(crate) proportional_bytes_per_idle_activation: u64,
    pub(crate) silo_resident_bytes: u64,
}

pub(crate) fn table(figures: &Figures) -> String {
    let mut out = String::new();
    let silos = if figures.silos > 1 {
        format!(", {} silos", figures.silos)
    } else {
        String::new()
    };
    let load = format!(
        "C={} x P={} over N={} objects{silos}",
        figures.connections, figures.in_flight, figures.objects
    );
    let verified = |ok: bool| if ok { "verified" } else { "MISMATCH" };
    let mut rows = vec![
        (
            "read-only calls/s",
            format!(
                "{:.0}  ({load}, {} errors)",
                figures.read_only.per_second, figures.read_only.errors
            ),
        ),
        (
            "state-writing calls/s",
            format!(
                "{:.0}  ({} errors, every ack committed: {})",
                figures.writes.per_second,
                figures.writes.errors,
                verified(figures.writes_verified)
            ),
        ),
        (
            "latency p50 / p99",
            format!(
                "{:.1} us / {:.1} us  (one request at a time)",
                figures.latency_p50_us, figures.latency_p99_us
            ),
        ),
        (
            "no-guest round trip p50",
            format!(
                "{:.1} us  (transport and tasks only)",
                figures.protocol_round_trip_p50_us
            ),
        ),
        (
            "first call p50 / p99",
            format!(
                "{:.1} us / {:.1} us  (new object, includes activation)",
                figures.first_call_p50_us, figures.first_call_p99_us
            ),
        ),
        (
            "activation, in silo",
            format!(
                "{:.1} us mean  (instantiate + load state + hook)",
                figures.silo_activation_mean_us
            ),
        ),
        (
            "activations/s",
            format!("{:.0}", figures.activations_per_second),
        ),
        (
            "memory per idle activation",
            format!(
                "{:.1} KiB  (proportional set size; RSS {:.1} KiB; {} live activations, silo resident {:.0} MiB)",
                figures.proportional_bytes_per_idle_activation as f64 / 1024.0,
                figures.resident_bytes_per_idle_activation as f64 / 1024.0,
                figures.idle_activations,
                figures.silo_resident_bytes as f64 / (1024.0 * 1024.0)
            ),
        ),
    ];
    // Rows that exist only with their flag go right after the plain writes
    // they are compared with.
    let mut extra_rows = Vec::new();
    if let Some(keyed) = &figures.keyed_writes {
        extra_rows.push((
            "keyed writes/s",
            format!(
                "{:.0}  ({:.0}% of plain writes; {} errors, every ack committed: {})",
                keyed.throughput.per_second,
                keyed.of_plain_writes * 100.0,
                keyed.throughput.errors,
                verified(keyed.verified)
            ),
        ));
    }
    if let Some(transfers) = &figures.transfers {
        let describe = |run: &TransferRun, drained: String| {
            format!(
                "{:.0}  ({:.0}% of plain writes; {} accounts, keyed; {} errors: {} deadlock, {} refused;{drained} money conserved: {})",
                run.throughput.per_second,
                run.of_plain_writes * 100.0,
                transfers.accounts,
                run.throughput.errors,
                run.deadlocks,
                run.refused,
                verified(run.verified)
            )
        };
        extra_rows.push((
            "transfers/s, call",
            describe(&transfers.call, String::new()),
        ));
        extra_rows.push((
            "transfers/s, outbox send",
            describe(
                &transfers.send,
                format!(
                    " outbox drained {:.2} s after, {:.0}/s delivered;",
                    transfers.send.drain_seconds, transfers.send.delivered_per_second
                ),
            ),
        ));
    }
    if let Some(timers) = &figures.timers {
        extra_rows.push((
            "timer ticks/s",
            format!(
                "{:.0}  ({} objects every {} ms ask {:.0}/s; {:.0}/s skipped; every tick wrote once: {})",
                timers.ticks_per_second,
                timers.objects,
                timers.period_ms,
                timers.asked_per_second,
                timers.skipped_per_second,
                verified(timers.verified)
            ),
        ));
    }
    if let Some(reminders) = &figures.reminders {
        extra_rows.push((
            "reminder fires/s",
            format!(
                "{:.0}  ({} due at once; tardiness p50 {} ms, p99 {} ms; registered {:.0}/s; each fired once: {})",
                reminders.fires_per_second,
                reminders.objects,
                reminders.tardiness_p50_ms,
                reminders.tardiness_p99_ms,
                reminders.registrations_per_second,
                verified(reminders.verified)
            ),
        ));
    }
    if let Some(pubsub) = &figures.pubsub {
        extra_rows.push((
            "pub/sub deliveries/s",
            format!(
                "{:.0}  ({} events to {} subscribers on {} silos; call-to-receipt p50 {:.0} µs, p99 {:.0} µs; missed {}; all seen or told: {})",
                pubsub.deliveries_per_second,
                pubsub.events,
                pubsub.subscribers,
                pubsub.silos,
                pubsub.latency_p50_us,
                pubsub.latency_p99_us,
                pubsub.missed,
                verified(pubsub.verified)
            ),
        ));
    }
    if let Some(run) = &figures.object_events {
        extra_rows.push((
            "object deliveries/s",
            format!(
                "{:.0}  ({} events to {} subscribed objects; publish-to-applied p50 {} ms, p99 {} ms; all of an event applied p50 {} ms, max {} ms; each applied once, in order: {})",
                run.deliveries_per_second,
                run.events,
                run.subscribers,
                run.delivery_p50_ms,
                run.delivery_p99_ms,
                run.all_applied_p50_ms,
                run.all_applied_max_ms,
                verified(run.verified)
            ),
        ));
    }
    let later_rows = rows.split_off(2);
    rows.extend(extra_rows);
    rows.extend(later_rows);
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<28} {value}");
    }
    out
}
