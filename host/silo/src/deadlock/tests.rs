//! The wait-for graph's rules, on graphs built by hand.

use super::*;

fn key(id: &str) -> ObjectKey {
    ObjectKey::new("Account", id)
}

#[test]
fn two_turns_waiting_on_each_other_refuse_the_younger_call() {
    let refusals = Arc::new(AtomicU64::new(0));
    let graph = WaitGraph::counting(refusals.clone());
    let _a_waits = graph.wait(&key("a"), &key("b"), Some(10)).unwrap();
    assert_eq!(refusals.load(Ordering::Relaxed), 0);
    let refused = graph.wait(&key("b"), &key("a"), Some(20)).err().unwrap();
    assert!(refused.0.contains("Account/b"), "{}", refused.0);
    assert_eq!(graph.len(), 1);
    assert_eq!(
        refusals.load(Ordering::Relaxed),
        1,
        "the refusal is counted"
    );
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

/// What a caller hears of its message.
type Answer = Result<Vec<u8>, rio_protocol::ReplyError>;

/// Where a caller hears it.
type Hears = tokio::sync::oneshot::Receiver<Answer>;

/// A waiting message's reply: whoever takes it first answers (the turn
/// when it starts, or the graph when it refuses), as with a mailbox's.
#[derive(Clone)]
struct Reply(Arc<Mutex<Option<tokio::sync::oneshot::Sender<Answer>>>>);

impl Reply {
    /// Taken by the turn: `None` if the graph refused the message first.
    fn claim(
        &self,
    ) -> Option<tokio::sync::oneshot::Sender<Result<Vec<u8>, rio_protocol::ReplyError>>> {
        self.0.lock().unwrap().take()
    }
}

impl Refuse for Reply {
    fn refuse(&self, error: rio_protocol::ReplyError) -> bool {
        match self.claim() {
            Some(sender) => {
                let _ = sender.send(Err(error));
                true
            }
            None => false,
        }
    }
}

/// A message from `caller` waiting in a mailbox of the silo whose graph is
/// `graph`, as the router records one: its wait, armed, and what its
/// caller will hear.
fn waiting_message(
    graph: &WaitGraph,
    caller: &str,
    callee: &str,
    since_us: u64,
) -> (WaitEdge, Reply, Hears) {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let edge = graph
        .wait(&key(caller), &key(callee), Some(since_us))
        .unwrap();
    let reply = Reply(Arc::new(Mutex::new(Some(sender))));
    edge.arm(reply.clone());
    (edge, reply, receiver)
}

/// Three silos, one account each; each account's turn waits on the next
/// account, on the next silo. Each silo sees two of the three waits: its own
/// turn's and the one arriving for its account.
#[test]
fn a_cycle_over_three_silos_is_broken_by_reports_at_its_youngest_wait() {
    let silos = [
        WaitGraph::default(),
        WaitGraph::default(),
        WaitGraph::default(),
    ];
    // a waits on b since 1, b on c since 2, c on a since 3 (the youngest).
    let _a_turn = silos[0].wait(&key("a"), &key("b"), Some(1)).unwrap();
    let (_a_msg, _a_reply, mut a_hears) = waiting_message(&silos[1], "a", "b", 1);
    let _b_turn = silos[1].wait(&key("b"), &key("c"), Some(2)).unwrap();
    let (_b_msg, _b_reply, mut b_hears) = waiting_message(&silos[2], "b", "c", 2);
    let _c_turn = silos[2].wait(&key("c"), &key("a"), Some(3)).unwrap();
    let (_c_msg, c_reply, mut c_hears) = waiting_message(&silos[0], "c", "a", 3);
    // Nobody sees the cycle alone.
    for silo in &silos {
        assert_eq!(silo.break_cycles(Duration::ZERO), 0);
    }
    let names = ["s1", "s2", "s3"];
    for (from, name) in silos.iter().zip(names) {
        let waits = from.long_waits(Duration::ZERO);
        for to in &silos {
            to.note_report(name, waits.clone());
        }
    }
    // Only the silo holding the youngest wait's message refuses it.
    assert_eq!(silos[1].break_cycles(Duration::ZERO), 0);
    assert_eq!(silos[2].break_cycles(Duration::ZERO), 0);
    assert_eq!(silos[0].break_cycles(Duration::ZERO), 1);
    let refused = c_hears.try_recv().expect("c's call was answered");
    assert!(
        matches!(&refused, Err(rio_protocol::ReplyError::Deadlock(text)) if text.contains("Account/c")),
        "{refused:?}"
    );
    assert!(a_hears.try_recv().is_err() && b_hears.try_recv().is_err());
    // The refused message must not run when its turn would have come.
    assert!(c_reply.claim().is_none());
    // And once broken, it stays broken: nothing else is refused.
    assert_eq!(silos[0].break_cycles(Duration::ZERO), 0);
}

#[test]
fn a_message_whose_turn_started_is_not_refused() {
    // b's turn elsewhere waits on a (older); a's message waits here for b.
    let here = WaitGraph::default();
    let (_a_msg, a_reply, mut a_hears) = waiting_message(&here, "a", "b", 2);
    let _running = a_reply.claim().expect("the turn takes the reply first");
    let b_waits = Wait {
        caller: key("b"),
        callee: key("a"),
        since_us: 1,
    };
    here.note_report("elsewhere", vec![b_waits]);
    assert_eq!(here.break_cycles(Duration::ZERO), 0);
    assert!(a_hears.try_recv().is_err());
}

#[test]
fn reports_of_waits_no_longer_fresh_are_ignored_and_young_waits_wait() {
    let s1 = WaitGraph::default();
    let (_msg, _reply, _hears) = waiting_message(&s1, "c", "a", 3);
    let _a_turn = s1.wait(&key("a"), &key("b"), Some(1)).unwrap();
    let report = vec![Wait {
        caller: key("b"),
        callee: key("c"),
        since_us: 2,
    }];
    s1.note_report("s2", report.clone());
    // Recorded just now: not long yet.
    assert_eq!(s1.break_cycles(Duration::from_secs(60)), 0);
    std::thread::sleep(remote::REPORT_FRESH + Duration::from_millis(50));
    assert_eq!(s1.break_cycles(Duration::ZERO), 0, "the report went stale");
    s1.note_report("s2", report);
    assert_eq!(s1.break_cycles(Duration::ZERO), 1);
}

#[test]
fn only_waits_older_than_the_refused_one_make_its_cycle() {
    // c -> a (since 3) waits here; the rest of the ring is younger (b -> c
    // since 4): the youngest wait is b -> c, held elsewhere, so c -> a stays.
    let s1 = WaitGraph::default();
    let (_msg, _reply, mut hears) = waiting_message(&s1, "c", "a", 3);
    let _a_turn = s1.wait(&key("a"), &key("b"), Some(1)).unwrap();
    s1.note_report(
        "s2",
        vec![Wait {
            caller: key("b"),
            callee: key("c"),
            since_us: 4,
        }],
    );
    assert_eq!(s1.break_cycles(Duration::ZERO), 0);
    assert!(hears.try_recv().is_err());
}

/// Two reruns of interrupted keyed turns wait on each other: `b`'s rerun
/// (the higher-ordered object) waits in `a`'s mailbox here; `a`'s rerun
/// then calls `b`. The yielding wait (`b` on `a`) is refused, though it is
/// the older, and `a`'s call is let in.
#[test]
fn in_a_cycle_of_reruns_the_wait_on_the_lower_ordered_object_is_refused() {
    let graph = WaitGraph::default();
    let (sender, mut b_hears) = tokio::sync::oneshot::channel();
    let b_waits = graph
        .wait_from(&key("b"), &key("a"), Some(10), true)
        .unwrap();
    b_waits.arm(Reply(Arc::new(Mutex::new(Some(sender)))));
    let a_waits = graph.wait_from(&key("a"), &key("b"), Some(20), true);
    assert!(a_waits.is_ok(), "the lower-ordered rerun's call is let in");
    match b_hears.try_recv() {
        Ok(Err(rio_protocol::ReplyError::Deadlock(message))) => {
            assert!(message.contains("Account/b"), "{message}")
        }
        other => panic!("b's rerun should have been refused: {other:?}"),
    }
    assert_eq!(graph.len(), 1, "only a's wait is left");
}

/// The same cycle seen on the higher-ordered object's silo: its own rerun's
/// wait (not armed: its message waits elsewhere) yields, so the arriving
/// wait of the lower-ordered rerun is let in, and refusing is left to the
/// silo where the yielding message waits. A yielding wait is refused
/// itself when it closes the cycle.
#[test]
fn a_yielding_wait_is_refused_where_its_message_waits() {
    let there = WaitGraph::default();
    let _b_waits = there
        .wait_from(&key("b"), &key("a"), Some(10), true)
        .unwrap();
    assert!(
        there
            .wait_from(&key("a"), &key("b"), Some(20), true)
            .is_ok()
    );

    let here = WaitGraph::default();
    let _a_waits = here
        .wait_from(&key("a"), &key("b"), Some(20), true)
        .unwrap();
    let refused = here.wait_from(&key("b"), &key("a"), Some(10), true);
    assert!(
        refused.is_err(),
        "the yielding wait closes the cycle: refused"
    );
}

/// A yielding wait admitted before the cycle closed, and armed only after,
/// is refused when it is armed.
#[test]
fn a_yielding_wait_armed_in_a_cycle_is_refused_then() {
    let graph = WaitGraph::default();
    let b_waits = graph
        .wait_from(&key("b"), &key("a"), Some(10), true)
        .unwrap();
    let _a_waits = graph
        .wait_from(&key("a"), &key("b"), Some(20), true)
        .unwrap();
    let (sender, mut b_hears) = tokio::sync::oneshot::channel();
    b_waits.arm(Reply(Arc::new(Mutex::new(Some(sender)))));
    assert!(matches!(
        b_hears.try_recv(),
        Ok(Err(rio_protocol::ReplyError::Deadlock(_)))
    ));
}

/// A cycle with a turn that is no rerun keeps the rule of the youngest:
/// the rerunning callee would refuse that turn's call anyway.
#[test]
fn a_cycle_not_all_of_reruns_refuses_the_youngest() {
    let graph = WaitGraph::default();
    let _b_waits = graph
        .wait_from(&key("b"), &key("a"), Some(10), true)
        .unwrap();
    assert!(
        graph
            .wait_from(&key("a"), &key("b"), Some(20), false)
            .is_err()
    );
}

/// Reports find a cycle of two turns over two silos, seen here as the
/// higher-ordered object's own wait and the lower-ordered one's message in
/// its mailbox. Of turns that are no reruns, the youngest wait (the
/// message's) is refused; of reruns, it is not, since the other yields.
#[test]
fn reports_leave_a_lower_ordered_rerun_waiting_for_the_one_that_yields() {
    for rerun in [false, true] {
        let graph = WaitGraph::default();
        let _b_waits = graph
            .wait_from(&key("b"), &key("a"), Some(10), rerun)
            .unwrap();
        // Arriving from the other silo, where it was admitted: here the
        // older wait of b yields (reruns), or it came from another silo
        // where b's wait was not known yet (not reruns).
        let a_waits = record_without_admission(&graph, rerun);
        let (sender, mut a_hears) = tokio::sync::oneshot::channel();
        a_waits.arm(Reply(Arc::new(Mutex::new(Some(sender)))));
        let refused = graph.break_cycles(Duration::ZERO);
        if rerun {
            assert_eq!(refused, 0);
            assert!(a_hears.try_recv().is_err(), "a's call still waits");
        } else {
            assert_eq!(refused, 1);
            assert!(matches!(
                a_hears.try_recv(),
                Ok(Err(rio_protocol::ReplyError::Deadlock(_)))
            ));
        }
    }
}

/// Puts a's wait on b into a graph that already holds b's wait on a, as
/// the reports' case needs: admission would refuse it when it is the
/// youngest of turns that are no reruns, so it is recorded directly.
fn record_without_admission(graph: &WaitGraph, rerun: bool) -> WaitEdge {
    let mut inner = lock(&graph.graph);
    inner.next_id += 1;
    let id = inner.next_id;
    inner.edges.entry(key("a")).or_default().push(Edge {
        id,
        callee: key("b"),
        since_us: 20,
        recorded: std::time::Instant::now(),
        refusal: None,
        rerun,
        yields: rerun_yields(rerun, &key("a"), &key("b")),
    });
    WaitEdge {
        graph: graph.graph.clone(),
        refusals: graph.refusals.clone(),
        caller: key("a"),
        id,
        since_us: 20,
    }
}
