//! How many turns' commits each group commit wrote, counted by the writer
//! that gathers them and read by the metrics at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};

/// The buckets' upper bounds, in commits per batch: powers of two up to
/// 1,024 (a batch also stops at `GROUP_COMMIT_BYTES`); one more bucket
/// takes what is bigger.
pub(crate) const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Counts of batch sizes, by bucket.
#[derive(Debug, Default)]
pub(crate) struct BatchSizes {
    buckets: [AtomicU64; BATCH_BOUNDS.len() + 1],
    commits: AtomicU64,
}

/// A reading of [`BatchSizes`]: cumulative counts per upper bound (the
/// last, `f64::INFINITY`, is every batch), and the commits they held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSizeReading {
    pub cumulative: Vec<(f64, u64)>,
    pub commits: u64,
}

impl BatchSizes {
    /// Counts one batch of `commits` turns' commits.
    pub(crate) fn record(&self, commits: usize) {
        let commits = commits as u64;
        let bucket = BATCH_BOUNDS
            .iter()
            .position(|bound| commits <= *bound)
            .unwrap_or(BATCH_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.commits.fetch_add(commits, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> BatchSizeReading {
        let mut total = 0;
        let bounds = BATCH_BOUNDS.iter().map(|bound| *bound as f64);
        let cumulative = bounds
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        BatchSizeReading {
            cumulative,
            commits: self.commits.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fall_in_the_bucket_of_their_size_and_add_up() {
        let sizes = BatchSizes::default();
        for commits in [1, 1, 3, 1024, 1025] {
            sizes.record(commits);
        }
        let reading = sizes.read();
        assert_eq!(reading.commits, 2054);
        assert_eq!(reading.cumulative[0], (1.0, 2));
        assert_eq!(reading.cumulative[2], (4.0, 3), "3 falls under 4");
        assert_eq!(reading.cumulative[10], (1024.0, 4));
        assert_eq!(reading.cumulative[11], (f64::INFINITY, 5));
    }
}
