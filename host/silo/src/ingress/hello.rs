//! What a connection may hold before it has said a valid hello: a small
//! frame, a short timeout, and one of a bounded number of places, the oldest
//! given up first when a new connection needs one.
//!
//! Invariants:
//! - At most `max` connections wait for their hello at once, fewer than the
//!   connection cap, so connections without a token can never crowd out
//!   ones that said hello; each holds at most one hello frame's buffer.
//! - A place is taken back only from a connection that has had it for
//!   `MIN_HELLO_TIME`; while every place is younger, the silo accepts no
//!   more connections (they wait in the kernel's listen queue, which holds
//!   no memory of the silo's). So a flood of connections that say nothing
//!   slows new connections down, in arrival order, but cannot push out an
//!   honest one before its hello had time to arrive.
//! - A wrong token is answered only after a delay that grows with the
//!   recent failures from the same address, while the connection keeps its
//!   place (which the oldest-first rule can take back). Honest connections
//!   from that address are not delayed: on one machine every peer is
//!   127.0.0.1, and an attacker's address must not punish them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The largest hello accepted: a version and a token (tokens are short;
/// the silo refuses ones it could not read back in a hello).
pub(crate) const MAX_HELLO_BYTES: usize = 16 * 1024;

/// How long a connection keeps its place before a newer one may take it:
/// time for a far client's TLS handshake and hello (a few round trips).
pub(crate) const MIN_HELLO_TIME: Duration = Duration::from_secs(1);

/// The connections that have not said hello yet, oldest first.
pub(crate) struct Unwelcomed {
    max: usize,
    min_hello_time: Duration,
    waiting: Mutex<Waiting>,
    /// Woken when a place is given back.
    freed: Notify,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// By arrival: the first is the oldest.
    places: BTreeMap<u64, (Instant, Arc<Notify>)>,
}

/// One connection's place among those waiting for a hello; given back when
/// dropped.
pub(crate) struct HelloPlace {
    queue: Arc<Unwelcomed>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Unwelcomed {
    /// Room for `max` connections (at least one) before their hello, each
    /// keeping its place for at least `min_hello_time`.
    pub(crate) fn new(max: usize, min_hello_time: Duration) -> Arc<Unwelcomed> {
        Arc::new(Unwelcomed {
            max: max.max(1),
            min_hello_time,
            waiting: Mutex::new(Waiting::default()),
            freed: Notify::new(),
        })
    }

    /// Waits until a new connection can have a place: one is free, or the
    /// oldest has had its own for the minimum time.
    pub(crate) async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            let oldest_since = {
                let waiting = self.lock();
                if waiting.places.len() < self.max {
                    return;
                }
                waiting
                    .places
                    .first_key_value()
                    .map(|(_, (since, _))| *since)
            };
            let Some(since) = oldest_since else { return };
            let takeable = since + self.min_hello_time;
            if Instant::now() >= takeable {
                return;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(takeable) => {}
            }
        }
    }

    /// A place for a new connection, and whether an older one had to give
    /// up its own for it (that one's `evicted` resolves).
    pub(crate) fn enter(self: &Arc<Self>) -> (HelloPlace, bool) {
        let mut waiting = self.lock();
        let mut evicted_one = false;
        while waiting.places.len() >= self.max {
            if let Some((_, (_, oldest))) = waiting.places.pop_first() {
                // Stores a permit: the connection sees it even if it is not
                // waiting at this very moment.
                oldest.notify_one();
                evicted_one = true;
            }
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        let evicted = Arc::new(Notify::new());
        waiting.places.insert(id, (Instant::now(), evicted.clone()));
        let place = HelloPlace {
            queue: self.clone(),
            id,
            evicted,
        };
        (place, evicted_one)
    }

    /// Connections waiting for their hello now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().places.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HelloPlace {
    /// Resolves when a newer connection took this place.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for HelloPlace {
    fn drop(&mut self) {
        let removed = self.queue.lock().places.remove(&self.id).is_some();
        if removed {
            self.queue.freed.notify_waiters();
        }
    }
}

/// Recent failed hellos per peer address, for the delay before the goodbye.
pub(crate) struct FailedHellos {
    base: Duration,
    recent: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// The delay doubles per recent failure up to this many times the base.
const MAX_DELAY_FACTOR: u32 = 8;

/// Addresses remembered at most; past it the memory starts afresh (an
/// attacker with many addresses then meets the base delay only).
const MAX_REMEMBERED_PEERS: usize = 4096;

impl FailedHellos {
    /// Delays starting at `base` (zero: none).
    pub(crate) fn new(base: Duration) -> FailedHellos {
        FailedHellos {
            base,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a failed hello from `peer` and says how long to wait before
    /// answering it.
    pub(crate) fn note(&self, peer: IpAddr) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= MAX_REMEMBERED_PEERS && !recent.contains_key(&peer) {
            recent.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if recent.len() >= MAX_REMEMBERED_PEERS {
                recent.clear();
            }
        }
        let entry = recent.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let factor = 1u32 << (entry.0 - 1).min(MAX_DELAY_FACTOR.trailing_zeros());
        self.base * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_waits_until_the_oldest_had_its_minimum_time() {
        let queue = Unwelcomed::new(1, MIN_HELLO_TIME);
        let (first, _) = queue.enter();
        let started = Instant::now();
        queue.room().await;
        assert_eq!(
            started.elapsed(),
            MIN_HELLO_TIME,
            "no room before the minimum time"
        );
        let (_second, evicted) = queue.enter();
        assert!(evicted);
        first.evicted().await;

        // A place given back makes room at once.
        let queue = Unwelcomed::new(1, MIN_HELLO_TIME);
        let (place, _) = queue.enter();
        let started = Instant::now();
        let freeing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(place);
        });
        queue.room().await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        freeing.await.unwrap();
    }

    #[tokio::test]
    async fn the_oldest_place_is_given_up_for_a_new_connection() {
        let queue = Unwelcomed::new(2, MIN_HELLO_TIME);
        let (first, evicted) = queue.enter();
        assert!(!evicted);
        let (second, evicted) = queue.enter();
        assert!(!evicted);
        let (third, evicted) = queue.enter();
        assert!(evicted, "the queue was full");
        assert_eq!(queue.len(), 2);
        tokio::time::timeout(Duration::from_secs(1), first.evicted())
            .await
            .expect("the oldest is told");
        let quiet = tokio::time::timeout(Duration::from_millis(20), second.evicted()).await;
        assert!(quiet.is_err(), "the second keeps its place");
        drop(second);
        assert_eq!(queue.len(), 1, "a dropped place is given back");
        drop(third);
        drop(first);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn failed_hellos_wait_longer_per_recent_failure_up_to_a_ceiling() {
        let failed = FailedHellos::new(Duration::from_millis(100));
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<_> = (0..6).map(|_| failed.note(attacker).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 800, 800]);
        assert_eq!(failed.note(other), Duration::from_millis(100));
        assert_eq!(
            FailedHellos::new(Duration::ZERO).note(other),
            Duration::ZERO
        );
    }
}
