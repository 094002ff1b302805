//! jobq vs SQLite on the same generated jobs and the same query mix (issue 6).
//!
//! Measures, for each side: bulk load time, open time, disk size, peak memory
//! (VmHWM of a child process per phase), p50/p99 per query shape (counts and
//! lists of 100 with rows rendered), durable write rates with 1 and 32 writers;
//! plus the machine's raw fdatasync rate. Checks that both sides give the same
//! counts and the same keys in the same order for every query. Prints markdown.
//!
//! Run (from the repository root):
//! `cargo run --release --manifest-path benches/compare/Cargo.toml -- --jobs 1000000`
//! (`--help` for the options; `--jobs 10000000` for 10M).

#[allow(dead_code)]
#[path = "../../support/dataset.rs"]
mod dataset;
#[allow(dead_code)]
#[path = "../../support/fsync_rate.rs"]
mod fsync_rate;
#[allow(dead_code)]
#[path = "../../support/jobq_run.rs"]
mod jobq_run;
mod passes;
#[allow(dead_code)]
#[path = "../../support/queries.rs"]
mod queries;
#[allow(dead_code)]
#[path = "../../support/timing.rs"]
mod timing;

mod config;
mod jobq_side;
mod machine;
mod proto;
mod report;
mod sqlite_load;
mod sqlite_query;
mod sqlite_side;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use config::Config;
use proto::{LoadOut, QueryOut, Side, WriteOut};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n\n{}", config::USAGE);
            std::process::exit(2);
        }
    };
    if let Some((side, phase)) = &cfg.child {
        let out = run_child(&cfg, *side, phase);
        println!("{}{out}", proto::RESULT_PREFIX);
        return;
    }
    parent(&cfg);
}

/// One phase of one side, in this (child) process; its result as JSON.
fn run_child(cfg: &Config, side: Side, phase: &str) -> String {
    let ds = dataset::Dataset::new(cfg.jobs, cfg.seed);
    let dir = cfg.store_dir(side);
    let json = match (side, phase) {
        (Side::Jobq, "load") => serde_json::to_string(&jobq_side::load(&cfg.data_file(), &dir)),
        (Side::Sqlite, "load") => serde_json::to_string(&sqlite_load::load(&cfg.data_file(), &dir)),
        (_, "query") => {
            let facts = queries::Facts::gather(&ds);
            let cases = queries::mix(&ds, &facts, cfg.variants);
            match side {
                Side::Jobq => serde_json::to_string(&jobq_side::query(cfg, &dir, &cases)),
                Side::Sqlite => serde_json::to_string(&sqlite_side::query(cfg, &dir, &cases)),
            }
        }
        (Side::Jobq, "write1") => serde_json::to_string(&jobq_side::write(cfg, &dir, 1)),
        (Side::Sqlite, "write1") => serde_json::to_string(&sqlite_side::write(cfg, &dir, 1)),
        (Side::Jobq, "writeN") => serde_json::to_string(&jobq_side::write(cfg, &dir, cfg.writers)),
        (Side::Sqlite, "writeN") => serde_json::to_string(&sqlite_side::write(cfg, &dir, cfg.writers)),
        _ => panic!("unknown phase {phase}"),
    };
    json.expect("serialise result")
}

/// Run this program as a child for one phase; parse its result line.
fn child<T: serde::de::DeserializeOwned>(cfg: &Config, side: Side, phase: &str) -> T {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(cfg.child_args(side, phase)).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let out = cmd.output().expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find_map(|l| l.strip_prefix(proto::RESULT_PREFIX));
    match (out.status.success(), line) {
        (true, Some(l)) => serde_json::from_str(l).expect("child result"),
        _ => panic!("{} {phase} failed ({}):\n{text}", side.name(), out.status),
    }
}

