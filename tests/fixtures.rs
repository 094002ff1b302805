//! Format fixtures: a small store written by each format version, committed under
//! tests/fixtures/v<N>/store with its export. Every build must read them all and
//! answer the same. `cargo test --test fixtures -- --ignored write_v6` rewrites the
//! current one (only when the format changes: then add v<N+1>, keep the others).
//! v1 to v5 stores also take writes (continuing in a v5 segment) and compact into v5
//! segments of compact records.
//! The index files of v1 to v3 are of index version 1, which this build sets aside
//! (a writable open rebuilds them from the log): those fixtures are read from their
//! logs; so are v4's and v5's (index version 2); v6's index files (version 3,
//! packed) answer, close_reason filters included. v5's and
//! v6's last segments end in their preallocated zeros (left unclosed, as after a
//! crash). v6's records are compact (format-spec/log.md, "Compact record").

use std::path::Path;
use std::sync::Arc;

mod common;
use common::copy_dir;

use jobq::model::ManualClock;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Options, Store};

const V1: &str = "tests/fixtures/v1";
const V2: &str = "tests/fixtures/v2";
const V3: &str = "tests/fixtures/v3";
const V4: &str = "tests/fixtures/v4";
const V5: &str = "tests/fixtures/v5";
const V6: &str = "tests/fixtures/v6";
const V7: &str = "tests/fixtures/v7";

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The history every fixture holds (format 1 wrote v1's, format 2 v2's, format 3
/// v3's, whose records name the previous state; format 4 wrote v4's, whose
/// close_reason values vary where the older ones say "ok"; format 5 wrote v5's, in
/// preallocated segments; format 6 wrote v6's, of compact records; this build
/// writes v7's, whose import of 1,200 jobs trains a dictionary and packs them).
#[test]
#[ignore = "rewrites the committed fixture of the current format"]
fn write_v7() {
    let dir = Path::new(V7).join("store");
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    // Small segments: the fixture has several, each with its durable mark.
    let opts = Options {
        clock: clock.clone(),
        background: false,
        memtable_entries: 8,
        merge_fanout: 3,
        segment_bytes: 6000,
        ..Options::default()
    };
    let store = Store::open(&dir, opts).unwrap();
    for i in 0..30u32 {
        clock.advance(1000);
        let line = format!(
            r#"{{"spider":"spider-{}","tags":["t{}","é"],"priority":{},"unique":{},"args":{{"n":{i},"big":123456789012345678901234567890,"f":1.50}}}}"#,
            i % 4,
            i % 3,
            i % 5,
            if i % 7 == 0 { format!("\"u{i}\"") } else { "null".into() }
        );
        store.push(53 + i % 2, &[parse_push(&line).unwrap()], Some("alice")).unwrap();
        if i % 2 == 1 {
            let key = format!("{}/{}/{}", 53 + i % 2, 1 + (i / 2) % 4, 1 + i / 8);
            let state = ["running", "finished", "deleted"][(i as usize / 2) % 3];
            let reason = [r#""ok""#, r#""failed""#, "404", r#""é \u00e9""#][(i as usize / 8) % 4];
            let line = format!(r#"{{"key":"{key}","state":"{state}","close_reason":{reason}}}"#);
            let u = parse_update(&line, 53 + i % 2).unwrap();
            store.update(53 + i % 2, &[u], Some("bob")).unwrap();
        }
    }
    let import = r#"{"key":"60/1/5","spider":"imported","state":"finished","finished_time":1600000000000,"pending_time":1599999999000,"tags":["old"],"x":"y"}
{"key":"60/1/9","spider":"imported","state":"pending","pending_time":1600000001000,"priority":4}
"#;
    store.import(&mut import.as_bytes(), &mut |_| {}).unwrap();
    store.import(&mut bulk_lines().as_bytes(), &mut |_| {}).unwrap();
    clock.advance(1000);
    store.push(53, &[parse_push(r#"{"spider":"tail","note":"not indexed"}"#).unwrap()], None).unwrap();
    std::fs::write(Path::new(V7).join("export.jsonl"), export(&store)).unwrap();
    // Leave the last write unindexed, as after a crash.
    std::mem::forget(store);
}

/// 1,200 jobs of project 61 with documents like the compare data's: enough for an
/// import into a store without a dictionary to train one (format 7).
fn bulk_lines() -> String {
    (1..=1200u32)
        .map(|j| {
            format!(
                r#"{{"key":"61/{}/{j}","spider":"bulk-{}","state":"finished","pending_time":{},"finished_time":{},"units":{},"version":"1.{}.{}","spider_args":{{"url":"https://site-{}.example.com/c/{}","pages":{}}},"scheduled_by":"user{}@example.org","close_reason":"{}"}}"#,
                1 + (j - 1) % 3,
                1 + (j - 1) % 3,
                1_600_000_000_000u64 + u64::from(j) * 1000,
                1_600_000_000_500u64 + u64::from(j) * 1000,
                j % 3 + 1,
                j % 7,
                j % 31,
                j * 7919 % 5000,
                j * 104_729 % 100_000,
                j % 500,
                j % 300,
                ["finished", "cancelled", "failed"][j as usize % 3]
            ) + "\n"
        })
        .collect()
}

/// Open a fixture read-only: its export is the committed one. `current_index`:
/// its index files are of this build's index version (else all set aside).
fn reads_the_same(fixture: &str, current_index: bool) -> Store {
    let dir = Path::new(fixture).join("store");
    let opts = Options { read_only: true, create: false, ..Options::default() };
    let store = Store::open(&dir, opts).unwrap();
    let r = store.report();
    if current_index {
        assert!(!r.indexes.is_empty() && r.discarded.is_empty(), "the fixture's index files are used: {r:?}");
        assert!(r.replayed_frames > 0, "the fixture has an unindexed tail");
    } else {
        assert!(r.indexes.is_empty(), "index files of versions 1 and 2 are not used: {r:?}");
        assert_eq!(r.discarded.len(), 2, "{r:?}");
        let older = |why: &str| why.contains("index format version 1") || why.contains("index format version 2");
        assert!(r.discarded.iter().all(|(_, why)| older(why)), "{r:?}");
    }
    let want = std::fs::read_to_string(Path::new(fixture).join("export.jsonl")).unwrap();
    assert_eq!(export(&store), want);
    store
}

#[test]
fn v1_store_reads_the_same() {
    reads_the_same(V1, false);
}

#[test]
fn v2_store_reads_the_same() {
    reads_the_same(V2, false);
    assert!(segment_versions(&Path::new(V2).join("store")).len() >= 2, "the v2 fixture has several segments");
}

#[test]
fn v3_store_reads_the_same() {
    reads_the_same(V3, false);
    let versions = segment_versions(&Path::new(V3).join("store"));
    assert!(versions.len() >= 2 && versions.iter().all(|v| *v == 3), "{versions:?}");
}

fn gen_dir(store: &Path) -> std::path::PathBuf {
    let current = std::fs::read(store.join("CURRENT")).unwrap();
    let generation = u64::from_le_bytes(current[16..24].try_into().unwrap());
    store.join(format!("gen-{generation:016x}"))
}

/// The zero bytes at the end of the last log segment.
fn last_segment_zeros(store: &Path) -> usize {
    let gen = gen_dir(store);
    let mut names: Vec<_> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jql"))
        .collect();
    names.sort();
    let bytes = std::fs::read(gen.join(names.last().unwrap())).unwrap();
    bytes.iter().rev().take_while(|b| **b == 0).count()
}

fn segment_versions(store: &Path) -> Vec<u32> {
    let current = std::fs::read(store.join("CURRENT")).unwrap();
    let generation = u64::from_le_bytes(current[16..24].try_into().unwrap());
    let gen = store.join(format!("gen-{generation:016x}"));
    let mut names: Vec<_> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jql"))
        .collect();
    names.sort();
    names.iter().map(|n| u32::from_le_bytes(std::fs::read(gen.join(n)).unwrap()[8..12].try_into().unwrap())).collect()
}

#[test]
fn v4_store_reads_the_same_and_answers_close_reason() {
    let store = reads_the_same(V4, false);
    let versions = segment_versions(&Path::new(V4).join("store"));
    assert!(versions.len() >= 2 && versions.iter().all(|v| *v == 3), "{versions:?}");
    close_reason_counts_match(&store, V4);
}

/// Per project and close_reason term, the count equals the export's.
fn close_reason_counts_match(store: &Store, fixture: &str) {
    use jobq::query::Filter;
    let snap = store.snapshot();
    let count = |p: u32, reasons: &[&str]| {
        let f = Filter { close_reasons: reasons.iter().map(|r| r.to_string()).collect(), ..Filter::default() };
        snap.count(p, &f).unwrap()
    };
    // From the export: every job per close_reason term (404 the number, "é é" the string).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(Path::new(fixture).join("export.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for p in [53, 54] {
        for reason in ["ok", "failed", "404", "é é", "nope"] {
            let want = lines
                .iter()
                .filter(|l| l["project"] == p)
                .filter(|l| match &l["close_reason"] {
                    serde_json::Value::String(s) => s == reason,
                    serde_json::Value::Null => false,
                    v => serde_json::to_string(v).is_ok_and(|text| text == reason),
                })
                .count() as u64;
            assert_eq!(count(p, &[reason]), want, "project {p} close_reason {reason}");
        }
        let total: u64 = ["ok", "failed", "404", "é é"].iter().map(|r| count(p, &[r])).sum();
        assert_eq!(count(p, &["ok", "failed", "404", "é é"]), total);
    }
    for reason in ["ok", "failed", "404", "é é"] {
        assert!(count(54, &[reason]) > 0, "the fixture has a job whose close_reason is {reason}");
    }
}

#[test]
fn an_older_index_version_is_rebuilt_by_a_writable_open_and_checks_clean() {
    // v2: the open also continues the log in a new v3 segment; an index of the
    // tail closed without a write ends in the older segment (its log_end).
    for fixture in [V2, V3] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&Path::new(fixture).join("store"), &dir);
        let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
        assert!(report.is_clean(), "{fixture}: {:?}", report.findings);
        let notes = report.notes.iter().filter(|n| n.contains("index format version 1")).count();
        assert_eq!(notes, 2, "{fixture}: {:?}", report.notes);
        let opts = || Options { background: false, create: false, ..Options::default() };
        let store = Store::open(&dir, opts()).unwrap();
        assert_eq!(store.report().discarded.len(), 2, "{fixture}");
        let want = std::fs::read_to_string(Path::new(fixture).join("export.jsonl")).unwrap();
        assert_eq!(export(&store), want, "{fixture}");
        store.close().unwrap();
        let store = Store::open(&dir, opts()).unwrap();
        let r = store.report();
        assert!(r.discarded.is_empty() && !r.indexes.is_empty(), "{fixture}: the rebuilt files serve: {r:?}");
        assert_eq!(export(&store), want, "{fixture}");
        drop(store);
        let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
        assert!(report.is_clean() && report.notes.is_empty(), "{fixture}: {report:?}");
    }
}

#[test]
fn a_damaged_index_file_of_the_older_version_is_damage_not_a_note() {
    // Whole, an older index file is a note (rebuilt); with a flipped byte it is
    // damage like any other, its checksum checked before its version is judged.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&Path::new(V2).join("store"), &dir);
    let gen = dir.join("gen-0000000000000001");
    let mut names: Vec<_> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jqi"))
        .collect();
    names.sort();
    let file = gen.join(&names[0]);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, bytes).unwrap();
    let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(report.findings.iter().any(|f| f.path == file), "{report:#?}");
    assert_eq!(report.notes.iter().filter(|n| n.contains("index format version 1")).count(), 1, "{:?}", report.notes);
}

#[test]
fn older_stores_take_writes_in_v7_segments_and_compact_to_v7() {
    for fixture in [V1, V2, V3, V4, V5, V6, V7] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&Path::new(fixture).join("store"), &dir);
        let before = segment_versions(&dir);
        let opts = || Options { background: false, create: false, ..Options::default() };
        let store = Store::open(&dir, opts()).unwrap();
        store.push(53, &[parse_push(r#"{"spider":"after-upgrade"}"#).unwrap()], None).unwrap();
        let want = export(&store);
        store.close().unwrap();
        let mut after = before.clone();
        after.push(7);
        assert_eq!(segment_versions(&dir), after, "{fixture}: the old segment is sealed, writes go to a v7 one");
        assert_eq!(record_kinds(&dir).last(), Some(&true), "{fixture}: the new record is compact");
        if fixture != V6 && fixture != V7 {
            assert!(record_kinds(&dir).iter().any(|c| !c), "{fixture}: the old records stay wide");
        }
        assert_eq!(last_segment_zeros(&dir), 0, "{fixture}: a clean close leaves no preallocated zeros");
        let store = Store::open(&dir, opts()).unwrap();
        assert_eq!(export(&store), want);
        drop(store);
        jobq::store::compact(&dir, opts(), None, &mut |_, _| {}).unwrap();
        assert!(segment_versions(&dir).iter().all(|v| *v == 7), "{:?}", segment_versions(&dir));
        assert!(record_kinds(&dir).iter().all(|c| *c), "{fixture}: compact rewrites every record compact");
        assert_eq!(export(&Store::open(&dir, opts()).unwrap()), want);
        assert!(jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap().is_clean());
    }
}

#[test]
fn a_segment_of_a_future_version_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&Path::new(V3).join("store"), &dir);
    let seg = dir.join("gen-0000000000000001/log-0000000001.jql");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&8u32.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[0..60]);
    let crc = h.finalize().rotate_right(15).wrapping_add(0xa282_ead8);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, bytes).unwrap();
    let err = Store::open(&dir, Options { create: false, ..Options::default() }).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("log-0000000001.jql") && msg.contains("version 8") && msg.contains("newer"), "{msg}");
}

