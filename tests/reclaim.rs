//! Online compaction (`Store::reclaim`, `Options::compact_when`): superseded
//! versions are reclaimed from the oldest segments while the store serves. Every
//! answer stays the same, the log shrinks, snapshots taken before keep reading,
//! a read-only opener beside keeps reading, retention drops old deleted jobs
//! (their ids are never given again), and a power cut at every call of a cycle
//! leaves a store that opens with every acknowledged write.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{CrashMode, Fault, FaultKind, FileSystem, SimFs};
use jobq::model::{JobKey, ManualClock};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{check, PushResult};
use jobq::{Options, Store};

const DIR: &str = "/db";
const GEN: &str = "/db/gen-0000000000000001";

fn opts(sim: &SimFs, clock: &Arc<ManualClock>) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: clock.clone(),
        background: false,
        memtable_entries: 32,
        segment_bytes: 16 << 10,
        reclaim_segments: 3,
        ..Options::default()
    }
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn log_bytes(sim: &SimFs) -> u64 {
    sim.read_dir(Path::new(GEN))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".jql"))
        .map(|n| {
            // Not the last segment's preallocated zeros (no frame here ends in a zero).
            let b = sim.read_file(&Path::new(GEN).join(n)).unwrap();
            b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1) as u64
        })
        .sum()
}

