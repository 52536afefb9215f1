//! `rio:service/state`: the object's keys and values, with this turn's
//! writes kept apart until the turn commits.
//!
//! An activation loads its object's keys with the size of every value, and
//! the values of at most [`INLINE_VALUE_BYTES`]; a bigger value is read from
//! the store the first time a turn asks for it, and kept while the big
//! values kept stay within [`BIG_VALUE_CACHE_BYTES`]. So activating an
//! object costs its small values, not its big ones, and an activation
//! holds at most its small values, this bound and the current turn's
//! writes. Sizes are always known, so the state limits never need a value.

use std::collections::HashMap;
use std::sync::Arc;

use super::ActivationData;
use super::bindings::state::Host;
use crate::base::limits::LimitExceeded;
use crate::base::{Limits, ObjectKey, reserved};
use crate::storage::{StateStore, StateWrite, StoredEntry};

/// Values up to this size are loaded with the object's keys.
pub(crate) const INLINE_VALUE_BYTES: usize = 16 * 1024;

/// Bigger values one activation keeps after a turn read or wrote them; past
/// this, the others are dropped (and read again if asked for).
pub(crate) const BIG_VALUE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// One committed key: its value's size, and the value if held.
struct Committed {
    value_bytes: usize,
    value: Option<Vec<u8>>,
}

/// An object's state as far as it is held, plus the current turn's
/// uncommitted writes, with the sizes the limits are checked against.
#[derive(Default)]
pub(crate) struct ObjectState {
    committed: HashMap<String, Committed>,
    /// `None` marks a delete.
    pending: HashMap<String, Option<Vec<u8>>>,
    limits: StateLimits,
    /// Bytes of keys and values committed.
    committed_bytes: usize,
    /// Bytes of keys and values as this turn sees them (committed plus pending).
    view_bytes: usize,
    /// Bytes of keys and values pending (a delete counts its key).
    pending_bytes: usize,
    /// Bytes of committed values over [`INLINE_VALUE_BYTES`] held.
    big_held_bytes: usize,
    /// Where values not held are read from; `None`: every value is held.
    source: Option<(Arc<dyn StateStore>, ObjectKey)>,
}

/// The limits `set` and `delete` enforce.
#[derive(Clone, Copy)]
struct StateLimits {
    key_bytes: usize,
    value_bytes: usize,
    turn_write_bytes: usize,
    object_state_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> StateLimits {
        StateLimits::from(&Limits::default())
    }
}

impl From<&Limits> for StateLimits {
    fn from(limits: &Limits) -> StateLimits {
        StateLimits {
            key_bytes: limits.key_bytes,
            value_bytes: limits.value_bytes,
            turn_write_bytes: limits.turn_write_bytes,
            object_state_bytes: limits.object_state_bytes,
        }
    }
}

fn entry_bytes(key: &str, value_bytes: Option<usize>) -> usize {
    key.len() + value_bytes.unwrap_or(0)
}

impl ObjectState {
    /// Every value held (for tests, and objects built in memory).
    #[cfg(test)]
    pub(crate) fn loaded(committed: HashMap<String, Vec<u8>>, limits: &Limits) -> ObjectState {
        let entries = committed
            .into_iter()
            .map(|(key, value)| (key, StoredEntry::of(value, usize::MAX)))
            .collect();
        ObjectState::from_entries(entries, limits, None)
    }

    /// The state `store.load_keys` gave for `object`; values it left out
    /// are read from `store` when asked for.
    pub(crate) fn from_store(
        entries: HashMap<String, StoredEntry>,
        limits: &Limits,
        store: Arc<dyn StateStore>,
        object: ObjectKey,
    ) -> ObjectState {
        ObjectState::from_entries(entries, limits, Some((store, object)))
    }

    fn from_entries(
        entries: HashMap<String, StoredEntry>,
        limits: &Limits,
        source: Option<(Arc<dyn StateStore>, ObjectKey)>,
    ) -> ObjectState {
        let mut committed_bytes = 0;
        let mut big_held_bytes = 0;
        let committed = entries
            .into_iter()
            .map(|(key, entry)| {
                committed_bytes += entry_bytes(&key, Some(entry.value_bytes));
                if entry.value.is_some() && entry.value_bytes > INLINE_VALUE_BYTES {
                    big_held_bytes += entry.value_bytes;
                }
                let committed = Committed {
                    value_bytes: entry.value_bytes,
                    value: entry.value,
                };
                (key, committed)
            })
            .collect();
        ObjectState {
            committed,
            pending: HashMap::new(),
            limits: StateLimits::from(limits),
            committed_bytes,
            view_bytes: committed_bytes,
            pending_bytes: 0,
            big_held_bytes,
            source,
        }
    }

