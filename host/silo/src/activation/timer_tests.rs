//! Timers and self-deactivation on an activation alone (the harness of
//! `tests`), with time moved by hand: ticks come when the injected clock
//! says so, and a test never sleeps waiting for one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::tests::Harness;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Harness {
    async fn ok(&self, id: &str, message: &str, payload: Value) -> Value {
        self.call(id, message, payload, None)
            .await
            .unwrap_or_else(|e| panic!("{message} on {id}: {e}"))
    }

    fn counter(
        &self,
        read: impl Fn(&crate::observe::Counters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        read(&self.ctx().counters).load(Ordering::Relaxed)
    }

    /// Waits (in real time, bounded) until `timer_ticks_total` is `n`: for
    /// tests that must not send a message, which would count as activity.
    async fn ticks_run(&self, n: u64) {
        for _ in 0..2000 {
            if self.counter(|c| &c.timer_ticks_total) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{} ticks ran, not {n}",
            self.counter(|c| &c.timer_ticks_total)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_ticks_as_the_clock_moves_and_stops_when_cancelled() {
    let harness = Harness::new().await;
    let timer = json!({"name": "t", "after_ms": 1000, "every_ms": 1000, "by": 1});
    harness.ok("p", "set-timer", timer).await;

    harness.clock.advance(Duration::from_millis(999));
    assert_eq!(harness.value("p").await, 0, "not due yet");
    harness.clock.advance(Duration::from_millis(1));
    assert_eq!(harness.value("p").await, 1, "due at 1 s");
    harness.clock.advance(secs(1));
    assert_eq!(harness.value("p").await, 2);

    // Three periods at once: one tick, the two it stood for skipped.
    harness.clock.advance(secs(3));
    assert_eq!(harness.value("p").await, 3, "missed ticks never burst");
    assert_eq!(harness.counter(|c| &c.timer_ticks_skipped_total), 2);

    harness.ok("p", "cancel-timer", json!({"name": "t"})).await;
    harness.clock.advance(secs(10));
    assert_eq!(harness.value("p").await, 3, "cancelled");
    assert_eq!(harness.counter(|c| &c.timer_ticks_total), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_name_again_replaces_its_timer_and_a_failed_turn_sets_none() {
    let harness = Harness::new().await;
    let first = json!({"name": "t", "after_ms": 1000, "by": 1});
    let second = json!({"name": "t", "after_ms": 5000, "by": 10});
    harness.ok("r", "set-timer", first).await;
    harness.ok("r", "set-timer", second).await;
    let failing = json!({"name": "f", "after_ms": 500, "by": 100, "fail": true});
    let refused = harness.call("r", "set-timer", failing, None).await;
    assert!(refused.is_err(), "the turn fails: {refused:?}");

    harness.clock.advance(secs(1));
    assert_eq!(
        harness.value("r").await,
        0,
        "the first was replaced, `f` never set"
    );
    harness.clock.advance(secs(4));
    assert_eq!(harness.value("r").await, 10, "the replacement ticked");
    harness.clock.advance(secs(60) - secs(6));
    assert_eq!(harness.value("r").await, 10, "a one-shot timer ticks once");
    let ticks = harness.ok("r", "ticks", json!({})).await;
    assert_eq!(ticks, json!({"ticks": {"t": 1}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_runs_long_is_never_overlapped_nor_followed_by_a_burst() {
    let harness = Harness::new().await;
    let timer = json!({"name": "slow", "after_ms": 100, "every_ms": 100, "by": 1, "busy_ms": 300});
    harness.ok("s", "set-timer", timer).await;
    harness.clock.advance(Duration::from_millis(100));
    harness.ticks_run(0).await;
    // Ten more periods pass on the clock while the tick may still be
    // running (it holds its turn 300 ms of real time).
    for _ in 0..10 {
        harness.clock.advance(Duration::from_millis(100));
    }
    assert_eq!(harness.value("s").await, 1, "one tick ran, not eleven");
    assert_eq!(harness.counter(|c| &c.timer_ticks_skipped_total), 10);
    harness.clock.advance(Duration::from_millis(100));
    harness.ticks_run(2).await;
    assert_eq!(harness.counter(|c| &c.timer_ticks_total), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_keep_an_idle_object_active_only_if_the_timer_says_so() {
    let harness = Harness::new().await;
    let counters = |h: &Harness| {
        (
            h.counter(|c| &c.deactivations_total),
            h.counter(|c| &c.live_instances),
        )
    };
    let keeping =
        json!({"name": "k", "after_ms": 10_000, "every_ms": 10_000, "keep_active": true, "by": 1});
    harness.ok("keep", "set-timer", keeping).await;
    for n in 1..=8 {
        harness.clock.advance(secs(10));
        harness.ticks_run(n).await;
    }
    assert_eq!(
        counters(&harness),
        (0, 1),
        "80 s of ticks kept it, idle 60 s"
    );

    // Every 7 s, so that no tick comes due at the very instant the idle
    // limit is reached (which of the two ran first would be a race).
    let plain = json!({"name": "p", "after_ms": 7_000, "every_ms": 7_000, "by": 1});
    harness.ok("plain", "set-timer", plain).await;
    harness
        .ok("keep", "cancel-timer", json!({"name": "k"}))
        .await;
    // Both idle now; the ticks of `plain` do not count as activity.
    for n in 1..=8 {
        harness.clock.advance(secs(7));
        harness.ticks_run(8 + n).await;
    }
    assert_eq!(counters(&harness), (0, 2), "56 s idle: both still here");
    // At 60 s both have been idle long enough, though `plain` ticked 4 s ago.
    harness.clock.advance(secs(4));
    harness.activations_ended().await;
    assert_eq!(counters(&harness), (2, 0), "both went once idle for 60 s");
    assert_eq!(harness.value("keep").await, 8);
    assert_eq!(harness.value("plain").await, 8, "it ticked until it went");
    let ticks_before = harness.counter(|c| &c.timer_ticks_total);
    harness.clock.advance(secs(30));
    assert_eq!(harness.value("plain").await, 8, "its timer ended with it");
    assert_eq!(harness.counter(|c| &c.timer_ticks_total), ticks_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivate_request_takes_effect_after_its_turn_commits_and_ends_the_timers() {
    let harness = Harness::new().await;
    harness.ok("d", "increment", json!({"by": 1})).await;
    let timer = json!({"name": "t", "after_ms": 1000, "every_ms": 1000, "by": 100});
    harness.ok("d", "set-timer", timer).await;

    // A failed turn's request is dropped with its writes.
    let failed = harness
        .call("d", "deactivate", json!({"fail": true}), None)
        .await;
    assert!(failed.is_err());
    assert_eq!(harness.counter(|c| &c.deactivations_total), 0);

    harness.ok("d", "deactivate", json!({})).await;
    harness.activations_ended().await;
    assert_eq!(harness.counter(|c| &c.deactivations_total), 1);
    assert_eq!(harness.counter(|c| &c.live_instances), 0);

    harness.clock.advance(secs(5));
    assert_eq!(
        harness.value("d").await,
        1,
        "state kept, and no tick after it went"
    );
    assert_eq!(
        harness.counter(|c| &c.activations_total),
        2,
        "activated afresh"
    );
    assert_eq!(harness.counter(|c| &c.timer_ticks_total), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_behind_a_deactivating_turn_reach_the_next_activation() {
    let harness = Harness::new().await;
    let harness = std::sync::Arc::new(harness);
    let mut calls = tokio::task::JoinSet::new();
    let first = harness.clone();
    calls.spawn(async move { first.call("q", "deactivate", json!({}), None).await });
    for _ in 0..20 {
        let harness = harness.clone();
        calls.spawn(async move { harness.call("q", "increment", json!({"by": 1}), None).await });
    }
    while let Some(reply) = calls.join_next().await {
        reply
            .unwrap()
            .expect("every message, also those behind the deactivation, is answered");
    }
    assert_eq!(harness.value("q").await, 20, "each applied once");
    let deactivations = harness.counter(|c| &c.deactivations_total);
    assert_eq!(deactivations, 1, "deactivated once, on request");
}
