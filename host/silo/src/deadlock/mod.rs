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
//!   └───────────waits on────────────┘   the youngest wait is refused
//! ```
//!
//! Every edge is a waiting caller and the object its message is for, with
//! the time the caller began waiting. Of the edges of a cycle, the youngest
//! (latest `since`, ties broken by the caller's name) is refused with
//! `deadlock` before its message runs, so its caller may give up and the
//! others go on. Two mechanisms find cycles:
//!
//! - **At admission.** A silo records the edges of calls made by its own
//!   turns, and of calls from other silos' turns that arrive for its
//!   objects. Before an edge is added, the graph is searched from the callee
//!   for the caller: a cycle this silo sees whole, closed by its youngest
//!   edge, is refused at once (well under a millisecond). Local waits are
//!   stamped under the lock, so on one silo the closing wait is the youngest.
//! - **By reports** (`remote`), for cycles no silo sees whole (three silos
//!   or more, or waits over two silos admitted in an order where an older
//!   edge closed the cycle). Every `REPORT_INTERVAL` a silo of a cluster
//!   sends the edges that have waited longer than `LONG_WAIT` to the other
//!   silos. Each silo searches the union of its own edges and the fresh
//!   reports for a cycle through a message waiting in one of its mailboxes
//!   whose wait is the youngest of that cycle, and refuses that message: its
//!   reply is shared with the graph (`ReplyTo::Refusable`), so the refusal
//!   and the turn's start cannot both happen. A cycle is broken within about
//!   `LONG_WAIT + REPORT_INTERVAL` plus a round trip.
//!
//! **Interrupted keyed turns run again** (reruns) yield by object order:
//! a callee lets a lower-ordered object's rerun call in before its own
//! rerun (`activation::keyed`). Two reruns calling each other at the same
//! moment wait on each other with both turns running, so the graph, not
//! the mailbox, must choose: a wait of a rerun on a lower-ordered object
//! *yields*, and of a cycle of reruns' waits, a yielding one is refused
//! rather than the youngest (at admission, or when it is armed here
//! later); the other is let wait, since the yielding turn ends once
//! refused. Refusing the youngest instead failed both reruns each time
//! they met, until one was given up. Reports carry no such mark: the
//! reports' pass leaves a rerun's wait alone when this silo's own waits
//! show the yielding one, and otherwise (a cycle of reruns over three
//! silos) refuses the youngest as for any cycle.
//!
//! Limits: a report may be up to `REPORT_FRESH` old, so a cycle that broke
//! on its own a moment ago may still be seen; its youngest message, which
//! has not run, is then refused although it would have run later. That is
//! safe (`deadlock` means nothing ran; the caller may retry) and rare: the
//! waits must have lasted `LONG_WAIT` first. A cycle through a silo that
//! stopped answering (frozen) is ended by the turns' deadlines, with
//! `timeout`.

mod remote;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::remote::Report;
pub(crate) use self::remote::{LONG_WAIT, REPORT_INTERVAL, Wait};
use crate::base::ObjectKey;
pub(crate) use crate::base::clock::now_us;

/// The graph's hold on a waiting message: refusing it answers the message
/// with a `deadlock` error so that it never runs. The message side
/// (`message::Refusal`) implements it, so the graph needs nothing of
/// mailboxes.
pub(crate) trait Refuse: Send + Sync + 'static {
    /// Answers the message with `error` if nobody took its reply yet; false
    /// if it already runs, left, or was answered.
    fn refuse(&self, error: rio_protocol::ReplyError) -> bool;
}

/// One waiting call.
#[derive(Clone)]
struct Edge {
    id: u64,
    callee: ObjectKey,
    /// When the caller began waiting, in µs since the Unix epoch.
    since_us: u64,
    /// When this silo recorded the wait, by its own clock: waits are told
    /// long from fresh by it, whatever the caller's clock says.
    recorded: std::time::Instant,
    /// The hold on the message's reply while it waits in one of this silo's
    /// mailboxes: the message the reports may refuse.
    refusal: Option<Arc<dyn Refuse>>,
    /// The caller's turn is a rerun of an interrupted keyed turn.
    rerun: bool,
    /// The wait of a rerun on a lower-ordered object: in a cycle of reruns,
    /// this is the one to refuse (see the module's text).
    yields: bool,
}

