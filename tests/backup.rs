//! `jobq backup` (the library's `store::backup`): a consistent copy as of one log
//! position, hard links for what the source never writes again, incremental runs,
//! a new source generation, refusals; and a backup cut by a power loss or a kill
//! at every file-system call leaves a copy that opens, is clean, and equals a
//! state the source had.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{CrashMode, Fault, FaultKind, FileSystem, SimFs};
use jobq::model::ManualClock;
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{backup, check, compact, repair};
use jobq::{Options, Store};

const SRC: &str = "/src";
const DEST: &str = "/dest";

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(7000)),
        background: false,
        memtable_entries: 16,
        segment_bytes: 20_000,
        ..Options::default()
    }
}

fn export_of(sim: &SimFs, dir: &str) -> String {
    let o = Options { read_only: true, create: false, ..opts(sim) };
    let store = Store::open(dir, o).unwrap_or_else(|e| panic!("{dir} does not open: {e}"));
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `n` pushes to the source, some then finished; the export after each write.
fn write(store: &Store, sim: &SimFs, from: u32, n: u32, states: &mut Vec<String>) {
    for i in from..from + n {
        let line = format!(r#"{{"spider":"s{}","tags":["t{}"],"i":{i},"pad":"{}"}}"#, i % 3, i % 4, "x".repeat(200));
        store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
        states.push(export_of(sim, SRC));
        if i % 4 == 0 {
            let key = format!("1/{}/{}", 1 + i % 3, 1 + i / 3);
            store
                .update(1, &[parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap()], None)
                .unwrap();
            states.push(export_of(sim, SRC));
        }
    }
}

fn clean(sim: &SimFs, dir: &str) {
    let r = check(Path::new(dir), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{dir}: {:#?}", r.findings);
}

#[test]
fn full_then_incremental_backups_equal_the_source() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    let mut states = Vec::new();
    write(&store, &sim, 0, 120, &mut states);
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert!(r.full && r.linked >= 2, "sealed segments and index files are linked: {r:?}");
    assert_eq!(export_of(&sim, DEST), *states.last().unwrap());
    clean(&sim, DEST);
    // A few more writes: only the new bytes are copied.
    write(&store, &sim, 120, 10, &mut states);
    let before = r.copied_bytes;
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert!(!r.full, "{r:?}");
    assert!(r.copied_bytes < before / 2 && r.copied_bytes > 0, "{r:?} after {before}");
    assert_eq!(export_of(&sim, DEST), *states.last().unwrap());
    clean(&sim, DEST);
    // Nothing new: nothing copied.
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert_eq!((r.copied_bytes, r.linked), (0, 0), "{r:?}");
    // The copy is a store: it takes writes of its own.
    drop(store);
    let copy = Store::open(DEST, opts(&sim)).unwrap();
    copy.push(1, &[parse_push(r#"{"spider":"restored"}"#).unwrap()], None).unwrap();
    copy.close().unwrap();
    clean(&sim, DEST);
    assert_eq!(export_of(&sim, SRC), *states.last().unwrap(), "the source is untouched");
    clean(&sim, SRC);
}

#[test]
fn a_new_source_generation_replaces_the_copy() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    let mut states = Vec::new();
    write(&store, &sim, 0, 60, &mut states);
    backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    drop(store);
    compact(Path::new(SRC), opts(&sim), None, &mut |_, _| {}).unwrap();
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert!(r.full && r.generation == 2, "{r:?}");
    assert_eq!(export_of(&sim, DEST), export_of(&sim, SRC));
    assert!(!sim.exists(Path::new("/dest/gen-0000000000000001")).unwrap(), "the old copy is gone");
    clean(&sim, DEST);
}

#[test]
fn refusals() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    write(&store, &sim, 0, 10, &mut Vec::new());
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let e = backup(Path::new(SRC), Path::new("/src/inside"), fs.clone()).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    assert!(backup(Path::new(SRC), Path::new(SRC), fs.clone()).is_err());
    // A copy that was written to is no prefix of the source any more.
    backup(Path::new(SRC), Path::new(DEST), fs.clone()).unwrap();
    let copy = Store::open(DEST, opts(&sim)).unwrap();
    copy.push(1, &[parse_push(r#"{"spider":"diverged"}"#).unwrap()], None).unwrap();
    copy.close().unwrap();
    write(&store, &sim, 10, 1, &mut Vec::new());
    let e = backup(Path::new(SRC), Path::new(DEST), fs).unwrap_err();
    assert!(e.to_string().contains("not a prefix"), "{e}");
}

#[test]
fn a_salvage_cut_into_a_linked_segment_never_writes_the_shared_file() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    write(&store, &sim, 0, 120, &mut Vec::new());
    drop(store);
    backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    // The copy's first segment is the source's file under a second name. Damage in it
    // (the medium's) shows under both names; repairing the copy must cut by a new
    // file, never by truncating the one the source still holds.
    let shared = Path::new("/src/gen-0000000000000001/log-0000000001.jql");
    let mut bytes = sim.read_file(shared).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    sim.write_file(shared, bytes.clone()).unwrap();
    let rep = repair(Path::new(DEST), opts(&sim)).unwrap();
    assert!(rep.cut.is_some_and(|c| c.at.segment == 1), "the copy was cut in its first segment");
    assert_eq!(sim.read_file(shared).unwrap(), bytes, "the source's file was written");
    let cut = sim.read_file(Path::new("/dest/gen-0000000000000001/log-0000000001.jql")).unwrap();
    assert!(cut.len() < bytes.len());
    clean(&sim, DEST);
}

/// A backup cut at every file-system call, by a kill or a power cut in each mode:
/// the copy opens, is clean, and equals a state the source had; the next backup
/// completes it.
#[test]
fn an_interrupted_backup_leaves_a_copy_that_opens_as_a_state_of_the_source() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    let mut states = vec![String::new()];
    write(&store, &sim, 0, 60, &mut states);
    backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    write(&store, &sim, 60, 70, &mut states);
    drop(store);
    // Calls of one incremental backup (with segment rotations since the last).
    let calls = {
        let s = sim.fork();
        s.set_fault(None);
        backup(Path::new(SRC), Path::new(DEST), Arc::new(s.clone())).unwrap();
        s.mutations()
    };
    let mut runs = 0;
    for at in 0..calls + 2 {
        for mode in [None, Some(CrashMode::Drop), Some(CrashMode::Cut), Some(CrashMode::Zero), Some(CrashMode::Garble)]
        {
            let s = sim.fork();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let _ = backup(Path::new(SRC), Path::new(DEST), Arc::new(s.clone()));
            match mode {
                None => s.kill(),
                Some(m) => s.crash(m, at * 7 + runs),
            }
            let context = format!("backup cut at call {at} of {calls} ({mode:?})");
            let got = export_of(&s, DEST);
            assert!(states.contains(&got), "{context}: the copy is not a state the source had");
            let r = check(Path::new(DEST), Arc::new(s.clone())).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
            backup(Path::new(SRC), Path::new(DEST), Arc::new(s.clone())).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(export_of(&s, DEST), *states.last().unwrap(), "{context}: the next backup completes it");
            runs += 1;
        }
    }
    eprintln!("backup interrupted at {runs} points ({calls} calls x kill and 4 power-cut modes)");
}

fn segments(sim: &SimFs, dir: &str, generation: u64) -> Vec<u32> {
    jobq::log::segment::list(sim, &Path::new(dir).join(format!("gen-{generation:016x}"))).unwrap()
}

/// Online compaction at the source between two backups: the copy drops the
/// segments the source removed (it kept them: check found index files that did
/// not match its log, and the copy grew without bound). Once compaction removed
/// the segment a copy ends in, the next run is refused, saying so, and the copy
/// stays the previous backup.
#[test]
fn segments_the_source_compacted_away_leave_the_copy() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    let mut states = Vec::new();
    write(&store, &sim, 0, 200, &mut states);
    backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    let copy_end = *segments(&sim, DEST, 1).last().unwrap();
    assert!(!store.reclaim().unwrap().segments.is_empty());
    assert!(segments(&sim, SRC, 1)[0] <= copy_end);
    write(&store, &sim, 200, 10, &mut states);
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert!(!r.full, "{r:?}");
    assert_eq!(segments(&sim, DEST, 1), segments(&sim, SRC, 1), "{r:?}");
    assert_eq!(export_of(&sim, DEST), export_of(&sim, SRC));
    clean(&sim, DEST);
    // Compaction reaches the segment the copy ends in.
    let copy_end = *segments(&sim, DEST, 1).last().unwrap();
    write(&store, &sim, 210, 150, &mut states);
    for _ in 0..200 {
        if segments(&sim, SRC, 1)[0] > copy_end {
            break;
        }
        store.reclaim().unwrap();
    }
    assert!(segments(&sim, SRC, 1)[0] > copy_end, "compaction never reached segment {copy_end}");
    let before = export_of(&sim, DEST);
    let e = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap_err().to_string();
    assert!(e.contains("online compaction removed") && e.contains("new directory"), "{e}");
    assert_eq!(export_of(&sim, DEST), before, "the copy is still the previous backup");
    clean(&sim, DEST);
    let r = backup(Path::new(SRC), Path::new("/dest2"), Arc::new(sim.clone())).unwrap();
    assert!(r.full);
    assert_eq!(export_of(&sim, "/dest2"), export_of(&sim, SRC));
}

/// A store that is not this source's backup is never replaced, even when its
/// generation is older than the source's (it was: a backup "to" the wrong
/// directory removed another store's jobs). The source's own earlier backup,
/// which names it in `BACKUP-OF`, still is.
#[test]
fn an_older_store_that_is_no_backup_of_the_source_is_never_replaced() {
    let sim = SimFs::new();
    let store = Store::open(SRC, opts(&sim)).unwrap();
    write(&store, &sim, 0, 30, &mut Vec::new());
    drop(store);
    compact(Path::new(SRC), opts(&sim), None, &mut |_, _| {}).unwrap();
    let other = Store::open("/other", opts(&sim)).unwrap();
    write(&other, &sim, 0, 5, &mut Vec::new());
    other.close().unwrap();
    let before = export_of(&sim, "/other");
    // Nor does a `BACKUP-OF` of garbage, or a huge one, name it.
    for bogus in [b"/sr".to_vec(), vec![b'/'; 4 << 20]] {
        jobq::fs::publish_file(&sim, Path::new("/other"), "BACKUP-OF", &bogus).unwrap();
        assert!(backup(Path::new(SRC), Path::new("/other"), Arc::new(sim.clone())).is_err());
    }
    let e = backup(Path::new(SRC), Path::new("/other"), Arc::new(sim.clone())).unwrap_err().to_string();
    assert!(e.contains("no backup of /src") && e.contains("never replaced"), "{e}");
    assert_eq!(export_of(&sim, "/other"), before);
    clean(&sim, "/other");
    // Another store of the same generation: refused, saying it may be no backup of this one.
    let e = backup(Path::new("/other"), Path::new("/src2"), Arc::new(sim.clone())).map(|_| ()).and_then(|()| {
        let third = Store::open("/third", opts(&sim)).unwrap();
        write(&third, &sim, 0, 3, &mut Vec::new());
        third.close().unwrap();
        backup(Path::new("/third"), Path::new("/src2"), Arc::new(sim.clone())).map(|_| ())
    });
    let e = e.unwrap_err().to_string();
    assert!(e.contains("no backup of /third: BACKUP-OF does not name it"), "{e}");
    // The source's own backup names it, and a run after its next compaction replaces it.
    backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert_eq!(sim.read_file(Path::new("/dest/BACKUP-OF")).unwrap(), b"/src");
    compact(Path::new(SRC), opts(&sim), None, &mut |_, _| {}).unwrap();
    let r = backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())).unwrap();
    assert!(r.full && r.generation == 3, "{r:?}");
    assert_eq!(export_of(&sim, DEST), export_of(&sim, SRC));
}

/// Incremental backups beside a writer whose online compaction keeps removing
/// the log's first segments: every copy is clean. A run used to list the
/// source's segments after its open: when compaction removed the log's first
/// segment in between, the copy started its log after it while an index file
/// it copied still pointed into it ("serves job ..., which the log does not hold").
#[test]
fn incremental_backups_beside_online_compaction_are_clean() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = SimFs::new();
    let o = Options { memtable_entries: 8, segment_bytes: 8 << 10, reclaim_segments: 2, ..opts(&sim) };
    let store = Store::open(SRC, o).unwrap();
    write(&store, &sim, 0, 40, &mut Vec::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..4000u32 {
                let line = format!(r#"{{"spider":"s{}","pad":"{}"}}"#, i % 2, "p".repeat(80));
                store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
                let key = format!("1/{}/{}", 1 + i % 2, 1 + i / 4);
                let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
                store.update(1, &[u], None).unwrap();
                if i % 25 == 0 {
                    store.reclaim().unwrap();
                }
            }
            done.store(true, Ordering::Release);
        });
        let (mut runs, mut good) = (0, 0);
        while !done.load(Ordering::Acquire) {
            match backup(Path::new(SRC), Path::new(DEST), Arc::new(sim.clone())) {
                Ok(_) => {
                    clean(&sim, DEST);
                    good += 1;
                }
                // Compaction reached the segment the copy ends in: a new directory.
                Err(e) if e.to_string().contains("online compaction removed") => {
                    sim.remove_dir_all(Path::new(DEST)).unwrap();
                }
                // This writer reclaims far more often than a server: a run may
                // find the source moved on at each of its tries, and say so.
                Err(e) if e.to_string().contains("no such file") || e.to_string().contains("went since") => {}
                Err(e) => panic!("backup {runs}: {e}"),
            }
            runs += 1;
        }
        assert!(good > 5, "{good} of {runs} backups beside the writer succeeded");
    });
}
