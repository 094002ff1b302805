//! A full disk met by a write (ENOSPC on the append itself, past any check of
//! the free space: `keep_free` 0 here): the write batch is cut from the log and
//! its writers get the disk-full error (HTTP 507), the store is not poisoned,
//! reads go on, writes are taken again as soon as there is room, and nothing
//! refused is ever seen, before or after a reopen or a power cut. An import that
//! meets it is undone. A sync that fails stays fatal (tests/crash.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{Durability, Error, Options, Store};

const WRITERS: usize = 6;
/// Refusals that met the full disk creating the next log segment.
static AT_ROTATION: AtomicUsize = AtomicUsize::new(0);
/// Writes acknowledged by [`all_writers`] (one test uses it).
static WRITES: AtomicU64 = AtomicU64::new(0);

fn opts(sim: &SimFs, background: bool) -> Options {
    opts_with(sim, background, 64 << 20)
}

fn opts_with(sim: &SimFs, background: bool, segment_bytes: u64) -> Options {
    Options {
        segment_bytes,
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(9000)),
        durability: Durability::Sync,
        background,
        memtable_entries: 40,
        keep_free: Some(0),
        ..Options::default()
    }
}

/// What the writers were told: per marker, the state the job must have
/// (pending, or running once an update of it was acknowledged).
type Acked = BTreeMap<String, JobState>;

fn doc(marker: &str) -> String {
    format!(r#"{{"spider":"s","m":"{marker}","tags":["t{}"],"pad":"{}"}}"#, marker.len() % 3, "x".repeat(3000))
}

/// Push (and update every third job pushed) until `refusals` disk-full answers
/// came, or `tries` writes were made. Any other error fails the test.
fn write(store: &Store, who: usize, round: &str, tries: usize, refusals: usize) -> (Acked, usize, u64) {
    let (mut acked, mut refused, mut writes) = (Acked::new(), 0, 0);
    let mut mine: Vec<(JobKey, String)> = Vec::new();
    for i in 0..tries {
        if refused >= refusals && refusals > 0 {
            break;
        }
        let marker = format!("{round}-{who}-{i}");
        let answer = store.push(1, &[parse_push(&doc(&marker)).unwrap()], None);
        let r = match answer {
            Ok(r) => match &r[0] {
                PushResult::Pushed { key, .. } => {
                    writes += 1;
                    acked.insert(marker.clone(), JobState::Pending);
                    mine.push((*key, marker.clone()));
                    Ok(())
                }
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e),
        };
        let r = r.and_then(|()| match mine.len() % 3 {
            0 => {
                let (key, marker) = mine[mine.len() - 2].clone();
                let line = format!(r#"{{"key":"{key}","state":"running"}}"#);
                store.update(1, &[parse_update(&line, 1).unwrap()], None).map(|_| {
                    writes += 1;
                    acked.insert(marker, JobState::Running);
                })
            }
            _ => Ok(()),
        });
        match r {
            Ok(()) => {}
            Err(e) if e.is_disk_full() => {
                assert_eq!(jobq::api::status_of(&e), 507, "{e}");
                if e.to_string().contains("create segment") {
                    AT_ROTATION.fetch_add(1, Ordering::Relaxed);
                }
                refused += 1;
            }
            Err(e) => panic!("writer {who}, {marker}: {e}"),
        }
    }
    (acked, refused, writes)
}

/// Every job of project 1 by its marker, with its state.
fn present(store: &Store) -> Acked {
    let snap = store.snapshot();
    let mut out = Acked::new();
    for local in 1..=4000 {
        if let Some(j) = snap.get(JobKey::new(1, 1, local)).unwrap() {
            let m = j.meta.get("m").map(|v| v.get().trim_matches('"').to_string()).unwrap_or_default();
            assert!(out.insert(m.clone(), j.state).is_none(), "marker {m} twice");
        }
    }
    out
}

fn all_writers(store: &Store, round: &str, tries: usize, refusals: usize) -> (Acked, usize) {
    std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..WRITERS).map(|who| s.spawn(move || write(store, who, round, tries, refusals))).collect();
        let (acked, refused, writes) =
            handles.into_iter().map(|h| h.join().unwrap()).fold((Acked::new(), 0, 0), |(mut a, n, w), (b, m, x)| {
                a.extend(b);
                (a, n + m, w + x)
            });
        WRITES.fetch_add(writes, Ordering::Relaxed);
        (acked, refused)
    })
}

