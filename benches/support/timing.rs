//! Latency sampling: run the variants of one query shape round-robin for a time
//! budget (with a floor and a cap on the number of runs) and summarise the
//! samples as p50/p99/mean.

use std::time::{Duration, Instant};

/// How long to sample one shape.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub min_runs: usize,
    pub max_runs: usize,
    pub time: Duration,
}

/// Sorted latencies in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub ns: Vec<u64>,
}

impl Summary {
    pub fn from(mut ns: Vec<u64>) -> Summary {
        ns.sort_unstable();
        Summary { ns }
    }

    /// The q-quantile (nearest rank).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.ns.is_empty() {
            return 0;
        }
        let rank = (q * self.ns.len() as f64).ceil() as usize;
        self.ns[rank.clamp(1, self.ns.len()) - 1]
    }

    pub fn p50(&self) -> u64 {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> u64 {
        self.quantile(0.99)
    }

    pub fn mean(&self) -> u64 {
        if self.ns.is_empty() {
            0
        } else {
            self.ns.iter().sum::<u64>() / self.ns.len() as u64
        }
    }
}

/// Time `run(i)` for i = 0, 1, 2 ... (the caller maps i to a variant) after
/// one untimed warm-up round over `variants`.
pub fn sample(variants: usize, budget: Budget, mut run: impl FnMut(usize)) -> Summary {
    for i in 0..variants {
        run(i);
    }
    let started = Instant::now();
    let mut ns = Vec::with_capacity(budget.min_runs);
    while ns.len() < budget.max_runs && (ns.len() < budget.min_runs || started.elapsed() < budget.time) {
        let i = ns.len() % variants.max(1);
        let t = Instant::now();
        run(i);
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Summary::from(ns)
}

/// A duration for a table: µs below 10 ms, else ms.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}
