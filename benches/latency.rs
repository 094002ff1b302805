//! p50/p99 latency per query shape on the generated 1M-job store of the query
//! bench (criterion reports means only): each shape's variants run round-robin
//! for up to a second (at least 200 runs), counts and lists of 100 with rows
//! rendered, one thread, warm page cache. Prints a markdown table.
//!
//! Run: `cargo bench --bench latency` (`JOBQ_BENCH_JOBS=50000` for a small store;
//! for profiling, `JOBQ_BENCH_SHAPE=worst` runs only shapes whose name contains
//! it, and `JOBQ_BENCH_SECS=10` samples each shape that long).

#[allow(dead_code)]
#[path = "support/cached.rs"]
mod cached;
#[allow(dead_code)]
#[path = "support/dataset.rs"]
mod dataset;
#[allow(dead_code)]
#[path = "support/jobq_run.rs"]
mod jobq_run;
#[allow(dead_code)]
#[path = "support/queries.rs"]
mod queries;
#[allow(dead_code)]
#[path = "support/timing.rs"]
mod timing;

use std::time::{Duration, Instant};

use jobq_run::Answer;
use timing::{fmt_ns, Budget};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ds = dataset::Dataset::new(cached::jobs_from_env(), cached::SEED);
    let dir = cached::store_for(&ds);
    let t = Instant::now();
    let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open");
    let open = t.elapsed();
    let facts = queries::Facts::gather(&ds);
    let cases = queries::mix(&ds, &facts, 8);
    let snap = store.snapshot();
    let only = std::env::var("JOBQ_BENCH_SHAPE").unwrap_or_default();
    let quick = if cached::bench_mode() { 1.0 } else { 0.01 };
    let secs: f64 = std::env::var("JOBQ_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(quick);
    let max_runs = if secs > 1.0 { usize::MAX } else { 100_000 };
    let min_runs = if cached::bench_mode() { 200 } else { 1 };
    let budget = Budget { min_runs, max_runs, time: Duration::from_secs_f64(secs) };
    let mut buf = Vec::with_capacity(1 << 16);
    println!("jobq, {} jobs, open {:.1} ms\n", ds.jobs, open.as_secs_f64() * 1e3);
    println!("| shape | kind | runs | p50 | p99 | mean | results (first variant) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for group in queries::groups(&cases).into_iter().filter(|g| g[0].shape.contains(only.as_str())) {
        let s = timing::sample(group.len(), budget, |i| {
            std::hint::black_box(jobq_run::run(&snap, &group[i], &mut buf));
        });
        let result = match jobq_run::run(&snap, &group[0], &mut buf) {
            Answer::Count(n) => n,
            Answer::Keys(k) => k.len() as u64,
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            group[0].shape,
            group[0].kind.name(),
            s.ns.len(),
            fmt_ns(s.p50()),
            fmt_ns(s.p99()),
            fmt_ns(s.mean()),
            result
        );
    }
    drop(snap);
    store.close().expect("close");
}
