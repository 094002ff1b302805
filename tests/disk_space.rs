//! The free space a store keeps (`Options::keep_free`, store/space.rs): while
//! less is free, writes, imports, index merges and compaction cycles are refused
//! before they write anything; the store is not poisoned, reads go on, and
//! writes are taken again once space is freed, without a restart.

use std::sync::Arc;
use std::time::Duration;

use jobq::fs::{FileSystem, SimFs, Space};
use jobq::model::{JobState, ManualClock};
use jobq::query::Filter;
use jobq::store::request::parse_push;
use jobq::store::PushResult;
use jobq::{Error, Options, Store};

const MIB: u64 = 1 << 20;
/// Longer than the guard trusts a look at the free space (100 ms).
const LOOK_AGAIN: Duration = Duration::from_millis(150);

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(9000)),
        background: false,
        memtable_entries: 100,
        ..Options::default()
    }
}

fn disk(sim: &SimFs, available_mib: u64) {
    sim.set_space(Some(Space { total: 100 << 30, available: available_mib * MIB }));
    std::thread::sleep(LOOK_AGAIN);
}

fn push(store: &Store, i: usize) -> jobq::Result<()> {
    let r = store.push(1, &[parse_push(&format!(r#"{{"spider":"s","i":{i}}}"#)).unwrap()], None)?;
    assert!(matches!(r[0], PushResult::Pushed { .. }));
    Ok(())
}

fn pending(store: &Store) -> u64 {
    store.snapshot().count(1, &Filter { states: vec![JobState::Pending], ..Filter::default() }).unwrap()
}

#[test]
fn writes_are_refused_while_space_is_short_and_taken_again_once_it_is_freed() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    for i in 0..150 {
        push(&store, i).unwrap();
    }
    // 64 MiB kept free by default: 63 MiB free refuses every write.
    disk(&sim, 63);
    let d = store.disk_space().unwrap();
    assert_eq!((d.available, d.keep_free, d.is_low()), (63 * MIB, 64 * MIB, true));
    for i in 0..20 {
        match push(&store, 1000 + i) {
            Err(e @ Error::LowSpace { .. }) => {
                assert!(e.to_string().contains("keeps free"), "{e}");
            }
            other => panic!("a write with 63 MiB free: {other:?}"),
        }
    }
    assert!(store.health().accepts_writes(), "refused writes do not poison the store");
    assert_eq!(pending(&store), 150, "reads go on");
    // Index maintenance and compaction wait rather than fail.
    store.flush_indexes().unwrap();
    let r = store.reclaim().unwrap();
    assert!(r.segments.is_empty());
    assert!(store.health().accepts_writes());
    // Space freed: writes again, no restart.
    disk(&sim, 65);
    assert!(!store.disk_space().unwrap().is_low());
    for i in 0..50 {
        push(&store, 2000 + i).unwrap();
    }
    assert_eq!(pending(&store), 200);
    store.close().unwrap();
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert_eq!(pending(&store), 200, "nothing refused was written");
}

#[test]
fn what_is_kept_free_is_the_operators_choice() {
    let sim = SimFs::new();
    disk(&sim, 3);
    let keep = |k| Store::open("/db", Options { keep_free: Some(k), ..opts(&sim) }).unwrap();
    // 2 MiB kept: 3 MiB free is enough.
    let store = keep(2 * MIB);
    push(&store, 1).unwrap();
    store.close().unwrap();
    // 4 MiB kept: refused.
    let store = keep(4 * MIB);
    assert!(push(&store, 2).unwrap_err().is_low_space());
    store.close().unwrap();
    // 0: never looked at, even on a full disk.
    disk(&sim, 0);
    let store = keep(0);
    push(&store, 3).unwrap();
    assert_eq!(store.disk_space().unwrap().keep_free, 0);
    assert_eq!(pending(&store), 2);
    // The default on a small file system: a twentieth of it.
    sim.set_space(Some(Space { total: 100 * MIB, available: 6 * MIB }));
    let store = Store::open("/db2", opts(&sim)).unwrap();
    assert_eq!(store.disk_space().unwrap().keep_free, 5 * MIB);
    push(&store, 4).unwrap();
}

fn lines(from: usize, n: usize) -> String {
    let pad = "p".repeat(200);
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"key":"1/1/{}","spider":"s","state":"finished","pending_time":{},"finished_time":{},"pad":"{pad}"}}"#,
                i + 1,
                1000 + i,
                2000 + i
            ) + "\n"
        })
        .collect()
}

#[test]
fn an_import_short_of_space_is_undone_and_the_store_goes_on() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    store.import(&mut lines(0, 100).as_bytes(), &mut |_| {}).unwrap();
    // About 16 MB of lines, in chunks of 4 MiB: each chunk needs room for its
    // frames and the index of every job so far, so a few fit in 72 MiB and the
    // rest do not.
    let input = lines(100, 60_000);
    disk(&sim, 72);
    let e = store.import(&mut input.as_bytes(), &mut |_| {}).unwrap_err();
    assert!(e.is_low_space(), "{e}");
    assert!(store.health().accepts_writes(), "{e}");
    let finished = |s: &Store| s.snapshot().count(1, &Filter::default()).unwrap();
    assert_eq!(finished(&store), 100, "the import is undone whole");
    // With room, the same import goes through, and survives a reopen.
    disk(&sim, 1024);
    store.import(&mut input.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(finished(&store), 60_100);
    store.close().unwrap();
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert_eq!(finished(&store), 60_100);
    drop(store);
    let report = jobq::store::check("/db".as_ref(), Arc::new(sim.clone())).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// Offline compaction looks before it writes: a copy of the live jobs that would
/// leave less than the kept space free is refused, the store unchanged.
#[test]
fn an_offline_compaction_short_of_space_is_refused_before_it_writes() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    store.import(&mut lines(0, 20_000).as_bytes(), &mut |_| {}).unwrap();
    store.close().unwrap();
    let before = sim.read_dir(std::path::Path::new("/db")).unwrap();
    // The copy needs about the store's 0.9 MB: 0.5 MiB beside 64 MiB kept is too little.
    sim.set_space(Some(Space { total: 100 << 30, available: 64 * MIB + MIB / 2 }));
    let e = jobq::store::compact(std::path::Path::new("/db"), opts(&sim), None, &mut |_, _| {}).unwrap_err();
    match &e {
        Error::LowSpace { need, keep, .. } => assert!(*need > MIB / 2 && *keep == 64 * MIB, "{e}"),
        other => panic!("{other}"),
    }
    assert_eq!(sim.read_dir(std::path::Path::new("/db")).unwrap(), before, "nothing written");
    // With room it runs; 0 kept: never looked at.
    let none = Options { keep_free: Some(0), ..opts(&sim) };
    let r = jobq::store::compact(std::path::Path::new("/db"), none, None, &mut |_, _| {}).unwrap();
    assert_eq!((r.generation_after, r.records_after), (2, 20_000));
}