/// Whether a wait of `caller` on `callee` yields in a cycle: `caller`'s
/// turn is a rerun of an interrupted keyed turn, and `callee` orders
/// before it. The mirror of the callee's rule that lets a lower-ordered
/// rerun's call in before its own rerun.
pub(crate) fn rerun_yields(rerun: bool, caller: &ObjectKey, callee: &ObjectKey) -> bool {
    rerun && callee < caller
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
    /// The long waits other silos reported last, by silo address.
    reports: HashMap<String, Report>,
}

/// The wait-for graph of one silo.
#[derive(Default, Clone)]
pub(crate) struct WaitGraph {
    // A std mutex: held for a short search and an insert, never across an await.
    graph: Arc<Mutex<Graph>>,
    /// Calls refused to break a cycle, counted where the silo's counters
    /// keep them (see `counting`).
    refusals: Arc<AtomicU64>,
}

/// Removes its edge from the graph when the wait ends (reply, timeout, or
/// the message dropped).
pub(crate) struct WaitEdge {
    graph: Arc<Mutex<Graph>>,
    refusals: Arc<AtomicU64>,
    caller: ObjectKey,
    id: u64,
    since_us: u64,
}

impl WaitEdge {
    /// When the wait began, in µs since the Unix epoch, as stamped here.
    pub(crate) fn since_us(&self) -> u64 {
        self.since_us
    }

    /// Marks the wait's message as waiting in a mailbox of this silo, which
    /// may refuse it if the wait turns out to close a cycle. A yielding
    /// wait already in a cycle (admitted while it could not be refused
    /// here) is refused now.
    pub(crate) fn arm(&self, refusal: impl Refuse) {
        let refusal: Arc<dyn Refuse> = Arc::new(refusal);
        let doomed = {
            let mut graph = lock(&self.graph);
            let edge = graph
                .edges
                .get_mut(&self.caller)
                .and_then(|edges| edges.iter_mut().find(|edge| edge.id == self.id));
            let Some(edge) = edge else {
                return;
            };
            edge.refusal = Some(refusal.clone());
            let (yields, callee) = (edge.yields, edge.callee.clone());
            yields
                && graph
                    .path(&callee, &self.caller)
                    .is_some_and(|cycle| cycle.iter().all(|(_, edge)| edge.rerun))
        };
        if doomed {
            refuse_yielding(&self.graph, &self.refusals, &self.caller, self.id, &refusal);
        }
    }
}

/// Refuses the yielding wait `id` of `caller` (its message waits here) and
/// removes its edge; the lock must not be held, since answering the
/// message may drop a `WaitEdge`.
fn refuse_yielding(
    graph: &Mutex<Graph>,
    refusals: &AtomicU64,
    caller: &ObjectKey,
    id: u64,
    refusal: &Arc<dyn Refuse>,
) {
    let message = format!(
        "{caller} is running an interrupted keyed turn again, and an object it waits on runs \
         its own, which goes first: they wait on each other"
    );
    if refusal.refuse(rio_protocol::ReplyError::Deadlock(message)) {
        refusals.fetch_add(1, Ordering::Relaxed);
        lock(graph).remove_edge(caller, id);
    }
}

