//! The log's recovery rules, case by case (LevelDB's list): a torn tail cut at every
//! byte of the last frames, every bit of the last frame flipped, zeros and garbage
//! appended, a bad frame in the middle refused with its file and offset (or cut
//! under the salvage policy), and recovery itself run twice. Then the preallocated
//! zeros of a version-4 segment: a clean end, a torn write into them cut at every
//! byte, zeros before the mark refused.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::assert_store_is;
use common::model::{MPush, Model};
use jobq::fs::SimFs;
use jobq::log::recovery::RecoveryPolicy;
use jobq::model::{JobState, ManualClock};
use jobq::store::request::parse_push;
use jobq::{Error, Options, Store};

const LOG: &str = "/db/gen-0000000000000001/log-0000000001.jql";

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(5000)),
        background: false,
        memtable_entries: 1000,
        ..Options::default()
    }
}

fn line(i: usize) -> MPush {
    MPush {
        spider: "spider".into(),
        state: JobState::Pending,
        priority: Some((i % 5) as i64),
        tags: vec![format!("t{}", i % 3)],
        unique: None,
        field: None,
    }
}

/// A store with `n` single-job writes after an indexed prefix; returns the log
/// length and the model after each write. The log is cut back to its last frame
/// (as a clean close leaves it), so that its file ends where the log does.
fn build(n: usize) -> (SimFs, Vec<(usize, Model)>) {
    let (sim, states) = build_preallocated(n);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    sim.write_file(Path::new(LOG), full[..states[states.len() - 1].0].to_vec()).unwrap();
    (sim, states)
}

/// As [`build`], the log file left as the crash left it: its preallocated zeros after the last frame.
fn build_preallocated(n: usize) -> (SimFs, Vec<(usize, Model)>) {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    let mut model = Model::default();
    let push = |store: &Store, model: &mut Model, i: usize| {
        let l = line(i);
        let spec = parse_push(&format!(r#"{{"spider":"spider","priority":{},"tags":["t{}"]}}"#, i % 5, i % 3)).unwrap();
        store.push(1, &[spec], None).unwrap();
        model.push(1, &[l], 5000, None);
    };
    for i in 0..5 {
        push(&store, &mut model, i);
    }
    store.flush_indexes().unwrap();
    let end = |store: &Store| store.metrics().log_bytes as usize;
    let mut states = vec![(end(&store), model.clone())];
    for i in 5..5 + n {
        push(&store, &mut model, i);
        states.push((end(&store), model.clone()));
    }
    let len = sim.read_file(Path::new(LOG)).unwrap().len();
    assert!(len > states[states.len() - 1].0, "the segment is preallocated: {len}");
    // A process crash: everything acknowledged is durable, nothing is flushed.
    std::mem::forget(store);
    (sim, states)
}

/// The model of the longest prefix of writes whose frames end at or before `len`.
fn expected(states: &[(usize, Model)], len: usize) -> &Model {
    &states.iter().rev().find(|(l, _)| *l <= len).expect("the indexed prefix survives").1
}

fn reopen_twice(sim: &SimFs, policy: RecoveryPolicy) -> Result<Store, Error> {
    let o = Options { recovery: policy, ..opts(sim) };
    let first = Store::open("/db", o.clone())?;
    drop(first);
    Store::open("/db", o)
}

/// Where the log's durable mark says its synced part ends.
fn durable_end(sim: &SimFs) -> usize {
    use jobq::fs::{FileSystem, OpenMode};
    let f = sim.open(Path::new(LOG), OpenMode::Read).unwrap();
    let m = jobq::log::mark::read(&*f, Path::new(LOG), 1, 1).unwrap().expect("a synced log has a mark");
    m.durable_end as usize
}

#[test]
fn log_cut_at_every_byte_of_the_last_frames() {
    let (sim, states) = build(3);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let first_unindexed = states[0].0;
    let marked = durable_end(&sim);
    assert!(first_unindexed < marked && marked < full.len(), "the mark lags one sync: {marked}");
    for cut in first_unindexed..=full.len() {
        let s = sim.fork();
        s.write_file(Path::new(LOG), full[..cut].to_vec()).unwrap();
        let want = expected(&states, cut);
        if cut < marked {
            // Synced bytes are missing: no torn write does that. Refused, then salvaged.
            match Store::open("/db", opts(&s)) {
                Err(Error::Corrupt { path, .. }) => assert!(path.ends_with("log-0000000001.jql")),
                other => panic!("cut at {cut}, below the durable mark {marked}: {:?}", other.map(|_| ())),
            }
            let store = reopen_twice(&s, RecoveryPolicy::TruncateAtCorruption).unwrap();
            assert_store_is(&store, want, &format!("salvaged after a cut at {cut}"));
            continue;
        }
        let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_store_is(&store, want, &format!("cut at {cut}"));
        let kept = s.read_file(Path::new(LOG)).unwrap().len();
        assert!(states.iter().any(|(l, _)| *l == kept), "cut at {cut} left {kept} bytes, not a frame boundary");
    }
}

#[test]
fn every_bit_of_the_mark_slots_flipped() {
    let (sim, states) = build(3);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    for slot in jobq::log::mark::SLOT_OFFSETS {
        let slot = slot as usize;
        for bit in slot * 8..(slot + jobq::log::mark::SLOT_LEN) * 8 {
            let s = sim.fork();
            let mut bad = full.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            s.write_file(Path::new(LOG), bad).unwrap();
            // The other slot's (older) mark takes over: the store opens as it was.
            let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
            assert_store_is(&store, &states[states.len() - 1].1, &format!("mark bit {bit} flipped"));
        }
    }
}

#[test]
fn every_bit_of_the_last_frame_flipped() {
    let (sim, states) = build(2);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let last_start = states[states.len() - 2].0;
    for bit in last_start * 8..full.len() * 8 {
        let s = sim.fork();
        let mut bad = full.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        s.write_file(Path::new(LOG), bad).unwrap();
        let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_store_is(&store, &states[states.len() - 2].1, &format!("bit {bit} flipped"));
    }
}

#[test]
fn zeros_and_garbage_after_the_tail() {
    let (sim, states) = build(2);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let mut seed = 0x1234_5678_u64;
    for tail in [
        vec![0u8; 1],
        vec![0u8; 31],
        vec![0u8; 4096],
        vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        (0..777)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 33) as u8
            })
            .collect(),
    ] {
        let s = sim.fork();
        let mut bytes = full.clone();
        bytes.extend_from_slice(&tail);
        s.write_file(Path::new(LOG), bytes).unwrap();
        // Zeros after the last frame of a version-4 segment are its preallocated
        // space, a clean end: nothing cut (a clean close cuts them). Anything else
        // is a torn tail: cut.
        let zeros = tail.iter().all(|b| *b == 0);
        let first = Store::open("/db", opts(&s)).unwrap();
        assert_eq!(first.report().cut.is_none(), zeros, "{:?}", first.report().cut);
        drop(first);
        let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap();
        assert_store_is(&store, &states[states.len() - 1].1, "junk appended");
        assert_eq!(s.read_file(Path::new(LOG)).unwrap().len(), full.len(), "junk cut");
        let cut = store.report().cut.clone();
        assert!(cut.is_none(), "the second open finds nothing to cut: {cut:?}");
    }
}