    /// Records a write (`None`: a delete) if it keeps within the limits;
    /// otherwise records nothing and says which limit it broke.
    fn write(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), LimitExceeded> {
        let limits = self.limits;
        let over = |what, name, size, limit| LimitExceeded {
            what,
            name,
            size,
            limit,
        };
        if key.len() > limits.key_bytes {
            return Err(over(
                "a state key",
                "key-bytes",
                key.len(),
                limits.key_bytes,
            ));
        }
        if let Some(value) = &value
            && value.len() > limits.value_bytes
        {
            let size = value.len();
            return Err(over(
                "a state value",
                "value-bytes",
                size,
                limits.value_bytes,
            ));
        }
        let new_bytes = entry_bytes(&key, value.as_ref().map(Vec::len));
        let old_pending = self.pending.get(&key).map_or(0, |pending| {
            entry_bytes(&key, pending.as_ref().map(Vec::len))
        });
        let pending_bytes = self.pending_bytes - old_pending + new_bytes;
        if pending_bytes > limits.turn_write_bytes {
            let limit = limits.turn_write_bytes;
            return Err(over(
                "this turn's writes",
                "turn-write-bytes",
                pending_bytes,
                limit,
            ));
        }
        let old_view = self
            .view_size(&key)
            .map_or(0, |value_bytes| entry_bytes(&key, Some(value_bytes)));
        let view_bytes = self.view_bytes - old_view + value.as_ref().map_or(0, |_| new_bytes);
        if view_bytes > limits.object_state_bytes && view_bytes > self.view_bytes {
            let limit = limits.object_state_bytes;
            return Err(over(
                "the object's state",
                "object-state-bytes",
                view_bytes,
                limit,
            ));
        }
        self.pending_bytes = pending_bytes;
        self.view_bytes = view_bytes;
        self.pending.insert(key, value);
        Ok(())
    }

    /// The turn's writes, to hand to the store; the cache keeps them pending
    /// until [`ObjectState::apply_pending`].
    pub(crate) fn pending_writes(&self) -> Vec<StateWrite> {
        self.pending
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The store has the turn's writes: make them the committed view.
    pub(crate) fn apply_pending(&mut self) {
        for (key, value) in std::mem::take(&mut self.pending) {
            let replaced = match value {
                Some(value) => {
                    let value_bytes = value.len();
                    if value_bytes > INLINE_VALUE_BYTES {
                        self.big_held_bytes += value_bytes;
                    }
                    let committed = Committed {
                        value_bytes,
                        value: Some(value),
                    };
                    self.committed.insert(key, committed)
                }
                None => self.committed.remove(&key),
            };
            if let Some(Committed {
                value_bytes,
                value: Some(_),
            }) = replaced
                && value_bytes > INLINE_VALUE_BYTES
            {
                self.big_held_bytes -= value_bytes;
            }
        }
        self.committed_bytes = self.view_bytes;
        self.pending_bytes = 0;
        self.drop_big_values_over_budget(None);
    }

    /// Drops held big values (all but `keep`) while they exceed the cache
    /// bound; only where they can be read again.
    fn drop_big_values_over_budget(&mut self, keep: Option<&str>) {
        if self.big_held_bytes <= BIG_VALUE_CACHE_BYTES || self.source.is_none() {
            return;
        }
        for (key, entry) in &mut self.committed {
            if entry.value_bytes > INLINE_VALUE_BYTES
                && entry.value.is_some()
                && Some(key.as_str()) != keep
            {
                entry.value = None;
                self.big_held_bytes -= entry.value_bytes;
                if self.big_held_bytes <= BIG_VALUE_CACHE_BYTES {
                    return;
                }
            }
        }
    }

    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
        self.view_bytes = self.committed_bytes;
        self.pending_bytes = 0;
    }

    /// The size of `key`'s value as this turn sees it.
    fn view_size(&self, key: &str) -> Option<usize> {
        match self.pending.get(key) {
            Some(pending) => pending.as_ref().map(Vec::len),
            None => self.committed.get(key).map(|entry| entry.value_bytes),
        }
    }

    /// `key`'s value as this turn sees it, if held: `Err(())` when it must
    /// be read from the store.
    fn held(&self, key: &str) -> Result<Option<&Vec<u8>>, ()> {
        match self.pending.get(key) {
            Some(pending) => Ok(pending.as_ref()),
            None => match self.committed.get(key) {
                None => Ok(None),
                Some(Committed {
                    value: Some(value), ..
                }) => Ok(Some(value)),
                Some(Committed { value: None, .. }) => Err(()),
            },
        }
    }

