//! The generated store the query benches read: built once by importing a
//! generated dataset, kept under `target/jobq-bench/`, and reused while it opens.
//! `JOBQ_BENCH_JOBS` sets the number of jobs (default 1,000,000; 20,000 when a
//! bench runs as a smoke test under `cargo test --benches`). Needs `dataset`.

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use super::dataset::{Dataset, GEN_VERSION};

pub const SEED: u64 = 42;

/// Run by `cargo bench` (with `--bench`), not as a smoke test by `cargo test --benches`.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// 1M jobs under `cargo bench`, 20k in a smoke test; `JOBQ_BENCH_JOBS` overrides.
pub fn jobs_from_env() -> u64 {
    let default = if bench_mode() { 1_000_000 } else { 20_000 };
    std::env::var("JOBQ_BENCH_JOBS").ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// `target/jobq-bench` (or under `CARGO_TARGET_DIR`).
pub fn bench_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("jobq-bench")
}

/// The directory of the store holding `ds`, built if missing or unusable.
pub fn store_for(ds: &Dataset) -> PathBuf {
    let dir = bench_root().join(format!("store-{}-s{}-g{GEN_VERSION}", ds.jobs, ds.seed));
    let done = dir.with_extension("ok");
    if done.exists() {
        match jobq::Store::open(&dir, jobq::Options::default()).and_then(|s| s.close()) {
            Ok(()) => return dir,
            Err(e) => eprintln!("cached store {} unusable ({e}); rebuilding", dir.display()),
        }
    }
    let _ = std::fs::remove_file(&done);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench store dir");
    eprintln!("building {} ({} jobs) ...", dir.display(), ds.jobs);
    let t = Instant::now();
    let store = jobq::Store::open(&dir, jobq::Options::default()).expect("open bench store");
    let report = store.import(&mut BufReader::with_capacity(1 << 20, ds.reader()), &mut |_| {}).expect("import");
    store.close().expect("close");
    std::fs::write(&done, b"").expect("mark bench store");
    eprintln!("built in {:.1} s ({} jobs, {} bytes of JSON)", t.elapsed().as_secs_f64(), report.jobs, report.bytes);
    dir
}
