//! The jobq side: bulk import, open, the query mix, durable pushes.

use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jobq::store::request::parse_push;
use jobq::{Options, Store};

use crate::config::Config;
use crate::dataset::BIG_PROJECT;
use crate::jobq_run::{self, Answer as JAnswer};
use crate::machine::vm_hwm_kb;
use crate::passes;
use crate::proto::{Answer, LoadOut, QueryOut, Rate, WriteOut};
use crate::queries::{groups, Case};

/// The job each durable write pushes (as in benches/append.rs), per writer spider.
pub fn push_line(writer: usize) -> String {
    format!(
        r#"{{"spider":"spider-{}","priority":2,"tags":["tag-0","tag-13"],"units":1,"version":"1.4.27-py3","spider_args":{{"start_url":"https://www.shop-1234.example.com/c/77123?page=3","max_pages":120}},"scheduled_by":"user17@example.org"}}"#,
        1 + writer % 10
    )
}

/// Import the data file into a new store in `dir`, and close it.
pub fn load(data: &Path, dir: &Path) -> LoadOut {
    let _ = std::fs::remove_dir_all(dir);
    let t = Instant::now();
    let store = Store::open(dir, Options::default()).expect("create jobq store");
    let file = std::fs::File::open(data).expect("open data file");
    let report = store.import(&mut BufReader::with_capacity(1 << 20, file), &mut |_| {}).expect("import");
    store.close().expect("close");
    LoadOut { jobs: report.jobs, millis: t.elapsed().as_secs_f64() * 1e3, vm_hwm_kb: vm_hwm_kb() }
}

fn answer(a: JAnswer) -> Answer {
    match a {
        JAnswer::Count(n) => Answer::Count(n),
        JAnswer::Keys(k) => Answer::Keys(k.iter().map(|k| k.to_string()).collect()),
    }
}

pub fn query(cfg: &Config, dir: &Path, cases: &[Case]) -> QueryOut {
    let t = Instant::now();
    let store = Store::open(dir, Options::default()).expect("open jobq store");
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let snap = store.snapshot();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut out = QueryOut { open_ms, ..QueryOut::default() };
    let gs = groups(cases);
    let answers: Vec<Vec<Answer>> =
        gs.iter().map(|g| g.iter().map(|c| answer(jobq_run::run(&snap, c, &mut buf))).collect()).collect();
    let plans = vec![None; gs.len()];
    out.groups = passes::time_groups(&gs, cfg.query_passes, cfg.budget(), answers, plans, |c| {
        std::hint::black_box(jobq_run::run(&snap, c, &mut buf));
    });
    drop(snap);
    store.close().expect("close");
    out.vm_hwm_kb = vm_hwm_kb();
    out
}

/// Push one job per call from `writers` threads until `secs` have passed.
fn pushes(store: &Store, writers: usize, cfg: &Config) -> Rate {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let (stop, done) = (&stop, &done);
            s.spawn(move || {
                let spec = parse_push(&push_line(w)).expect("push spec");
                while !stop.load(Ordering::Relaxed) {
                    store.push(BIG_PROJECT, std::slice::from_ref(&spec), None).expect("push");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(cfg.write_time());
        stop.store(true, Ordering::Relaxed);
    });
    Rate { writes: done.load(Ordering::Relaxed), secs: t.elapsed().as_secs_f64() }
}

pub fn write(cfg: &Config, dir: &Path, writers: usize) -> WriteOut {
    // JOBQ_BENCH_PREALLOCATE=0: append as format 4 did (an A/B of issue 11's change).
    let preallocate = std::env::var("JOBQ_BENCH_PREALLOCATE").map_or(true, |v| v != "0");
    let store = Store::open(dir, Options { preallocate, ..Options::default() }).expect("open jobq store");
    let (m0, cpu0) = (store.metrics(), cpu_secs());
    let rate = pushes(&store, writers, cfg);
    let (m1, cpu1) = (store.metrics(), cpu_secs());
    let syncs = (m1.fsync_ns.count - m0.fsync_ns.count).max(1);
    eprintln!(
        "jobq {writers} writer(s), preallocate {preallocate}: {:.0}/s, {} fsyncs ({:.0}/s, mean {:.0} µs), {:.1} writes/fsync, CPU {:.1} µs user + {:.1} µs sys a push",
        rate.per_sec(),
        syncs,
        syncs as f64 / rate.secs,
        (m1.fsync_ns.sum - m0.fsync_ns.sum) as f64 / syncs as f64 / 1e3,
        (m1.batch_writes.sum - m0.batch_writes.sum) as f64 / syncs as f64,
        (cpu1.0 - cpu0.0) * 1e6 / rate.writes.max(1) as f64,
        (cpu1.1 - cpu0.1) * 1e6 / rate.writes.max(1) as f64,
    );
    store.close().expect("close");
    WriteOut { rate, writers, vm_hwm_kb: vm_hwm_kb() }
}

/// User and system CPU seconds of this process so far (/proc/self/stat).
fn cpu_secs() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    let tick = 100.0; // USER_HZ on Linux
    (f.get(11).copied().unwrap_or(0.0) / tick, f.get(12).copied().unwrap_or(0.0) / tick)
}
