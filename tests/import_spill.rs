//! An import larger than one run spills its index entries to a run file and
//! merges them into one index file once the commit is durable (index/spill.rs).
//!
//! - The store reads the same after a spilled import as after one built in memory,
//!   keys imported twice included.
//! - EIO, ENOSPC, a full disk or a power cut at every file-system call of an
//!   import: the import is whole or absent after a reopen, never half; a failed
//!   spill undoes the import without poisoning the store; no run file survives an
//!   open.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{CrashMode, Fault, FaultKind, FileSystem, SimFs};
use jobq::model::ManualClock;
use jobq::query::Filter;
use jobq::store::request::parse_push;
use jobq::{Error, Options, Store};

const GEN: &str = "/db/gen-0000000000000001";

fn opts(sim: &SimFs, bulk_entries: usize) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(7000)),
        background: false,
        memtable_entries: 4,
        bulk_entries,
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// Jobs of project 2 (several runs of 8 entries): tags, running jobs with
/// tokens, and keys that come twice (the second version is the one indexed).
fn lines() -> String {
    let mut out = String::new();
    for j in 1..=40u32 {
        let (state, t) = match j % 4 {
            0 => ("running", "running_time"),
            1 => ("pending", "pending_time"),
            _ => ("finished", "finished_time"),
        };
        let tags = ["[]", r#"["a"]"#, r#"["a","b"]"#][(j % 3) as usize];
        out += &format!(
            r#"{{"key":"2/{}/{j}","spider":"s{}","state":"{state}","{t}":{},"tags":{tags},"auth":"tok{j}","close_reason":"ok"}}"#,
            1 + j % 2,
            1 + j % 2,
            1000 + j % 7
        );
        out.push('\n');
    }
    for j in [3u32, 8, 21] {
        out += &format!(
            r#"{{"key":"2/{}/{j}","spider":"s{}","state":"finished","finished_time":{},"tags":["c"]}}"#,
            1 + j % 2,
            1 + j % 2,
            5000 + j
        );
        out.push('\n');
    }
    out
}

/// Jobs in project 2 (every state), and project 1's pushes.
fn counts(store: &Store) -> (u64, u64) {
    let snap = store.snapshot();
    let all = |p| {
        let f = Filter { states: jobq::model::JobState::ALL.to_vec(), ..Filter::default() };
        snap.count(p, &f).unwrap()
    };
    (all(2), all(1))
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(Some(2), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn files(sim: &SimFs) -> Vec<String> {
    let mut names = sim.read_dir(Path::new(GEN)).unwrap();
    names.sort();
    names
}

#[test]
fn a_spilled_import_reads_as_one_built_in_memory() {
    let (spilled, in_memory) = (SimFs::new(), SimFs::new());
    let a = Store::open("/db", opts(&spilled, 8)).unwrap();
    let b = Store::open("/db", opts(&in_memory, 1 << 20)).unwrap();
    for s in [&a, &b] {
        s.push(2, &[parse_push(r#"{"spider":"s1"}"#).unwrap()], None).unwrap();
        let r = s.import(&mut lines().as_bytes(), &mut |_| {}).unwrap();
        assert_eq!((r.jobs, r.versions), (40, 43), "a key on several lines counts once");
    }
    assert_eq!(export(&a), export(&b));
    assert_eq!(counts(&a), counts(&b));
    assert_eq!(counts(&a).0, 41, "keys imported twice count once (40, and the job pushed)");
    for key in ["2/1/4", "2/2/3"] {
        let k = key.parse().unwrap();
        assert_eq!(a.running_job_token(k), b.running_job_token(k), "{key}");
    }
    assert!(a.running_job_token("2/1/4".parse().unwrap()).is_some(), "a running job's token is known");
    let jqi = files(&spilled).into_iter().filter(|n| n.ends_with(".jqi")).count();
    assert!(files(&spilled).iter().all(|n| !n.ends_with(".tmp")), "{:?}", files(&spilled));
    drop((a, b));
    let a = Store::open("/db", opts(&spilled, 8)).unwrap();
    assert_eq!(a.report().replayed_frames, 0, "the import's index file covers it ({jqi} index files)");
    assert_eq!(export(&a), export(&Store::open("/db", opts(&in_memory, 1 << 20)).unwrap()));
}

/// A fault at every call of the import (once or forever): whole or absent.
#[test]
fn faults_at_every_call_of_a_spilled_import() {
    let calls = {
        let sim = SimFs::new();
        let store = Store::open("/db", opts(&sim, 8)).unwrap();
        let before = sim.mutations();
        store.import(&mut lines().as_bytes(), &mut |_| {}).unwrap();
        sim.mutations() - before
    };
    let mut spill_failures = 0;
    for at in 0..calls + 2 {
        for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::DiskFull, FaultKind::PowerCut] {
            for sticky in [false, true] {
                let context = format!("{kind:?} at call {at}, sticky {sticky}");
                let sim = SimFs::new();
                let store = Store::open("/db", opts(&sim, 8)).unwrap();
                store.push(1, &[parse_push(r#"{"spider":"p"}"#).unwrap()], None).unwrap();
                // A full disk stays full, a cut machine stays cut.
                let sticky = sticky || matches!(kind, FaultKind::PowerCut | FaultKind::DiskFull);
                sim.set_fault(Some(Fault { at, kind, sticky }));
                let result = store.import(&mut lines().as_bytes(), &mut |_| {});
                if let Err(e) = &result {
                    if e.to_string().contains(".runs.tmp") && kind != FaultKind::PowerCut {
                        spill_failures += 1;
                        // A failed spill comes before the commit: the import is undone
                        // and the store goes on (unless undoing it failed too).
                        let c = counts(&store);
                        assert!(c == (0, 1) || sticky, "{context}: {e}: {c:?}");
                        if !sticky {
                            store.push(1, &[parse_push(r#"{"spider":"p"}"#).unwrap()], None).unwrap();
                        }
                    }
                }
                let pushed = counts(&store).1;
                drop(store);
                sim.set_fault(None);
                sim.crash(CrashMode::Drop, at);
                let store = Store::open("/db", opts(&sim, 8)).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
                let (imported, pushes) = counts(&store);
                assert!(imported == 0 || imported == 40, "{context}: {imported} of 40 jobs after a reopen");
                if result.is_ok() {
                    assert_eq!(imported, 40, "{context}: an acknowledged import is durable");
                }
                assert!(pushes >= 1 && pushes <= pushed.max(1), "{context}: {pushes} pushes");
                let left: Vec<String> = files(&sim).into_iter().filter(|n| n.ends_with(".tmp")).collect();
                assert!(left.is_empty(), "{context}: {left:?} left after open");
                if let Err(e) = store.push(1, &[parse_push(r#"{"spider":"p"}"#).unwrap()], None) {
                    assert!(!matches!(e, Error::Poisoned { .. }), "{context}: reopened store refuses writes: {e}");
                }
            }
        }
    }
    eprintln!("import faults: {calls} calls, {spill_failures} failed spills");
    assert!(spill_failures >= 4, "faults must hit the run file: {spill_failures}");
}

/// The largest project id is indexed like any other by a spilled import (its
/// range of the merge once ended, exclusive, at that id).
#[test]
fn a_spilled_import_indexes_the_largest_project() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim, 8)).unwrap();
    let mut text = String::new();
    for j in 1..=30u32 {
        let project = [1u32, 4_294_967_295][(j % 2) as usize];
        text += &format!(r#"{{"key":"{project}/1/{j}","spider":"s","state":"finished","finished_time":{j}}}"#);
        text.push('\n');
    }
    store.import(&mut text.as_bytes(), &mut |_| {}).unwrap();
    let snap = store.snapshot();
    for project in [1u32, 4_294_967_295] {
        assert_eq!(snap.count(project, &Filter::default()).unwrap(), 15, "project {project}");
    }
}