/// `n` jobs through five versions each (pushed, started, tagged, finished, noted).
fn history(store: &Store, clock: &ManualClock, n: u32) -> Vec<JobKey> {
    let mut keys = Vec::new();
    for i in 0..n {
        clock.advance(10);
        let line = format!(r#"{{"spider":"s{}","tags":["t{}"],"i":{i},"pad":"{}"}}"#, i % 3, i % 5, "p".repeat(150));
        match &store.push(1 + i % 2, &[parse_push(&line).unwrap()], Some("alice")).unwrap()[0] {
            PushResult::Pushed { key, .. } => keys.push(*key),
            PushResult::Conflict { .. } => unreachable!(),
        }
    }
    for (step, change) in
        [r#""state":"running""#, r#""add_tag":"x""#, r#""state":"finished""#, r#""note":"done""#].iter().enumerate()
    {
        for (i, k) in keys.iter().enumerate() {
            if step == 3 && i % 4 == 0 {
                continue;
            }
            clock.advance(10);
            let u = parse_update(&format!(r#"{{"key":"{k}",{change}}}"#), k.project).unwrap();
            store.update(k.project, &[u], None).unwrap();
        }
    }
    keys
}

fn clean(sim: &SimFs) {
    let r = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{:#?}", r.findings);
}

#[test]
fn reclaiming_keeps_every_answer_and_shrinks_the_log() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    history(&store, &clock, 200);
    let want = export(&store);
    let before = log_bytes(&sim);
    let ratio = store.superseded_ratio().unwrap();
    assert!(ratio > 0.7, "five versions a job: {ratio}");
    let mut cycles = 0;
    loop {
        let r = store.reclaim().unwrap();
        if r.segments.is_empty() || cycles > 200 {
            break;
        }
        assert!(r.bytes_relocated < r.bytes_removed, "{r:?}");
        cycles += 1;
        assert_eq!(export(&store), want, "after cycle {cycles}");
    }
    let after = log_bytes(&sim);
    assert!(cycles > 3 && after * 3 < before, "{cycles} cycles: {before} -> {after} bytes");
    assert!(store.superseded_ratio().unwrap() < 0.5, "{}", store.superseded_ratio().unwrap());
    // The store goes on: writes, reopen, check.
    store.push(1, &[parse_push(r#"{"spider":"after"}"#).unwrap()], None).unwrap();
    let want = export(&store);
    store.close().unwrap();
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    assert_eq!(export(&store), want);
    drop(store);
    clean(&sim);
}

#[test]
fn snapshots_and_read_only_openers_keep_reading_removed_segments() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let keys = history(&store, &clock, 100);
    let snap = store.snapshot();
    let beside = Store::open(DIR, Options { read_only: true, create: false, ..opts(&sim, &clock) }).unwrap();
    let want = export(&beside);
    for _ in 0..20 {
        store.reclaim().unwrap();
    }
    assert!(!sim.exists(&Path::new(GEN).join("log-0000000001.jql")).unwrap(), "the oldest segment is gone");
    for k in &keys {
        assert!(snap.get(*k).unwrap().is_some(), "a snapshot from before lost {k}");
    }
    assert_eq!(export(&beside), want, "a read-only opener beside lost records");
}

#[test]
fn an_old_snapshot_holds_a_bounded_number_of_removed_segments() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let keys = history(&store, &clock, 100);
    // A slow client's streamed answer: its snapshot lives while the log turns over.
    let snap = store.snapshot();
    let held_max = jobq::store::MAX_REMOVED_HELD as u64 + 3;
    for round in 0..40 {
        for k in &keys {
            clock.advance(10);
            let u = parse_update(&format!(r#"{{"key":"{k}","round":{round},"pad":"{}"}}"#, "q".repeat(150)), k.project);
            store.update(k.project, &[u.unwrap()], None).unwrap();
        }
        // (A cycle always finds segments to take: it moves their live records on.)
        for _ in 0..5 {
            store.reclaim().unwrap();
        }
        let m = store.metrics();
        assert!(m.segments_held <= held_max, "round {round}: {} removed segments held", m.segments_held);
    }
    let m = store.metrics();
    assert!(m.compactions_deferred > 0 && m.segments_held >= held_max - 3, "{m:?}");
    for k in &keys {
        assert!(snap.get(*k).unwrap().is_some(), "the old snapshot lost {k}");
    }
    // Once it is gone, compaction goes on and lets the removed segments go.
    drop(snap);
    let cycles = (0..5).filter(|_| !store.reclaim().unwrap().segments.is_empty()).count();
    let m = store.metrics();
    assert!(cycles > 0 && m.segments_held <= 3, "{cycles} cycles, {} held", m.segments_held);
    store.close().unwrap();
    clean(&sim);
}

#[test]
fn retention_drops_old_deleted_jobs_and_their_ids_stay_taken() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = Options { retain_deleted: Some(std::time::Duration::from_secs(60)), ..opts(&sim, &clock) };
    let store = Store::open(DIR, o.clone()).unwrap();
    let keys = history(&store, &clock, 60);
    for k in &keys[..20] {
        let u = parse_update(&format!(r#"{{"key":"{k}","state":"deleted"}}"#), k.project).unwrap();
        store.update(k.project, &[u], None).unwrap();
    }
    clock.advance(120_000);
    for _ in 0..50 {
        store.reclaim().unwrap();
    }
    for k in &keys[..20] {
        assert!(store.snapshot().get(*k).unwrap().is_none(), "{k} was deleted long ago");
    }
    for k in &keys[20..] {
        assert!(store.snapshot().get(*k).unwrap().is_some(), "{k} is not deleted");
    }
    let highest = keys.iter().filter(|k| k.project == 1 && k.spider == 1).map(|k| k.job).max().unwrap();
    drop(store);
    let store = Store::open(DIR, o).unwrap();
    match &store.push(1, &[parse_push(r#"{"spider":"s0"}"#).unwrap()], None).unwrap()[0] {
        PushResult::Pushed { key, .. } => assert!(key.job > highest, "id {key} given again"),
        PushResult::Conflict { .. } => unreachable!(),
    }
}

/// A store with a history to reclaim, its export, and the file-system calls one
/// compaction cycle on it makes (counted after the open).
fn store_for_cycles() -> (SimFs, Arc<ManualClock>, String, u64) {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    history(&store, &clock, 80);
    store.flush_indexes().unwrap();
    let want = export(&store);
    drop(store);
    let calls = {
        let s = sim.fork();
        let store = Store::open(DIR, opts(&s, &clock)).unwrap();
        let before = s.mutations();
        assert!(!store.reclaim().unwrap().segments.is_empty());
        s.mutations() - before
    };
    (sim, clock, want, calls)
}

/// A power cut at every file-system call of a cycle, in every damage mode, then
/// a second one during recovery: the store opens, answers as before, is clean.
#[test]
fn a_power_cut_at_every_call_of_a_cycle() {
    let (sim, clock, want, calls) = store_for_cycles();
    let mut runs = 0;
    for at in 0..calls + 2 {
        for (m, mode) in CrashMode::ALL.into_iter().enumerate() {
            let s = sim.fork();
            let store = Store::open(DIR, opts(&s, &clock)).unwrap();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let _ = store.reclaim();
            drop(store);
            let seed = at * 17 + m as u64;
            s.crash(mode, seed);
            s.set_fault(Some(Fault { at: seed % 5, kind: FaultKind::PowerCut, sticky: true }));
            drop(Store::open(DIR, opts(&s, &clock)));
            s.crash(mode, seed + 1);
            let context = format!("cut at call {at} of {calls} ({mode:?})");
            let store = Store::open(DIR, opts(&s, &clock)).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(export(&store), want, "{context}");
            drop(store);
            let r = check(Path::new(DIR), Arc::new(s.clone())).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
            runs += 1;
        }
    }
    eprintln!("power cuts in a compaction cycle: {runs} ({calls} calls x 4 modes)");
}

/// An I/O error, a full disk or a short write at each call of a cycle, once or
/// for good: the cycle fails (the store may be poisoned) or not; the store
/// answers as before the cycle, and so does it reopened by the next process
/// (nothing lost from the page cache), which takes writes and checks clean.
#[test]
fn an_io_fault_at_every_call_of_a_cycle() {
    let (sim, clock, want, calls) = store_for_cycles();
    let mut failed = 0;
    for at in 0..calls + 1 {
        for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::DiskFull, FaultKind::ShortWrite] {
            for sticky in [false, true] {
                let s = sim.fork();
                let store = Store::open(DIR, opts(&s, &clock)).unwrap();
                s.set_fault(Some(Fault { at, kind, sticky }));
                let context = format!("{kind:?} at call {at} of {calls} (sticky {sticky})");
                if let Err(e) = store.reclaim() {
                    failed += 1;
                    // A relocation batch cut after a full disk leaves the store
                    // writable (unless every later call fails too: the cut does).
                    if e.is_append_disk_full() && !(sticky && kind == FaultKind::Enospc) {
                        assert!(store.health().accepts_writes(), "{context}: {e}");
                    }
                }
                // What the store answers meanwhile is still every job.
                assert_eq!(export(&store), want, "{context}: the store after the cycle");
                drop(store);
                s.set_fault(None);
                let store = Store::open(DIR, opts(&s, &clock)).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(export(&store), want, "{context}: reopened");
                store.push(1, &[parse_push(r#"{"spider":"after"}"#).unwrap()], None).unwrap();
                drop(store);
                let r = check(Path::new(DIR), Arc::new(s.clone())).unwrap();
                assert!(r.is_clean(), "{context}: {:#?}", r.findings);
            }
        }
    }
    eprintln!("I/O faults in a compaction cycle: {calls} calls, {failed} cycles failed");
    assert!(failed > calls as usize, "faults must fail cycles: {failed}");
}

/// Format 7: an import packs its documents with a dictionary it writes first; online
/// compaction moves packed records byte for byte and writes the dictionary frame
/// again before it removes the segment that held it, so the log alone (index files
/// gone) still reads every document.
#[test]
fn packed_records_and_their_dictionary_survive_reclaiming() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let lines: String = (1..=1500u32)
        .map(|j| {
            format!(
                r#"{{"key":"7/1/{j}","spider":"bulk","state":"finished","finished_time":{},"units":{},"version":"1.{}.{}","args":{{"url":"https://site-{}.example.com/c/{}"}},"scheduled_by":"user{}@example.org","close_reason":"{}"}}"#,
                1_000_000 + j,
                j % 3 + 1,
                j % 7,
                j % 31,
                j * 7919 % 5000,
                j * 104_729 % 100_000,
                j % 300,
                ["finished", "cancelled"][j as usize % 2]
            ) + "\n"
        })
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    // Most imported jobs get a new version: their packed records become garbage.
    for j in (1..=1500u32).filter(|j| j % 5 != 0) {
        clock.advance(10);
        let u = parse_update(&format!(r#"{{"key":"7/1/{j}","note":"seen"}}"#), 7).unwrap();
        store.update(7, &[u], None).unwrap();
    }
    let want = export(&store);
    let mut cycles = 0;
    while !store.reclaim().unwrap().segments.is_empty() && cycles < 200 {
        cycles += 1;
        assert_eq!(export(&store), want, "after cycle {cycles}");
    }
    assert!(cycles > 3, "{cycles} cycles");
    store.close().unwrap();
    clean(&sim);
    for n in sim.read_dir(Path::new(GEN)).unwrap() {
        if n.ends_with(".jqi") {
            sim.remove_file(&Path::new(GEN).join(n)).unwrap();
        }
    }
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    assert_eq!(export(&store), want, "read from the log alone");
}

/// Damage before the dictionary frame that online compaction wrote again after
/// the records that use it: `repair` cuts there, and writes the dictionary back
/// (from the index files' copies) before it removes them. It used to leave a
/// log whose kept records named a dictionary no frame held: nothing opened it,
/// repair again included.
#[test]
fn repair_before_a_moved_dictionary_frame_writes_the_dictionary_back() {
    use jobq::codec::frame::FrameKind;
    use jobq::log::scan::{FrameScanner, Step};
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let lines: String = (1..=1500u32)
        .map(|j| format!(r#"{{"key":"7/1/{j}","spider":"bulk","state":"finished","finished_time":{},"args":{{"url":"https://site-{}.example.com/"}}}}"#, 1_000_000 + j, j * 7919 % 5000) + "\n")
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    for j in (1..=1500u32).filter(|j| j % 5 != 0) {
        clock.advance(10);
        store.update(7, &[parse_update(&format!(r#"{{"key":"7/1/{j}","note":"seen"}}"#), 7).unwrap()], None).unwrap();
    }
    let mut cycles = 0;
    while !store.reclaim().unwrap().segments.is_empty() && cycles < 200 {
        cycles += 1;
    }
    let want: std::collections::BTreeSet<String> = export(&store).lines().map(String::from).collect();
    store.close().unwrap();
    // Where the dictionary frame is now, and the first jobs frame of the log.
    let mut segments: Vec<u32> = sim
        .read_dir(Path::new(GEN))
        .unwrap()
        .iter()
        .filter_map(|n| n.strip_prefix("log-")?.strip_suffix(".jql")?.parse().ok())
        .collect();
    segments.sort_unstable();
    let (mut dict_at, mut first_jobs) = (None, None);
    for n in &segments {
        let (_, mut sc) = FrameScanner::segment(&sim, Path::new(GEN), *n).unwrap();
        while let Step::Frame { offset, header, .. } = sc.next_step().unwrap() {
            match header.kind {
                FrameKind::Dict if dict_at.is_none() => dict_at = Some(*n),
                FrameKind::Jobs if first_jobs.is_none() => first_jobs = Some((*n, offset)),
                _ => {}
            }
        }
    }
    let (dict_at, (victim, offset)) = (dict_at.unwrap(), first_jobs.unwrap());
    assert!(victim < dict_at, "the dictionary frame was written again after records: {victim} < {dict_at}");
    let path = Path::new(GEN).join(format!("log-{victim:010}.jql"));
    let mut bytes = sim.read_file(&path).unwrap();
    bytes[offset as usize + 40] ^= 0x40;
    sim.write_file(&path, bytes).unwrap();
    // Killed at any call, then run again: as one whole run (the dictionary too).
    let (one_run, calls) = {
        let s = sim.fork();
        jobq::store::repair(Path::new(DIR), opts(&s, &clock)).unwrap();
        let store = Store::open(DIR, opts(&s, &clock)).unwrap();
        (export(&store), s.mutations())
    };
    assert!(calls > 10, "{calls} calls");
    for at in 0..calls + 2 {
        let s = sim.fork();
        s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
        let _ = jobq::store::repair(Path::new(DIR), opts(&s, &clock));
        s.kill();
        let later = Options { clock: Arc::new(ManualClock::new(2_000_000)), ..opts(&s, &clock) };
        let context = format!("repair killed at call {at} of {calls}");
        jobq::store::repair(Path::new(DIR), later).unwrap_or_else(|e| panic!("{context}: the second run: {e}"));
        let store = Store::open(DIR, opts(&s, &clock)).unwrap_or_else(|e| panic!("{context}: open: {e}"));
        assert_eq!(export(&store), one_run, "{context}");
    }
    let r = jobq::store::repair(Path::new(DIR), opts(&sim, &clock)).unwrap();
    assert!(r.cut.is_some() && !r.dicts_restored.is_empty(), "{r:#?}");
    clean(&sim);
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let kept = export(&store);
    assert!(kept.lines().all(|l| want.contains(l)), "every job kept reads as it was");
    let again = jobq::store::repair(Path::new(DIR), opts(&sim, &clock));
    drop(store);
    assert!(matches!(again, Err(jobq::Error::Locked { .. })), "{again:?}");
    let again = jobq::store::repair(Path::new(DIR), opts(&sim, &clock)).unwrap();
    assert!(again.cut.is_none() && again.dicts_restored.is_empty(), "nothing more to do: {again:#?}");
}

/// With retention, a cycle rewrites the index file that straddles the new log
/// start without the deleted jobs it dropped. A power cut, or a kill -9 (every
/// removal already made stays), at every call of such a cycle leaves a store that
/// opens to the state before the cycle or after some of its segments went, reads
/// every job it lists, and checks clean. Index files that held dropped jobs used
/// to outlive the segments they pointed into (the old straddling file preferred
/// over its rewrite, or a file wholly before the new start chosen at a log start
/// inside the cycle's segments): listings failed, check found them.
#[test]
fn a_power_cut_at_every_call_of_a_cycle_that_drops_deleted_jobs() {
    use std::collections::BTreeSet;
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    // Small segments: a cycle takes several (a crash can leave some removed).
    let o = |s: &SimFs| Options {
        retain_deleted: Some(std::time::Duration::from_secs(60)),
        segment_bytes: 4 << 10,
        ..opts(s, &clock)
    };
    let lines = |store: &Store| export(store).lines().map(String::from).collect::<BTreeSet<_>>();
    let store = Store::open(DIR, o(&sim)).unwrap();
    // Deleted jobs all along the log, so that the straddling file holds some.
    for i in 0..240u32 {
        clock.advance(10);
        let line = format!(r#"{{"spider":"s{}","i":{i},"pad":"{}"}}"#, i % 3, "p".repeat(150));
        let PushResult::Pushed { key, .. } = store.push(1, &[parse_push(&line).unwrap()], None).unwrap()[0].clone()
        else {
            unreachable!()
        };
        if i % 3 != 0 {
            store
                .update(1, &[parse_update(&format!(r#"{{"key":"{key}","state":"deleted"}}"#), 1).unwrap()], None)
                .unwrap();
        }
    }
    store.flush_indexes().unwrap();
    clock.advance(120_000);
    let before = lines(&store);
    drop(store);
    let (calls, after) = {
        let s = sim.fork();
        let store = Store::open(DIR, o(&s)).unwrap();
        s.set_fault(None);
        let r = store.reclaim().unwrap();
        assert!(r.deleted_dropped > 0 && r.segments.len() > 1, "{r:?}");
        (s.mutations(), lines(&store))
    };
    assert!(after.len() < before.len());
    let mut first_segments = BTreeSet::new();
    for at in 0..calls + 2 {
        for m in 0..=CrashMode::ALL.len() {
            let s = sim.fork();
            let store = Store::open(DIR, o(&s)).unwrap();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let _ = store.reclaim();
            std::mem::forget(store);
            let mode = CrashMode::ALL.get(m);
            match mode {
                Some(mode) => s.crash(*mode, at * 31 + m as u64),
                None => s.kill(),
            }
            first_segments.insert(jobq::log::segment::list(&s, Path::new(GEN)).unwrap()[0]);
            let context = format!("cut at call {at} of {calls} ({mode:?}, None: kill -9)");
            let store = Store::open(DIR, o(&s)).unwrap_or_else(|e| panic!("{context}: {e}"));
            let got = lines(&store);
            assert!(got.is_subset(&before) && after.is_subset(&got), "{context}");
            drop(store);
            let r = check(Path::new(DIR), Arc::new(s.clone())).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
        }
    }
    assert!(first_segments.len() > 2, "kills between removals: {first_segments:?}");
}

/// `jobq repair` of a store online compaction shrank: the first index file
/// begins before the log, its older docs superseded by relocated copies. A cut
/// that takes those copies used to leave the docs pointing into removed
/// segments (check unclean, listings 500, a second repair "nothing to do"). The
/// file is now rebuilt from the log, and every job the export still lists reads.
#[test]
fn repair_after_online_compaction_leaves_no_job_in_removed_segments() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    history(&store, &clock, 80);
    for _ in 0..3 {
        store.reclaim().unwrap();
    }
    store.flush_indexes().unwrap();
    store.close().unwrap();
    let segs = jobq::log::segment::list(&sim, Path::new(GEN)).unwrap();
    assert!(segs[0] > 1, "compaction removed segments: {segs:?}");
    // Damage the middle of a later segment, where relocated copies went.
    let victim = Path::new(GEN).join(jobq::log::segment::file_name(segs[segs.len() / 2 + 1]));
    let mut bytes = sim.read_file(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    sim.write_file(&victim, bytes).unwrap();
    let r = jobq::store::repair(Path::new(DIR), opts(&sim, &clock)).unwrap();
    assert!(r.cut.is_some() && !r.began_before_log.is_empty(), "{r:?}");
    clean(&sim);
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    export(&store);
    drop(store);
    let again = jobq::store::repair(Path::new(DIR), opts(&sim, &clock)).unwrap();
    assert!(again.cut.is_none(), "{again:?}");
}