fn reopened_agrees(sim: &SimFs, acked: &Acked, context: &str) {
    let store = Store::open("/db", opts_with(sim, false, 150_000)).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    assert_eq!(&present(&store), acked, "{context}: every acknowledged write, nothing refused");
    drop(store);
    let r = jobq::store::check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{context}: {:#?}", r.findings);
}

#[test]
fn a_full_disk_cuts_the_batch_and_writes_go_on_once_there_is_room() {
    // Small segments: the full disk also fails the next segment's file.
    for (background, segment_bytes) in [(false, 64 << 20), (true, 64 << 20), (false, 150_000), (true, 150_000)] {
        let context = format!("background maintenance {background}, segments of {segment_bytes} bytes");
        WRITES.store(0, Ordering::Relaxed);
        let sim = SimFs::new();
        let store = Store::open("/db", opts_with(&sim, background, segment_bytes)).unwrap();
        let (mut acked, refused) = all_writers(&store, "a", 30, 0);
        assert_eq!(refused, 0);
        // The disk fills up: writes into preallocated zeros go on, any write that
        // grows a file fails with ENOSPC.
        sim.set_fault(Some(Fault { at: 0, kind: FaultKind::DiskFull, sticky: false }));
        let (more, refused) = all_writers(&store, "b", 400, 3);
        acked.extend(more);
        assert!(refused >= WRITERS * 3, "{context}: {refused} refusals");
        let h = store.health();
        assert!(h.accepts_writes(), "{context}: not poisoned: {h:?}");
        assert!(store.metrics().writes_cut_disk_full > 0, "{context}");
        assert_eq!(present(&store), acked, "{context}: reads see the acknowledged writes only");
        // Space freed: writes are taken again, no restart.
        sim.set_fault(None);
        let (more, refused) = all_writers(&store, "c", 25, 0);
        assert_eq!(refused, 0, "{context}");
        acked.extend(more);
        store.flush_indexes().unwrap();
        assert_eq!(present(&store), acked, "{context}");
        // Each acknowledged write counted by exactly one fsync; none that was cut.
        assert_eq!(store.metrics().batch_writes.sum, WRITES.load(Ordering::Relaxed), "{context}");
        let cut = sim.fork();
        drop(store);
        reopened_agrees(&sim, &acked, &format!("{context}, after a close"));
        for mode in CrashMode::ALL {
            let s = cut.fork();
            s.crash(mode, 7);
            reopened_agrees(&s, &acked, &format!("{context}, after a power cut ({mode:?})"));
        }
    }
    assert!(AT_ROTATION.load(Ordering::Relaxed) > 0, "no write met the full disk at a new segment");
}

#[test]
fn a_sticky_failure_of_the_cut_itself_poisons() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim, false)).unwrap();
    let (acked, _, _) = write(&store, 0, "a", 10, 0);
    // Every later call fails: the append, then the truncation that would cut it.
    sim.set_fault(Some(Fault { at: 0, kind: FaultKind::Enospc, sticky: true }));
    let mut poisoned = false;
    for i in 0..50 {
        match store.push(1, &[parse_push(&doc(&format!("z{i}"))).unwrap()], None) {
            Err(Error::Poisoned { .. }) => {
                poisoned = true;
                break;
            }
            Err(e) => assert!(e.is_disk_full(), "{e}"),
            Ok(_) => {}
        }
    }
    assert!(poisoned && !store.health().accepts_writes());
    assert!(store.health().poison.is_some_and(|p| p.disk_full));
    drop(store);
    sim.set_fault(None);
    sim.crash(CrashMode::Drop, 3);
    let store = Store::open("/db", opts(&sim, false)).unwrap();
    let got = present(&store);
    for (m, state) in &acked {
        assert_eq!(got.get(m), Some(state), "acknowledged {m}");
    }
}

#[test]
fn an_import_that_meets_a_full_disk_is_undone_and_can_run_again() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim, false)).unwrap();
    let (acked, _, _) = write(&store, 0, "a", 12, 0);
    let lines: String = (0..3000u64)
        .map(|i| {
            let times = r#""pending_time":1000,"running_time":2000,"finished_time":3000"#;
            // Packs poorly: the import's log grows past the preallocated space.
            let pad: String =
                (0..60u64).map(|k| format!("{:08x}", (i * 7919 + k) * 2_654_435_761 % 4_294_967_291)).collect();
            format!(
                "{{\"key\":\"2/1/{}\",\"spider\":\"imp\",\"state\":\"finished\",{times},\"pad\":\"{pad}\"}}\n",
                i + 1
            )
        })
        .collect();
    sim.set_fault(Some(Fault { at: 6, kind: FaultKind::DiskFull, sticky: false }));
    let e = store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(store.health().accepts_writes(), "undone, not poisoned");
    assert_eq!(store.snapshot().count(2, &jobq::query::Filter::default()).unwrap(), 0);
    assert_eq!(present(&store), acked);
    sim.set_fault(None);
    let r = store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(r.jobs, 3000);
    let (more, refused, _) = write(&store, 1, "b", 5, 0);
    assert_eq!(refused, 0);
    let mut acked = acked;
    acked.extend(more);
    drop(store);
    reopened_agrees(&sim, &acked, "after the import");
    let store = Store::open("/db", opts(&sim, false)).unwrap();
    assert_eq!(store.snapshot().count(2, &jobq::query::Filter::default()).unwrap(), 3000);
}

/// A power cut at every file-system call of a refused write (its failed append,
/// the cut, the rebuild), in every damage mode: a reopen finds exactly the
/// acknowledged writes, and `check` is clean.
#[test]
fn a_power_cut_during_the_cut_loses_nothing_acknowledged() {
    let base = SimFs::new();
    let store = Store::open("/db", opts(&base, false)).unwrap();
    let (acked, _, _) = write(&store, 0, "a", 24, 0);
    drop(store);
    // How many calls a refused push makes on a full disk.
    let calls = {
        let sim = base.fork();
        let store = Store::open("/db", opts(&sim, false)).unwrap();
        let from = sim.mutations();
        sim.fill_up();
        let e = store.push(1, &[parse_push(&doc("z")).unwrap()], None).unwrap_err();
        assert!(e.is_disk_full() && store.health().accepts_writes(), "{e}");
        sim.mutations() - from
    };
    // The append fails before it changes anything; the cut lowers the marks, then truncates.
    assert!(calls >= 2, "{calls} calls");
    for at in 0..=calls {
        for mode in CrashMode::ALL {
            let sim = base.fork();
            let store = Store::open("/db", opts(&sim, false)).unwrap();
            sim.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            sim.fill_up();
            assert!(store.push(1, &[parse_push(&doc("z")).unwrap()], None).is_err());
            drop(store);
            sim.crash(mode, at);
            sim.set_fault(None);
            reopened_agrees(&sim, &acked, &format!("a power cut at call {at} of {calls} ({mode:?})"));
        }
    }
}
