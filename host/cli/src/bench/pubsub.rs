//! `rio bench --pubsub`: one publisher, many client subscribers spread over
//! the silos measured. A closed loop of publishing turns for the run's
//! time gives the fan-out rate (events received by all subscribers per
//! second); then single events one at a time give the latency from the
//! publishing call's start to each subscriber's receipt. Every subscriber
//! checks that it saw every event, in order, or was told what it missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rio_client::{Calls, Client, ConnectOptions, Delivery, Subscription};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Events each publishing turn publishes in the throughput run.
const EVENTS_PER_TURN: u64 = 20;

/// Publishing turns in flight at once (queued at the one publisher).
const TURNS_IN_FLIGHT: usize = 8;

/// Single events published one at a time for the latency figures.
const LATENCY_PROBES: usize = 200;

#[derive(Serialize)]
pub(crate) struct PubSubRun {
    pub(crate) subscribers: usize,
    pub(crate) silos: usize,
    /// Events published in the throughput run.
    pub(crate) events: u64,
    /// Events received, summed over the subscribers, per second: from the
    /// first publish to the last receipt.
    pub(crate) deliveries_per_second: f64,
    /// From a publishing call's start to a subscriber's receipt of its event.
    pub(crate) latency_p50_us: f64,
    pub(crate) latency_p99_us: f64,
    /// Events subscribers were told they missed.
    pub(crate) missed: u64,
    /// Every subscriber saw every event in order, or was told it missed it.
    pub(crate) verified: bool,
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
    missed: AtomicU64,
    /// Numbers that went backwards or skipped without a `Missed` before.
    broken: AtomicU64,
    last_seq: AtomicU64,
}

