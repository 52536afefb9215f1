//! Timers' ticks: each is a turn of the object's own, run between its
//! messages by the activation task (so ticks never overlap a turn or each
//! other), without a caller: a tick that fails is logged.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Activation, Hook};
use crate::base::log_summary::LogSummary;
use crate::message::empty_chain;
use crate::time::timers::Tick;

/// A timer whose tick fails ticks on: a fast one would fill the log, so
/// failed ticks are logged as a summary, one line per period for the silo.
static FAILED_TICKS: LogSummary = LogSummary::new();

impl Activation {
    /// When the live instance's next tick is due, if it has timers.
    pub(super) fn next_tick_due(&self) -> Option<Instant> {
        self.live.as_ref()?.store.data().timers.next_due()
    }

    /// The tick due at `now`, if one is.
    pub(super) fn take_due_tick(&mut self, now: Instant) -> Option<Tick> {
        self.live.as_mut()?.store.data_mut().timers.take_due(now)
    }

    /// Runs `tick` as a turn, then gives its timer its next due time.
    pub(super) async fn tick(&mut self, tick: Tick) {
        if self.deployed.is_superseded() {
            // The redeploy ends this tick's timer with the instance: the new
            // code's `on-activate` sets its own.
            self.follow_redeploy().await;
            return;
        }
        // An interrupted keyed turn runs first, as before any message.
        if let Err(error) = self.ready_for_turn().await {
            // The interrupted turn's own failure is logged where it failed.
            tracing::debug!(object = %self.key, timer = %tick.name, %error, "timer tick not run");
            return;
        }
        let hook = Hook::Handle {
            message_type: tick.message_type.clone(),
            payload: tick.payload.clone(),
            idempotency_key: None,
        };
        let deadline = Instant::now() + self.ctx.config.turn_deadline;
        let outcome = self.turn(hook, &empty_chain(), deadline).await;
        let counters = &self.ctx.counters;
        counters.timer_ticks_total.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = outcome
            && let Some(failed) = FAILED_TICKS.note()
        {
            tracing::warn!(object = %self.key, timer = %tick.name, %error, failed, "timer ticks failed (this one and the count since the last such line)");
        }
        let now = self.ctx.clock.now();
        if let Some(live) = &mut self.live {
            let skipped = live.store.data_mut().timers.ticked(&tick, now);
            counters
                .timer_ticks_skipped_total
                .fetch_add(skipped, Ordering::Relaxed);
        }
    }
}
