//! The silo's clocks: wall time in the units the stores and the wait-for
//! graph stamp with, and [`Clock`], the monotonic time that deadlines,
//! idle collection and retention are measured on, which tests replace.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

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

/// Monotonic time as the silo's time-driven code reads it. The silo runs
/// on [`SystemClock`]; a test hands an activation a clock it moves by
/// hand, so idle collection or retention is tested without sleeping.
pub(crate) trait Clock: Send + Sync + 'static {
    /// Now, on tokio's clock (which a paused test runtime also controls).
    fn now(&self) -> Instant;
}

/// tokio's clock: real time, or a paused test runtime's.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The clock a silo uses unless a test gives it another.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
