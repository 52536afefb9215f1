//! `rio bench --timers`: many objects, each with a periodic timer whose
//! ticks write state, measured by the silos' tick counters and checked
//! against the state the ticks wrote.

use std::time::{Duration, Instant};

use rio_client::{Calls, Client};
use serde::Serialize;
use serde_json::json;

use super::load::{self, BenchClient};
use super::{sum_of_values, total_stats};

#[derive(Serialize)]
pub(crate) struct TimerRun {
    pub(crate) objects: usize,
    pub(crate) period_ms: u64,
    /// What the timers ask for: objects × ticks per second each.
    pub(crate) asked_per_second: f64,
    /// Ticks run per second while every timer was set.
    pub(crate) ticks_per_second: f64,
    /// Periodic ticks skipped because the one before had not yet run.
    pub(crate) skipped_per_second: f64,
    /// The counters grew by exactly the ticks the silos counted.
    pub(crate) verified: bool,
}

/// Sets a timer on each of `objects` objects, lets them tick for
/// `duration`, cancels them, and checks every tick wrote once.
pub(crate) async fn run(
    clients: &[BenchClient],
    admins: &[Client],
    service_type: &'static str,
    objects: usize,
    period_ms: u64,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<TimerRun> {
    let ids: Vec<String> = (0..objects).map(|i| format!("timer-{i}")).collect();
    let before_sum = sum_of_values(&clients[0], service_type, &ids).await?;
    let before = total_stats(admins).await?;
    // Keep-active: a timer alone would otherwise let its object go idle.
    let timer = json!({"name": "bench", "after_ms": period_ms, "every_ms": period_ms,
        "keep_active": true, "by": 1});
    let message = move |message_type: &'static str, body: serde_json::Value| {
        move |client: BenchClient, id: String| {
            let body = body.clone();
            async move {
                client
                    .call::<_, serde_json::Value>(service_type, &id, message_type, &body)
                    .await
                    .map(drop)
            }
        }
    };
    load::run_for_each(clients, &ids, in_flight, message("set-timer", timer)).await?;
    let set = total_stats(admins).await?;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let ticking = total_stats(admins).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cancel = json!({"name": "bench"});
    load::run_for_each(clients, &ids, in_flight, message("cancel-timer", cancel)).await?;
    let after = total_stats(admins).await?;
    let after_sum = sum_of_values(&clients[0], service_type, &ids).await?;
    let ticks = ticking.timer_ticks_total - set.timer_ticks_total;
    let skipped = ticking.timer_ticks_skipped_total - set.timer_ticks_skipped_total;
    let all_ticks = after.timer_ticks_total - before.timer_ticks_total;
    Ok(TimerRun {
        objects,
        period_ms,
        asked_per_second: objects as f64 * 1000.0 / period_ms.max(1) as f64,
        ticks_per_second: ticks as f64 / elapsed,
        skipped_per_second: skipped as f64 / elapsed,
        verified: after_sum - before_sum == all_ticks as i64,
    })
}