#[test]
fn v5_store_reads_the_same_with_its_preallocated_tail_and_checks_clean() {
    let store = reads_the_same(V5, false);
    assert!(store.report().cut.is_none(), "zeros after the last frame are no torn tail: {:?}", store.report());
    drop(store);
    let fixture = Path::new(V5).join("store");
    let versions = segment_versions(&fixture);
    assert!(versions.len() >= 2 && versions.iter().all(|v| *v == 4), "{versions:?}");
    assert!(last_segment_zeros(&fixture) > 100_000, "the fixture keeps its preallocated zeros");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&fixture, &dir);
    let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
    let older = report.notes.iter().filter(|n| n.contains("index format version 2")).count();
    assert!(report.is_clean() && older == 2 && report.notes.len() == 2, "{report:?}");
    // A writable open seals the version-4 segment (its zeros cut) and writes in a
    // new version-7 one; a clean close cuts that one's zeros.
    let (want, opts) = push_and_close_cleanly(&dir);
    let mut after = versions.clone();
    after.push(7);
    assert_eq!(segment_versions(&dir), after, "the old last segment is sealed");
    assert_eq!(export(&Store::open(&dir, opts()).unwrap()), want);
    assert!(jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap().is_clean());
}

/// Whether each job record of the current generation, in log order, is compact.
fn record_kinds(store: &Path) -> Vec<bool> {
    use jobq::log::scan::{FrameScanner, Step};
    let gen = gen_dir(store);
    let mut numbers: Vec<u32> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_prefix("log-")?.strip_suffix(".jql")?.parse().ok())
        .collect();
    numbers.sort();
    let mut out = Vec::new();
    for n in numbers {
        let (_, mut sc) = FrameScanner::segment(&jobq::fs::RealFs, &gen, n).unwrap();
        while let Step::Frame { header, payload, .. } = sc.next_step().unwrap() {
            if header.kind != jobq::codec::frame::FrameKind::Jobs {
                continue;
            }
            let mut at = 0;
            for _ in 0..header.count {
                let word = u32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
                out.push(jobq::codec::record::split_word(word).1);
                at += jobq::codec::record::record_len(word);
            }
        }
    }
    out
}

