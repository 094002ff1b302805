//! Online compaction under a simulated history: `JOBQ_HISTORY_JOBS` jobs (default
//! 300,000) each go through five versions — pushed, started, tagged, finished,
//! annotated — written durably in batches of 100 by two writers, while a third
//! thread counts and lists (100 rows) without pause. The store runs as `serve`
//! does (background index maintenance and compaction at the default ratio 0.3,
//! checked every second) with 8 MiB segments (`JOBQ_HISTORY_SEGMENT` bytes), as
//! small beside this store as 64 MiB ones beside a 10M-job store. At the end: the store's size on
//! disk against a fresh import of its own export, and query p99 while no cycle
//! runs against while one does.
//!
//! `JOBQ_HISTORY_QPS` paces the queries (default: back to back, a core's worth).
//! `JOBQ_HISTORY_RATE` paces the writers to that many job versions a second in
//! all (default: as fast as they go). Two hours of a platform running 100,000 jobs
//! is about 70 versions a second; the default pace compresses that a hundredfold
//! and more, so compaction has far less time than in life.
//!
//! Run: `cargo bench --bench history`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jobq::model::JobKey;
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{JobState, Options, Store};

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let m = e.metadata().expect("stat");
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}

/// Bytes of log segments and of index files under `dir`.
fn split_bytes(dir: &Path) -> (u64, u64) {
    let (mut log, mut idx) = (0, 0);
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let m = e.metadata().expect("stat");
        if m.is_dir() {
            let (l, i) = split_bytes(&e.path());
            log += l;
            idx += i;
        } else if e.file_name().to_string_lossy().ends_with(".jql") {
            log += m.len();
        } else if e.file_name().to_string_lossy().ends_with(".jqi") {
            idx += m.len();
        }
    }
    (log, idx)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let jobs: u32 = std::env::var("JOBQ_HISTORY_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let rate: Option<f64> = std::env::var("JOBQ_HISTORY_RATE").ok().and_then(|v| v.parse().ok());
    let qps: Option<f64> = std::env::var("JOBQ_HISTORY_QPS").ok().and_then(|v| v.parse().ok());
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("jobq-bench/history");
    let _ = std::fs::remove_dir_all(&root);
    let opts = Options {
        compact_when: Some(std::env::var("JOBQ_HISTORY_RATIO").ok().and_then(|v| v.parse().ok()).unwrap_or(0.2)),
        reclaim_every: Duration::from_secs(1),
        segment_bytes: std::env::var("JOBQ_HISTORY_SEGMENT").ok().and_then(|v| v.parse().ok()).unwrap_or(8 << 20),
        ..Options::default()
    };
    let store = Store::open(root.join("store"), opts).expect("open");
    let done = AtomicBool::new(false);
    let (mut idle, mut busy): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    let mut peak = 0u64;
    let mut peak_split = (0u64, 0u64);
    std::thread::scope(|s| {
        let q = s.spawn(|| {
            let (mut idle, mut busy) = (Vec::new(), Vec::new());
            let finished = Filter { states: vec![JobState::Finished], ..Filter::default() };
            let tagged = Filter { has_tags: vec!["x".into()], ..Filter::default() };
            let page = Paging { count: 100, start: 0, stop: None, startafter: None };
            let mut i = 0u64;
            let began = Instant::now();
            while !done.load(Ordering::Relaxed) {
                i += 1;
                if let Some(q) = qps {
                    let due = Duration::from_secs_f64(i as f64 / q);
                    if let Some(wait) = due.checked_sub(began.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let active = store.reclaim_stats().active.load(Ordering::Relaxed);
                let t = Instant::now();
                let snap = store.snapshot();
                if i.is_multiple_of(2) {
                    snap.count(1, &finished).expect("count");
                } else {
                    let mut out = Vec::new();
                    for h in snap.list(1, &tagged, &page).expect("list") {
                        snap.render_row(1, &h, None, &mut out).expect("render");
                    }
                }
                let ns = t.elapsed().as_nanos() as u64;
                if active {
                    busy.push(ns)
                } else {
                    idle.push(ns)
                }
            }
            (idle, busy)
        });
        let writers: Vec<_> =
            (0..2u32)
                .map(|w| {
                    let store = &store;
                    s.spawn(move || {
                        let mut n = w;
                        let started = Instant::now();
                        let mut written = 0f64;
                        while n < jobs {
                            if let Some(r) = rate {
                                // Each writer does half the versions: 5 per job.
                                let due = Duration::from_secs_f64(written / (r / 2.0));
                                if let Some(wait) = due.checked_sub(started.elapsed()) {
                                    std::thread::sleep(wait);
                                }
                            }
                            let count = 100.min(jobs - n);
                            let lines: Vec<_> = (0..count)
                            .map(|i| {
                                let line = format!(
                                    r#"{{"spider":"spider-{}","tags":["t{}"],"args":{{"n":{}}},"version":"1.4.{}"}}"#,
                                    (n + i) % 17, (n + i) % 13, n + i, (n + i) % 7
                                );
                                parse_push(&line).expect("line")
                            })
                            .collect();
                            let keys: Vec<JobKey> = store
                                .push(1, &lines, Some("scheduler"))
                                .expect("push")
                                .into_iter()
                                .filter_map(|r| match r {
                                    PushResult::Pushed { key, .. } => Some(key),
                                    PushResult::Conflict { .. } => None,
                                })
                                .collect();
                            for change in [
                                r#""state":"running""#,
                                r#""add_tag":"x""#,
                                r#""state":"finished","close_reason":"finished""#,
                                r#""items":1234,"pages":56"#,
                            ] {
                                let ups: Vec<_> = keys
                                    .iter()
                                    .map(|k| parse_update(&format!(r#"{{"key":"{k}",{change}}}"#), 1).expect("update"))
                                    .collect();
                                store.update(1, &ups, Some("runner")).expect("update");
                            }
                            written += 5.0 * f64::from(count);
                            n += 2 * 100;
                        }
                    })
                })
                .collect();
        while writers.iter().any(|h| !h.is_finished()) {
            let now = dir_bytes(&root.join("store"));
            if std::env::var_os("JOBQ_HISTORY_TRACE").is_some() {
                let (l, i) = split_bytes(&root.join("store"));
                eprintln!(
                    "{:6.1}s log {:6.2} MiB idx {:5.2} MiB ratio {:.2} cycles {} active {}",
                    t0.elapsed().as_secs_f64(),
                    l as f64 / 1048576.0,
                    i as f64 / 1048576.0,
                    store.superseded_ratio().unwrap_or(0.0),
                    store.reclaim_stats().cycles.load(Ordering::Relaxed),
                    store.reclaim_stats().active.load(Ordering::Relaxed)
                );
            }
            if now > peak {
                peak = now;
                peak_split = split_bytes(&root.join("store"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for h in writers {
            h.join().expect("writer");
        }
        // Let compaction catch up, as a server would between bursts.
        let settle = Instant::now();
        while store.superseded_ratio().expect("ratio") >= 0.3 && settle.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(500));
        }
        done.store(true, Ordering::Relaxed);
        (idle, busy) = q.join().expect("queries");
    });
    let secs = t0.elapsed().as_secs_f64();
    let stats = store.reclaim_stats();
    let cycles = stats.cycles.load(Ordering::Relaxed);
    let ratio = store.superseded_ratio().expect("ratio");
    let mut export = Vec::new();
    store.export(None, &mut export).expect("export");
    store.close().expect("close");
    let size = dir_bytes(&root.join("store"));
    let fresh = Store::open(root.join("fresh"), Options::default()).expect("open fresh");
    fresh.import(&mut export.as_slice(), &mut |_| {}).expect("import");
    fresh.close().expect("close fresh");
    let fresh_size = dir_bytes(&root.join("fresh"));
    println!("| {jobs} jobs x 5 versions | value |");
    println!("|---|---:|");
    println!(
        "| history written in | {secs:.1} s ({}) |",
        rate.map_or("unpaced".to_string(), |r| format!("paced to {r} versions/s"))
    );
    println!("| compaction cycles | {cycles} |");
    println!("| superseded share at the end | {ratio:.2} |");
    println!(
        "| disk at the end / fresh import of the same jobs | {:.1} MiB / {:.1} MiB = {:.2}x |",
        size as f64 / 1048576.0,
        fresh_size as f64 / 1048576.0,
        size as f64 / fresh_size as f64
    );
    let fresh_split = split_bytes(&root.join("fresh"));
    println!(
        "| disk peak during the history | {:.1} MiB ({:.2}x): log {:.1} MiB, index {:.1} MiB (fresh: {:.1} / {:.1}) |",
        peak as f64 / 1048576.0,
        peak as f64 / fresh_size as f64,
        peak_split.0 as f64 / 1048576.0,
        peak_split.1 as f64 / 1048576.0,
        fresh_split.0 as f64 / 1048576.0,
        fresh_split.1 as f64 / 1048576.0
    );
    let (i99, b99) = (pct(&mut idle, 0.99), pct(&mut busy, 0.99));
    println!(
        "| query p99 without / during a cycle ({} / {} queries) | {:.0} µs / {:.0} µs = {:.2}x |",
        idle.len(),
        busy.len(),
        i99 as f64 / 1e3,
        b99 as f64 / 1e3,
        b99 as f64 / i99.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&root);
}
