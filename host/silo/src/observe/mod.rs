//! Rank 2: what the silo counts about itself, in one place: every counter
//! a `Stats` request answers (and, later, metrics) lives in [`Counters`],
//! which each part is handed and only adds to; memory is read in `memory`.

pub(crate) mod memory;
pub(crate) mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rio_protocol::SiloStats;

pub(crate) use self::memory::ResidentGauge;

/// Every counter of the silo. Parts hold an `Arc` of it; none reads
/// another's counters, only [`Counters::stats`] reads them all.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) activations_total: AtomicU64,
    pub(crate) activation_nanos_total: AtomicU64,
    pub(crate) deactivations_total: AtomicU64,
    /// Messages refused before any turn (a full mailbox, an unknown type,
    /// a full silo), and of those the new activations a full silo refused.
    pub(crate) messages_refused_total: AtomicU64,
    pub(crate) activations_refused_total: AtomicU64,
    pub(crate) forwarded_total: AtomicU64,
    /// Instances alive now (an activation whose instance was dropped after
    /// a trap holds none until its next message).
    pub(crate) live_instances: AtomicU64,
    /// Components compiled by this silo, and loaded from its cache.
    pub(crate) components_compiled: AtomicU64,
    pub(crate) components_loaded: AtomicU64,
    /// Timer ticks run, and periodic ticks skipped because the one before
    /// was still waiting or running when they came due.
    pub(crate) timer_ticks_total: AtomicU64,
    pub(crate) timer_ticks_skipped_total: AtomicU64,
    /// Reminder fires this silo dispatched and saw take effect; fires whose
    /// handler failed (counted as fired, the reminder moved on); missed
    /// times skipped (periodic reminders with the skip policy); and the sum
    /// of the fires' lateness (dispatch time minus due time), in ms.
    pub(crate) reminder_fires_total: AtomicU64,
    pub(crate) reminder_fires_failed_total: AtomicU64,
    pub(crate) reminder_fires_skipped_total: AtomicU64,
    pub(crate) reminder_tardiness_ms_total: AtomicU64,
    /// Turns' commits, failed commits, and keyed calls answered with their
    /// stored reply.
    pub(crate) commits_total: AtomicU64,
    pub(crate) commit_failures_total: AtomicU64,
    pub(crate) idempotency_hits_total: AtomicU64,
    /// Calls refused to break a cycle of waits (the wait-for graph adds to
    /// it).
    pub(crate) deadlocks_total: Arc<AtomicU64>,
    /// Shared with the outboxes' deliverers.
    pub(crate) outbox: Arc<OutboxCounters>,
    /// Shared with the wire server's connections, each of which holds it.
    pub(crate) connections: Arc<ConnectionCounters>,
    /// Shared with pub/sub (see `events`).
    pub(crate) events: Arc<EventCounters>,
    /// Calls and turn durations by type, for Prometheus (see `metrics`).
    pub(crate) turns: metrics::TurnMetrics,
}

/// Counters of one-way deliveries from the outboxes.
#[derive(Default)]
pub(crate) struct OutboxCounters {
    /// Messages delivered (the receiver's turn took effect, or had).
    pub(crate) delivered: AtomicU64,
    /// Delivery attempts that will be tried again (the receiver was
    /// unreachable, overloaded, timed out...).
    pub(crate) retried: AtomicU64,
    /// Messages given up and moved to the dead letters.
    pub(crate) dead_letters: AtomicU64,
    /// Messages committed and not yet delivered nor given up, in the
    /// deliverers running here.
    pub(crate) pending: AtomicU64,
}

/// Counters of pub/sub.
#[derive(Default)]
pub(crate) struct EventCounters {
    /// Events of turns that committed here.
    pub(crate) published: AtomicU64,
    /// Events queued for this silo's client subscriptions.
    pub(crate) delivered: AtomicU64,
    /// Events subscriptions lost for being too slow.
    pub(crate) missed: AtomicU64,
    /// Events dropped on the way to another silo (its queue was full, or
    /// the silo did not take them).
    pub(crate) not_broadcast: AtomicU64,
    /// Client subscriptions open now.
    pub(crate) subscriptions: AtomicU64,
    /// Events delivered here to subscribed objects that took effect.
    pub(crate) object_deliveries: AtomicU64,
    /// Events delivered here whose subscriber's handler failed (counted as
    /// delivered).
    pub(crate) object_deliveries_failed: AtomicU64,
    /// Deliveries to objects tried again (the subscriber was unreachable).
    pub(crate) object_delivery_retries: AtomicU64,
}

