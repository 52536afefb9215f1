//! The reminder scan: every [`SCAN_INTERVAL`] a silo reads, from the
//! store's index by due time, the reminders of its shards that are due,
//! and fires each as a keyed call to its object (activated here or on its
//! owner like any message). The call's key names the fire (see
//! `reminders::fire_key`), so a fire delivered twice (a scan after a
//! failover, two silos that briefly both hold a shard) runs once, and the
//! commit of its turn moves the reminder on.
//!
//! A periodic reminder found a whole period late with the skip policy is
//! moved on without firing. A fire whose handler fails (its error, a
//! trap, an undeployed type) counts as fired: the scan moves the reminder
//! on itself, so a failing handler is not called again and again for the
//! same time. A fire that could not run (`unavailable`, `timeout`, …) is
//! left due and tried again a moment later.
//!
//! Which shards a silo scans is a function given by the silo (its place
//! among the active silos), so this module knows nothing of the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;

use super::reminders::fire_key;
use crate::base::ObjectKey;
use crate::base::clock::Clock;
use crate::base::log_summary::LogSummary;
use crate::message::{Dispatch, Ending, Envelope, ReplyTo, empty_chain, ending};
use crate::observe::Counters;
use crate::storage::{DueReminder, ShardSlice, StateStore};

/// How often a silo looks for due reminders: a fire is at most about this
/// late in steady state.
pub(crate) const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// Reminders one page of a scan reads.
const PAGE: usize = 1000;

/// Fires in flight at most; past it the scan waits for some to end.
pub(crate) const MAX_IN_FLIGHT: usize = 10_000;

/// How long a fire that could not run waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);

static FAILED_FIRES: LogSummary = LogSummary::new();
static UNFINISHED_FIRES: LogSummary = LogSummary::new();
static FAILED_SCANS: LogSummary = LogSummary::new();

/// Which shards this silo fires, asked at each scan.
pub(crate) type Slice = Arc<dyn Fn() -> Option<ShardSlice> + Send + Sync>;

/// What the scan needs of the silo.
pub(crate) struct Firing {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) tasks: TaskTracker,
    /// `None` while this silo holds no shard (not joined yet).
    pub(crate) slice: Slice,
    /// How long a fire's turn may take, which its call waits for.
    pub(crate) turn_deadline: Duration,
    /// The fires in flight: (object, name) → the due time fired.
    in_flight: Arc<Mutex<HashMap<(ObjectKey, String), i64>>>,
    /// Fires that ended (and moved their reminder on) during the scan
    /// running now: a page it read before may still list them, and firing
    /// them again would cost a delivery for nothing (their key would answer
    /// the stored reply). Emptied when a scan starts: its reads come after.
    settled: Mutex<HashSet<(ObjectKey, String, i64)>>,
}

