//! An activation's timers: named, volatile, each delivering its message to
//! its own object as a turn, once or periodically.
//!
//! A turn's changes wait in its scope ([`PendingTimers`]) and reach the
//! activation's [`Timers`] only when it commits. The activation takes the
//! tick due first ([`Timers::take_due`]), runs it as a turn, and then
//! reports it done ([`Timers::ticked`]), which is when a periodic timer is
//! given its next due time: the first multiple of its period after the
//! tick ended. Whatever fell due in between was skipped, never queued, so
//! ticks neither overlap nor pile up.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::base::reserved::PREFIX;

/// How many timers one object may have at once.
pub(crate) const MAX_TIMERS: usize = 64;

/// The payloads of one object's timers together, in bytes: they are held
/// by the silo, outside the guest's memory limit, so they get one of their
/// own (a timer's message is small; data belongs in the object's state).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The longest name a timer may have, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// The longest delay or period, 2^40 ms (about 34 years): far beyond any
/// volatile timer's use, and small enough that instants never overflow.
pub(crate) const MAX_DELAY_MS: u64 = 1 << 40;

/// One timer as a turn asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimerSpec {
    /// From the commit of the turn that set it to the first tick.
    pub(crate) after: Duration,
    /// Between ticks after the first; `None` ticks once.
    pub(crate) every: Option<Duration>,
    pub(crate) message_type: String,
    pub(crate) payload: Vec<u8>,
    /// A tick counts as activity for idle deactivation.
    pub(crate) keep_active: bool,
}

impl TimerSpec {
    /// Checks what no timer may have; the error says what is wrong.
    pub(crate) fn check(&self, name: &str) -> Result<(), String> {
        check_name(name)?;
        if self.message_type.is_empty() {
            return Err(format!("timer `{name}` has an empty message type"));
        }
        if self.message_type.starts_with(PREFIX) {
            return Err(format!(
                "timer `{name}`: message types starting with `{PREFIX}` are reserved to the silo"
            ));
        }
        if self.every == Some(Duration::ZERO) {
            return Err(format!(
                "timer `{name}` has a period of 0 ms; it must be at least 1"
            ));
        }
        let longest = Duration::from_millis(MAX_DELAY_MS);
        if self.after > longest || self.every.is_some_and(|every| every > longest) {
            return Err(format!(
                "timer `{name}`: a delay or period may be at most {MAX_DELAY_MS} ms"
            ));
        }
        Ok(())
    }
}

/// Checks a timer's name (see [`super::check_name`]).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    super::check_name("timer", name, MAX_NAME_BYTES)
}

/// One turn's changes, by name: the last one per name wins (`None`
/// cancels). Bounded: a cancel is kept only for a name that is set or
/// pending, and a set only while the object stays within [`MAX_TIMERS`].
#[derive(Debug, Default)]
pub(crate) struct PendingTimers(BTreeMap<String, Option<TimerSpec>>);

impl PendingTimers {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Armed {
    spec: TimerSpec,
    due: Instant,
    /// Changes on every set, so that a tick of a timer replaced while it
    /// ran does not reschedule the new one.
    generation: u64,
    /// Its tick is running now.
    running: bool,
}

/// One tick, as the activation runs it.
#[derive(Debug)]
pub(crate) struct Tick {
    pub(crate) name: String,
    pub(crate) message_type: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) keep_active: bool,
    due: Instant,
    generation: u64,
}

/// An activation's timers.
#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<String, Armed>,
    generations: u64,
}

impl Timers {
    /// Adds `name` to a turn's `pending` changes, refused if the object would
    /// then have more than [`MAX_TIMERS`].
    pub(crate) fn set(
        &self,
        pending: &mut PendingTimers,
        name: String,
        spec: TimerSpec,
    ) -> Result<(), String> {
        spec.check(&name)?;
        let replaces = self.armed.contains_key(&name) || pending.0.contains_key(&name);
        if !replaces && self.count_with(pending) >= MAX_TIMERS {
            return Err(format!(
                "cannot set timer `{name}`: an object may have at most {MAX_TIMERS} timers"
            ));
        }
        let bytes = self.payload_bytes_with(pending, &name) + spec.payload.len();
        if bytes > MAX_PAYLOAD_BYTES {
            return Err(format!(
                "cannot set timer `{name}`: the payloads of an object's timers may total at most {MAX_PAYLOAD_BYTES} bytes (this would make {bytes})"
            ));
        }
        pending.0.insert(name, Some(spec));
        Ok(())
    }

    /// The payload bytes of the timers there would be with `pending`
    /// applied, leaving out the timer `except` (the one being set).
    fn payload_bytes_with(&self, pending: &PendingTimers, except: &str) -> usize {
        let armed: usize = self
            .armed
            .iter()
            .filter(|(name, _)| name.as_str() != except && !pending.0.contains_key(*name))
            .map(|(_, armed)| armed.spec.payload.len())
            .sum();
        let pending: usize = pending
            .0
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .filter_map(|(_, spec)| spec.as_ref())
            .map(|spec| spec.payload.len())
            .sum();
        armed + pending
    }

