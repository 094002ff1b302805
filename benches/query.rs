//! Criterion bench of reads on a generated store of 1M jobs (skewed projects,
//! Zipf spiders and tags; see benches/support/dataset.rs): count and list of 100
//! (rows rendered) for every shape of the query mix in benches/support/queries.rs
//! (single filters, combinations, the worst: biggest project, finished, has 3
//! common tags, lacks 1; deep `start`, `stop`), each cycling through its
//! variants; and the time to open that store.
//!
//! Run: `cargo bench --bench query` (`-- 'count/'` to filter). The store is built
//! once into target/jobq-bench/ and reused; `JOBQ_BENCH_JOBS=50000` for a small one.
//! p50/p99 per shape: `cargo bench --bench latency`.

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

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

fn reads(c: &mut Criterion) {
    let ds = dataset::Dataset::new(cached::jobs_from_env(), cached::SEED);
    let dir = cached::store_for(&ds);
    let facts = queries::Facts::gather(&ds);
    let cases = queries::mix(&ds, &facts, 8);

    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function(format!("{} jobs", ds.jobs), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open");
                total += t.elapsed();
                store.close().expect("close");
            }
            total
        })
    });
    g.finish();

    let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open");
    let snap = store.snapshot();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut g = c.benchmark_group("query");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(40);
    for group in queries::groups(&cases) {
        let name = format!("{}/{}", group[0].kind.name(), group[0].shape);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % group.len();
                black_box(jobq_run::run(&snap, &group[i], &mut buf))
            })
        });
    }
    g.finish();
    drop(snap);
    store.close().expect("close");
}

criterion_group!(benches, reads);
criterion_main!(benches);