#[test]
fn v6_store_of_compact_records_reads_the_same_and_checks_clean() {
    let store = reads_the_same(V6, true);
    close_reason_counts_match(&store, V6);
    assert!(store.report().cut.is_none(), "zeros after the last frame are no torn tail: {:?}", store.report());
    drop(store);
    let fixture = Path::new(V6).join("store");
    let versions = segment_versions(&fixture);
    assert!(versions.len() >= 2 && versions.iter().all(|v| *v == 5), "{versions:?}");
    assert!(record_kinds(&fixture).iter().all(|c| *c), "every record of the v6 fixture is compact");
    assert!(last_segment_zeros(&fixture) > 100_000, "the fixture keeps its preallocated zeros");
    // Its log is smaller than v5's, which holds the same history in wide records.
    let log_bytes = |store: &Path| -> u64 {
        let gen = gen_dir(store);
        std::fs::read_dir(&gen)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jql"))
            .map(|e| std::fs::read(e.path()).unwrap().iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1))
            .sum()
    };
    let (v5, v6) = (log_bytes(&Path::new(V5).join("store")), log_bytes(&fixture));
    assert!(v6 < v5, "v6 log {v6} bytes, v5 {v5}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&fixture, &dir);
    let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
    // A writable open seals the version-5 segment (its zeros cut) and writes in a
    // new version-7 one; a clean close cuts that one's zeros.
    let (want, opts) = push_and_close_cleanly(&dir);
    let mut after = versions.clone();
    after.push(7);
    assert_eq!(segment_versions(&dir), after, "the old last segment is sealed");
    assert_eq!(export(&Store::open(&dir, opts()).unwrap()), want);
    assert!(jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap().is_clean());
}

