//! Damaged index files are detected (checksum, length, coverage of the log) and
//! rebuilt from the log, never served: bit flips, truncation, a zeroed page, a
//! deleted file, a stale but valid older file, and a file that no longer matches
//! the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobq::fs::{FileSystem, OpenMode, SimFs};
use jobq::model::ManualClock;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Options, Store};

const GEN: &str = "/db/gen-0000000000000001";

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(9000)),
        background: false,
        memtable_entries: 6,
        merge_fanout: 3,
        ..Options::default()
    }
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn index_files(sim: &SimFs) -> Vec<PathBuf> {
    sim.read_dir(Path::new(GEN))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".jqi"))
        .map(|n| Path::new(GEN).join(n))
        .collect()
}

/// A store with several index files and some unindexed tail; its export.
fn build() -> (SimFs, String) {
    let sim = SimFs::new();
    let store = Store::open("/db", opts(&sim)).unwrap();
    for i in 0..40u32 {
        let spec = parse_push(&format!(r#"{{"spider":"s{}","tags":["t{}"],"n":{i}}}"#, i % 3, i % 4)).unwrap();
        store.push(1 + i % 2, &[spec], None).unwrap();
        if i % 3 == 0 {
            let key = format!("{}/1/{}", 1 + i % 2, 1 + i / 6);
            let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1 + i % 2).unwrap();
            store.update(1 + i % 2, &[u], None).unwrap();
        }
    }
    let want = export(&store);
    assert!(index_files(&sim).len() >= 2, "want several index files: {:?}", index_files(&sim));
    std::mem::forget(store);
    (sim.fork(), want)
}

/// Reopen: the damaged file is set aside, the answers are the same, and a second
/// reopen finds a clean chain again.
fn assert_rebuilt(sim: &SimFs, want: &str, damaged: &Path, context: &str) {
    let store = Store::open("/db", opts(sim)).unwrap_or_else(|e| panic!("{context}: {e}"));
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert!(store.report().discarded.iter().any(|(n, _)| n == name), "{context}: {:?}", store.report());
    assert_eq!(export(&store), want, "{context}: answers changed");
    store.close().unwrap();
    let store = Store::open("/db", opts(sim)).unwrap();
    assert!(store.report().discarded.is_empty(), "{context}: second open {:?}", store.report());
    assert_eq!(store.report().replayed_frames, 0, "{context}: the rebuilt index covers the log");
    assert_eq!(export(&store), want, "{context}: answers after rebuild");
}

#[test]
fn bit_flips_anywhere_are_detected() {
    let (sim, want) = build();
    for file in index_files(&sim) {
        let bytes = sim.read_file(&file).unwrap();
        let step = (bytes.len() / 23).max(1);
        for at in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            for bit in [0, 5] {
                let s = sim.fork();
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                s.write_file(&file, bad).unwrap();
                assert_rebuilt(&s, &want, &file, &format!("{} byte {at} bit {bit}", file.display()));
            }
        }
    }
}

#[test]
fn truncation_and_zeroed_pages_are_detected() {
    let (sim, want) = build();
    for file in index_files(&sim) {
        let bytes = sim.read_file(&file).unwrap();
        for len in [0, 1, 63, 64, bytes.len() / 2, bytes.len() - 48, bytes.len() - 1] {
            let s = sim.fork();
            s.write_file(&file, bytes[..len].to_vec()).unwrap();
            assert_rebuilt(&s, &want, &file, &format!("{} cut to {len}", file.display()));
        }
        for page in 0..bytes.len().div_ceil(4096) {
            let s = sim.fork();
            let mut bad = bytes.clone();
            let end = ((page + 1) * 4096).min(bad.len());
            bad[page * 4096..end].fill(0);
            s.write_file(&file, bad).unwrap();
            assert_rebuilt(&s, &want, &file, &format!("{} page {page} zeroed", file.display()));
        }
    }
}

#[test]
fn deleted_index_is_rebuilt() {
    let (sim, want) = build();
    for file in index_files(&sim) {
        let s = sim.fork();
        s.remove_file(&file).unwrap();
        let store = Store::open("/db", opts(&s)).unwrap();
        assert!(store.report().replayed_frames > 0, "the log fills the gap");
        assert_eq!(export(&store), want, "{} deleted", file.display());
    }
}

#[test]
fn stale_older_index_is_never_served() {
    let (sim, want) = build();
    let store = Store::open("/db", opts(&sim)).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> =
        index_files(&sim).into_iter().map(|p| (p.clone(), sim.read_file(&p).unwrap())).collect();
    // More writes, then merges replace the old files.
    for i in 0..30u32 {
        store.push(1, &[parse_push(&format!(r#"{{"spider":"s9","n":{i}}}"#)).unwrap()], None).unwrap();
    }
    let u = parse_update(r#"{"key":"1/1/1","state":"deleted"}"#, 1).unwrap();
    store.update(1, &[u], None).unwrap();
    store.flush_indexes().unwrap();
    let want_now = export(&store);
    assert_ne!(want, want_now);
    drop(store);
    // The old, valid files come back (a restored backup, an interrupted cleanup).
    for (p, bytes) in &before {
        if !sim.exists(p).unwrap() {
            sim.open(p, OpenMode::CreateNew).unwrap();
            sim.write_file(p, bytes.clone()).unwrap();
        }
    }
    let store = Store::open("/db", opts(&sim)).unwrap();
    assert_eq!(export(&store), want_now, "a stale index was served");
}

#[test]
fn index_ahead_of_the_log_is_discarded() {
    let (sim, want) = build();
    let store = Store::open("/db", opts(&sim)).unwrap();
    store.flush_indexes().unwrap();
    drop(store);
    // The log loses its tail under the newest index (a restored older log).
    let log = Path::new(GEN).join("log-0000000001.jql");
    let bytes = sim.read_file(&log).unwrap();
    let s = sim.fork();
    s.write_file(&log, bytes[..bytes.len() - 10].to_vec()).unwrap();
    // Synced bytes are gone (the durable mark says so): refused, changing nothing,
    // then salvaged.
    let files = index_files(&s);
    assert!(matches!(Store::open("/db", opts(&s)), Err(jobq::Error::Corrupt { .. })));
    assert_eq!(index_files(&s), files, "a refused open removed files");
    let salvage = || Options { recovery: jobq::log::recovery::RecoveryPolicy::TruncateAtCorruption, ..opts(&s) };
    let store = Store::open("/db", salvage()).unwrap();
    assert!(!store.report().discarded.is_empty(), "{:?}", store.report());
    let got = export(&store);
    assert!(want.starts_with(&got[..got.len().min(1)]) && got.lines().count() <= want.lines().count());
    // Every job answered exists in the log: a second open agrees.
    drop(store);
    assert_eq!(export(&Store::open("/db", opts(&s)).unwrap()), got);
    assert_eq!(export(&Store::open("/db", salvage()).unwrap()), got);
}
