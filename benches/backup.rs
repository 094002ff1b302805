//! `jobq backup` on the generated 1M-job store of the query bench: a full backup
//! into an empty directory on the same file system (hard links for sealed segments
//! and index files, a copy of the last segment), then 10,000 durable writes to the
//! source (100 pushes of 100 jobs), then an incremental backup; both checked against
//! the source (same export). Prints the figures.
//!
//! Run: `cargo bench --bench backup` (`JOBQ_BENCH_JOBS=50000` for a small store).

#[allow(dead_code)]
#[path = "support/cached.rs"]
mod cached;
#[allow(dead_code)]
#[path = "support/dataset.rs"]
mod dataset;

use std::sync::Arc;
use std::time::Instant;

use jobq::fs::RealFs;
use jobq::store::request::parse_push;
use jobq::{Options, Store};

fn export(dir: &std::path::Path) -> Vec<u8> {
    let store = Store::open(dir, Options { read_only: true, create: false, ..Options::default() }).expect("open");
    let mut out = Vec::new();
    store.export(None, &mut out).expect("export");
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ds = dataset::Dataset::new(cached::jobs_from_env(), cached::SEED);
    let cached_dir = cached::store_for(&ds);
    // A private copy of the cached store: the bench writes to its source.
    let root = cached::bench_root().join("backup");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    let src = root.join("src");
    jobq::store::backup(&cached_dir, &src, Arc::new(RealFs)).expect("copy the cached store");
    let dest = root.join("dest");
    let t = Instant::now();
    let full = jobq::store::backup(&src, &dest, Arc::new(RealFs)).expect("full backup");
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    let store = Store::open(&src, Options::default()).expect("open the source");
    let line = parse_push(r#"{"spider":"bench-backup","tags":["b"],"n":1}"#).expect("line");
    for _ in 0..100 {
        store.push(7, &vec![line.clone(); 100], None).expect("push");
    }
    let t = Instant::now();
    let inc = jobq::store::backup(&src, &dest, Arc::new(RealFs)).expect("incremental backup");
    let inc_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(store);
    let same = export(&src) == export(&dest);
    println!("| backup of {} jobs | ms | linked | copied files | copied bytes |", ds.jobs);
    println!("|---|---:|---:|---:|---:|");
    println!("| full | {full_ms:.0} | {} | {} | {} |", full.linked, full.copied_files, full.copied_bytes);
    println!(
        "| incremental after 10,000 writes | {inc_ms:.0} | {} | {} | {} |",
        inc.linked, inc.copied_files, inc.copied_bytes
    );
    println!("copy equals the source: {same}");
    assert!(same, "the backup differs from the source");
    let _ = std::fs::remove_dir_all(&root);
}
