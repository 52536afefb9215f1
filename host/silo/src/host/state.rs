//! `rio:service/state`: the object's keys and values, with this turn's
//! writes kept apart until the turn commits.

use std::collections::HashMap;

use crate::bindings::state::Host;
use crate::host::ActivationData;
use crate::storage::StateWrite;

/// An object's state as loaded, plus the current turn's uncommitted writes.
#[derive(Default)]
pub(crate) struct ObjectState {
    committed: HashMap<String, Vec<u8>>,
    /// `None` marks a delete.
    pending: HashMap<String, Option<Vec<u8>>>,
}

impl ObjectState {
    pub(crate) fn loaded(committed: HashMap<String, Vec<u8>>) -> ObjectState {
        ObjectState {
            committed,
            pending: HashMap::new(),
        }
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
    }

    pub(crate) fn discard_pending(&mut self) {
        self.pending.clear();
    }

    fn get(&self, key: &str) -> Option<&Vec<u8>> {
        match self.pending.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.committed.get(key),
        }
    }
}

impl Host for ActivationData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        self.state.pending.insert(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.state.pending.insert(key, None);
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

    fn set(&mut self, key: String, value: Vec<u8>) {
        <Self as Host>::set(self, key, value)
    }

    fn delete(&mut self, key: String) {
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
        let mut state = ObjectState::loaded(HashMap::from([
            ("a".into(), vec![1]),
            ("b".into(), vec![2]),
        ]));
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
}
