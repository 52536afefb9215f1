//! Idempotency keys: the replies an activation committed recently under a
//! key, the keys a keyed turn gives the calls it makes, and the sweep that
//! expires stored replies.
//!
//! The store holds every reply record (committed with the turn's writes);
//! what is here only saves a store read when a caller retries while the
//! object is still active. A miss always asks the store: the key may have
//! been committed by an earlier activation or by another silo.
//!
//! Memory is bounded in bytes: an activation keeps its last few replies of
//! at most `RECENT_REPLY_MAX_BYTES` each, and all activations of a silo
//! together at most `RECENT_REPLIES_BUDGET_BYTES`; a bigger reply, or one
//! past the budget, is read from the store when a retry asks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::base::{ObjectKey, pace};
use crate::storage::StateStore;

/// Replies one activation remembers at most. Retries come soon after the
/// first attempt, so the last few keys cover them; each entry holds a reply.
const RECENT_REPLIES_MAX: usize = 16;

/// The biggest reply an activation keeps in memory for a retry.
pub(crate) const RECENT_REPLY_MAX_BYTES: usize = 4 * 1024;

/// What all activations of one silo keep in memory for retries, at most.
pub(crate) const RECENT_REPLIES_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// The bytes of replies a silo's activations keep in memory, against a
/// budget.
pub(crate) struct ReplyMemory {
    held: AtomicUsize,
    budget: usize,
}

impl ReplyMemory {
    pub(crate) fn new(budget: usize) -> Arc<ReplyMemory> {
        Arc::new(ReplyMemory {
            held: AtomicUsize::new(0),
            budget,
        })
    }

    /// Takes `bytes` from the budget, if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes)
                    .filter(|&total| total <= self.budget)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// The replies of an activation's latest keyed turns, oldest first out.
pub(crate) struct RecentReplies {
    replies: HashMap<Arc<str>, (Vec<u8>, Instant)>,
    order: VecDeque<Arc<str>>,
    memory: Arc<ReplyMemory>,
}

impl Drop for RecentReplies {
    fn drop(&mut self) {
        let held: usize = self.replies.values().map(|(reply, _)| reply.len()).sum();
        self.memory.give_back(held);
    }
}

impl RecentReplies {
    /// Nothing remembered yet; replies are kept within `memory`.
    pub(crate) fn new(memory: Arc<ReplyMemory>) -> RecentReplies {
        RecentReplies {
            replies: HashMap::new(),
            order: VecDeque::new(),
            memory,
        }
    }

    /// The reply committed under `key`, if it is remembered and younger
    /// than `retention` at `now` (an older one may have been swept from
    /// the store, and the store decides).
    pub(crate) fn get(&self, key: &str, retention: Duration, now: Instant) -> Option<Vec<u8>> {
        let (reply, committed) = self.replies.get(key)?;
        (now.saturating_duration_since(*committed) < retention).then(|| reply.clone())
    }