#[test]
fn bad_frame_mid_log_is_refused_with_its_offset() {
    let (sim, states) = build(4);
    let sim = sim.fork();
    let full = sim.read_file(Path::new(LOG)).unwrap();
    // Damage the second unindexed frame: later frames say it was synced.
    let at = states[1].0 + 40;
    let mut bad = full.clone();
    bad[at] ^= 0xFF;
    sim.write_file(Path::new(LOG), bad.clone()).unwrap();
    let err = Store::open("/db", opts(&sim)).err().expect("corruption must be refused");
    match &err {
        Error::Corrupt { path, offset, .. } => {
            assert!(path.ends_with("log-0000000001.jql"), "{err}");
            assert_eq!(*offset, states[1].0 as u64, "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        err.to_string().contains("log-0000000001.jql") && err.to_string().contains(&format!("offset {}", states[1].0)),
        "{err}"
    );
    // Nothing was changed by the refusal.
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap(), bad);
    // The salvage policy keeps what precedes the damage.
    let store = reopen_twice(&sim, RecoveryPolicy::TruncateAtCorruption).unwrap();
    assert_store_is(&store, &states[1].1, "salvaged");
}

#[test]
fn truncated_trailing_record_and_bad_length_at_end() {
    let (sim, states) = build(2);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let last = states[states.len() - 2].0;
    // A length field claiming more than the file holds.
    let s = sim.fork();
    let mut bad = full.clone();
    bad[last + 4..last + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_file(Path::new(LOG), bad).unwrap();
    let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap();
    assert_store_is(&store, &states[states.len() - 2].1, "bad length");
    // Only the header of the last frame made it.
    let s = sim.fork();
    s.write_file(Path::new(LOG), full[..last + 32].to_vec()).unwrap();
    let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap();
    assert_store_is(&store, &states[states.len() - 2].1, "header only");
}

#[test]
fn an_index_chain_may_end_inside_a_committed_import() {
    let sim = SimFs::new();
    let o = Options { bulk_entries: 10, merge_fanout: 100, ..opts(&sim) };
    let store = Store::open("/db", o.clone()).unwrap();
    let lines: String = (1..=45)
        .map(|j| {
            format!("{{\"key\":\"3/1/{j}\",\"spider\":\"s\",\"state\":\"finished\",\"finished_time\":{}}}\n", 1000 + j)
        })
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    store.flush_indexes().unwrap();
    let mut want = Vec::new();
    store.export(None, &mut want).unwrap();
    drop(store);
    use jobq::fs::FileSystem;
    let gen = Path::new("/db/gen-0000000000000001");
    let jqi = |sim: &SimFs| -> Vec<String> {
        let mut idx: Vec<String> = sim.read_dir(gen).unwrap().into_iter().filter(|n| n.ends_with(".jqi")).collect();
        idx.sort();
        idx
    };
    // An import writes one index file; replay indexes its frames in several (as
    // earlier builds did on import): lose the import's file, reopen, persist.
    assert_eq!(jqi(&sim).len(), 1);
    sim.remove_file(&gen.join(&jqi(&sim)[0])).unwrap();
    let store = Store::open("/db", o.clone()).unwrap();
    store.flush_indexes().unwrap();
    drop(store);
    // Lose the last ones, as if the crash came before they were written: replay
    // starts inside the import's frames.
    let idx = jqi(&sim);
    assert!(idx.len() >= 3, "{idx:?}");
    for name in &idx[idx.len() - 2..] {
        sim.remove_file(&gen.join(name)).unwrap();
    }
    let store = Store::open("/db", o).unwrap();
    assert!(store.report().replayed_frames > 0);
    let mut got = Vec::new();
    store.export(None, &mut got).unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
}

/// The newest mark of the log and the file offset of its slot.
fn newest_mark(sim: &SimFs) -> (jobq::log::mark::Mark, usize) {
    use jobq::fs::{FileSystem, OpenMode};
    use jobq::log::mark;
    let f = sim.open(Path::new(LOG), OpenMode::Read).unwrap();
    let m = mark::read(&*f, Path::new(LOG), 1, 1).unwrap().unwrap();
    (m, mark::SLOT_OFFSETS[mark::slot_of(m.epoch)] as usize)
}

fn with_slot(sim: &SimFs, at: usize, m: &jobq::log::mark::Mark) -> SimFs {
    let s = sim.fork();
    let mut bytes = s.read_file(Path::new(LOG)).unwrap();
    bytes[at..at + jobq::log::mark::SLOT_LEN].copy_from_slice(&jobq::log::mark::encode(1, 1, m));
    s.write_file(Path::new(LOG), bytes).unwrap();
    s
}

fn refused_at(sim: &SimFs, want: u64) {
    match Store::open("/db", opts(sim)) {
        Err(Error::Corrupt { offset, what, .. }) => assert_eq!(offset, want, "{what}"),
        other => panic!("expected a refusal at {want}: {:?}", other.map(|_| ())),
    }
}

#[test]
fn marks_that_disagree_with_the_log_are_damage() {
    let (sim, states) = build(3);
    let (m, slot) = newest_mark(&sim);
    // The log reaches the mark at another sequence number.
    refused_at(&with_slot(&sim, slot, &jobq::log::mark::Mark { next_seq: m.next_seq + 1, ..m }), m.durable_end);
    // The mark sits inside a frame.
    let start = states[states.len() - 2].0 as u64;
    let inside = start + 10;
    refused_at(&with_slot(&sim, slot, &jobq::log::mark::Mark { durable_end: inside, ..m }), start);
    // A mark past the end of the log: synced bytes are missing.
    let len = states[states.len() - 1].0 as u64;
    refused_at(&with_slot(&sim, slot, &jobq::log::mark::Mark { durable_end: len + 100, ..m }), len);
}

#[test]
fn a_mark_in_the_other_slot_is_not_valid() {
    let (sim, states) = build(3);
    let (m, slot) = newest_mark(&sim);
    let other = jobq::log::mark::SLOT_OFFSETS.iter().map(|o| *o as usize).find(|o| *o != slot).unwrap();
    // Epoch m+2 belongs in the newest mark's slot: written to the other one it does not count.
    let len = states[states.len() - 1].0 as u64;
    let bogus = jobq::log::mark::Mark { epoch: m.epoch + 2, durable_end: len + 100, next_seq: 1 };
    let store = reopen_twice(&with_slot(&sim, other, &bogus), RecoveryPolicy::Strict).unwrap();
    assert_store_is(&store, &states[states.len() - 1].1, "a misplaced mark ignored");
}

#[test]
fn a_whole_frame_whose_records_do_not_decode_is_damage_even_after_the_mark() {
    use jobq::codec::frame::checksum;
    let (sim, states) = build(3);
    let last = states[states.len() - 2].0;
    let mut bytes = sim.read_file(Path::new(LOG)).unwrap();
    // The last frame's first record (compact: its state is the body's first byte):
    // set its state to an unknown code, then reseal the record's and the frame's
    // checksums, as no torn write could.
    let rec = last + 32;
    let word = u32::from_le_bytes(bytes[rec..rec + 4].try_into().unwrap());
    let (body_len, compact) = jobq::codec::record::split_word(word);
    assert!(compact);
    bytes[rec + 8] = 9;
    let crc = checksum(&[&bytes[rec + 8..rec + 8 + body_len]]);
    bytes[rec + 4..rec + 8].copy_from_slice(&crc.to_le_bytes());
    let len = u32::from_le_bytes(bytes[last + 4..last + 8].try_into().unwrap()) as usize;
    let crc = checksum(&[&bytes[last + 4..last + 32], &bytes[last + 32..last + 32 + len]]);
    bytes[last..last + 4].copy_from_slice(&crc.to_le_bytes());
    let s = sim.fork();
    s.write_file(Path::new(LOG), bytes).unwrap();
    assert!(last as u64 >= newest_mark(&s).0.durable_end, "the frame is after the mark");
    refused_at(&s, last as u64);
    let store = reopen_twice(&s, RecoveryPolicy::TruncateAtCorruption).unwrap();
    assert_store_is(&store, &states[states.len() - 2].1, "salvaged");
}

#[test]
fn preallocated_zeros_after_the_last_frame_are_a_clean_end() {
    let (sim, states) = build_preallocated(3);
    let sim = sim.fork();
    let len = sim.read_file(Path::new(LOG)).unwrap().len();
    let o = Options { read_only: true, ..opts(&sim) };
    let store = Store::open("/db", o).unwrap();
    assert!(store.report().cut.is_none(), "{:?}", store.report());
    drop(store);
    let report = jobq::store::check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert!(store.report().cut.is_none(), "{:?}", store.report());
    assert_store_is(&store, &states[states.len() - 1].1, "zeros kept");
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), len, "the zeros stay: the writer continues in them");
    // The next write lands in the zeros; a clean close cuts what is left of them.
    store.push(1, &[parse_push(r#"{"spider":"spider"}"#).unwrap()], None).unwrap();
    let end = store.metrics().log_bytes as usize;
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), len, "written over the zeros, no growth");
    store.close().unwrap();
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), end, "a clean close cuts the zeros");
}

