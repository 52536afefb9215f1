//! `rio bench --object-subscribers N`: N counter objects subscribe to one
//! topic of this run's own; one publisher then publishes events one at a
//! time, a fixed interval apart, each a turn of its own. Measured from each
//! event's acknowledged publish to the moment its turn took effect in each
//! subscriber (the guest records the silo's clock): per delivery and per
//! event (its last subscriber), and the deliveries per second while one
//! event fans out. Every subscriber is checked to have applied every event exactly
//! once, in order.

use std::time::{Duration, Instant};

use rio_client::Calls;
use serde::Serialize;
use serde_json::{Value, json};

use super::load::{self, BenchClient};

/// Events published, one per turn.
const EVENTS: u64 = 20;

/// The pause between two publishes: long enough for one event's fan-out to
/// end before the next, so each is measured on its own.
const APART: Duration = Duration::from_millis(250);

#[derive(Serialize)]
pub(crate) struct ObjectEventsRun {
    pub(crate) subscribers: usize,
    pub(crate) events: u64,
    /// Deliveries that took effect per second while one event fanned out:
    /// the subscribers over the median time to the last of them.
    pub(crate) deliveries_per_second: f64,
    /// From an event's publish to its turn in one subscriber.
    pub(crate) delivery_p50_ms: u64,
    pub(crate) delivery_p99_ms: u64,
    /// From an event's publish to its turn in the last of its subscribers.
    pub(crate) all_applied_p50_ms: u64,
    pub(crate) all_applied_max_ms: u64,
    /// Every subscriber applied every event once, in order.
    pub(crate) verified: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// What `id` heard: (the events' numbers, when each took effect).
async fn heard(
    client: &BenchClient,
    service_type: &str,
    id: &str,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let reply: Value = client
        .call(service_type, id, "heard-list", &json!({}))
        .await?;
    Ok((
        serde_json::from_value(reply["heard"].clone())?,
        serde_json::from_value(reply["heard_ms"].clone())?,
    ))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or(0)
}

pub(crate) async fn run(
    clients: &[BenchClient],
    service_type: &'static str,
    subscribers: usize,
    in_flight: usize,
    run_id: u64,
) -> anyhow::Result<ObjectEventsRun> {
    let topic = format!("bench-objects-{run_id:x}");
    let ids: Vec<String> = (0..subscribers)
        .map(|i| format!("objsub-{run_id:x}-{i}"))
        .collect();
    let subscribe = json!({"topic": topic});
    load::run_for_each(clients, &ids, in_flight, move |client, id| {
        let subscribe = subscribe.clone();
        async move {
            client
                .call::<_, Value>(service_type, &id, "subscribe", &subscribe)
                .await
                .map(drop)
        }
    })
    .await?;

    let publisher = format!("objpub-{run_id:x}");
    let mut published_ms = Vec::new();
    for _ in 0..EVENTS {
        let _: Value = clients[0]
            .call(
                service_type,
                &publisher,
                "publish",
                &json!({"topic": topic, "n": 1}),
            )
            .await?;
        published_ms.push(now_ms());
        tokio::time::sleep(APART).await;
    }

    // Each subscriber until it heard every event (at most a minute).
    let expected: Vec<u64> = (1..=EVENTS).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivery_ms = Vec::new();
    let mut last_by_event = vec![0u64; EVENTS as usize];
    let mut verified = true;
    for id in &ids {
        let (numbers, times) = loop {
            let (numbers, times) = heard(&clients[0], service_type, id).await?;
            if numbers.len() >= expected.len() || Instant::now() > deadline {
                break (numbers, times);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        verified &= numbers == expected;
        for (number, applied) in numbers.iter().zip(&times) {
            let Some(published) = published_ms.get((*number as usize).wrapping_sub(1)) else {
                continue;
            };
            // The publish was acknowledged after its commit: a delivery
            // may take effect before the client hears of it.
            let took = applied.saturating_sub(*published);
            delivery_ms.push(took);
            let slot = &mut last_by_event[*number as usize - 1];
            *slot = (*slot).max(took);
        }
    }
    delivery_ms.sort_unstable();
    let mut all_applied = last_by_event.clone();
    all_applied.sort_unstable();
    let fan_out_ms = percentile(&all_applied, 0.5).max(1);
    Ok(ObjectEventsRun {
        subscribers,
        events: EVENTS,
        deliveries_per_second: subscribers as f64 * 1000.0 / fan_out_ms as f64,
        delivery_p50_ms: percentile(&delivery_ms, 0.5),
        delivery_p99_ms: percentile(&delivery_ms, 0.99),
        all_applied_p50_ms: percentile(&all_applied, 0.5),
        all_applied_max_ms: all_applied.last().copied().unwrap_or(0),
        verified,
    })
}
