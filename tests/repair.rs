//! `jobq check` and open share their rules, case by case, and `jobq repair`
//! salvages what they refuse:
//! - damage before the durable mark: open refuses, check says so (not "a torn tail");
//! - damage inside the index chain's range: open serves it, check reports it once
//!   (no false "the index and the log differ" findings), repair cuts there;
//! - an import that never committed: open drops it, check does not count its jobs;
//! - a damaged record read through an index names its `body_len` offset;
//! - a disk-full failure: a clean close cuts the partial write, check is clean.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobq::fs::{Fault, FaultKind, FileSystem, SimFs};
use jobq::log::scan::{FrameScanner, Step};
use jobq::log::LogPos;
use jobq::model::{JobKey, ManualClock};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::store::{check, repair, CheckReport};
use jobq::{Error, Options, Store};

const GEN: &str = "/db/gen-0000000000000001";
const LOG: &str = "/db/gen-0000000000000001/log-0000000001.jql";

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(5000)),
        background: false,
        memtable_entries: 8,
        ..Options::default()
    }
}

/// 30 synced pushes (some finished): index files for most, a tail after them.
fn build(sim: &SimFs) -> Store {
    let store = Store::open("/db", opts(sim)).unwrap();
    for i in 0..30u32 {
        let line = format!(r#"{{"spider":"s{}","tags":["t{}"],"i":{i}}}"#, i % 2, i % 3);
        store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
        if i % 3 == 0 {
            let key = format!("1/{}/{}", 1 + i % 2, 1 + i / 2);
            store
                .update(1, &[parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap()], None)
                .unwrap();
        }
    }
    store
}

fn run_check(sim: &SimFs) -> CheckReport {
    check(Path::new("/db"), Arc::new(sim.clone())).unwrap()
}

/// Offsets of the frames of the first segment, and where each job record is.
fn frames(sim: &SimFs) -> (Vec<u64>, Vec<(JobKey, u64)>) {
    let (_, mut sc) = FrameScanner::segment(sim, Path::new(GEN), 1).unwrap();
    let (mut out, mut records) = (Vec::new(), Vec::new());
    while let Step::Frame { offset, header, payload } = sc.next_step().unwrap() {
        if header.kind == jobq::codec::frame::FrameKind::Jobs {
            for (off, v) in jobq::codec::record::decode_jobs(payload, header.count).unwrap() {
                records.push((v.key, offset + 32 + off as u64));
            }
        }
        out.push(offset);
    }
    (out, records)
}

fn flip(sim: &SimFs, at: u64) {
    let mut log = sim.read_file(Path::new(LOG)).unwrap();
    log[at as usize] ^= 0x40;
    sim.write_file(Path::new(LOG), log).unwrap();
}

fn chain_end(sim: &SimFs) -> LogPos {
    let store = Store::open("/db", Options { read_only: true, ..opts(sim) }).unwrap();
    store.report().replay_from
}

fn export(sim: &SimFs) -> String {
    let store = Store::open("/db", Options { read_only: true, ..opts(sim) }).unwrap();
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn damage_before_the_mark_is_refused_by_open_and_by_check() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    // Three more synced writes, unindexed; the mark names the end of the second.
    let store = Store::open("/db", opts(&sim)).unwrap();
    for _ in 0..3 {
        store.push(1, &[parse_push(r#"{"spider":"late"}"#).unwrap()], None).unwrap();
    }
    std::mem::forget(store);
    sim.kill();
    let (offsets, _) = frames(&sim);
    let tail = chain_end(&sim).offset;
    let victim = *offsets.iter().find(|o| **o >= tail).expect("an unindexed frame");
    flip(&sim, victim + 40);
    let err = Store::open("/db", opts(&sim)).err().expect("refused");
    let Error::Corrupt { offset, .. } = &err else { panic!("{err}") };
    assert_eq!(*offset, victim);
    let r = run_check(&sim);
    let f = r.findings.iter().find(|f| f.path.ends_with("log-0000000001.jql")).unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(f.offset, Some(victim), "{f}");
    assert!(f.what.contains("does not open"), "{f}");
    assert!(r.notes.is_empty(), "damage is not a torn tail: {:?}", r.notes);
}

#[test]
fn damage_inside_the_indexed_range_is_reported_once_and_repaired() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    let (offsets, _) = frames(&sim);
    let victim = offsets[offsets.len() / 2];
    flip(&sim, victim + 40);
    // Open serves the indexed versions (it does not read the indexed range).
    let store = Store::open("/db", Options { read_only: true, ..opts(&sim) }).unwrap();
    assert!(store.snapshot().count(1, &Default::default()).unwrap() > 0);
    drop(store);
    let r = run_check(&sim);
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].offset, Some(victim));
    assert!(r.findings[0].what.contains("inside the range"), "{}", r.findings[0]);
    // Repair: copy aside, cut, reopen; then everything agrees.
    let rep = repair(Path::new("/db"), opts(&sim)).unwrap();
    let cut = rep.cut.clone().expect("a cut");
    assert_eq!(cut.at, LogPos { segment: 1, offset: victim });
    assert!(cut.lost_durable);
    let saved = rep.saved_to.clone().unwrap();
    let copy = sim.read_file(&saved.join(format!("log-0000000001.jql.from-{victim}"))).unwrap();
    assert_eq!(copy.len() as u64, cut.bytes);
    assert!(!rep.dropped.is_empty(), "{rep:?}");
    assert!(!rep.indexes_set_aside.is_empty(), "index files past the cut are set aside: {rep:?}");
    // After the cut, one catalog frame: the dropped versions' job ids stay taken.
    assert!(rep.catalog_restored > 0, "{rep:?}");
    let (offsets, _) = frames(&sim);
    assert_eq!(offsets.last(), Some(&victim), "the cut, then the catalog frame: {offsets:?}");
    let r = run_check(&sim);
    assert!(r.is_clean() && r.notes.is_empty(), "{r:#?}");
    let store = Store::open("/db", opts(&sim)).unwrap();
    for (key, _) in &rep.dropped {
        let PushResult::Pushed { key: new, .. } =
            store.push(1, &[parse_push(&format!(r#"{{"spider":"s{}"}}"#, key.spider - 1)).unwrap()], None).unwrap()[0]
                .clone()
        else {
            unreachable!()
        };
        assert!(new.spider != key.spider || new.job > key.job, "{new} given again after repair dropped {key}");
    }
    drop(store);
    // A second repair finds nothing to do.
    assert!(repair(Path::new("/db"), opts(&sim)).unwrap().cut.is_none());
}

#[test]
fn repair_of_a_whole_log_changes_nothing() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    let before = (export(&sim), sim.read_file(Path::new(LOG)).unwrap());
    let rep = repair(Path::new("/db"), opts(&sim)).unwrap();
    assert!(rep.cut.is_none() && rep.saved_to.is_none(), "{rep:?}");
    assert_eq!((export(&sim), sim.read_file(Path::new(LOG)).unwrap()), before);
}

#[test]
fn an_import_that_never_committed_is_not_damage() {
    let sim = SimFs::new();
    let store = build(&sim);
    let mut lines: String = (1..=20)
        .map(|j| format!("{{\"key\":\"7/1/{j}\",\"spider\":\"imp\",\"state\":\"finished\",\"finished_time\":{j}}}\n"))
        .collect();
    // Jobs the store holds, changed by the import: they keep their versions from before it.
    lines += "{\"key\":\"1/1/2\",\"spider\":\"s0\",\"state\":\"running\",\"running_time\":9,\"unique\":\"uu\"}\n";
    lines += "{\"key\":\"1/2/2\",\"spider\":\"s1\",\"state\":\"deleted\",\"deleted_time\":9}\n";
    // Find the import's commit write on a copy, then fail it (and everything after:
    // no rollback either) and kill the process: its frames stay, without a commit.
    let trial = sim.fork();
    let s2 = Store::open("/db", opts(&trial)).unwrap();
    trial.record();
    s2.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    let ops = trial.take_log();
    let log_writes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, jobq::fs::FsOp::Write { path, offset, .. } if path.to_string_lossy().ends_with(".jql") && *offset >= 12288))
        .map(|(i, _)| i)
        .collect();
    let commit_at = *log_writes.last().unwrap() as u64;
    sim.set_fault(Some(Fault { at: commit_at, kind: FaultKind::Eio, sticky: true }));
    assert!(store.import(&mut lines.as_bytes(), &mut |_| {}).is_err());
    std::mem::forget(store);
    sim.kill();
    let r = run_check(&sim);
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert!(r.notes.iter().any(|n| n.contains("import")), "{:?}", r.notes);
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert_eq!(store.snapshot().count(7, &Default::default()).unwrap(), 0);
}

#[test]
fn a_damaged_record_read_through_an_index_names_its_body_len() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    // Job 1/2/1 was pushed once and never changed: its only record is the one served.
    let key = JobKey::new(1, 2, 1);
    let (_, records) = frames(&sim);
    let record = records.iter().find(|(k, _)| *k == key).unwrap().1;
    flip(&sim, record + 20);
    let store = Store::open("/db", opts(&sim)).unwrap();
    let err = store.snapshot().get(key).expect_err("the record's checksum fails");
    match &err {
        Error::Corrupt { path, offset, .. } => {
            assert!(path.ends_with("log-0000000001.jql"), "{err}");
            assert_eq!(*offset, record, "{err}");
        }
        other => panic!("{other}"),
    }
    let r = run_check(&sim);
    assert!(r.findings.iter().any(|f| f.offset.is_some_and(|o| o <= record + 20)), "{:#?}", r.findings);
}

#[test]
fn a_write_that_meets_a_full_disk_is_cut_at_once_and_the_close_keeps_the_cut() {
    let sim = SimFs::new();
    let store = build(&sim);
    let acked = store.metrics().log_bytes as usize;
    let allocated = sim.read_file(Path::new(LOG)).unwrap().len();
    sim.set_fault(Some(Fault { at: 0, kind: FaultKind::DiskFull, sticky: false }));
    // Larger than the preallocated space: the write runs past the file's end.
    let big = format!(r#"{{"spider":"s0","pad":"{}"}}"#, "x".repeat(allocated));
    let e = store.push(1, &[parse_push(&big).unwrap()], None).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.is_disk_full(), "{e}");
    // Half the frame had landed: the batch is cut at once, zeros included.
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), acked, "the partial frame cut");
    assert!(store.health().accepts_writes());
    store.close().unwrap();
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), acked, "the close keeps the cut");
    let r = run_check(&sim);
    assert!(r.is_clean() && r.notes.is_empty(), "{r:#?}");
    let files: Vec<PathBuf> =
        sim.read_dir(Path::new(GEN)).unwrap().into_iter().map(|n| Path::new(GEN).join(n)).collect();
    assert!(files.iter().all(|p| !p.to_string_lossy().ends_with(".tmp")), "{files:?}");
}

