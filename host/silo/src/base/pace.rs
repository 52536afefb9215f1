//! How the silo's loops wait: a doubling backoff for retries, and a pause
//! or a tick that ends early when the silo stops (every background loop
//! watches the same stop signal).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Interval;

/// Delays that double from `first` up to `max`.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Waits `period`; false if the silo stopped first (or had stopped).
pub(crate) async fn pause(period: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopping.wait_for(|stop| *stop) => false,
        _ = tokio::time::sleep(period) => true,
    }
}

/// Waits for `ticker`'s next tick; false if the silo stopped first.
pub(crate) async fn tick(ticker: &mut Interval, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopping.wait_for(|stop| *stop) => false,
        _ = ticker.tick() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_early_when_the_silo_stops() {
        let (stop, mut stopping) = watch::channel(false);
        assert!(pause(Duration::from_secs(1), &mut stopping).await);
        stop.send(true).unwrap();
        assert!(!pause(Duration::from_secs(3600), &mut stopping).await);
    }
}
