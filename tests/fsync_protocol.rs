//! The fsync protocol, checked on the recorded file-system calls of every write path:
//! data synced before a write is acknowledged; a new file synced before its rename
//! and its directory synced after create, rename or remove, before the next
//! acknowledgement; an index file removed only once a durable file covers its range;
//! the old generation removed only after `CURRENT` names the new one durably; synced
//! log bytes never written again, except the durable-mark slots, which alternate so
//! that the newest mark is never the one overwritten, and the preallocated zeros
//! after the last frame (written at the file's end, up to a 1 MiB boundary), which
//! frames are written over.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobq::fs::{FsOp, SimFs};
use jobq::index::format::parse_name;
use jobq::model::ManualClock;
use jobq::store::compact;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Durability, Options, Store};

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Check the ordering rules over a recorded call log; returns the number of acks seen.
fn check(ops: &[FsOp]) -> usize {
    let mut dirty: HashSet<PathBuf> = HashSet::new();
    let mut unsynced_dirs: HashSet<PathBuf> = HashSet::new();
    // Index files renamed into place and made durable: (dir, lo, hi).
    let mut durable_index: Vec<(PathBuf, u64, u64)> = Vec::new();
    let mut pending_index: Vec<(PathBuf, u64, u64)> = Vec::new();
    let mut current_switched = false;
    let mut acks = 0;
    // Per log segment: the end of its frames written, and synced; the last mark slot.
    let (mut written, mut synced): (HashMap<PathBuf, u64>, HashMap<PathBuf, u64>) = Default::default();
    let mut last_slot: HashMap<PathBuf, u64> = HashMap::new();
    // Per log segment: the file's length (a write of zeros extends it).
    let mut file_len: HashMap<PathBuf, u64> = HashMap::new();
    // Segments a later segment followed: never written again (backups hard-link them).
    let mut sealed: HashSet<PathBuf> = HashSet::new();
    // Directories where compaction durably removed segments from the log's start:
    // index files below the new start may go then.
    let (mut reclaiming, mut reclaimed): (HashSet<PathBuf>, HashSet<PathBuf>) = Default::default();
    for (i, op) in ops.iter().enumerate() {
        let at = format!("call {i} {op:?}");
        match op {
            FsOp::Write { path, offset, len } => {
                dirty.insert(path.clone());
                let end_of_file = file_len.insert(path.clone(), 0);
                file_len.insert(path.clone(), end_of_file.unwrap_or(0).max(offset + *len as u64));
                assert!(!sealed.contains(path), "{at}: a sealed segment written again");
                if name(path).ends_with(".jql") {
                    if (*offset == 4096 || *offset == 8192) && *len == 56 {
                        assert_ne!(
                            last_slot.insert(path.clone(), *offset),
                            Some(*offset),
                            "{at}: the newest mark overwritten"
                        );
                    } else if end_of_file.is_none_or(|l| l == *offset)
                        && written.get(path).is_none_or(|w| w <= offset)
                        && (offset + *len as u64).is_multiple_of(1 << 20)
                    {
                        // Preallocation: zeros from the file's end to a chunk boundary,
                        // after every frame written; frames are written over them.
                    } else {
                        let done = synced.get(path).copied().unwrap_or(0);
                        assert!(*offset >= done, "{at}: synced log bytes (up to {done}) written again");
                        let end = written.entry(path.clone()).or_insert(0);
                        *end = (*end).max(offset + *len as u64);
                    }
                }
            }
            FsOp::SetLen(path, len) => {
                dirty.insert(path.clone());
                file_len.insert(path.clone(), *len);
                assert!(!sealed.contains(path), "{at}: a sealed segment truncated");
                for m in [&mut written, &mut synced] {
                    if let Some(e) = m.get_mut(path) {
                        *e = (*e).min(*len);
                    }
                }
            }
            FsOp::SyncData(p) => {
                dirty.remove(p);
                if let Some(e) = written.get(p) {
                    synced.insert(p.clone(), *e);
                }
            }
            FsOp::Create(p) | FsOp::CreateDir(p) | FsOp::Remove(p) | FsOp::RemoveDir(p) => {
                if matches!(op, FsOp::Remove(_)) {
                    sealed.remove(p);
                    // What was written to a removed file is gone with it (an undone
                    // import's segments): nothing acknowledged lies there.
                    dirty.remove(p);
                    written.remove(p);
                    synced.remove(p);
                    file_len.remove(p);
                }
                if let FsOp::Remove(p) = op {
                    let d = parent(p);
                    if let Some((lo, hi)) = parse_name(name(p)) {
                        assert!(
                            reclaimed.contains(&d)
                                || durable_index
                                    .iter()
                                    .any(|(dd, l, h)| *dd == d && *l <= lo && hi <= *h && (*l, *h) != (lo, hi)),
                            "{at}: index file removed before a durable file covered its range"
                        );
                    }
                    if name(p).ends_with(".jql") {
                        reclaiming.insert(d);
                    }
                }
                if let FsOp::RemoveDir(p) = op {
                    if name(p).starts_with("gen-") {
                        assert!(
                            current_switched,
                            "{at}: a generation removed before CURRENT durably named the new one"
                        );
                    }
                }
                unsynced_dirs.insert(parent(p));
            }
            FsOp::Rename(from, to) => {
                assert!(!dirty.contains(from), "{at}: renamed before its data was synced");
                // A rename over a file replaces it (an undone import's first segment,
                // made empty again): what held for the old file holds no more.
                sealed.remove(to);
                dirty.remove(to);
                for m in [&mut written, &mut synced, &mut file_len] {
                    m.remove(to);
                    if let Some(v) = m.remove(from) {
                        m.insert(to.clone(), v);
                    }
                }
                if let Some(n) = name(to).strip_prefix("log-").and_then(|r| r.strip_suffix(".jql")) {
                    let n: u32 = n.parse().unwrap();
                    for m in 1..n {
                        sealed.insert(parent(to).join(format!("log-{m:010}.jql")));
                    }
                }
                if let Some((lo, hi)) = parse_name(name(to)) {
                    pending_index.push((parent(to), lo, hi));
                }
                if name(to) == "CURRENT" {
                    current_switched = false;
                }
                unsynced_dirs.insert(parent(to));
            }
            FsOp::HardLink(_, to) => {
                unsynced_dirs.insert(parent(to));
            }
            FsOp::SyncDir(d) => {
                unsynced_dirs.remove(d);
                if reclaiming.remove(d) {
                    reclaimed.insert(d.clone());
                }
                for p in pending_index.iter().filter(|(pd, ..)| pd == d) {
                    durable_index.push(p.clone());
                }
                pending_index.retain(|(pd, ..)| pd != d);
                if ops[..i]
                    .iter()
                    .rev()
                    .any(|o| matches!(o, FsOp::Rename(_, to) if name(to) == "CURRENT" && parent(to) == *d))
                {
                    current_switched = true;
                }
            }
            FsOp::Mark(m) if m == "ack" => {
                acks += 1;
                let log_dirty: Vec<&PathBuf> = dirty.iter().filter(|p| name(p).ends_with(".jql")).collect();
                assert!(log_dirty.is_empty(), "{at}: acknowledged with unsynced log data in {log_dirty:?}");
                assert!(
                    unsynced_dirs.is_empty(),
                    "{at}: acknowledged with unsynced directory entries in {unsynced_dirs:?}"
                );
            }
            FsOp::Mark(_) => {}
        }
    }
    acks
}