    /// Adds the cancelling of `name` to a turn's `pending` changes.
    pub(crate) fn cancel(&self, pending: &mut PendingTimers, name: String) {
        if self.armed.contains_key(&name) {
            pending.0.insert(name, None);
        } else {
            pending.0.remove(&name);
        }
    }

    /// How many timers there would be with `pending` applied.
    fn count_with(&self, pending: &PendingTimers) -> usize {
        let added = pending
            .0
            .iter()
            .filter(|(name, spec)| spec.is_some() && !self.armed.contains_key(*name))
            .count();
        let cancelled = pending
            .0
            .iter()
            .filter(|(name, spec)| spec.is_none() && self.armed.contains_key(*name))
            .count();
        self.armed.len() + added - cancelled
    }

    /// A committed turn's changes, made at `now`.
    pub(crate) fn apply(&mut self, pending: &mut PendingTimers, now: Instant) {
        for (name, spec) in std::mem::take(&mut pending.0) {
            match spec {
                Some(spec) => {
                    self.generations += 1;
                    let armed = Armed {
                        due: now + spec.after,
                        spec,
                        generation: self.generations,
                        running: false,
                    };
                    self.armed.insert(name, armed);
                }
                None => {
                    self.armed.remove(&name);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }

    /// When the next tick is due, if any timer waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.armed
            .values()
            .filter(|armed| !armed.running)
            .map(|armed| armed.due)
            .min()
    }

    /// The tick due first, if it is due at `now`. A timer that ticks once is
    /// gone from here on; a periodic one waits for [`Timers::ticked`].
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Tick> {
        let (name, armed) = self
            .armed
            .iter_mut()
            .filter(|(_, armed)| !armed.running && armed.due <= now)
            .min_by_key(|(_, armed)| armed.due)?;
        let tick = Tick {
            name: name.clone(),
            message_type: armed.spec.message_type.clone(),
            payload: armed.spec.payload.clone(),
            keep_active: armed.spec.keep_active,
            due: armed.due,
            generation: armed.generation,
        };
        if armed.spec.every.is_some() {
            armed.running = true;
        } else {
            let name = name.clone();
            self.armed.remove(&name);
        }
        Some(tick)
    }

    /// `tick` ended at `now`: its periodic timer (unless the tick replaced
    /// or cancelled it) is due next at the first multiple of its period
    /// after `now`. Returns how many ticks fell due meanwhile and were
    /// skipped.
    pub(crate) fn ticked(&mut self, tick: &Tick, now: Instant) -> u64 {
        let Some(armed) = self.armed.get_mut(&tick.name) else {
            return 0;
        };
        if armed.generation != tick.generation {
            return 0;
        }
        let Some(every) = armed.spec.every else {
            return 0;
        };
        let late = now.saturating_duration_since(tick.due);
        let periods = late.as_nanos() / every.as_nanos() + 1;
        armed.due = u32::try_from(periods)
            .ok()
            .and_then(|periods| every.checked_mul(periods))
            // Beyond u32 periods (a 1 ms timer late by 50 days): from now.
            .map_or(now + every, |offset| tick.due + offset);
        armed.running = false;
        u64::try_from(periods - 1).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(after_ms: u64, every_ms: Option<u64>) -> TimerSpec {
        TimerSpec {
            after: Duration::from_millis(after_ms),
            every: every_ms.map(Duration::from_millis),
            message_type: "tick".to_string(),
            payload: Vec::new(),
            keep_active: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn with(timers: &mut Timers, name: &str, spec: TimerSpec, now: Instant) {
        let mut pending = PendingTimers::default();
        timers.set(&mut pending, name.to_string(), spec).unwrap();
        timers.apply(&mut pending, now);
    }

    #[test]
    fn a_one_shot_timer_ticks_once_at_its_time() {
        let start = Instant::now();
        let mut timers = Timers::default();
        with(&mut timers, "once", spec(100, None), start);
        assert_eq!(timers.next_due(), Some(start + ms(100)));
        assert!(timers.take_due(start + ms(99)).is_none());
        let tick = timers.take_due(start + ms(100)).expect("due");
        assert_eq!(tick.name, "once");
        assert_eq!(timers.ticked(&tick, start + ms(101)), 0);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_due(), None);
    }

    #[test]
    fn a_periodic_tick_that_runs_long_skips_what_came_due_meanwhile() {
        let start = Instant::now();
        let mut timers = Timers::default();
        with(&mut timers, "p", spec(10, Some(10)), start);
        let tick = timers.take_due(start + ms(10)).unwrap();
        // While it runs, nothing else of it is due.
        assert_eq!(timers.next_due(), None);
        assert!(timers.take_due(start + ms(40)).is_none());
        // Ended at 45: 20, 30 and 40 fell due meanwhile and are skipped.
        assert_eq!(timers.ticked(&tick, start + ms(45)), 3);
        assert_eq!(timers.next_due(), Some(start + ms(50)));
        // On time: nothing skipped, the next period follows.
        let tick = timers.take_due(start + ms(50)).unwrap();
        assert_eq!(timers.ticked(&tick, start + ms(50)), 0);
        assert_eq!(timers.next_due(), Some(start + ms(60)));
    }

    #[test]
    fn a_tick_taken_late_counts_the_ticks_it_stood_for_as_skipped() {
        let start = Instant::now();
        let mut timers = Timers::default();
        with(&mut timers, "p", spec(10, Some(10)), start);
        // The activation was busy until 35: one tick runs, not three.
        let tick = timers.take_due(start + ms(35)).unwrap();
        assert!(timers.take_due(start + ms(35)).is_none());
        assert_eq!(timers.ticked(&tick, start + ms(36)), 2);
        assert_eq!(timers.next_due(), Some(start + ms(40)));
    }

    #[test]
    fn setting_a_name_again_replaces_it_even_while_its_tick_runs() {
        let start = Instant::now();
        let mut timers = Timers::default();
        with(&mut timers, "p", spec(10, Some(10)), start);
        let tick = timers.take_due(start + ms(10)).unwrap();
        // The tick's own turn replaces its timer.
        with(&mut timers, "p", spec(500, None), start + ms(12));
        assert_eq!(timers.ticked(&tick, start + ms(12)), 0);
        assert_eq!(timers.next_due(), Some(start + ms(512)));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn a_cancel_removes_the_timer_and_a_cancel_of_nothing_is_kept_nowhere() {
        let start = Instant::now();
        let mut timers = Timers::default();
        with(&mut timers, "a", spec(10, Some(10)), start);
        let mut pending = PendingTimers::default();
        timers.cancel(&mut pending, "never-set".to_string());
        assert!(pending.is_empty());
        timers.cancel(&mut pending, "a".to_string());
        timers.apply(&mut pending, start);
        assert_eq!(timers.len(), 0);
        assert!(timers.take_due(start + ms(100)).is_none());
    }

    #[test]
    fn an_object_has_at_most_max_timers_and_replacing_one_is_not_another() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut pending = PendingTimers::default();
        for n in 0..MAX_TIMERS {
            timers
                .set(&mut pending, format!("t{n}"), spec(10, None))
                .unwrap();
        }
        let over = timers.set(&mut pending, "one-more".to_string(), spec(10, None));
        assert!(over.unwrap_err().contains("at most 64"));
        timers
            .set(&mut pending, "t0".to_string(), spec(20, None))
            .unwrap();
        timers.apply(&mut pending, start);
        assert_eq!(timers.len(), MAX_TIMERS);
        // Cancelling one in the same turn makes room for another.
        timers.cancel(&mut pending, "t1".to_string());
        timers
            .set(&mut pending, "t-new".to_string(), spec(10, None))
            .unwrap();
        timers.apply(&mut pending, start);
        assert_eq!(timers.len(), MAX_TIMERS);
    }

    #[test]
    fn the_payloads_of_an_objects_timers_are_bounded_together() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let big = |bytes: usize| TimerSpec {
            payload: vec![0; bytes],
            ..spec(10, None)
        };
        with(&mut timers, "a", big(MAX_PAYLOAD_BYTES / 2), start);
        let mut pending = PendingTimers::default();
        timers
            .set(&mut pending, "b".into(), big(MAX_PAYLOAD_BYTES / 2))
            .unwrap();
        let over = timers.set(&mut pending, "c".into(), big(1));
        assert!(over.unwrap_err().contains("total at most"));
        // Replacing `a` with a smaller payload makes room again.
        timers.set(&mut pending, "a".into(), big(0)).unwrap();
        timers.set(&mut pending, "c".into(), big(1)).unwrap();
        timers.apply(&mut pending, start);
        assert_eq!(timers.len(), 3);
    }

    #[test]
    fn what_no_timer_may_have_is_refused_with_a_reason() {
        let timers = Timers::default();
        let mut pending = PendingTimers::default();
        let mut refused = |name: &str, spec: TimerSpec| {
            timers
                .set(&mut pending, name.to_string(), spec)
                .unwrap_err()
        };
        assert!(refused("", spec(1, None)).contains("empty"));
        assert!(refused("rio:x", spec(1, None)).contains("reserved"));
        assert!(refused("p", spec(1, Some(0))).contains("period of 0"));
        assert!(refused("long", spec(MAX_DELAY_MS + 1, None)).contains("at most"));
        let mut reserved = spec(1, None);
        reserved.message_type = "rio:wake-outbox".to_string();
        assert!(refused("r", reserved).contains("reserved"));
        assert!(pending.is_empty());
    }
}