    /// Remembers a reply committed under `key` at `now`, if it is small
    /// and fits the silo's budget (the store has it either way).
    pub(crate) fn insert(&mut self, key: Arc<str>, reply: Vec<u8>, now: Instant) {
        if self.replies.len() >= RECENT_REPLIES_MAX
            && let Some(oldest) = self.order.pop_front()
            && let Some((forgotten, _)) = self.replies.remove(&oldest)
        {
            self.memory.give_back(forgotten.len());
        }
        if reply.len() > RECENT_REPLY_MAX_BYTES || !self.memory.take(reply.len()) {
            return;
        }
        let size = reply.len();
        match self.replies.insert(key.clone(), (reply, now)) {
            None => self.order.push_back(key),
            Some((replaced, _)) => self.memory.give_back(replaced.len()),
        }
        debug_assert!(size <= RECENT_REPLY_MAX_BYTES);
    }
}

/// The key of the `index`-th call (from 0) that a turn running under
/// `turn_key` makes, from object `caller` to `callee`'s `message_type`.
///
/// A retried turn that makes the same calls in the same order gives each
/// the same key, so a callee that already committed one answers its stored
/// reply instead of applying it again. A call that differs (another
/// position, callee or message type) gets a fresh key and runs. The
/// payload is not part of the key: a retried call with another payload
/// still gets the first attempt's reply. Hashed, so nested turns' keys stay
/// short (the stores index them).
pub(crate) fn derived_key(
    turn_key: &str,
    caller: &ObjectKey,
    index: u32,
    callee: &ObjectKey,
    message_type: &str,
) -> Arc<str> {
    let mut hash = Sha256::new();
    // Each part is length-prefixed, so no two lists of parts hash alike.
    for part in [
        turn_key.as_bytes(),
        caller.service_type.as_bytes(),
        caller.object_id.as_bytes(),
        &index.to_be_bytes()[..],
        callee.service_type.as_bytes(),
        callee.object_id.as_bytes(),
        message_type.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("derived:{hex}").into()
}

/// Deletes expired reply records, at most `batch` every `interval`, until
/// the silo stops. Every silo of a cluster sweeps; deleting is idempotent.
pub(crate) async fn run_sweep(
    store: Arc<dyn StateStore>,
    retention: Duration,
    interval: Duration,
    batch: usize,
    mut stopping: watch::Receiver<bool>,
) {
    while pace::pause(interval, &mut stopping).await {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::base::clock::now_ms().saturating_sub(retention_ms);
        match store.sweep_replies(cutoff, batch).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "expired idempotency replies swept"),
            Err(error) => tracing::warn!(%error, "cannot sweep expired idempotency replies"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_every_part_and_repeat_for_the_same_call() {
        let (a, b) = (ObjectKey::new("Bank", "a"), ObjectKey::new("Bank", "b"));
        let key = derived_key("k", &a, 0, &b, "deposit");
        assert_eq!(key, derived_key("k", &a, 0, &b, "deposit"));
        let others = [
            derived_key("k2", &a, 0, &b, "deposit"),
            derived_key("k", &b, 0, &b, "deposit"),
            derived_key("k", &a, 1, &b, "deposit"),
            derived_key("k", &a, 0, &a, "deposit"),
            derived_key("k", &a, 0, &b, "withdraw"),
        ];
        for other in others {
            assert_ne!(key, other);
        }
        assert!(key.len() <= rio_protocol::MAX_IDEMPOTENCY_KEY_BYTES);
    }

    #[test]
    fn recent_replies_keep_the_latest_and_forget_the_oldest() {
        let mut recent = RecentReplies::new(ReplyMemory::new(RECENT_REPLIES_BUDGET_BYTES));
        let day = Duration::from_secs(86_400);
        let start = Instant::now();
        for i in 0..RECENT_REPLIES_MAX + 1 {
            recent.insert(format!("k{i}").into(), vec![i as u8], start);
        }
        assert_eq!(recent.get("k0", day, start), None, "the oldest went first");
        assert_eq!(recent.get("k1", day, start), Some(vec![1]));
        let last = format!("k{RECENT_REPLIES_MAX}");
        let hour_later = start + Duration::from_secs(3600);
        assert_eq!(
            recent.get(&last, day, hour_later),
            Some(vec![RECENT_REPLIES_MAX as u8])
        );
        assert_eq!(recent.get(&last, day, start + day), None, "past retention");
    }

    #[test]
    fn big_replies_and_replies_past_the_budget_are_left_to_the_store() {
        let memory = ReplyMemory::new(3 * RECENT_REPLY_MAX_BYTES);
        let day = Duration::from_secs(86_400);
        let now = Instant::now();
        let mut first = RecentReplies::new(memory.clone());
        first.insert("big".into(), vec![0; RECENT_REPLY_MAX_BYTES + 1], now);
        assert_eq!(first.get("big", day, now), None, "too big to keep");
        assert_eq!(memory.held(), 0);
        first.insert("a".into(), vec![1; RECENT_REPLY_MAX_BYTES], now);
        first.insert("b".into(), vec![2; RECENT_REPLY_MAX_BYTES], now);
        let mut second = RecentReplies::new(memory.clone());
        second.insert("c".into(), vec![3; RECENT_REPLY_MAX_BYTES], now);
        second.insert("d".into(), vec![4; RECENT_REPLY_MAX_BYTES], now);
        assert!(second.get("c", day, now).is_some());
        assert_eq!(second.get("d", day, now), None, "past the silo's budget");
        assert_eq!(memory.held(), 3 * RECENT_REPLY_MAX_BYTES);
        drop(first);
        assert_eq!(
            memory.held(),
            RECENT_REPLY_MAX_BYTES,
            "a deactivation gives back"
        );
        drop(second);
        assert_eq!(memory.held(), 0);
    }
}
