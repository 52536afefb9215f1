//! The silo's clocks: wall time in the units the stores and the wait-for
//! graph stamp with, and [`Clock`], the monotonic time that deadlines,
//! idle collection and retention are measured on, which tests replace.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// What [`Clock::sleep_until`] returns.
pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Milliseconds since the Unix epoch: what stored rows (replies, outbox
/// messages, heartbeats) are stamped with, comparable between silos.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Microseconds since the Unix epoch, the clock every silo stamps
/// wait-for edges with.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Monotonic time as the silo's time-driven code reads and waits on it.
/// The silo runs on [`SystemClock`]; a test hands an activation a
/// [`ManualClock`] it moves by hand, so idle collection or retention is
/// tested without sleeping. (Turn deadlines stay on tokio's clock: the
/// epoch callback inside wasmtime reads it.)
pub(crate) trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;

    /// Resolves once this clock reaches `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// Wall time on this clock, in ms since the Unix epoch: what reminders'
    /// due times are compared with.
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// tokio's clock: real time.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock that moves only when [`ManualClock::advance`] says so.
#[cfg(test)]
pub(crate) struct ManualClock(tokio::sync::watch::Sender<Instant>, Instant, i64);

#[cfg(test)]
impl ManualClock {
    /// Starts at the real now.
    pub(crate) fn new() -> Arc<ManualClock> {
        let start = Instant::now();
        Arc::new(ManualClock(
            tokio::sync::watch::channel(start).0,
            start,
            now_ms(),
        ))
    }

    /// Moves the clock on by `by`, waking whatever sleeps until then.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        self.0.send_modify(|now| *now += by);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.borrow()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut now = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, never.
            if now.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    /// The real wall time it started at, moved on as it is.
    fn now_ms(&self) -> i64 {
        let moved = self.now().duration_since(self.1);
        self.2 + i64::try_from(moved.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The clock a silo uses unless a test gives it another.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