/// A damaged segment header (any of its 64 bytes) of the first segment or a
/// later one: repair rebuilds it from the file name, the directory and the
/// segment's first frame, saves the old bytes aside, and keeps every job; a
/// header whose first frame is damaged too is left to the cut as before.
#[test]
fn a_damaged_segment_header_is_rebuilt_and_every_frame_kept() {
    let small = |sim: &SimFs| Options { segment_bytes: 16 << 10, ..opts(sim) };
    let make = || {
        let sim = SimFs::new();
        let store = Store::open("/db", small(&sim)).unwrap();
        for i in 0..120u32 {
            let pad = "x".repeat(200);
            let line = format!(r#"{{"spider":"s{}","i":{i},"pad":"{pad}"}}"#, i % 3);
            store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
        }
        store.close().unwrap();
        sim
    };
    let segments = |sim: &SimFs| jobq::log::segment::list(sim, Path::new(GEN)).unwrap();
    let reference = make();
    let expected = export(&reference);
    let n = segments(&reference);
    assert!(n.len() >= 3, "{n:?}");
    for seg in [1, n[n.len() / 2]] {
        for at in [0usize, 9, 13, 20, 25, 40, 61] {
            let sim = make();
            let path = PathBuf::from(GEN).join(jobq::log::segment::file_name(seg));
            let mut bytes = sim.read_file(&path).unwrap();
            bytes[at] ^= 0x21;
            let damaged = bytes[..64].to_vec();
            sim.write_file(&path, bytes).unwrap();
            let rep = repair(Path::new("/db"), small(&sim)).unwrap_or_else(|e| panic!("segment {seg} byte {at}: {e}"));
            assert_eq!(rep.headers_rebuilt.len(), 1, "segment {seg} byte {at}: {rep:?}");
            assert_eq!(rep.headers_rebuilt[0].segment, seg);
            assert!(rep.cut.is_none(), "segment {seg} byte {at}: {rep:?}");
            let saved = rep.saved_to.clone().unwrap().join(format!("{}.header", jobq::log::segment::file_name(seg)));
            assert_eq!(sim.read_file(&saved).unwrap(), damaged);
            assert_eq!(export(&sim), expected, "segment {seg} byte {at}");
            assert!(run_check(&sim).is_clean(), "segment {seg} byte {at}");
        }
    }
    // The header and the first frame behind it damaged: nothing to rebuild from.
    let sim = make();
    let later = n[n.len() / 2];
    let path = PathBuf::from(GEN).join(jobq::log::segment::file_name(later));
    let mut bytes = sim.read_file(&path).unwrap();
    bytes[20] ^= 1;
    bytes[12288 + 40] ^= 1;
    sim.write_file(&path, bytes).unwrap();
    let rep = repair(Path::new("/db"), small(&sim)).unwrap();
    assert!(rep.headers_rebuilt.is_empty(), "{rep:?}");
    let cut = rep.cut.expect("a cut at the damaged segment");
    assert!(cut.at.segment < later || cut.at == LogPos { segment: later, offset: 0 }, "{cut:?}");
    assert!(run_check(&sim).is_clean());
    let kept = export(&sim).lines().count();
    assert!(kept > 0 && kept < expected.lines().count(), "{kept}");
    // A damaged header whose first frame claims a 1 GiB payload: nothing is
    // read past the file, the header stays, the segment is cut.
    let sim = make();
    let mut bytes = sim.read_file(&path).unwrap();
    bytes[20] ^= 1;
    bytes[12288 + 4..12288 + 8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    sim.write_file(&path, bytes).unwrap();
    let rep = repair(Path::new("/db"), small(&sim)).unwrap();
    assert!(rep.headers_rebuilt.is_empty() && rep.cut.is_some(), "{rep:?}");
    // The first segment cut short inside its header: an error that names it, no panic.
    let sim = make();
    let first = PathBuf::from(LOG);
    let bytes = sim.read_file(&first).unwrap();
    sim.write_file(&first, bytes[..40].to_vec()).unwrap();
    let err = repair(Path::new("/db"), small(&sim)).expect_err("nothing to rebuild a 40-byte segment from");
    assert!(err.to_string().contains("log-0000000001.jql"), "{err}");
}

/// Repair reports every job version it can still read past the cut: a damaged
/// frame header or record costs only its own bytes (the report used to stop at
/// the first of them and call the rest undecodable), and a segment's
/// preallocated zeros are not counted as undecodable.
#[test]
fn repair_reports_every_readable_version_past_the_damage() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    let (offsets, records) = frames(&sim);
    // A jobs frame in the middle, and the record lengths after it.
    let (_, mid) = records[records.len() / 2];
    let victim = *offsets.iter().rev().find(|o| **o < mid).unwrap();
    let after: Vec<JobKey> = records.iter().filter(|(_, at)| *at > victim).map(|(k, _)| *k).collect();
    let first_len = {
        let log = sim.read_file(Path::new(LOG)).unwrap();
        let at = (victim + 32) as usize;
        8 + (u32::from_le_bytes(log[at..at + 4].try_into().unwrap()) & 0x7fff_ffff) as u64
    };
    for (damage, at, lost, undecoded) in
        [("frame kind", victim + 8, 0, 32), ("first record's body", victim + 32 + 12, 1, 32 + first_len)]
    {
        let s = sim.fork();
        flip(&s, at);
        let rep = repair(Path::new("/db"), opts(&s)).unwrap_or_else(|e| panic!("{damage}: {e}"));
        assert_eq!(rep.cut.as_ref().map(|c| c.at.offset), Some(victim), "{damage}: {rep:?}");
        let keys: Vec<JobKey> = rep.dropped.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, after[lost..], "{damage}");
        assert_eq!(rep.undecoded_bytes, undecoded, "{damage}: {rep:?}");
    }
}

