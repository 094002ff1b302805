//! Preallocated log segments (format 5, log segment version 4): the writer
//! extends the last segment with zeros and writes frames over them. Power cuts at
//! every call of a workload that crosses chunk boundaries (before the zeros are
//! durable, between them and the frame that needed them, during a write into
//! them), in every damage mode; a full disk while preallocating.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::Filter;
use jobq::store::request::parse_push;
use jobq::store::PushResult;
use jobq::{Options, Store};

const LOG: &str = "/db/gen-0000000000000001/log-0000000001.jql";
const CHUNK: usize = 1 << 20;

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(9000)),
        background: false,
        memtable_entries: 1000,
        ..Options::default()
    }
}

/// A push of about 150 KB (preallocated for: below a quarter chunk).
fn big(i: usize) -> Vec<jobq::store::request::PushSpec> {
    let line = format!(r#"{{"spider":"s","i":{i},"pad":"{}"}}"#, "x".repeat(150_000));
    vec![parse_push(&line).unwrap()]
}

/// Push until a write fails; the keys acknowledged, and whether one failed.
fn workload(store: &Store, n: usize) -> (Vec<JobKey>, bool) {
    let mut acked = Vec::new();
    for i in 0..n {
        match store.push(1, &big(i), None) {
            Ok(r) => acked.extend(r.iter().map(|x| match x {
                PushResult::Pushed { key, .. } => *key,
                PushResult::Conflict { .. } => unreachable!("no unique values"),
            })),
            Err(_) => return (acked, true),
        }
    }
    (acked, false)
}

fn pending(store: &Store) -> u64 {
    let f = Filter { states: vec![JobState::Pending], ..Filter::default() };
    store.snapshot().count(1, &f).unwrap()
}

fn verify(sim: &SimFs, acked: &[JobKey], failed: bool, context: &str) {
    let store = Store::open("/db", opts(sim)).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    let snap = store.snapshot();
    for k in acked {
        assert!(snap.get(*k).unwrap().is_some(), "{context}: acknowledged {k} lost");
    }
    let n = pending(&store);
    let most = acked.len() as u64 + u64::from(failed);
    assert!(n >= acked.len() as u64 && n <= most, "{context}: {n} jobs, {} acknowledged", acked.len());
    drop(snap);
    drop(store);
    let store = Store::open("/db", opts(sim)).unwrap_or_else(|e| panic!("{context}: second open: {e}"));
    assert!(store.report().cut.is_none(), "{context}: recovery cut twice: {:?}", store.report().cut);
    assert_eq!(pending(&store), n, "{context}: the second open agrees");
    drop(store);
    let r = jobq::store::check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{context}: {:#?}", r.findings);
}

#[test]
fn power_cut_at_every_call_across_preallocated_chunks() {
    // A clean run: how many calls, and that it crosses two chunk boundaries.
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    let base = sim.mutations();
    let (acked, failed) = workload(&store, 16);
    assert!(!failed && acked.len() == 16);
    let calls = sim.mutations() - base;
    let len = sim.read_file(Path::new(LOG)).unwrap().len();
    assert!(len >= 3 * CHUNK && len.is_multiple_of(CHUNK), "preallocated in chunks: {len}");
    drop(store);
    let mut runs = 0;
    for at in 0..calls {
        for mode in CrashMode::ALL {
            let context = format!("power cut at call {at}, {mode:?}");
            let sim = SimFs::new();
            let store = Store::open("/db", opts(&sim)).unwrap();
            sim.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let (acked, failed) = workload(&store, 16);
            assert!(failed, "{context}: the cut stopped the workload");
            drop(store);
            sim.crash(mode, at);
            verify(&sim, &acked, failed, &context);
            runs += 1;
        }
    }
    eprintln!("preallocation power cuts: {runs} runs ({calls} calls x {} modes)", CrashMode::ALL.len());
}

#[test]
fn a_full_disk_while_preallocating_falls_back_to_appending_and_loses_nothing() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    // Six pushes fill most of the first chunk; the seventh needs the next one.
    let (mut acked, failed) = workload(&store, 6);
    assert!(!failed);
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), CHUNK);
    let end = store.metrics().log_bytes as usize;
    assert!(end + 160_000 > CHUNK, "the next push needs more zeros: {end}");
    // The disk fills up: the write of zeros stores half of them and fails; writes
    // in place go on, writes that grow the file fail. Preallocation only saves
    // time: pushes go on into what was written, then fail with a typed error.
    sim.set_fault(Some(Fault { at: 0, kind: FaultKind::DiskFull, sticky: false }));
    let mut err = None;
    for i in 6..40 {
        match store.push(1, &big(i), None) {
            Ok(r) => acked.extend(r.iter().map(|x| match x {
                PushResult::Pushed { key, .. } => *key,
                PushResult::Conflict { .. } => unreachable!(),
            })),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("the disk filled up");
    assert!(acked.len() > 6, "a push went into the zeros that did land: {}", acked.len());
    assert!(e.is_disk_full() && e.to_string().contains("append to"), "a typed disk-full error: {e}");
    // The failed batch was cut: the store is not poisoned, and a write that
    // needs room fails alike while the disk is full.
    let h = store.health();
    assert!(h.accepts_writes(), "{h:?}");
    let again = store.push(1, &big(99), None);
    assert!(again.as_ref().is_err_and(|e| e.is_disk_full()), "{again:?}");
    assert_eq!(store.metrics().writes_cut_disk_full, 2);
    let sim2 = sim.fork();
    drop(store);
    // After the clean close: the failed write cut, every acknowledged push there.
    let end = {
        let s = Store::open("/db", opts(&sim)).unwrap();
        s.metrics().log_bytes as usize
    };
    let bytes = sim.read_file(Path::new(LOG)).unwrap();
    assert_eq!(bytes.len(), end, "the close cut the failed write and the zeros");
    verify(&sim, &acked, false, "after a full disk");
    // Or a power cut instead of the close: unsynced bytes dropped, cut, zeroed, garbled.
    for mode in CrashMode::ALL {
        let s = sim2.fork();
        s.crash(mode, 11);
        verify(&s, &acked, true, &format!("a full disk, then a power cut ({mode:?})"));
    }
}

#[test]
fn preallocation_can_be_turned_off_and_the_store_reads_the_same() {
    let sim = SimFs::new();
    let store = Store::open("/db", Options { preallocate: false, ..opts(&sim) }).unwrap();
    let (acked, _) = workload(&store, 3);
    let end = store.metrics().log_bytes as usize;
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), end, "appended, no zeros");
    std::mem::forget(store);
    let sim = sim.fork();
    // The same log continued with preallocation: zeros after it, then cut at close.
    let store = Store::open("/db", opts(&sim)).unwrap();
    let (more, _) = workload(&store, 1);
    assert!(sim.read_file(Path::new(LOG)).unwrap().len() > store.metrics().log_bytes as usize);
    drop(store);
    let all: Vec<JobKey> = acked.iter().chain(&more).copied().collect();
    verify(&sim, &all, false, "preallocation off, then on");
}
