//! `rio:service/state`: the object's keys and values, with this turn's
//! writes kept apart until the turn commits.

use std::collections::HashMap;

use crate::Limits;
use crate::bindings::state::Host;
use crate::host::ActivationData;
use crate::limits::LimitExceeded;
use crate::outbox::HAS_SENT_KEY;
use crate::resume::INTENT_KEY;
use crate::storage::StateWrite;

/// An object's state as loaded, plus the current turn's uncommitted writes,
/// with the sizes the limits are checked against.
#[derive(Default)]
pub(crate) struct ObjectState {
    committed: HashMap<String, Vec<u8>>,
    /// `None` marks a delete.
    pending: HashMap<String, Option<Vec<u8>>>,
    limits: StateLimits,
    /// Bytes of keys and values committed.
    committed_bytes: usize,
    /// Bytes of keys and values as this turn sees them (committed plus pending).
    view_bytes: usize,
    /// Bytes of keys and values pending (a delete counts its key).
    pending_bytes: usize,
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

fn entry_bytes(key: &str, value: Option<&Vec<u8>>) -> usize {
    key.len() + value.map_or(0, Vec::len)
}

impl ObjectState {
    pub(crate) fn loaded(committed: HashMap<String, Vec<u8>>, limits: &Limits) -> ObjectState {
        let committed_bytes = committed
            .iter()
            .map(|(key, value)| entry_bytes(key, Some(value)))
            .sum();
        ObjectState {
            committed,
            pending: HashMap::new(),
            limits: StateLimits::from(limits),
            committed_bytes,
            view_bytes: committed_bytes,
            pending_bytes: 0,
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
        let new_bytes = entry_bytes(&key, value.as_ref());
        let old_pending = self
            .pending
            .get(&key)
            .map_or(0, |pending| entry_bytes(&key, pending.as_ref()));
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
            .get(&key)
            .map_or(0, |value| entry_bytes(&key, Some(value)));
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
        for (key, value) in self.pending.drain() {
            match value {
                Some(value) => self.committed.insert(key, value),
                None => self.committed.remove(&key),
            };
        }
        self.committed_bytes = self.view_bytes;
        self.pending_bytes = 0;
    }

    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
        self.view_bytes = self.committed_bytes;
        self.pending_bytes = 0;
    }

    fn get(&self, key: &str) -> Option<&Vec<u8>> {
        match self.pending.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.committed.get(key),
        }
    }
}

/// The silo's own entries in an object's state (see `resume` and
/// `outbox`): loading hides them, and a guest writing one is stopped.
fn refuse_reserved(key: &str) -> wasmtime::Result<()> {
    if key == INTENT_KEY || key == HAS_SENT_KEY {
        return Err(wasmtime::Error::msg(format!(
            "the state key `{key}` is reserved by the silo"
        )));
    }
    Ok(())
}

impl Host for ActivationData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).cloned()
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
        let state = &self.state;
        let committed = state
            .committed
            .keys()
            .filter(|key| !state.pending.contains_key(*key));
        let pending = state
            .pending
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(key, _)| key);
        committed.chain(pending).cloned().collect()
    }
}

/// Components built against 0.1.0 see the same state.
impl crate::bindings::legacy::state::Host for ActivationData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        <Self as Host>::get(self, key)
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
        assert_eq!(state.get("a"), Some(&vec![9]));
        assert_eq!(state.get("b"), None);

        state.discard_pending();
        assert_eq!(state.get("a"), Some(&vec![1]));
        assert_eq!(state.get("b"), Some(&vec![2]));

        state.pending.insert("b".into(), None);
        state.apply_pending();
        assert!(!state.has_pending());
        assert_eq!(state.get("b"), None);
        assert_eq!(state.get("a"), Some(&vec![1]));
    }

    fn small_limits() -> Limits {
        let mut limits = Limits::default();
        limits.key_bytes = 4;
        limits.value_bytes = 10;
        limits.turn_write_bytes = 20;
        limits.object_state_bytes = 30;
        limits
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
        assert_eq!(state.get("c"), None, "a refused write is not recorded");
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