impl Firing {
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        dispatch: Arc<dyn Dispatch>,
        clock: Arc<dyn Clock>,
        counters: Arc<Counters>,
        tasks: TaskTracker,
        slice: Slice,
        turn_deadline: Duration,
    ) -> Arc<Firing> {
        Arc::new(Firing {
            store,
            dispatch,
            clock,
            counters,
            tasks,
            slice,
            turn_deadline,
            in_flight: Arc::default(),
            settled: Mutex::default(),
        })
    }

    /// Scans every [`SCAN_INTERVAL`] until `stopping` turns true.
    pub(crate) async fn run(self: Arc<Firing>, mut stopping: watch::Receiver<bool>) {
        loop {
            let next = self.clock.now() + SCAN_INTERVAL;
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                () = self.clock.sleep_until(next) => {}
            }
            self.scan().await;
        }
    }

    /// Fires what is due now in this silo's shards, page by page.
    pub(crate) async fn scan(self: &Arc<Firing>) {
        let Some(slice) = (self.slice)() else { return };
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let now_ms = self.clock.now_ms();
        let mut offset = 0;
        loop {
            let page = self
                .store
                .due_reminders(slice, i64::MIN, now_ms, offset, PAGE)
                .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    if let Some(count) = FAILED_SCANS.note() {
                        tracing::warn!(%error, count, "cannot read the due reminders; the next scan tries again");
                    }
                    return;
                }
            };
            let full = page.len() == PAGE;
            for due in page {
                self.fire(due, now_ms).await;
            }
            // Pages by offset: the fires in flight stay listed until their
            // turns commit, and a page of them must not hide the rest.
            // Those that end meanwhile shift the rest up: a few are left
            // for the next scan, none fired twice (in flight, or settled).
            if !full || self.in_flight_count() >= MAX_IN_FLIGHT {
                return;
            }
            offset += PAGE;
        }
    }

    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Fires `due`, found at `now_ms`, unless it is in flight or skips.
    async fn fire(self: &Arc<Firing>, due: DueReminder, now_ms: i64) {
        let slot = (due.object.clone(), due.name.clone());
        let due_ms = due.reminder.due_ms;
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.get(&slot) == Some(&due_ms) || in_flight.len() >= MAX_IN_FLIGHT {
                return;
            }
            let settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            if settled.contains(&(slot.0.clone(), slot.1.clone(), due_ms)) {
                return;
            }
            if !due.reminder.skips_at(now_ms) {
                in_flight.insert(slot.clone(), due_ms);
            }
        }
        if due.reminder.skips_at(now_ms) {
            let next = due.reminder.next_after(now_ms);
            self.counters
                .reminder_fires_skipped_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(object = %due.object, reminder = %due.name, due_ms, ?next, "a periodic reminder missed its time by a period or more; skipped to its next");
            self.move_on(&due, next).await;
            return;
        }
        let (reply, replied) = oneshot::channel();
        let wait = self.turn_deadline * 2;
        let mut envelope = Envelope::new(
            due.reminder.message_type.clone(),
            due.reminder.payload.clone(),
            empty_chain(),
            ReplyTo::Caller(reply),
            tokio::time::Instant::now() + wait,
        );
        let key = fire_key(&due.name, due_ms, due.reminder.every_ms);
        envelope.idempotency_key = Some(key.into());
        self.counters.reminder_tardiness_ms_total.fetch_add(
            u64::try_from(now_ms - due_ms).unwrap_or(0),
            Ordering::Relaxed,
        );
        self.dispatch.dispatch(due.object.clone(), envelope);
        let firing = self.clone();
        self.tasks.spawn(async move {
            let ending = ending(replied, wait + Duration::from_secs(1)).await;
            firing.settle(due, slot, ending).await;
        });
    }

    /// What a fire's answer means for its reminder.
    async fn settle(&self, due: DueReminder, slot: (ObjectKey, String), ending: Ending) {
        let counters = &self.counters;
        let moved_on = match ending {
            Ending::Done => {
                counters
                    .reminder_fires_total
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Ending::Failed(error) => {
                counters
                    .reminder_fires_failed_total
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(count) = FAILED_FIRES.note() {
                    tracing::warn!(object = %due.object, reminder = %due.name, %error, count, "a reminder's fire failed; it counts as fired and the reminder goes on");
                }
                let next = due.reminder.next_after(self.clock.now_ms());
                self.move_on(&due, next).await
            }
            Ending::NotRun(error) => {
                if let Some(count) = UNFINISHED_FIRES.note() {
                    tracing::info!(object = %due.object, reminder = %due.name, %error, count, "a reminder's fire did not run; it is tried again");
                }
                self.clock.sleep_until(self.clock.now() + RETRY_AFTER).await;
                false
            }
        };
        let due_ms = due.reminder.due_ms;
        if moved_on {
            let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            settled.insert((slot.0.clone(), slot.1.clone(), due_ms));
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight.get(&slot) == Some(&due_ms) {
            in_flight.remove(&slot);
        }
    }

    /// Moves `due` on to `next` (or ends it) outside a turn; false if the
    /// store failed (the next scan finds it again).
    async fn move_on(&self, due: &DueReminder, next: Option<i64>) -> bool {
        let result = self
            .store
            .advance_reminder(&due.object, &due.name, due.reminder.due_ms, next)
            .await;
        if let Err(error) = &result {
            tracing::warn!(object = %due.object, reminder = %due.name, %error, "cannot move a reminder on; the next scan finds it again");
        }
        result.is_ok()
    }
}