/// The data file, generated if missing.
fn ensure_data(cfg: &Config) -> (PathBuf, u64) {
    let path = cfg.data_file();
    if let Ok(m) = std::fs::metadata(&path) {
        return (path, m.len());
    }
    std::fs::create_dir_all(path.parent().expect("data dir")).expect("create data dir");
    let tmp = path.with_extension("tmp");
    let t = Instant::now();
    eprintln!("generating {} jobs into {} ...", cfg.jobs, path.display());
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).expect("data file"));
    let n = dataset::Dataset::new(cfg.jobs, cfg.seed).write_to(&mut f).expect("write data");
    f.flush().expect("flush data");
    drop(f);
    std::fs::rename(&tmp, &path).expect("rename data");
    eprintln!("generated {:.1} MB in {:.1} s", n as f64 / 1e6, t.elapsed().as_secs_f64());
    (path, n)
}

/// Everything measured for one side.
#[derive(Default)]
pub struct SideRun {
    pub load: Option<LoadOut>,
    pub disk: u64,
    pub query: Option<QueryOut>,
    /// Writes per second of each round, 1 writer and `--writers` writers.
    pub single: Vec<f64>,
    pub multi: Vec<f64>,
}

/// Load (unless reused) and query one side.
fn load_and_query(cfg: &Config, side: Side) -> SideRun {
    let dir = cfg.store_dir(side);
    let marker = dir.with_extension("loaded");
    let load = if cfg.reuse && marker.exists() {
        eprintln!("{}: reusing {}", side.name(), dir.display());
        None
    } else {
        let _ = std::fs::remove_file(&marker);
        eprintln!("{}: loading ...", side.name());
        let l: LoadOut = child(cfg, side, "load");
        std::fs::write(&marker, b"").expect("marker");
        eprintln!("{}: loaded {} jobs in {:.2} s", side.name(), l.jobs, l.millis / 1e3);
        Some(l)
    };
    let disk = machine::disk_usage(&dir);
    let query = cfg.phase("query").then(|| {
        eprintln!("{}: queries ...", side.name());
        child::<QueryOut>(cfg, side, "query")
    });
    SideRun { load, disk, query, ..SideRun::default() }
}

/// Durable-write rounds, the sides and tests interleaved so that both see the
/// same disk; the raw fdatasync rate is measured in every round too.
fn write_rounds(cfg: &Config, runs: &mut [SideRun; 2], raw: &mut Vec<(f64, f64)>) {
    let fsync_dir = cfg.work.join("fsync");
    std::fs::create_dir_all(&fsync_dir).expect("fsync dir");
    for side in [Side::Jobq, Side::Sqlite] {
        let _ = std::fs::remove_file(cfg.store_dir(side).with_extension("loaded"));
    }
    for round in 0..cfg.write_rounds {
        eprintln!("durable writes, round {} of {} ...", round + 1, cfg.write_rounds);
        let t = Duration::from_secs(2);
        raw.push((fsync_rate::appends_per_sec(&fsync_dir, 300, t), fsync_rate::overwrites_per_sec(&fsync_dir, 300, t)));
        for phase in ["write1", "writeN"] {
            for (i, side) in [Side::Jobq, Side::Sqlite].into_iter().enumerate() {
                let w: WriteOut = child(cfg, side, phase);
                let v = if phase == "write1" { &mut runs[i].single } else { &mut runs[i].multi };
                v.push(w.rate.per_sec());
            }
        }
    }
}

fn parent(cfg: &Config) {
    let started = Instant::now();
    let load_before = machine::loadavg();
    let probes_before = machine::speed_probes();
    let (data, data_bytes) = ensure_data(cfg);
    let mut runs = [load_and_query(cfg, Side::Jobq), load_and_query(cfg, Side::Sqlite)];
    let mut raw = Vec::new();
    if cfg.phase("write") {
        write_rounds(cfg, &mut runs, &mut raw);
    }
    if !cfg.keep {
        for side in [Side::Jobq, Side::Sqlite] {
            let dir = cfg.store_dir(side);
            let _ = std::fs::remove_file(dir.with_extension("loaded"));
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let ctx = report::Context {
        cfg,
        data: &data,
        data_bytes,
        raw_fsync: raw,
        load_before,
        load_after: machine::loadavg(),
        speed_probes: (probes_before, machine::speed_probes()),
        machine: machine::describe(),
        elapsed: started.elapsed(),
    };
    let mut out = String::new();
    report::write(&mut out, &ctx, &runs[0], &runs[1]);
    println!("{out}");
    if let Some(path) = &cfg.report {
        std::fs::write(path, &out).expect("write report");
    }
}
