//! Counts an event that may repeat very often (a refused connection, an
//! `overloaded` answer) so the log gets one line per period with a count,
//! not one line per event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per event kind this often.
const PERIOD: Duration = Duration::from_secs(10);

/// One kind of event, counted between log lines.
pub(crate) struct LogSummary {
    state: Mutex<SummaryState>,
}

struct SummaryState {
    /// When the last line was logged; `None` before the first event.
    logged_at: Option<Instant>,
    /// Events since then, this one included.
    count: u64,
}

impl LogSummary {
    pub(crate) const fn new() -> LogSummary {
        LogSummary {
            state: Mutex::new(SummaryState {
                logged_at: None,
                count: 0,
            }),
        }
    }

    /// Counts one event. `Some(n)` when it is time to log a line: the first
    /// event, then the first one a period after the last line, with `n`
    /// the events since that line (this one included).
    pub(crate) fn note(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.count += 1;
        let now = Instant::now();
        let due = state
            .logged_at
            .is_none_or(|logged_at| now.duration_since(logged_at) >= PERIOD);
        if !due {
            return None;
        }
        state.logged_at = Some(now);
        Some(std::mem::take(&mut state.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_logged_and_the_next_ones_only_counted() {
        let summary = LogSummary::new();
        assert_eq!(summary.note(), Some(1));
        for _ in 0..99 {
            assert_eq!(summary.note(), None);
        }
        // A period later the next event reports all those counted meanwhile.
        summary.state.lock().unwrap().logged_at = Some(Instant::now() - PERIOD);
        assert_eq!(summary.note(), Some(100));
        assert_eq!(summary.note(), None);
    }
}