/// An older index version is rebuilt by a writable open, its ranges replayed before.
#[test]
fn v5_index_files_of_version_2_are_set_aside_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&Path::new(V5).join("store"), &dir);
    let opts = || Options { background: false, create: false, ..Options::default() };
    let store = Store::open(&dir, opts()).unwrap();
    let r = store.report();
    assert_eq!(r.discarded.len(), 2, "{r:?}");
    assert!(r.discarded.iter().all(|(_, why)| why.contains("index format version 2")), "{r:?}");
    let want = std::fs::read_to_string(Path::new(V5).join("export.jsonl")).unwrap();
    assert_eq!(export(&store), want);
    store.close().unwrap();
    let store = Store::open(&dir, opts()).unwrap();
    let r = store.report();
    assert!(r.discarded.is_empty() && !r.indexes.is_empty(), "the rebuilt files serve: {r:?}");
    assert_eq!(export(&store), want);
    let gen = gen_dir(&dir);
    for e in std::fs::read_dir(&gen).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".jqi") {
            let b = std::fs::read(gen.join(&name)).unwrap();
            assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 4, "{name} is rebuilt in version 4");
        }
    }
}

/// A writable open of a store whose last segment ends in preallocated zeros: no
/// torn tail; one push; a clean close cuts the zeros. The export after the push,
/// and the options to reopen with.
fn push_and_close_cleanly(dir: &Path) -> (String, impl Fn() -> Options) {
    let opts = || Options { background: false, create: false, ..Options::default() };
    let store = Store::open(dir, opts()).unwrap();
    assert!(store.report().cut.is_none(), "{:?}", store.report());
    store.push(53, &[parse_push(r#"{"spider":"after"}"#).unwrap()], None).unwrap();
    let want = export(&store);
    store.close().unwrap();
    assert_eq!(last_segment_zeros(dir), 0, "a clean close cuts the zeros");
    (want, opts)
}

/// Job records of the current generation, in log order: (packed, dictionary frames before it).
fn packed_records(store: &Path) -> (usize, usize, usize) {
    use jobq::log::scan::{FrameScanner, Step};
    let gen = gen_dir(store);
    let mut numbers: Vec<u32> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_prefix("log-")?.strip_suffix(".jql")?.parse().ok())
        .collect();
    numbers.sort();
    let (mut packed, mut text, mut dicts) = (0, 0, 0);
    for n in numbers {
        let (_, mut sc) = FrameScanner::segment(&jobq::fs::RealFs, &gen, n).unwrap();
        while let Step::Frame { header, payload, .. } = sc.next_step().unwrap() {
            match header.kind {
                jobq::codec::frame::FrameKind::Dict => dicts += 1,
                jobq::codec::frame::FrameKind::Jobs => {
                    for (_, v) in jobq::codec::record::decode_jobs(payload, header.count).unwrap() {
                        if v.is_packed() {
                            assert!(dicts > 0, "a packed record before any dictionary");
                            packed += 1;
                        } else {
                            text += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (packed, text, dicts)
}

#[test]
fn v7_store_of_packed_records_reads_the_same_checks_clean_and_compacts() {
    let store = reads_the_same(V7, true);
    close_reason_counts_match(&store, V7);
    drop(store);
    let fixture = Path::new(V7).join("store");
    assert!(segment_versions(&fixture).iter().all(|v| *v == 6), "{:?}", segment_versions(&fixture));
    let (packed, text, dicts) = packed_records(&fixture);
    assert!(packed >= 1200 && text > 0 && dicts == 1, "{packed} packed, {text} text, {dicts} dictionaries");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&fixture, &dir);
    let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(report.is_clean() && report.notes.is_empty(), "{report:?}");
    // Written on, then compacted: one new dictionary, every document that gains packed.
    let (want, opts) = push_and_close_cleanly(&dir);
    assert_eq!(export(&Store::open(&dir, opts()).unwrap()), want);
    jobq::store::compact(&dir, opts(), None, &mut |_, _| {}).unwrap();
    let (packed2, _, dicts2) = packed_records(&dir);
    assert!(packed2 >= 1200 && dicts2 == 1, "{packed2} packed, {dicts2} dictionaries");
    assert_eq!(export(&Store::open(&dir, opts()).unwrap()), want);
    assert!(jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap().is_clean());
}

/// A packed record whose dictionary frame is gone is damage that open and check name.
#[test]
fn a_missing_dictionary_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(&Path::new(V7).join("store"), &dir);
    // Without its index files, open replays the log; turn the dictionary frame's
    // id into another (its frame CRC made good again): the records name a dictionary
    // the store does not hold.
    let gen = gen_dir(&dir);
    for e in std::fs::read_dir(&gen).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jqi") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut done = false;
    for e in std::fs::read_dir(&gen).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "jql") {
            continue;
        }
        let mut b = std::fs::read(&p).unwrap();
        let mut at = 12288;
        while at + 32 <= b.len() && !done {
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            if b[at + 8] == 5 {
                b[at + 32..at + 36].copy_from_slice(&9u32.to_le_bytes());
                let mut h = crc32fast::Hasher::new();
                h.update(&b[at + 4..at + 32 + len]);
                let crc = h.finalize().rotate_right(15).wrapping_add(0xa282_ead8);
                b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
                done = true;
            }
            at += 32 + len;
        }
        std::fs::write(&p, b).unwrap();
    }
    assert!(done, "the fixture has a dictionary frame");
    let err =
        Store::open(&dir, Options { read_only: true, create: false, ..Options::default() }).err().expect("refused");
    assert!(err.to_string().contains("dictionary 1"), "{err}");
    let report = jobq::store::check(&dir, std::sync::Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert!(format!("{report:?}").contains("dictionary 1"), "{report:?}");
}

#[cfg(feature = "cluster")]
mod cluster_v8 {
    //! v8: one node of a three-node cluster (format 8, Raft entries in the log),
    //! the leader's directory, its log ending in an entry that was never committed.
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use jobq::cluster::memnet::{NodeNet, Raft, Router};
    use jobq::cluster::{self, Node};
    use jobq::model::ManualClock;
    use jobq::store::request::{parse_push, parse_update};
    use jobq::{Options, Store};

    use super::{copy_dir, export, segment_versions};

    const V8: &str = "tests/fixtures/v8";

    fn options(clock: Arc<ManualClock>) -> Options {
        Options {
            raft_log: true,
            clock,
            background: false,
            memtable_entries: 8,
            segment_bytes: 6000,
            ..Options::default()
        }
    }

    #[test]
    #[ignore = "rewrites the committed fixture of the current format"]
    fn write_v8() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let router = Router::default();
            let mut nodes: BTreeMap<u64, (Raft, Node)> = BTreeMap::new();
            for id in 1..=3u64 {
                let store = Store::open(tmp.path().join(format!("n{id}")), options(clock.clone())).unwrap();
                let node = Node::start(Arc::new(store)).unwrap();
                let raft = cluster::start(
                    id,
                    node.clone(),
                    cluster::config(1000).unwrap(),
                    NodeNet { router: router.clone(), id },
                )
                .await
                .unwrap();
                cluster::proposer::attach(id, &node, &raft, tokio::runtime::Handle::current(), Duration::from_secs(10));
                router.add(id, raft.clone());
                nodes.insert(id, (raft, node));
            }
            let members: BTreeMap<u64, openraft::BasicNode> =
                (1..=3).map(|id| (id, openraft::BasicNode::new(format!("127.0.0.1:{}", 7070 + id)))).collect();
            nodes[&1].0.initialize(members).await.unwrap();
            nodes[&1].0.wait(Some(Duration::from_secs(10))).current_leader(1, "leader").await.unwrap();
            let store = nodes[&1].1.store().clone();
            let (store2, clock2) = (store.clone(), clock.clone());
            tokio::task::spawn_blocking(move || {
                for i in 0..24u32 {
                    clock2.advance(1000);
                    let line = format!(
                        r#"{{"spider":"spider-{}","tags":["t{}","é"],"priority":{},"args":{{"n":{i}}}}}"#,
                        i % 3,
                        i % 2,
                        i % 4
                    );
                    store2.push(53, &[parse_push(&line).unwrap()], Some("alice")).unwrap();
                    if i % 3 == 2 {
                        let key = format!("53/{}/{}", 1 + (i / 3) % 3, 1 + i / 9);
                        let state = ["running", "finished", "deleted"][(i as usize / 3) % 3];
                        let u =
                            parse_update(&format!(r#"{{"key":"{key}","state":"{state}","close_reason":"ok"}}"#), 53);
                        store2.update(53, &[u.unwrap()], Some("bob")).unwrap();
                    }
                }
            })
            .await
            .unwrap();
            let applied = nodes[&1].0.metrics().borrow().last_applied.unwrap().index;
            for (raft, _) in nodes.values() {
                raft.wait(Some(Duration::from_secs(10))).applied_index(Some(applied), "applied").await.unwrap();
            }
            let want = export(&store);
            // Cut off, the leader appends one more entry that never commits.
            router.isolate(1, true);
            let lost = tokio::task::spawn_blocking(move || {
                store.push(53, &[parse_push(r#"{"spider":"never-committed"}"#).unwrap()], None)
            })
            .await
            .unwrap();
            assert!(matches!(lost, Err(jobq::Error::InDoubt(_))), "{lost:?}");
            for (id, (raft, node)) in std::mem::take(&mut nodes) {
                cluster::proposer::detach(&node);
                raft.shutdown().await.unwrap();
                drop(raft);
                router.remove(id);
                let store = node.store().clone();
                drop(node);
                Arc::try_unwrap(store).ok().unwrap().close().unwrap();
            }
            let dest = Path::new(V8).join("store");
            let _ = std::fs::remove_dir_all(&dest);
            copy_dir(&tmp.path().join("n1"), &dest);
            std::fs::write(Path::new(V8).join("export.jsonl"), want).unwrap();
        });
    }

    const V11: &str = "tests/fixtures/v11";

    /// Format 11: the v8 node's directory (node 1's), started once as node 1 by
    /// this build: its `RAFT` (version 2) records the owner.
    #[test]
    #[ignore = "rewrites the committed fixture of format 11"]
    fn write_v11() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&Path::new(V8).join("store"), &dir);
        let store = Store::open(&dir, Options { raft_log: true, create: false, ..Options::default() }).unwrap();
        let want = export(&store);
        let node = Node::start_with(Arc::new(store), false, Some(1)).unwrap();
        let store = node.store().clone();
        drop(node);
        Arc::try_unwrap(store).ok().unwrap().close().unwrap();
        let dest = Path::new(V11).join("store");
        let _ = std::fs::remove_dir_all(&dest);
        copy_dir(&dir, &dest);
        std::fs::write(Path::new(V11).join("export.jsonl"), want).unwrap();
    }

    fn raft_version_and_owner(dir: &Path) -> (u32, u32) {
        let b = std::fs::read(dir.join("RAFT")).unwrap();
        let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        (word(8), word(56))
    }

    /// A node's directory knows its node (format 11): started under another id it
    /// is refused; a version-1 `RAFT` (v8) records its owner at the next start.
    #[test]
    fn v11_node_directory_is_refused_under_another_node_id() {
        let fixture = Path::new(V11).join("store");
        assert_eq!(raft_version_and_owner(&fixture), (2, 1));
        let want = std::fs::read_to_string(Path::new(V11).join("export.jsonl")).unwrap();
        let ro = Store::open(&fixture, Options { read_only: true, create: false, ..Options::default() }).unwrap();
        assert_eq!(export(&ro), want);
        drop(ro);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&fixture, &dir);
        let open = || Store::open(&dir, Options { raft_log: true, create: false, ..Options::default() }).unwrap();
        let err = Node::start_with(Arc::new(open()), false, Some(3)).err().expect("refused under node 3's id");
        assert!(err.to_string().contains("node 1's data directory, started as node 3"), "{err}");
        let node = Node::start_with(Arc::new(open()), false, Some(1)).unwrap();
        assert_eq!(export(node.store()), want);
        drop(node);
        // An older node's directory gets its owner at its next start.
        let old = tmp.path().join("v8");
        copy_dir(&Path::new(V8).join("store"), &old);
        assert_eq!(raft_version_and_owner(&old), (1, 0));
        let store = Store::open(&old, Options { raft_log: true, create: false, ..Options::default() }).unwrap();
        drop(Node::start_with(Arc::new(store), false, Some(1)).unwrap());
        assert_eq!(raft_version_and_owner(&old), (2, 1));
    }

    #[test]
    fn v8_node_store_shows_only_applied_entries_checks_clean_and_refuses_single_node_writes() {
        let fixture = Path::new(V8).join("store");
        assert!(segment_versions(&fixture).iter().all(|v| *v == 7), "{:?}", segment_versions(&fixture));
        let want = std::fs::read_to_string(Path::new(V8).join("export.jsonl")).unwrap();
        let ro = Store::open(&fixture, Options { read_only: true, create: false, ..Options::default() }).unwrap();
        assert_eq!(export(&ro), want, "a read-only open shows the applied entries, not the uncommitted last one");
        assert!(!export(&ro).contains("never-committed"));
        drop(ro);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&fixture, &dir);
        let report = jobq::store::check(&dir, Arc::new(jobq::fs::RealFs)).unwrap();
        assert!(report.is_clean(), "{report:?}");
        let err = Store::open(&dir, Options { create: false, ..Options::default() }).err().expect("refused");
        assert!(err.to_string().contains("cluster node"), "{err}");
        assert!(jobq::store::repair(&dir, Options::default()).is_err());
        // As a node again: the uncommitted entry is in its log, not applied.
        let store = Store::open(&dir, Options { raft_log: true, create: false, ..Options::default() }).unwrap();
        assert_eq!(export(&store), want);
        let entries = store.raft_entries().unwrap();
        let node = Node::start(Arc::new(store)).unwrap();
        let applied = node.applied().expect("entries applied").index;
        assert!(entries.last().unwrap().head.index > applied, "the last entry is appended, not applied");
    }
}