/// A last segment cut short at a frame boundary, below what its durable mark
/// names: open refuses it (acknowledged bytes are gone) and `jobq repair`, which
/// the refusal points to, salvages it (it refused too: the cut left the mark).
#[test]
fn a_log_cut_below_its_durable_mark_is_repaired() {
    let sim = SimFs::new();
    build(&sim).close().unwrap();
    let (offsets, _) = frames(&sim);
    let last = *offsets.last().unwrap();
    let mut log = sim.read_file(Path::new(LOG)).unwrap();
    log.truncate(last as usize);
    sim.write_file(Path::new(LOG), log).unwrap();
    let err = Store::open("/db", opts(&sim)).err().expect("refused: the mark names more");
    assert!(err.to_string().contains("jobq repair"), "{err}");
    let rep = repair(Path::new("/db"), opts(&sim)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.cut.as_ref().map(|c| c.at.offset), Some(last), "{rep:?}");
    Store::open("/db", opts(&sim)).unwrap().close().unwrap();
    let r = run_check(&sim);
    assert!(r.is_clean(), "{r:#?}");
}

/// Damage inside a committed import: repair cuts the whole transaction, and its
/// report says what the damage was and that acknowledged writes are lost (it
/// said "an import transaction without its commit", as after a crash).
#[test]
fn damage_inside_a_committed_import_is_reported_as_damage() {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    let lines: String = (1..=200)
        .map(|j| format!("{{\"key\":\"7/1/{j}\",\"spider\":\"imp\",\"state\":\"finished\",\"finished_time\":{j}}}\n"))
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    store.close().unwrap();
    let segs = jobq::log::segment::list(&sim, Path::new(GEN)).unwrap();
    let path = Path::new(GEN).join(jobq::log::segment::file_name(*segs.last().unwrap()));
    let mut bytes = sim.read_file(&path).unwrap();
    let nonzero = bytes.iter().rposition(|b| *b != 0).unwrap();
    let at = 12288 + (nonzero - 12288) / 2;
    bytes[at] ^= 0x40;
    sim.write_file(&path, bytes).unwrap();
    let rep = repair(Path::new("/db"), opts(&sim)).unwrap();
    let cut = rep.cut.clone().expect("a cut");
    assert!(cut.reason.contains("checksum") && cut.reason.contains("import transaction"), "{}", cut.reason);
    assert!(cut.lost_durable, "{cut:?}");
    assert!(rep.dropped.len() >= 190, "the import's versions are listed: {}", rep.dropped.len());
    let r = run_check(&sim);
    assert!(r.is_clean(), "{r:#?}");
}
