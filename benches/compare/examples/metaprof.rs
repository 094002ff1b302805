//! Cost of listing rows with `jobmeta` (issue 11, packed documents): runs the
//! list cases of the query mix whose shape contains ARG2 against the store in
//! ARG1, ARG3 rounds, rendering every row with the `jobmeta` fields of ARG5
//! (comma-separated; empty: rows without `jobmeta`). Compare a store of text
//! documents (format 6) with the same jobs packed (format 7), same binary.
#[allow(dead_code)]
#[path = "../../support/dataset.rs"]
mod dataset;
#[allow(dead_code)]
#[path = "../../support/queries.rs"]
mod queries;

use std::time::Instant;

/// This thread's time on a CPU (ns), from the scheduler.
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
    let fields: Vec<String> =
        a.get(5).map(|s| s.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()).unwrap_or_default();
    let meta = (!fields.is_empty()).then_some(fields.as_slice());
    let ds = dataset::Dataset::new(jobs, 42);
    let facts = queries::Facts::gather(&ds);
    let cases = queries::mix(&ds, &facts, 8);
    let sel: Vec<&queries::Case> =
        cases.iter().filter(|c| c.kind != queries::Kind::Count && c.shape.contains(pat.as_str())).collect();
    // Writable, as a server opens it: every sealed segment is mapped (a read-only
    // opener reads its last segment positionally).
    let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open");
    let snap = store.snapshot();
    let mut buf = Vec::with_capacity(1 << 16);
    let hits: Vec<_> = sel.iter().map(|c| (c.project, snap.list(c.project, &c.filter, &c.paging).expect("list"))).collect();
    let render = |buf: &mut Vec<u8>| {
        let mut n = 0;
        for (p, hs) in &hits {
            buf.clear();
            for h in hs {
                snap.render_row(*p, h, meta, buf).expect("render");
                n += 1;
            }
        }
        n
    };
    render(&mut buf);
    let c0 = cpu_ns();
    let t = Instant::now();
    let mut rows = 0;
    for _ in 0..rounds {
        rows += render(&mut buf);
    }
    let cpu = (cpu_ns() - c0) as f64;
    eprintln!(
        "{pat:<16} jobmeta {:<40} {} rows x {rounds}: cpu {:.0} ns/row, wall {:.0} ns/row",
        format!("{fields:?}"),
        rows / rounds.max(1),
        cpu / rows.max(1) as f64,
        t.elapsed().as_nanos() as f64 / rows.max(1) as f64
    );
}
