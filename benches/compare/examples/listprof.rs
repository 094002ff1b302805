//! Profiling driver for lists (issue 11): runs the list cases of the query mix
//! whose shape contains ARG2 against the store in ARG1, ARG3 rounds, inside
//! `profiled` (for `valgrind --tool=callgrind --toggle-collect=*profiled*`).
//! With `LISTONLY` set in the environment the rows are listed, not rendered; with
//! `PERSHAPE` set, each shape's CPU time is printed, listed and rendered, and listed only.
//! With `COUNTS` set, the count cases of those shapes run instead (both columns: the count).
//! With `COLD` set, each case runs once on a freshly opened store (no cached
//! blocks) and again right after: per shape, the median wall time of both.
#[allow(dead_code)]
#[path = "../../support/dataset.rs"]
mod dataset;
#[allow(dead_code)]
#[path = "../../support/jobq_run.rs"]
mod jobq_run;
#[allow(dead_code)]
#[path = "../../support/queries.rs"]
mod queries;

use std::time::Instant;

#[inline(never)]
fn profiled(
    snap: &jobq::Snapshot,
    cases: &[&queries::Case],
    rounds: usize,
    list_only: bool,
    buf: &mut Vec<u8>,
) -> usize {
    let mut n = 0;
    for _ in 0..rounds {
        for c in cases {
            if c.kind == queries::Kind::Count {
                n += snap.count(c.project, &c.filter).expect("count") as usize;
                continue;
            }
            if list_only {
                n += snap.list(c.project, &c.filter, &c.paging).expect("list").len();
                continue;
            }
            if let jobq_run::Answer::Keys(k) = jobq_run::run(snap, c, buf) {
                n += k.len();
            }
        }
    }
    n
}

/// Each case on a store just opened, then again: the medians per shape (µs).
fn cold_and_warm(dir: &std::path::Path, sel: &[&queries::Case]) {
    let mut buf = Vec::with_capacity(1 << 16);
    let mut shapes: Vec<&str> = sel.iter().map(|c| c.shape).collect();
    shapes.dedup();
    eprintln!("{:<36} {:>10} {:>10}", "shape (wall us, median)", "first", "again");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for shape in shapes {
        let (mut first, mut again) = (Vec::new(), Vec::new());
        for c in sel.iter().filter(|c| c.shape == shape) {
            for _ in 0..3 {
                let store = jobq::Store::open(dir, jobq::Options::default()).expect("open");
                let snap = store.snapshot();
                for times in [&mut first, &mut again] {
                    let t = Instant::now();
                    profiled(&snap, &[c], 1, false, &mut buf);
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        eprintln!("{shape:<36} {:>10.1} {:>10.1}", median(&mut first), median(&mut again));
    }
}

/// This thread's time on a CPU (ns), from the scheduler: unlike wall time, not
/// inflated by other processes on a loaded machine.
fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&a[1]);
    let pat = a.get(2).cloned().unwrap_or_default();
    let rounds: usize = a.get(3).map_or(1, |s| s.parse().unwrap());
    let jobs: u64 = a.get(4).map_or(1_000_000, |s| s.parse().unwrap());
    let ds = dataset::Dataset::new(jobs, 42);
    let facts = queries::Facts::gather(&ds);
    let cases = queries::mix(&ds, &facts, 8);
    let counts = std::env::var_os("COUNTS").is_some();
    let sel: Vec<&queries::Case> = cases
        .iter()
        .filter(|c| (c.kind == queries::Kind::Count) == counts && c.shape.contains(pat.as_str()))
        .collect();
    if std::env::var_os("COLD").is_some() {
        return cold_and_warm(&dir, &sel);
    }
    let t = Instant::now();
    let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open");
    eprintln!("open: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let snap = store.snapshot();
    let mut buf = Vec::with_capacity(1 << 16);
    // Warm: every case once (maps made, pages touched).
    let list_only = std::env::var_os("LISTONLY").is_some();
    profiled(&snap, &sel, 1, list_only, &mut buf);
    if std::env::var_os("PERSHAPE").is_some() {
        // Each shape apart, the smallest CPU time of 3 runs (a loaded machine
        // inflates some), with and without rendering.
        let mut shapes: Vec<&str> = sel.iter().map(|c| c.shape).collect();
        shapes.dedup();
        eprintln!("{:<36} {:>10} {:>10} {:>10}", "shape (cpu us/query)", "list+rows", "list only", "rows");
        for shape in shapes {
            let cs: Vec<&queries::Case> = sel.iter().copied().filter(|c| c.shape == shape).collect();
            let mut best = [f64::MAX; 2];
            for _ in 0..3 {
                for (k, only) in [false, true].into_iter().enumerate() {
                    let c0 = cpu_ns();
                    profiled(&snap, &cs, rounds, only, &mut buf);
                    let us = (cpu_ns() - c0) as f64 / 1e3 / (cs.len() * rounds) as f64;
                    best[k] = best[k].min(us);
                }
            }
            eprintln!("{shape:<36} {:>10.1} {:>10.1} {:>10.1}", best[0], best[1], best[0] - best[1]);
        }
        return;
    }
    let t = Instant::now();
    let c0 = cpu_ns();
    let rows = profiled(&snap, &sel, rounds, list_only, &mut buf);
    let cpu = (cpu_ns() - c0) as f64 / 1e3;
    let el = t.elapsed();
    let q = (sel.len() * rounds) as f64;
    eprintln!(
        "{:<32} {} cases x {rounds}: wall {:.1} us/query; cpu {:.1} us/query, {:.3} us/row",
        pat,
        sel.len(),
        el.as_secs_f64() * 1e6 / q,
        cpu / q,
        cpu / rows.max(1) as f64
    );
}