/// Counters of the silo's connections.
#[derive(Default)]
pub(crate) struct ConnectionCounters {
    /// Connections accepted and not yet closed.
    pub(crate) open: AtomicU64,
    /// HTTP gateway connections accepted and not yet closed.
    pub(crate) http_open: AtomicU64,
    /// Connections refused because the silo had its maximum open.
    pub(crate) refused: AtomicU64,
    /// Connections closed for misbehaving: no hello in time, a bad frame,
    /// replies left unread.
    pub(crate) closed_misbehaving: AtomicU64,
    /// Connections closed after their idle timeout.
    pub(crate) closed_idle: AtomicU64,
    /// Connections refused at their hello for a wrong or missing token.
    pub(crate) unauthorized: AtomicU64,
    /// Connections closed before their hello to make room for newer ones.
    pub(crate) evicted_before_hello: AtomicU64,
    /// Replies replaced by an error because too many were left unread.
    pub(crate) replies_dropped_unread: AtomicU64,
    /// Refused connections still being told why.
    pub(crate) refusing: AtomicUsize,
}

impl Counters {
    /// What a `Stats` request answers.
    pub(crate) fn stats(&self) -> SiloStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let connections = &self.connections;
        SiloStats {
            live_activations: read(&self.live_instances),
            activations_total: read(&self.activations_total),
            activation_nanos_total: read(&self.activation_nanos_total),
            deactivations_total: read(&self.deactivations_total),
            messages_refused_total: read(&self.messages_refused_total),
            activations_refused_total: read(&self.activations_refused_total),
            resident_bytes: memory::resident_bytes(),
            proportional_bytes: memory::proportional_bytes(),
            components_compiled: read(&self.components_compiled),
            components_loaded: read(&self.components_loaded),
            forwarded_total: read(&self.forwarded_total),
            connections_open: read(&connections.open),
            http_connections_open: read(&connections.http_open),
            connections_refused: read(&connections.refused),
            connections_closed_misbehaving: read(&connections.closed_misbehaving),
            connections_closed_idle: read(&connections.closed_idle),
            connections_unauthorized: read(&connections.unauthorized),
            connections_evicted_before_hello: read(&connections.evicted_before_hello),
            replies_dropped_unread: read(&connections.replies_dropped_unread),
            timer_ticks_total: read(&self.timer_ticks_total),
            timer_ticks_skipped_total: read(&self.timer_ticks_skipped_total),
            reminder_fires_total: read(&self.reminder_fires_total),
            reminder_fires_failed_total: read(&self.reminder_fires_failed_total),
            reminder_fires_skipped_total: read(&self.reminder_fires_skipped_total),
            reminder_tardiness_ms_total: read(&self.reminder_tardiness_ms_total),
            events_published_total: read(&self.events.published),
            event_deliveries_total: read(&self.events.delivered),
            events_missed_total: read(&self.events.missed),
            events_not_broadcast_total: read(&self.events.not_broadcast),
            subscriptions_open: read(&self.events.subscriptions),
            object_event_deliveries_total: read(&self.events.object_deliveries),
            object_event_deliveries_failed_total: read(&self.events.object_deliveries_failed),
            object_event_delivery_retries_total: read(&self.events.object_delivery_retries),
            commits_total: read(&self.commits_total),
            commit_failures_total: read(&self.commit_failures_total),
            idempotency_hits_total: read(&self.idempotency_hits_total),
            deadlocks_total: read(&self.deadlocks_total),
            outbox_delivered_total: read(&self.outbox.delivered),
            outbox_retries_total: read(&self.outbox.retried),
            dead_letters_total: read(&self.outbox.dead_letters),
            outbox_pending: read(&self.outbox.pending),
        }
    }
}
