//! `check` finds nothing in a healthy store and names file (and offset) for damage
//! in the log, in records covered by indexes, in index files, and for an index
//! that disagrees with the log.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{FileSystem, SimFs};
use jobq::model::ManualClock;
use jobq::store::check;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Options, Store};

const GEN: &str = "/db/gen-0000000000000001";
const LOG: &str = "/db/gen-0000000000000001/log-0000000001.jql";

/// A store on `sim` whose tail is frozen into an index file every 8 writes.
fn open(sim: &SimFs) -> Store {
    let opts = Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(5000)),
        background: false,
        memtable_entries: 8,
        ..Options::default()
    };
    Store::open("/db", opts).unwrap()
}

/// Thirty jobs, a third of them finished with `reason` as close_reason.
fn build(sim: &SimFs, tag: &str, reason: &str) {
    let store = open(sim);
    for i in 0..30u32 {
        store
            .push(
                1,
                &[parse_push(&format!(r#"{{"spider":"s{}","tags":["{tag}{}"],"unique":"u{i}"}}"#, i % 2, i % 3))
                    .unwrap()],
                None,
            )
            .unwrap();
        if i % 3 == 0 {
            let u = parse_update(
                &format!(r#"{{"key":"1/{}/{}","state":"finished","close_reason":"{reason}"}}"#, 1 + i % 2, 1 + i / 2),
                1,
            )
            .unwrap();
            store.update(1, &[u], None).unwrap();
        }
    }
    store.close().unwrap();
}

fn run(sim: &SimFs) -> jobq::store::CheckReport {
    check(Path::new("/db"), Arc::new(sim.clone())).unwrap()
}

fn index_files(sim: &SimFs) -> Vec<std::path::PathBuf> {
    sim.read_dir(Path::new(GEN))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".jqi"))
        .map(|n| Path::new(GEN).join(n))
        .collect()
}

#[test]
fn a_healthy_store_is_clean() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let r = run(&sim);
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert_eq!(r.jobs, 30);
    assert!(r.records > 30 && r.frames > 30 && r.index_files >= 1, "{r:?}");
}

#[test]
fn a_damaged_record_covered_by_an_index_is_named() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let mut log = sim.read_file(Path::new(LOG)).unwrap();
    let at = jobq::log::segment::DATA_START_V2 as usize + 300;
    log[at] ^= 0x10;
    sim.write_file(Path::new(LOG), log).unwrap();
    let r = run(&sim);
    let f = r
        .findings
        .iter()
        .find(|f| f.path.ends_with("log-0000000001.jql"))
        .unwrap_or_else(|| panic!("{:#?}", r.findings));
    assert!(f.offset.is_some_and(|o| o <= at as u64), "{f}");
}

#[test]
fn a_damaged_index_file_is_named() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let file = index_files(&sim).pop().unwrap();
    let mut bytes = sim.read_file(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    sim.write_file(&file, bytes).unwrap();
    let r = run(&sim);
    assert!(r.findings.iter().any(|f| f.path == file), "{:#?}", r.findings);
}

#[test]
fn an_index_that_disagrees_with_the_log_is_named() {
    // Same history, other tags: index files valid in themselves but of another log.
    let (a, b) = (SimFs::new(), SimFs::new());
    build(&a, "t", "ok");
    build(&b, "x", "ok");
    for f in index_files(&a) {
        if let Ok(other) = b.read_file(&f) {
            a.write_file(&f, other).unwrap();
        }
    }
    let r = run(&a);
    assert!(!r.is_clean());
    // Each job is named with the field that differs, read again from its record.
    let differ = |f: &&jobq::store::Finding| f.what.contains("the index and the log differ: tags differ");
    assert!(r.findings.iter().any(|f| differ(&f)), "{:#?}", r.findings);
    assert!(r.findings.iter().filter(differ).all(|f| f.path.to_string_lossy().contains(".jqi")), "{:#?}", r.findings);
}

#[test]
fn an_index_whose_close_reason_lists_disagree_with_the_log_is_named() {
    // Same history and record sizes, another close_reason: only those lists differ.
    let (a, b) = (SimFs::new(), SimFs::new());
    build(&a, "t", "ok");
    build(&b, "t", "no");
    let mut swapped = 0;
    for f in index_files(&a) {
        if let Ok(other) = b.read_file(&f) {
            a.write_file(&f, other).unwrap();
            swapped += 1;
        }
    }
    assert!(swapped > 0);
    let r = run(&a);
    assert!(!r.is_clean(), "{:#?}", r.notes);
    assert!(
        r.findings.iter().any(|f| f.what.ends_with("the index and the log differ: close_reason differs")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn a_torn_tail_is_reported() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let mut log = sim.read_file(Path::new(LOG)).unwrap();
    log.extend_from_slice(&[7u8; 100]);
    sim.write_file(Path::new(LOG), log.clone()).unwrap();
    let r = run(&sim);
    // Not damage: what a crash leaves, and what the next open cuts.
    assert!(r.is_clean(), "{:#?}", r.findings);
    let note = r.notes.iter().find(|n| n.contains("torn tail")).unwrap_or_else(|| panic!("{:#?}", r.notes));
    assert!(note.contains(&format!("offset {}", log.len() - 100)), "{note}");
    // check changes nothing.
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap(), log);
}

/// No checksum covers the header page's padding and nothing reads it: a
/// non-zero byte there is named in a note, not damage (format-spec/log.md).
#[test]
fn a_non_zero_byte_in_the_header_page_padding_is_named() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let mut log = sim.read_file(Path::new(LOG)).unwrap();
    log[1000] = 1;
    sim.write_file(Path::new(LOG), log).unwrap();
    let r = run(&sim);
    assert!(r.is_clean(), "{:#?}", r.findings);
    let n = r.notes.iter().find(|n| n.contains("offset 1000")).unwrap_or_else(|| panic!("{:#?}", r.notes));
    assert!(n.contains("padding"), "{n}");
}

