//! Deadlock detection: the silo's wait-for graph of turns waiting on calls.
//!
//! A turn that calls another object waits, with its object's mailbox closed
//! to everyone else, until the callee answers. When A's turn waits on B while
//! B's turn (of another call chain) waits on A, neither can go on. Cycles
//! within one call chain are caught by the chain itself (`cycle`); this
//! module catches the rest.
//!
//! ```text
//!   A ──waits on──► B ──waits on──► C
//!   ▲                               │
//!   └───────────waits on────────────┘   the edge that closes it is refused
//! ```
//!
//! Every edge is a waiting caller and the object its message is for, with
//! the time the caller began waiting. A silo records the edges of calls made
//! by its own turns, and of calls from other silos' turns that arrive for its
//! objects. Before an edge is added, the graph is searched from the callee
//! for the caller: if it is reached, the edge would close a cycle. Of the
//! edges of a cycle, the youngest (latest `since`, ties broken by the
//! caller's name) is refused with `deadlock` before its message runs, so its
//! caller may give up and the others go on. Every silo that sees the whole
//! cycle makes the same choice, so one call fails, not two.
//!
//! Limits: a silo sees only its own edges and those crossing to or from it.
//! A cycle that no single silo sees whole (three silos or more, each edge
//! between two others) is not detected; the turns' deadlines end it instead,
//! with `timeout`. The same holds when an older edge from another silo
//! arrives to close a cycle whose youngest edge was admitted before (three
//! or more waits over two silos). Local waits are stamped under the lock, so
//! on one silo the closing wait is always the youngest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ObjectKey;

/// One waiting call.
#[derive(Clone)]
struct Edge {
    id: u64,
    callee: ObjectKey,
    /// When the caller began waiting, in µs since the Unix epoch.
    since_us: u64,
}

#[derive(Default)]
struct Graph {
    next_id: u64,
    /// The last stamp given to a local wait: stamps are handed out under the
    /// lock and strictly increase, so of the local waits the one inserted
    /// last is the youngest, and the wait that closes a cycle here is
    /// refused. (A stamp taken before the lock could let an older wait close
    /// a cycle whose youngest wait was already admitted, refusing neither.)
    last_local_stamp: u64,
    /// Caller → the calls it waits on. A turn waits on one call at a time,
    /// but a caller whose call gave up may have a stale message still queued.
    edges: HashMap<ObjectKey, Vec<Edge>>,
}

/// The wait-for graph of one silo.
#[derive(Default, Clone)]
pub(crate) struct WaitGraph {
    // A std mutex: held for a short search and an insert, never across an await.
    graph: Arc<Mutex<Graph>>,
}

/// Removes its edge from the graph when the wait ends (reply, timeout, or
/// the message dropped).
pub(crate) struct WaitEdge {
    graph: Arc<Mutex<Graph>>,
    caller: ObjectKey,
    id: u64,
    since_us: u64,
}

impl WaitEdge {
    /// When the wait began, in µs since the Unix epoch, as stamped here.
    pub(crate) fn since_us(&self) -> u64 {
        self.since_us
    }
}

impl Drop for WaitEdge {
    fn drop(&mut self) {
        let mut graph = lock(&self.graph);
        if let Some(edges) = graph.edges.get_mut(&self.caller) {
            edges.retain(|edge| edge.id != self.id);
            if edges.is_empty() {
                graph.edges.remove(&self.caller);
            }
        }
    }
}

/// The call would close a cycle and is the youngest edge of it; the text
/// names the cycle.
#[derive(Debug)]
pub(crate) struct Deadlock(pub(crate) String);

fn lock(graph: &Mutex<Graph>) -> std::sync::MutexGuard<'_, Graph> {
    // The graph stays consistent across a panic in these few lines of map code.
    graph
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Microseconds since the Unix epoch, the clock every silo stamps edges with.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

impl WaitGraph {
    /// Records that `caller` waits on a message to `callee`, unless that
    /// closes a cycle in which this edge is the youngest: then nothing is
    /// recorded and the call must be refused. `since_us` is when a caller
    /// on another silo began waiting; `None` stamps a local wait now.
    pub(crate) fn wait(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        since_us: Option<u64>,
    ) -> Result<WaitEdge, Deadlock> {
        let mut graph = lock(&self.graph);
        let since_us = since_us.unwrap_or_else(|| {
            let stamp = now_us().max(graph.last_local_stamp + 1);
            graph.last_local_stamp = stamp;
            stamp
        });
        if let Some(cycle) = graph.path(callee, caller) {
            let new_edge_is_youngest = cycle
                .iter()
                .all(|(waiter, edge)| (since_us, caller) >= (edge.since_us, waiter));
            if new_edge_is_youngest {
                let names: Vec<String> = std::iter::once(caller)
                    .chain(cycle.iter().map(|(_, edge)| &edge.callee))
                    .map(ToString::to_string)
                    .collect();
                return Err(Deadlock(format!(
                    "{} waits on {callee}, whose turn waits on it in turn: {}",
                    caller,
                    names.join(" -> ")
                )));
            }
        }
        graph.next_id += 1;
        let id = graph.next_id;
        graph.edges.entry(caller.clone()).or_default().push(Edge {
            id,
            callee: callee.clone(),
            since_us,
        });
        Ok(WaitEdge {
            graph: self.graph.clone(),
            caller: caller.clone(),
            id,
            since_us,
        })
    }