    /// `key`'s value as this turn sees it, read from the store if it is not
    /// held (and then kept, within the cache bound).
    pub(crate) async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        if let Ok(held) = self.held(key) {
            return Ok(held.cloned());
        }
        let Some((store, object)) = &self.source else {
            return Ok(None);
        };
        let value = store
            .read_value(object, key)
            .await
            .map_err(|error| format!("cannot read the state key `{key}` of {object}: {error}"))?;
        let Some(value) = value else {
            // Only this activation writes the object, so the key cannot
            // have gone; a store that says so is believed.
            return Ok(None);
        };
        if let Some(entry) = self.committed.get_mut(key) {
            if entry.value_bytes > INLINE_VALUE_BYTES {
                self.big_held_bytes += entry.value_bytes;
            }
            entry.value = Some(value.clone());
            self.drop_big_values_over_budget(Some(key));
        }
        Ok(Some(value))
    }

    /// Every key that has a value as this turn sees it.
    fn keys(&self) -> Vec<String> {
        let committed = self
            .committed
            .keys()
            .filter(|key| !self.pending.contains_key(*key));
        let pending = self
            .pending
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(key, _)| key);
        committed.chain(pending).cloned().collect()
    }

    /// Takes a reserved entry out of the state the guest sees (see
    /// `resume` and `outbox`): its value, read from the store if it was too
    /// big to load with the keys; `None` if there is no such entry.
    pub(crate) async fn take_reserved(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        if !self.committed.contains_key(key) {
            return Ok(None);
        }
        let value = self.get(key).await?;
        if let Some(entry) = self.committed.remove(key) {
            let bytes = entry_bytes(key, Some(entry.value_bytes));
            self.committed_bytes -= bytes;
            self.view_bytes -= bytes;
            if entry.value.is_some() && entry.value_bytes > INLINE_VALUE_BYTES {
                self.big_held_bytes -= entry.value_bytes;
            }
        }
        Ok(value)
    }
}

/// The silo's own entries in an object's state (see `base::reserved`):
/// loading hides them, and a guest writing one is stopped.
fn refuse_reserved(key: &str) -> wasmtime::Result<()> {
    if reserved::is_reserved_state_key(key) {
        return Err(wasmtime::Error::msg(format!(
            "the state key `{key}` is reserved by the silo"
        )));
    }
    Ok(())
}

impl Host for ActivationData {
    /// A value not held is read from the store; if that fails the guest is
    /// stopped here (it cannot tell "no value" from "cannot read").
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.state.get(&key).await.map_err(wasmtime::Error::msg)
    }

    /// Over a limit, the guest is stopped here (a trap): the turn fails
    /// with the limit named, its writes discarded, and the silo holds no
    /// more than the limit allowed.
    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        refuse_reserved(&key)?;
        self.state
            .write(key, Some(value))
            .map_err(wasmtime::Error::new)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        refuse_reserved(&key)?;
        self.state.write(key, None).map_err(wasmtime::Error::new)
    }

    fn keys(&mut self) -> Vec<String> {
        self.state.keys()
    }
}