fn opts(sim: &SimFs, durability: Durability) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(1000)),
        durability,
        background: false,
        memtable_entries: 4,
        bulk_entries: 6,
        merge_fanout: 2,
        segment_bytes: 2048,
        ..Options::default()
    }
}

#[test]
fn every_write_path_follows_the_protocol() {
    let sim = SimFs::new();
    sim.record();
    let store = Store::open("/db", opts(&sim, Durability::Sync)).unwrap();
    sim.mark("ack");
    for i in 0..40u32 {
        let spec = parse_push(&format!(r#"{{"spider":"s{}","tags":["t"],"n":{i}}}"#, i % 3)).unwrap();
        store.push(1, &[spec], None).unwrap();
        sim.mark("ack");
        if i % 4 == 0 {
            let u =
                parse_update(&format!(r#"{{"key":"1/{}/{}","state":"finished"}}"#, 1 + i % 3, 1 + i / 3), 1).unwrap();
            store.update(1, &[u], None).unwrap();
            sim.mark("ack");
        }
    }
    let lines: String = (1..=20)
        .map(|j| format!("{{\"key\":\"2/1/{j}\",\"spider\":\"x\",\"state\":\"pending\",\"pending_time\":{j}}}\n"))
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    sim.mark("ack");
    // An import that fails after rotating segments is undone by removing them.
    let bad: String = (1..=40)
        .map(|j| {
            format!(
                "{{\"key\":\"4/1/{j}\",\"spider\":\"y\",\"state\":\"pending\",\"pending_time\":{j},\"pad\":\"{}\"}}\n",
                "p".repeat(200)
            )
        })
        .chain(std::iter::once("not json\n".to_string()))
        .collect();
    assert!(store.import(&mut bad.as_bytes(), &mut |_| {}).is_err());
    sim.mark("ack");
    // Online compaction: relocations, a catalog, index files trimmed, segments removed.
    for i in 0..30u32 {
        let u = parse_update(&format!(r#"{{"key":"1/{}/{}","n":{i}}}"#, 1 + i % 3, 1 + i % 10), 1).unwrap();
        store.update(1, &[u], None).unwrap();
        sim.mark("ack");
    }
    for _ in 0..4 {
        store.reclaim().unwrap();
        sim.mark("ack");
    }
    store.close().unwrap();
    sim.mark("ack");
    // Buffered writes: acknowledged only as durable after sync.
    let store = Store::open("/db", opts(&sim, Durability::Buffered)).unwrap();
    for i in 0..10u32 {
        store.push(3, &[parse_push(&format!(r#"{{"spider":"b","n":{i}}}"#)).unwrap()], None).unwrap();
    }
    store.sync().unwrap();
    sim.mark("ack");
    drop(store);
    compact("/db".as_ref(), opts(&sim, Durability::Sync), None, &mut |_, _| {}).unwrap();
    sim.mark("ack");
    let ops = sim.take_log();
    let acks = check(&ops);
    assert!(acks > 50, "{acks}");
    let marks = ops.iter().filter(|o| matches!(o, FsOp::Write { offset: 4096 | 8192, len: 56, .. })).count();
    assert!(marks > 20, "the workload must write durable marks: {marks}");
    let renames = ops.iter().filter(|o| matches!(o, FsOp::Rename(..))).count();
    let removes = ops.iter().filter(|o| matches!(o, FsOp::Remove(p) if name(p).ends_with(".jqi"))).count();
    assert!(
        renames > 10 && removes > 0,
        "the workload must publish and merge index files: {renames} renames, {removes} removals"
    );
}

#[test]
fn the_checker_catches_a_missing_fsync() {
    let bad =
        vec![FsOp::Write { path: "/db/g/log-0000000001.jql".into(), offset: 64, len: 10 }, FsOp::Mark("ack".into())];
    assert!(std::panic::catch_unwind(|| check(&bad)).is_err());
    let early_remove = vec![
        FsOp::Create("/db/g/idx-0000000000000001-0000000000000002.jqi.tmp".into()),
        FsOp::Remove("/db/g/idx-0000000000000001-0000000000000001.jqi".into()),
    ];
    assert!(std::panic::catch_unwind(|| check(&early_remove)).is_err());
    let seg = || PathBuf::from("/db/g/log-0000000001.jql");
    let rewrite = vec![
        FsOp::Write { path: seg(), offset: 12288, len: 100 },
        FsOp::SyncData(seg()),
        FsOp::Write { path: seg(), offset: 12300, len: 10 },
    ];
    assert!(std::panic::catch_unwind(|| check(&rewrite)).is_err());
    let same_slot = vec![
        FsOp::Write { path: seg(), offset: 4096, len: 56 },
        FsOp::SyncData(seg()),
        FsOp::Write { path: seg(), offset: 4096, len: 56 },
    ];
    assert!(std::panic::catch_unwind(|| check(&same_slot)).is_err());
}

#[test]
fn undoing_writes_across_segments_never_writes_a_sealed_one() {
    use jobq::codec::frame::FrameKind;
    use jobq::fs::FileSystem;
    use jobq::log::writer::LogWriter;
    let sim = SimFs::new();
    sim.create_dir(Path::new("/g")).unwrap();
    sim.record();
    let mut w = LogWriter::create(Arc::new(sim.clone()), Path::new("/g"), 1, 1, 100).unwrap();
    w.append(FrameKind::Spider, 0, 1, 0, &[7; 90]).unwrap();
    w.sync().unwrap();
    // An import: starts a segment of its own, rotates twice, then is undone.
    w.start_segment().unwrap();
    let first = sim.read_file(Path::new("/g/log-0000000001.jql")).unwrap();
    let (pos, seq) = (w.end(), w.next_seq());
    for _ in 0..3 {
        w.append(FrameKind::Jobs, 1, 1, 0, &[9; 90]).unwrap();
    }
    assert_eq!(w.end().segment, pos.segment + 2);
    w.truncate_to(pos, seq).unwrap();
    assert_eq!((w.end(), w.next_seq()), (pos, seq));
    check(&sim.take_log());
    assert!(sim.read_file(Path::new("/g/log-0000000001.jql")).unwrap() == first, "the sealed segment changed");
    assert!(!sim.exists(Path::new("/g/log-0000000003.jql")).unwrap());
}