    /// How many calls are waiting, for tests and stats.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.graph).edges.values().map(Vec::len).sum()
    }
}

impl Graph {
    /// The edges of a path of waits from `from` to `to`, if there is one.
    fn path(&self, from: &ObjectKey, to: &ObjectKey) -> Option<Vec<(ObjectKey, Edge)>> {
        // Depth-first, each object visited once: the graph holds one edge per
        // waiting turn, so this is linear in the number of waiting calls.
        let mut visited = std::collections::HashSet::new();
        let mut path: Vec<(ObjectKey, Edge)> = Vec::new();
        let mut stack: Vec<(ObjectKey, usize)> = vec![(from.clone(), 0)];
        visited.insert(from.clone());
        while let Some((object, next_edge)) = stack.last_mut() {
            if object == to {
                return Some(path);
            }
            let edges = self.edges.get(object).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(edge) = edges.get(*next_edge) {
                *next_edge += 1;
                let edge = edge.clone();
                if visited.insert(edge.callee.clone()) {
                    path.push((object.clone(), edge.clone()));
                    stack.push((edge.callee, 0));
                }
            } else {
                stack.pop();
                path.pop();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ObjectKey {
        ObjectKey::new("Account", id)
    }

    #[test]
    fn two_turns_waiting_on_each_other_refuse_the_younger_call() {
        let graph = WaitGraph::default();
        let _a_waits = graph.wait(&key("a"), &key("b"), Some(10)).unwrap();
        let refused = graph.wait(&key("b"), &key("a"), Some(20)).err().unwrap();
        assert!(refused.0.contains("Account/b"), "{}", refused.0);
        assert_eq!(graph.len(), 1);
    }

    #[test]
    fn an_older_closing_edge_is_admitted_for_the_younger_one_to_be_refused() {
        // Another silo admitted b -> a (younger) before a -> b arrived here:
        // here a -> b is not the youngest, so it is admitted, and the silo
        // holding b -> a's message refuses that one.
        let graph = WaitGraph::default();
        let _b_waits = graph.wait(&key("b"), &key("a"), Some(20)).unwrap();
        let a_waits = graph.wait(&key("a"), &key("b"), Some(10));
        assert!(a_waits.is_ok());
    }

    #[test]
    fn longer_cycles_are_found_and_ended_waits_are_forgotten() {
        let graph = WaitGraph::default();
        let a_waits = graph.wait(&key("a"), &key("b"), Some(1)).unwrap();
        let _b_waits = graph.wait(&key("b"), &key("c"), Some(2)).unwrap();
        assert!(graph.wait(&key("c"), &key("a"), Some(3)).is_err());
        drop(a_waits);
        let _c_waits = graph.wait(&key("c"), &key("a"), Some(4)).unwrap();
        assert_eq!(graph.len(), 2);
    }

    #[test]
    fn waits_without_a_cycle_are_admitted() {
        let graph = WaitGraph::default();
        let _one = graph.wait(&key("a"), &key("c"), Some(1)).unwrap();
        let _two = graph.wait(&key("b"), &key("c"), Some(2)).unwrap();
        let _three = graph.wait(&key("c"), &key("d"), Some(3)).unwrap();
        assert_eq!(graph.len(), 3);
    }

    #[test]
    fn local_waits_are_stamped_in_the_order_they_are_recorded() {
        // Whatever the clock says, a local wait recorded later is younger,
        // so the one that closes a cycle is the one refused.
        let graph = WaitGraph::default();
        let first = graph.wait(&key("a"), &key("b"), None).unwrap();
        let second = graph.wait(&key("c"), &key("a"), None).unwrap();
        assert!(second.since_us() > first.since_us());
        assert!(graph.wait(&key("b"), &key("c"), None).is_err());
    }

    #[test]
    fn ties_in_time_are_broken_by_name_the_same_way_everywhere() {
        let here = WaitGraph::default();
        let _a = here.wait(&key("a"), &key("b"), Some(5)).unwrap();
        // b -> a has the same time; (5, b) > (5, a), so b -> a is the youngest.
        assert!(here.wait(&key("b"), &key("a"), Some(5)).is_err());
        let there = WaitGraph::default();
        let _b = there.wait(&key("b"), &key("a"), Some(5)).unwrap();
        assert!(there.wait(&key("a"), &key("b"), Some(5)).is_ok());
    }
}