#[test]
fn a_torn_write_into_preallocated_zeros_is_cut_at_every_byte() {
    let (sim, states) = build_preallocated(3);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let (start, end) = (states[states.len() - 2].0, states[states.len() - 1].0);
    assert!(start as u64 >= newest_mark(&sim).0.durable_end, "the last frame is after the mark");
    let mut seed = 0x9e37_79b9_u64;
    for cut in start..end {
        // The frame's first `cut - start` bytes reached the disk, the rest of the
        // space is still zeros; or else a garbled sector sits in the zeros.
        for garble in [false, true] {
            let mut bytes = full[..cut].to_vec();
            bytes.resize(full.len(), 0);
            if garble {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let at = end + (seed >> 40) as usize % (full.len() - end);
                bytes[at] = 0x5a;
            }
            let s = sim.fork();
            s.write_file(Path::new(LOG), bytes).unwrap();
            let first = Store::open("/db", opts(&s)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let c = first.report().cut.clone();
            if cut == start && !garble {
                assert!(c.is_none(), "only zeros after the last frame: nothing cut: {c:?}");
            } else {
                let c = c.unwrap_or_else(|| panic!("torn at {cut}, garbled {garble}: not cut"));
                assert!(c.at.offset == start as u64 && !c.lost_durable, "{c:?}");
            }
            drop(first);
            let store = reopen_twice(&s, RecoveryPolicy::Strict).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_store_is(&store, &states[states.len() - 2].1, &format!("torn at {cut}, garbled {garble}"));
            assert_eq!(s.read_file(Path::new(LOG)).unwrap().len(), start, "cut, then a clean close");
        }
    }
}

#[test]
fn zeros_before_the_durable_mark_are_damage() {
    let (sim, states) = build_preallocated(3);
    let full = sim.read_file(Path::new(LOG)).unwrap();
    let marked = newest_mark(&sim).0.durable_end as usize;
    // Frames an fdatasync had made durable read back as zeros: not a clean end.
    let from = states[1].0;
    assert!(from < marked, "{from} {marked}");
    let mut bytes = full[..from].to_vec();
    bytes.resize(full.len(), 0);
    let s = sim.fork();
    s.write_file(Path::new(LOG), bytes).unwrap();
    refused_at(&s, from as u64);
    let store = reopen_twice(&s, RecoveryPolicy::TruncateAtCorruption).unwrap();
    assert_store_is(&store, &states[1].1, "salvaged");
}

/// A store whose `CURRENT` was lost is refused, never taken for a new one: the
/// create that a missing `CURRENT` means removed every generation directory.
/// What a create that crashed before its `CURRENT` leaves (an empty log, a temp
/// file) is still replaced by a new store.
#[test]
fn a_lost_current_is_refused_and_nothing_is_removed() {
    let (crashed, states) = build(5);
    // A fork holds no lock of the crashed process.
    let sim = crashed.fork();
    let current = sim.read_file(Path::new("/db/CURRENT")).unwrap();
    let log = sim.read_file(Path::new(LOG)).unwrap();
    jobq::fs::FileSystem::remove_file(&sim, Path::new("/db/CURRENT")).unwrap();
    for _ in 0..2 {
        let e = Store::open("/db", opts(&sim)).err().expect("refused");
        let text = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }) && text.contains("CURRENT is missing"), "{text}");
        assert_eq!(sim.read_file(Path::new(LOG)).unwrap(), log, "nothing removed");
    }
    jobq::fs::publish_file(&sim, Path::new("/db"), "CURRENT", &current).unwrap();
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert_store_is(&store, &states[states.len() - 1].1, "after CURRENT came back");
    drop(store);

    // A create that crashed before CURRENT: gen-1 with an empty log and a temp file.
    let fresh = SimFs::new();
    drop(Store::open("/db", opts(&fresh)).unwrap());
    jobq::fs::FileSystem::remove_file(&fresh, Path::new("/db/CURRENT")).unwrap();
    jobq::fs::publish_file(&fresh, Path::new("/db/gen-0000000000000001"), "idx-x.tmp", &[1, 2, 3]).unwrap();
    let store = Store::open("/db", opts(&fresh)).unwrap();
    assert!(store.report().created);
}

