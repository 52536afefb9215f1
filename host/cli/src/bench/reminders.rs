//! `rio bench --reminders`: many objects each register a one-shot durable
//! reminder, all due at one moment, then the burst of fires is measured:
//! registrations per second, fires per second through the burst, and each
//! fire's tardiness (when its turn ran minus its due time, as the guest
//! recorded it), with every object checked to have fired exactly once.

use std::time::{Duration, Instant};

use rio_client::Calls;
use serde::Serialize;
use serde_json::{Value, json};

use super::load::{self, BenchClient};

#[derive(Serialize)]
pub(crate) struct ReminderRun {
    pub(crate) objects: usize,
    pub(crate) registrations_per_second: f64,
    /// Fires from the due time to the last fire's turn.
    pub(crate) fires_per_second: f64,
    pub(crate) tardiness_p50_ms: u64,
    pub(crate) tardiness_p99_ms: u64,
    /// Every object fired once, for its due time.
    pub(crate) verified: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The fires `id` recorded: (reminder, due time, ran at).
async fn fires(
    client: &BenchClient,
    service_type: &str,
    id: &str,
) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let reply: Value = client.call(service_type, id, "fires", &json!({})).await?;
    Ok(serde_json::from_value(reply["fires"].clone())?)
}

pub(crate) async fn run(
    clients: &[BenchClient],
    service_type: &'static str,
    objects: usize,
    in_flight: usize,
) -> anyhow::Result<ReminderRun> {
    // A name of this run's own, so earlier runs' fires are told apart.
    let name = format!("bench-{}", now_ms());
    let ids: Vec<String> = (0..objects).map(|i| format!("reminder-{i}")).collect();
    // Registration at a few thousand a second at least, then a second more.
    let due_ms = now_ms() + 2_000 + objects as u64 / 2;
    let remind = json!({"name": name, "at_ms": due_ms});
    let started = Instant::now();
    load::run_for_each(clients, &ids, in_flight, move |client, id| {
        let remind = remind.clone();
        async move {
            client
                .call::<_, Value>(service_type, &id, "remind", &remind)
                .await
                .map(drop)
        }
    })
    .await?;
    let registrations_per_second = objects as f64 / started.elapsed().as_secs_f64();
    if now_ms() > due_ms {
        eprintln!("reminders: registration ended after the due time; tardiness includes the wait");
    }
    let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
    tokio::time::sleep(wait + Duration::from_millis(500)).await;
    // Each object's fire, polled until all have fired (at most a minute).
    let mut tardiness: Vec<Option<u64>> = vec![None; objects];
    let mut verified = true;
    let mut last_ran = due_ms;
    let deadline = Instant::now() + Duration::from_secs(60);
    while tardiness.iter().any(Option::is_none) && Instant::now() < deadline {
        for (index, id) in ids.iter().enumerate() {
            if tardiness[index].is_some() {
                continue;
            }
            let ours: Vec<(String, u64, u64)> = fires(&clients[0], service_type, id)
                .await?
                .into_iter()
                .filter(|fire| fire.0 == name)
                .collect();
            if let Some((_, due, ran)) = ours.first() {
                verified &= ours.len() == 1 && *due == due_ms;
                tardiness[index] = Some(ran.saturating_sub(*due));
                last_ran = last_ran.max(*ran);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    verified &= tardiness.iter().all(Option::is_some);
    let mut late: Vec<u64> = tardiness.into_iter().flatten().collect();
    late.sort_unstable();
    let percentile = |p: f64| {
        late.get(((late.len() as f64 * p) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let burst_ms = last_ran.saturating_sub(due_ms).max(1);
    Ok(ReminderRun {
        objects,
        registrations_per_second,
        fires_per_second: late.len() as f64 * 1000.0 / burst_ms as f64,
        tardiness_p50_ms: percentile(0.5),
        tardiness_p99_ms: percentile(0.99),
        verified,
    })
}