/// Components built against 0.1.0 see the same state.
impl super::bindings::legacy::state::Host for ActivationData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        <Self as Host>::get(self, key).await
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        <Self as Host>::set(self, key, value)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        <Self as Host>::delete(self, key)
    }

    fn keys(&mut self) -> Vec<String> {
        <Self as Host>::keys(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writes_shadow_committed_until_applied_or_discarded() {
        let mut state = ObjectState::loaded(
            HashMap::from([("a".into(), vec![1]), ("b".into(), vec![2])]),
            &Limits::default(),
        );
        state.pending.insert("a".into(), Some(vec![9]));
        state.pending.insert("b".into(), None);
        assert_eq!(state.held("a"), Ok(Some(&vec![9])));
        assert_eq!(state.held("b"), Ok(None));

        state.discard_pending();
        assert_eq!(state.held("a"), Ok(Some(&vec![1])));
        assert_eq!(state.held("b"), Ok(Some(&vec![2])));

        state.pending.insert("b".into(), None);
        state.apply_pending();
        assert!(!state.has_pending());
        assert_eq!(state.held("b"), Ok(None));
        assert_eq!(state.held("a"), Ok(Some(&vec![1])));
    }

    /// Big values stay in the store until asked for, are kept within the
    /// cache bound, and count in the limits all along.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_values_are_read_when_asked_for_and_kept_within_the_bound() {
        use crate::storage::SiloId;
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::storage::embedded::open(&dir.path().join("rio.db"), 64, 1, Default::default())
                .await
                .unwrap();
        let object = ObjectKey::new("Big", "o");
        let big = |byte: u8| vec![byte; BIG_VALUE_CACHE_BYTES * 2 / 3];
        let owner = SiloId {
            address: String::new(),
            generation: 1,
        };
        let writes = vec![
            ("s".to_string(), Some(vec![1u8; 10])),
            ("b1".to_string(), Some(big(2))),
            ("b2".to_string(), Some(big(3))),
        ];
        store.commit(&object, writes, &owner).await.unwrap();

        let entries = store.load_keys(&object, INLINE_VALUE_BYTES).await.unwrap();
        let mut state = ObjectState::from_store(entries, &Limits::default(), store.clone(), object);
        assert_eq!(state.held("s"), Ok(Some(&vec![1u8; 10])));
        assert_eq!(state.held("b1"), Err(()), "a big value is not loaded");
        assert_eq!(state.big_held_bytes, 0);
        assert_eq!(state.committed_bytes, 1 + 10 + 2 * (2 + big(0).len()));
        let mut keys = state.keys();
        keys.sort();
        assert_eq!(keys, ["b1", "b2", "s"]);

        assert_eq!(state.get("b1").await.unwrap(), Some(big(2)));
        assert!(state.held("b1").is_ok(), "kept after a read");
        // Reading the second would hold more than the bound: the first goes.
        assert_eq!(state.get("b2").await.unwrap(), Some(big(3)));
        assert_eq!(state.held("b1"), Err(()));
        assert!(state.big_held_bytes <= BIG_VALUE_CACHE_BYTES);
        assert_eq!(state.get("b1").await.unwrap(), Some(big(2)));
        assert_eq!(state.get("missing").await.unwrap(), None);

        // Overwriting a big value is sized from what is known, held or not.
        state.write("b2".into(), Some(vec![4u8; 5])).unwrap();
        state.apply_pending();
        assert_eq!(state.committed_bytes, 1 + 10 + 2 + big(0).len() + 2 + 5);
        assert!(state.big_held_bytes <= BIG_VALUE_CACHE_BYTES);
        assert_eq!(state.take_reserved("s").await.unwrap(), Some(vec![1u8; 10]));
        assert_eq!(state.held("s"), Ok(None));
    }

    fn small_limits() -> Limits {
        Limits {
            key_bytes: 4,
            value_bytes: 10,
            turn_write_bytes: 20,
            object_state_bytes: 30,
            ..Limits::default()
        }
    }

    #[test]
    fn keys_values_and_turn_writes_are_bounded() {
        let mut state = ObjectState::loaded(HashMap::new(), &small_limits());
        assert_eq!(
            state.write("toolong".into(), None).unwrap_err().name,
            "key-bytes"
        );
        let big = vec![0; 11];
        assert_eq!(
            state.write("k".into(), Some(big)).unwrap_err().name,
            "value-bytes"
        );
        state.write("a".into(), Some(vec![0; 9])).unwrap();
        // Rewriting a key replaces its pending bytes instead of adding them.
        state.write("a".into(), Some(vec![0; 9])).unwrap();
        state.write("b".into(), Some(vec![0; 9])).unwrap();
        let refused = state.write("c".into(), Some(vec![0; 1])).unwrap_err();
        assert_eq!(refused.name, "turn-write-bytes");
        assert_eq!(state.held("c"), Ok(None), "a refused write is not recorded");
        state.discard_pending();
        state.write("c".into(), Some(vec![0; 9])).unwrap();
    }

    #[test]
    fn an_objects_state_is_bounded_across_turns_and_deletes_free_room() {
        let mut state = ObjectState::loaded(HashMap::new(), &small_limits());
        state.write("a".into(), Some(vec![0; 9])).unwrap();
        state.apply_pending();
        state.write("b".into(), Some(vec![0; 9])).unwrap();
        state.apply_pending();
        // 20 bytes stored; `c` and 10 bytes of value would make 31.
        let refused = state.write("c".into(), Some(vec![0; 10])).unwrap_err();
        assert_eq!(refused.name, "object-state-bytes");
        state.write("a".into(), None).unwrap();
        state.write("c".into(), Some(vec![0; 9])).unwrap();
        state.apply_pending();
        assert_eq!(state.committed_bytes, 20);
    }
}