#[test]
fn preallocated_zeros_end_the_last_segment_but_damage_a_sealed_one() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let log = sim.read_file(Path::new(LOG)).unwrap();
    // After the last frame of the last segment: its preallocated space, clean.
    let mut bytes = log.clone();
    bytes.resize(log.len() + (1 << 20), 0);
    sim.write_file(Path::new(LOG), bytes).unwrap();
    let r = run(&sim);
    assert!(r.is_clean() && r.notes.is_empty(), "{r:#?}");
    // Once the segment is sealed (a later one follows), zeros after its last
    // frame are damage, even inside the indexes' range.
    let store = Store::open(
        "/db",
        Options { fs: Arc::new(sim.clone()), background: false, create: false, segment_bytes: 1, ..Options::default() },
    )
    .unwrap();
    store.push(1, &[parse_push(r#"{"spider":"later"}"#).unwrap()], None).unwrap();
    store.close().unwrap();
    let names: Vec<String> =
        sim.read_dir(Path::new(GEN)).unwrap().into_iter().filter(|n| n.ends_with(".jql")).collect();
    assert!(names.len() >= 2, "{names:?}");
    assert_eq!(sim.read_file(Path::new(LOG)).unwrap().len(), log.len(), "sealing cut the zeros");
    let mut bytes = log;
    bytes.extend_from_slice(&[0u8; 4096]);
    sim.write_file(Path::new(LOG), bytes).unwrap();
    let r = run(&sim);
    assert!(r.findings.iter().any(|f| f.path.ends_with("log-0000000001.jql")), "{r:#?}");
}

#[test]
fn an_index_whose_tokens_disagree_with_the_log_is_named() {
    // Same history, running jobs: only their random tokens differ between the two.
    let history = |sim: &SimFs| {
        let store = open(sim);
        for i in 0..30u32 {
            store.push(1, &[parse_push(r#"{"spider":"s"}"#).unwrap()], None).unwrap();
            if i % 2 == 0 {
                let u = parse_update(&format!(r#"{{"key":"1/1/{}","state":"running"}}"#, i + 1), 1).unwrap();
                store.update(1, &[u], None).unwrap();
            }
        }
        store.close().unwrap();
    };
    let (a, b) = (SimFs::new(), SimFs::new());
    history(&a);
    history(&b);
    assert!(run(&a).is_clean() && run(&b).is_clean());
    let mut swapped = 0;
    for f in index_files(&a) {
        if let Ok(other) = b.read_file(&f) {
            assert_eq!(other.len(), a.read_file(&f).unwrap().len());
            a.write_file(&f, other).unwrap();
            swapped += 1;
        }
    }
    assert!(swapped > 0);
    let r = run(&a);
    assert!(r.findings.iter().any(|f| f.what.contains("token differs")), "{:#?}", r.findings);
}

/// Beside a writer that pushes, finishes jobs, freezes index files and reclaims
/// segments, every check reads the store as of one log position and finds it
/// clean, and every read-only open succeeds. A check used to read the log up to
/// where it ended by then (jobs the opened indexes did not hold yet: "in the log
/// but no index serves it"), and a read-only open failed when a segment went.
#[test]
fn a_check_beside_a_busy_writer_finds_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = SimFs::new();
    let opts = Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(5000)),
        background: false,
        memtable_entries: 8,
        segment_bytes: 8 << 10,
        reclaim_segments: 2,
        ..Options::default()
    };
    let store = Store::open("/db", opts.clone()).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..3000u32 {
                let line = format!(r#"{{"spider":"s{}","tags":["t{}"],"pad":"{}"}}"#, i % 2, i % 3, "p".repeat(80));
                store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
                let key = format!("1/{}/{}", 1 + i % 2, 1 + i / 4);
                let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
                store.update(1, &[u], None).unwrap();
                if i % 50 == 0 {
                    store.reclaim().unwrap();
                }
            }
            done.store(true, Ordering::Release);
        });
        let mut checks = 0;
        while !done.load(Ordering::Acquire) {
            let r = run(&sim);
            assert!(r.is_clean(), "check {checks}: {:#?}", r.findings);
            assert!(r.notes.iter().any(|n| n.contains("beside a running server")), "{:?}", r.notes);
            let ro = Store::open("/db", Options { read_only: true, ..opts.clone() }).unwrap();
            drop(ro);
            checks += 1;
        }
        assert!(checks > 5, "{checks} checks ran beside the writer");
    });
    store.close().unwrap();
    assert!(run(&sim).is_clean());
}

/// A store's generation directory given as a data directory (`serve --data
/// STORE/gen-...`) is refused: a store created there lived inside the other,
/// and went with its next compaction.
#[test]
fn a_generation_directory_is_no_data_directory() {
    let sim = SimFs::new();
    build(&sim, "t", "ok");
    let opts = Options { fs: Arc::new(sim.clone()), background: false, ..Options::default() };
    for read_only in [false, true] {
        let e = Store::open(GEN, Options { read_only, ..opts.clone() }).err().expect("refused");
        assert!(e.to_string().contains("generation directory"), "{e}");
    }
    assert!(!sim.exists(&Path::new(GEN).join("CURRENT")).unwrap());
    assert!(run(&sim).is_clean());
}