impl Drop for WaitEdge {
    fn drop(&mut self) {
        lock(&self.graph).remove_edge(&self.caller, self.id);
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

impl WaitGraph {
    /// A graph that counts the calls it refuses in `refusals`.
    pub(crate) fn counting(refusals: Arc<AtomicU64>) -> WaitGraph {
        WaitGraph {
            graph: Arc::default(),
            refusals,
        }
    }

    /// Records that `caller` waits on a message to `callee`, unless that
    /// closes a cycle in which this edge is the youngest: then nothing is
    /// recorded and the call must be refused. `since_us` is when a caller
    /// on another silo began waiting; `None` stamps a local wait now.
    #[cfg(test)]
    pub(crate) fn wait(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        since_us: Option<u64>,
    ) -> Result<WaitEdge, Deadlock> {
        self.wait_from(caller, callee, since_us, false)
    }

    /// Records that `caller` waits on a message to `callee`, unless that
    /// closes a cycle in which this edge is the one to refuse: then nothing
    /// is recorded and the call must be refused. `since_us` is when a
    /// caller on another silo began waiting; `None` stamps a local wait
    /// now. `rerun`: the caller's turn reruns an interrupted keyed turn; in
    /// a cycle of reruns a wait that yields (see [`rerun_yields`]) is
    /// refused first, else the youngest.
    pub(crate) fn wait_from(
        &self,
        caller: &ObjectKey,
        callee: &ObjectKey,
        since_us: Option<u64>,
        rerun: bool,
    ) -> Result<WaitEdge, Deadlock> {
        let yields = rerun_yields(rerun, caller, callee);
        let mut graph = lock(&self.graph);
        let since_us = since_us.unwrap_or_else(|| {
            let stamp = now_us().max(graph.last_local_stamp + 1);
            graph.last_local_stamp = stamp;
            stamp
        });
        let mut refuse_first = Vec::new();
        if let Some(cycle) = graph.path(callee, caller) {
            // Only in a cycle of reruns: any other turn in it is refused by
            // a rerunning callee anyway, and is the one to refuse.
            let of_reruns = rerun && cycle.iter().all(|(_, edge)| edge.rerun);
            let another_yields = of_reruns && !yields && cycle.iter().any(|(_, edge)| edge.yields);
            let new_edge_is_youngest = cycle
                .iter()
                .all(|(waiter, edge)| (since_us, caller) >= (edge.since_us, waiter));
            if another_yields {
                // The yielding waits whose messages wait here are refused;
                // one waiting elsewhere is refused there (at its admission
                // or its arming), so this wait is let in either way.
                refuse_first = cycle
                    .iter()
                    .filter(|(_, edge)| edge.yields)
                    .filter_map(|(waiter, edge)| {
                        edge.refusal
                            .clone()
                            .map(|refusal| (waiter.clone(), edge.id, refusal))
                    })
                    .collect();
            } else if (of_reruns && yields) || new_edge_is_youngest {
                let names: Vec<String> = std::iter::once(caller)
                    .chain(cycle.iter().map(|(_, edge)| &edge.callee))
                    .map(ToString::to_string)
                    .collect();
                self.refusals.fetch_add(1, Ordering::Relaxed);
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
            recorded: std::time::Instant::now(),
            refusal: None,
            rerun,
            yields,
        });
        drop(graph);
        for (waiter, edge_id, refusal) in refuse_first {
            refuse_yielding(&self.graph, &self.refusals, &waiter, edge_id, &refusal);
        }
        Ok(WaitEdge {
            graph: self.graph.clone(),
            refusals: self.refusals.clone(),
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

    /// The waits recorded here that have lasted `at_least`, to report to
    /// the other silos.
    pub(crate) fn long_waits(&self, at_least: Duration) -> Vec<Wait> {
        let graph = lock(&self.graph);
        graph
            .edges
            .iter()
            .flat_map(|(caller, edges)| edges.iter().map(move |edge| (caller, edge)))
            .filter(|(_, edge)| edge.recorded.elapsed() >= at_least)
            .map(|(caller, edge)| Wait {
                caller: caller.clone(),
                callee: edge.callee.clone(),
                since_us: edge.since_us,
            })
            .collect()
    }

    /// Keeps what the silo at `silo` reported, in place of its last report.
    pub(crate) fn note_report(&self, silo: &str, waits: Vec<Wait>) {
        let mut graph = lock(&self.graph);
        if waits.is_empty() {
            graph.reports.remove(silo);
        } else {
            graph.reports.insert(silo.to_string(), Report::new(waits));
        }
    }

    /// Refuses, with `deadlock`, each message waiting here whose wait has
    /// lasted `at_least` and is the youngest of a cycle through this
    /// silo's waits and the others' fresh reports; answers how many.
    pub(crate) fn break_cycles(&self, at_least: Duration) -> usize {
        let doomed = lock(&self.graph).youngest_of_cycles(at_least);
        let mut refused = 0;
        for (caller, id, refusal, message) in doomed {
            if refusal.refuse(rio_protocol::ReplyError::Deadlock(message)) {
                refused += 1;
                self.refusals.fetch_add(1, Ordering::Relaxed);
                // Its message stays in the mailbox until it is skipped; the
                // wait it stood for is over now.
                lock(&self.graph).remove_edge(&caller, id);
            }
        }
        refused
    }
}

impl Graph {
    fn remove_edge(&mut self, caller: &ObjectKey, id: u64) {
        if let Some(edges) = self.edges.get_mut(caller) {
            edges.retain(|edge| edge.id != id);
            if edges.is_empty() {
                self.edges.remove(caller);
            }
        }
    }

    /// Whether this silo's waits make a path from `from` to `to` of reruns
    /// only, one of whose waits yields.
    fn yielding_rerun_path(&self, from: &ObjectKey, to: &ObjectKey) -> bool {
        self.path(from, to).is_some_and(|path| {
            path.iter().all(|(_, edge)| edge.rerun) && path.iter().any(|(_, edge)| edge.yields)
        })
    }

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
