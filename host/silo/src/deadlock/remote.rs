//! Cycles no silo sees whole: the long waits silos report to each other,
//! and the search of their union for the cycles this silo can break.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Graph;
use super::Refuse;
use crate::base::ObjectKey;

/// How often a silo with long waits reports them to the others.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// A wait this old is reported, and a message waiting this long may be
/// refused by what reports show. Shorter waits are ordinary calls on their
/// way; cycles a silo sees whole were refused at admission already.
pub(crate) const LONG_WAIT: Duration = Duration::from_millis(100);
/// How long a report is believed after it arrived. A silo with long waits
/// reports every interval, so a report this old is of waits that ended.
pub(crate) const REPORT_FRESH: Duration = Duration::from_millis(350);

/// One waiting call, as silos report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) caller: ObjectKey,
    pub(crate) callee: ObjectKey,
    /// When the caller began waiting, in µs since the Unix epoch.
    pub(crate) since_us: u64,
}

/// The long waits one other silo reported last.
pub(super) struct Report {
    received: Instant,
    waits: Vec<Wait>,
}

impl Report {
    pub(super) fn new(waits: Vec<Wait>) -> Report {
        Report {
            received: Instant::now(),
            waits,
        }
    }
}

/// A message to refuse: its caller, its edge's id, the hold on its reply,
/// and the cycle it closes, in words.
pub(super) type Doomed = (ObjectKey, u64, Arc<dyn Refuse>, String);

impl Graph {
    /// The messages waiting here, for `at_least`, whose wait is the youngest
    /// of a cycle through this silo's waits and the fresh reports.
    pub(super) fn youngest_of_cycles(&mut self, at_least: Duration) -> Vec<Doomed> {
        self.reports
            .retain(|_, report| report.received.elapsed() <= REPORT_FRESH);
        // A wait between two silos is known to both and may be here twice,
        // with the same stamp: that changes no path.
        let mut union: HashMap<&ObjectKey, Vec<(u64, &ObjectKey)>> = HashMap::new();
        for (caller, edges) in &self.edges {
            for edge in edges {
                union
                    .entry(caller)
                    .or_default()
                    .push((edge.since_us, &edge.callee));
            }
        }
        for report in self.reports.values() {
            for wait in &report.waits {
                union
                    .entry(&wait.caller)
                    .or_default()
                    .push((wait.since_us, &wait.callee));
            }
        }
        let mut doomed = Vec::new();
        for (caller, edges) in &self.edges {
            for edge in edges {
                let Some(refusal) = &edge.refusal else {
                    continue;
                };
                if edge.recorded.elapsed() < at_least {
                    continue;
                }
                // A rerun's wait in a cycle of reruns where another wait
                // yields: that one is refused where its message waits (or
                // ends at its deadline), never this one.
                if edge.rerun && !edge.yields && self.yielding_rerun_path(&edge.callee, caller) {
                    continue;
                }
                // A cycle whose other waits are all older than this one.
                let bound = (edge.since_us, caller);
                if let Some(path) = older_path(&union, &edge.callee, caller, bound) {
                    let names: Vec<String> = std::iter::once(caller)
                        .chain(path)
                        .map(ToString::to_string)
                        .collect();
                    let message = format!(
                        "{caller} waits on {}, whose turn waits on it in turn, across silos: {}",
                        edge.callee,
                        names.join(" -> ")
                    );
                    doomed.push((caller.clone(), edge.id, refusal.clone(), message));
                }
            }
        }
        doomed
    }
}

/// The objects on a path of waits from `from` to `to` (both included),
/// taking only waits older than `bound` (`(since, caller)`, as edges are
/// ordered everywhere), if there is one.
fn older_path<'a>(
    union: &HashMap<&'a ObjectKey, Vec<(u64, &'a ObjectKey)>>,
    from: &'a ObjectKey,
    to: &ObjectKey,
    bound: (u64, &ObjectKey),
) -> Option<Vec<&'a ObjectKey>> {
    let mut came_from: HashMap<&ObjectKey, &ObjectKey> = HashMap::new();
    let mut seen: HashSet<&ObjectKey> = HashSet::from([from]);
    let mut stack = vec![from];
    while let Some(object) = stack.pop() {
        if object == to {
            let mut path = vec![object];
            while let Some(previous) = came_from.get(path[path.len() - 1]) {
                path.push(*previous);
            }
            path.reverse();
            return Some(path);
        }
        for (since, callee) in union.get(object).into_iter().flatten() {
            if (*since, object) < bound && seen.insert(callee) {
                came_from.insert(callee, object);
                stack.push(callee);
            }
        }
    }
    None
}