const GEN: &str = "/db/gen-0000000000000001";

/// A closed store of 300 jobs over several small segments, every one of them
/// covered by index files; its options.
fn indexed_segments() -> (SimFs, Options) {
    let sim = SimFs::new();
    let o = Options { segment_bytes: 8 << 10, memtable_entries: 40, ..opts(&sim) };
    let store = Store::open("/db", o.clone()).unwrap();
    for i in 0..300 {
        let spec = parse_push(&format!(r#"{{"spider":"s","pad":"{}","i":{i}}}"#, "p".repeat(100))).unwrap();
        store.push(1, &[spec], None).unwrap();
    }
    store.flush_indexes().unwrap();
    store.close().unwrap();
    (sim, o)
}

/// A segment missing from the middle of the log, or one whose header is
/// destroyed, is damage even where index files cover it (the open used to
/// answer from them and take writes): refused, writable or read-only, naming it.
/// One `jobq repair` then makes the store whole (with a gap it used to fail
/// partway, removing a segment that was not there): the jobs before the gap
/// stay, the rest is saved aside, and check is clean.
#[test]
fn a_missing_or_destroyed_indexed_segment_is_refused() {
    use jobq::fs::FileSystem;
    let (sim, o) = indexed_segments();
    let gen = Path::new(GEN);
    let segments = jobq::log::segment::list(&sim, gen).unwrap();
    assert!(segments.len() >= 4, "{segments:?}");
    let middle = segments[segments.len() / 2];
    let name = jobq::log::segment::file_name(middle);
    for damage in ["removed", "header zeroed"] {
        let s = sim.fork();
        let path = gen.join(&name);
        match damage {
            "removed" => s.remove_file(&path).unwrap(),
            _ => {
                let mut bytes = s.read_file(&path).unwrap();
                bytes[..64].fill(0);
                s.write_file(&path, bytes).unwrap();
            }
        }
        for read_only in [false, true] {
            let o = Options { fs: Arc::new(s.clone()), read_only, ..o.clone() };
            match Store::open("/db", o) {
                Err(Error::Corrupt { path, .. }) => assert!(path.ends_with(&name), "{damage}: {}", path.display()),
                other => panic!("{damage}, read-only {read_only}: {:?}", other.map(|_| ())),
            }
        }
        let o = Options { fs: Arc::new(s.clone()), ..o.clone() };
        let r = jobq::store::repair(Path::new("/db"), o.clone()).unwrap_or_else(|e| panic!("{damage}: {e}"));
        let store = Store::open("/db", o).unwrap();
        let all = jobq::query::Filter { states: JobState::ALL.to_vec(), ..Default::default() };
        let left = store.snapshot().count(1, &all).unwrap();
        match damage {
            "removed" => assert!(left > 0 && left < 300 && r.saved_to.is_some(), "{left}: {r:?}"),
            _ => assert_eq!(left, 300, "a rebuilt header keeps every frame: {r:?}"),
        }
        store.close().unwrap();
        let report = jobq::store::check(Path::new("/db"), Arc::new(s.clone())).unwrap();
        assert!(report.is_clean(), "{damage}: {:?}", report.findings);
    }
}

/// A lost last segment that an index file covered: the open used to set the
/// file aside and serve the older state of the jobs written there, and `check`
/// was clean. Refused now, naming the missing segment; `jobq repair` sets the
/// file aside and says the jobs there are lost; the store then opens and checks
/// clean.
#[test]
fn a_lost_last_segment_an_index_covered_is_refused_until_repaired() {
    use jobq::fs::FileSystem;
    let (sim, o) = indexed_segments();
    let gen = Path::new(GEN);
    let last = *jobq::log::segment::list(&sim, gen).unwrap().last().unwrap();
    let name = jobq::log::segment::file_name(last);
    sim.remove_file(&gen.join(&name)).unwrap();
    for read_only in [false, true] {
        match Store::open("/db", Options { read_only, ..o.clone() }) {
            Err(Error::Corrupt { path, what, .. }) => {
                assert!(path.ends_with(&name) && what.contains("is missing"), "{}: {what}", path.display())
            }
            other => panic!("read-only {read_only}: {:?}", other.map(|_| ())),
        }
    }
    let r = jobq::store::repair(Path::new("/db"), o.clone()).unwrap();
    assert!(r.beyond_log.iter().any(|(_, s)| *s == last), "{:?}", r.beyond_log);
    let store = Store::open("/db", o.clone()).unwrap();
    let all = jobq::query::Filter { states: JobState::ALL.to_vec(), ..Default::default() };
    let left = store.snapshot().count(1, &all).unwrap();
    assert!(left > 0 && left < 300, "{left}");
    store.close().unwrap();
    let report = jobq::store::check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
}

/// `CURRENT` naming a generation whose directory does not exist (a damaged
/// field under a good checksum) is refused, naming CURRENT, and nothing is
/// removed: writable opens used to remove the real generation as a leftover
/// before failing on the missing one (found by a hostile run on disk).
#[test]
fn current_naming_a_missing_generation_is_refused_and_nothing_is_removed() {
    use jobq::fs::FileSystem;
    let (sim, o) = indexed_segments();
    jobq::store::layout::write_current(&sim, Path::new("/db"), 5, 1).unwrap();
    for read_only in [false, true] {
        match Store::open("/db", Options { read_only, ..o.clone() }) {
            Err(Error::Corrupt { path, offset, what }) => {
                assert!(path.ends_with("CURRENT") && offset == 16 && what.contains("does not exist"), "{what}")
            }
            other => panic!("read-only {read_only}: {:?}", other.map(|_| ())),
        }
    }
    assert!(sim.exists(Path::new(GEN)).unwrap(), "the real generation is still there");
    jobq::store::layout::write_current(&sim, Path::new("/db"), 1, 1).unwrap();
    let store = Store::open("/db", o).unwrap();
    let all = jobq::query::Filter { states: JobState::ALL.to_vec(), ..Default::default() };
    assert_eq!(store.snapshot().count(1, &all).unwrap(), 300);
}
