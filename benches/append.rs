//! Criterion bench of durable appends (push of one ~300-byte job per call):
//! one writer with Sync durability (fdatasync before each push returns), 8
//! concurrent writers with Sync (group commit: waiting writers share an
//! fdatasync), and one writer with Buffered durability. Throughput is in pushes
//! per second; the machine's raw append+fdatasync rate on the same file system
//! is measured and printed before and after, for scale.
//!
//! Run: `cargo bench --bench append`. Stores go under target/jobq-bench/.

#[allow(dead_code)]
#[path = "support/cached.rs"]
mod cached;
#[allow(dead_code)]
#[path = "support/dataset.rs"]
mod dataset;
#[path = "support/fsync_rate.rs"]
mod fsync_rate;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jobq::store::request::parse_push;
use jobq::{Durability, Options, Store};

const JOB: &str = r#"{"spider":"spider-7","priority":2,"tags":["tag-0","tag-13"],"units":1,"version":"1.4.27-py3","spider_args":{"start_url":"https://www.shop-1234.example.com/c/77123?page=3","max_pages":120},"scheduled_by":"user17@example.org"}"#;

fn fresh(name: &str, durability: Durability) -> (Store, std::path::PathBuf) {
    let dir = cached::bench_root().join(format!("append-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    (Store::open(&dir, Options { durability, ..Options::default() }).expect("open"), dir)
}

/// `iters` pushes spread over `writers` threads; the elapsed wall time.
fn pushes(store: &Store, writers: u64, iters: u64) -> Duration {
    let spec = parse_push(JOB).expect("spec");
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let n = iters / writers + u64::from(w < iters % writers);
            let (store, spec) = (store, &spec);
            s.spawn(move || {
                for _ in 0..n {
                    store.push(53, std::slice::from_ref(spec), None).expect("push");
                }
            });
        }
    });
    t.elapsed()
}

fn appends(c: &mut Criterion) {
    let root = cached::bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    raw_rate(&root, "before");

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, durability, writers) in [
        ("1 writer Sync", Durability::Sync, 1),
        ("8 writers Sync", Durability::Sync, 8),
        ("1 writer Buffered", Durability::Buffered, 1),
    ] {
        let (store, dir) = fresh(&name.replace(' ', "-"), durability);
        g.bench_function(name, |b| b.iter_custom(|iters| pushes(&store, writers, iters)));
        store.close().expect("close");
        let _ = std::fs::remove_dir_all(dir);
    }
    g.finish();
    raw_rate(&root, "after");
}

/// The disk is shared: its raw rate is measured before and after the benches.
fn raw_rate(dir: &std::path::Path, when: &str) {
    let t = Duration::from_millis(if cached::bench_mode() { 2000 } else { 100 });
    let raw = fsync_rate::appends_per_sec(dir, 300, t);
    let over = fsync_rate::overwrites_per_sec(dir, 300, t);
    eprintln!("raw {when}: {raw:.0} appends+fdatasync/s, {over:.0} overwrites+fdatasync/s (300 B, {})", dir.display());
}

criterion_group!(benches, appends);
criterion_main!(benches);