pub(crate) async fn run(
    addresses: &[String],
    options: &ConnectOptions,
    service_type: &'static str,
    subscribers: usize,
    duration: Duration,
    run_id: u64,
) -> anyhow::Result<PubSubRun> {
    let publisher_id = format!("publisher-{run_id:x}");
    let topic = format!("bench-{run_id:x}");
    let publisher = Client::connect_with(&addresses[0], options)
        .await?
        .with_timeout(Duration::from_secs(60));
    let _: Value = publisher
        .call(service_type, &publisher_id, "published", &json!({}))
        .await
        .context("the --pubsub run needs the Rust counter guest (its `publish` message)")?;

    let (receipts, mut receipt_times) = mpsc::unbounded_channel::<(u64, Instant)>();
    let probing = Arc::new(AtomicU64::new(u64::MAX));
    let mut seen = Vec::new();
    let mut readers = Vec::new();
    for n in 0..subscribers {
        let client = Client::connect_with(&addresses[n % addresses.len()], options).await?;
        let subscription = client.subscribe(&[&topic]).await?;
        let record = Arc::new(Seen::default());
        seen.push(record.clone());
        readers.push(tokio::spawn(read(
            subscription,
            record,
            receipts.clone(),
            probing.clone(),
            client,
        )));
    }
    drop(receipts);

    // Throughput: turns of EVENTS_PER_TURN events for the run's time.
    let published = Arc::new(AtomicU64::new(0));
    let first_seq = next_seq(&publisher, service_type, &publisher_id).await?;
    let started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..TURNS_IN_FLIGHT {
        let (publisher, id, topic, published) = (
            publisher.clone(),
            publisher_id.clone(),
            topic.clone(),
            published.clone(),
        );
        loops.push(tokio::spawn(async move {
            let message = json!({"n": EVENTS_PER_TURN, "topic": topic});
            while started.elapsed() < duration {
                publisher
                    .call::<_, Value>(service_type, &id, "publish", &message)
                    .await?;
                published.fetch_add(EVENTS_PER_TURN, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in loops {
        task.await??;
    }
    let events = published.load(Ordering::Relaxed);
    let last_seq = first_seq + events - 1;
    // A subscriber that missed the last events learns it with the next
    // event only: the probes below bring that, and the check at the end.
    wait_for(&seen, last_seq, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    let received: u64 = seen
        .iter()
        .map(|seen| seen.received.load(Ordering::Relaxed))
        .sum();

    // Latency: one event at a time; each subscriber reports its receipt.
    let mut latencies = Vec::new();
    for _ in 0..LATENCY_PROBES {
        let seq = next_seq(&publisher, service_type, &publisher_id).await?;
        probing.store(seq, Ordering::SeqCst);
        let sent = Instant::now();
        let _: Value = publisher
            .call(
                service_type,
                &publisher_id,
                "publish",
                &json!({"n": 1, "topic": topic}),
            )
            .await?;
        let mut waiting = subscribers;
        let until = Instant::now() + Duration::from_secs(5);
        while waiting > 0 {
            let Ok(Some((got, at))) =
                tokio::time::timeout_at(until.into(), receipt_times.recv()).await
            else {
                break;
            };
            if got == seq {
                latencies.push(at.saturating_duration_since(sent));
                waiting -= 1;
            }
        }
    }
    probing.store(u64::MAX, Ordering::SeqCst);
    let final_seq = next_seq(&publisher, service_type, &publisher_id).await? - 1;
    let probes_delivered = wait_for(&seen, final_seq, Duration::from_secs(10)).await;
    for reader in readers {
        reader.abort();
    }
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((p / 100.0) * (latencies.len().max(1) - 1) as f64).round() as usize)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1e6)
    };
    let missed = seen
        .iter()
        .map(|seen| seen.missed.load(Ordering::Relaxed))
        .sum();
    let broken: u64 = seen
        .iter()
        .map(|seen| seen.broken.load(Ordering::Relaxed))
        .sum();
    Ok(PubSubRun {
        subscribers,
        silos: addresses.len(),
        events,
        deliveries_per_second: received as f64 / elapsed.as_secs_f64(),
        latency_p50_us: percentile(50.0),
        latency_p99_us: percentile(99.0),
        missed,
        verified: probes_delivered
            && broken == 0
            && latencies.len() == LATENCY_PROBES * subscribers,
    })
}

/// The sequence number the publisher's next event gets: its events so far
/// plus one (the counter guest numbers its events as the silo does).
async fn next_seq(publisher: &Client, service_type: &str, id: &str) -> anyhow::Result<u64> {
    let reply: Value = publisher
        .call(service_type, id, "published", &json!({}))
        .await?;
    Ok(reply["published"].as_u64().unwrap_or(0) + 1)
}

/// Waits until every subscriber has seen (or been told it missed) the
/// event numbered `last_seq`; `false` if one has not within `limit`.
async fn wait_for(seen: &[Arc<Seen>], last_seq: u64, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let done = seen
            .iter()
            .all(|seen| seen.last_seq.load(Ordering::Relaxed) >= last_seq);
        if done {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one subscription, checking its numbers, until aborted.
async fn read(
    mut subscription: Subscription,
    seen: Arc<Seen>,
    receipts: mpsc::UnboundedSender<(u64, Instant)>,
    probing: Arc<AtomicU64>,
    _client: Client,
) {
    let mut last: Option<u64> = None;
    let mut told = 0;
    while let Some(Ok(delivery)) = subscription.next().await {
        match delivery {
            Delivery::Missed(count) => {
                told += count;
                seen.missed.fetch_add(count, Ordering::Relaxed);
            }
            Delivery::Event(event) => {
                if probing.load(Ordering::Relaxed) == event.seq {
                    let _ = receipts.send((event.seq, Instant::now()));
                }
                if let Some(last) = last
                    && event.seq != last + 1 + told
                {
                    seen.broken.fetch_add(1, Ordering::Relaxed);
                }
                told = 0;
                last = Some(event.seq);
                seen.received.fetch_add(1, Ordering::Relaxed);
                seen.last_seq.store(event.seq, Ordering::Relaxed);
            }
        }
    }
}
