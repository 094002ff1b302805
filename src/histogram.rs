//! A histogram with fixed bucket bounds, recorded without locks: one atomic
//! add for the bucket and one for the sum. Bounds are integers in the unit the
//! caller observes in (nanoseconds, writes); exporters scale them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of observations by bucket, plus their sum.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive), strictly ascending; one more bucket holds the rest.
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (strictly ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds must ascend");
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    /// Count one observation of `value`.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts so far. The count is the sum of the buckets read, so the
    /// cumulative counts always end at it even while others observe.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut running = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.load(Ordering::Relaxed);
            if i < self.bounds.len() {
                cumulative.push(running);
            }
        }
        HistogramSnapshot { bounds: self.bounds, cumulative, count: running, sum: self.sum.load(Ordering::Relaxed) }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds (inclusive).
    pub bounds: &'static [u64],
    /// Observations at or below each bound (`cumulative[i]` for `bounds[i]`).
    pub cumulative: Vec<u64>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// The sum of the observed values.
    pub sum: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        static BOUNDS: [u64; 3] = [1, 10, 100];
        let h = Histogram::new(&BOUNDS);
        for v in [0, 1, 2, 10, 11, 100, 101, 5000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 6]);
        assert_eq!(s.count, 8);
        assert_eq!(s.sum, 5225);
    }
}
