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

/// A deleted index file is rebuilt from the log; the files after it, which no
/// chain reaches now, are set aside as such (they were called "does not match
/// the log", which sent an operator looking for damage in good files).
#[test]
fn deleted_index_is_rebuilt() {
    let (sim, want) = build();
    let mut files = index_files(&sim);
    files.sort();
    for (i, file) in files.iter().enumerate() {
        let s = sim.fork();
        s.remove_file(file).unwrap();
        let store = Store::open("/db", opts(&s)).unwrap();
        assert!(store.report().replayed_frames > 0, "the log fills the gap");
        assert_eq!(export(&store), want, "{} deleted", file.display());
        for later in &files[i + 1..] {
            let name = later.file_name().unwrap().to_str().unwrap();
            let why = store.report().discarded.iter().find(|(n, _)| n == name).map(|(_, w)| w.clone());
            assert!(why.as_deref().is_some_and(|w| w.contains("gap before it")), "{name}: {why:?}");
        }
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

/// Re-seal an index file after an edit inside section `i`: its directory CRC and the
/// footer CRC, so that only the structure checks can find the damage.
fn reseal(b: &mut [u8], i: usize) {
    use jobq::codec::frame::checksum;
    let rd = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let foot = b.len() - 48;
    let (dir_off, dir_len, cat_off, cat_len) = (rd(b, foot), rd(b, foot + 8), rd(b, foot + 16), rd(b, foot + 24));
    let e = dir_off + 8 + 32 * i;
    let (off, len) = (rd(b, e + 8), rd(b, e + 16));
    let crc = checksum(&[&b[off..off + len]]);
    b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
    let crc =
        checksum(&[&b[..64], &b[dir_off..dir_off + dir_len], &b[cat_off..cat_off + cat_len], &b[foot..foot + 36]]);
    b[foot + 36..foot + 40].copy_from_slice(&crc.to_le_bytes());
}

/// Packed columns (index version 3) damaged under correct checksums: a block width
/// above 64, a block's data running past the section, a key table entry past the
/// last doc. Each is a typed error naming the file and offset, and the file is
/// rebuilt from the log.
#[test]
fn packed_column_damage_under_good_checksums_is_refused_and_rebuilt() {
    let (sim, want) = build();
    let file = index_files(&sim).remove(0);
    let bytes = sim.read_file(&file).unwrap();
    let rd = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let foot = bytes.len() - 48;
    let sec = rd(rd(foot) + 8 + 8);
    let sec_len = rd(rd(foot) + 8 + 16);
    let col = |k: usize| sec + rd(sec + 16 + 8 * k);
    type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("width 65", Box::new(|b: &mut Vec<u8>| b[col(0) + 20] = 65), "width 65"),
        ("a block wider than its column", Box::new(|b: &mut Vec<u8>| b[col(4) + 20] = 64), "expected"),
        (
            "a section cut inside a column",
            Box::new(move |b: &mut Vec<u8>| {
                let e = rd(foot) + 8;
                b[e + 16..e + 24].copy_from_slice(&100u64.to_le_bytes());
            }),
            "outside the section",
        ),
        (
            "key table past the last doc",
            Box::new(|b: &mut Vec<u8>| {
                let base = col(5);
                b[base..base + 8].copy_from_slice(&1000u64.to_le_bytes());
            }),
            "points past the last doc",
        ),
    ];
    assert!(rd(sec + 16 + 8 * 5) < sec_len);
    for (what, edit, says) in cases {
        let s = sim.fork();
        let mut bad = bytes.clone();
        edit(&mut bad);
        reseal(&mut bad, 0);
        s.write_file(&file, bad).unwrap();
        let seg =
            jobq::index::IndexSegment::open(jobq::fs::MappedBytes::from_vec(s.read_file(&file).unwrap()), &file, true);
        match seg {
            Err(e @ jobq::Error::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(says) && msg.contains("offset"), "{what}: {msg}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_rebuilt(&s, &want, &file, what);
    }
}

/// An index file replaced by a directory (it does not map) is set aside like a
/// damaged one (every command refused the store). A writable open moves the
/// directory aside (`<name>.set-aside-<ms>`, layout.md), so the rebuilt file
/// takes the name back (before, writing it failed: the name was taken).
#[test]
fn an_index_path_that_is_not_a_file_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Options { fs: Arc::new(jobq::fs::RealFs), background: false, memtable_entries: 6, ..Options::default() };
    let store = Store::open(tmp.path(), o.clone()).unwrap();
    for i in 0..30u32 {
        let spec = parse_push(&format!(r#"{{"spider":"s","n":{i}}}"#)).unwrap();
        store.push(1, &[spec], None).unwrap();
    }
    let want = export(&store);
    store.close().unwrap();
    let gen = tmp.path().join("gen-0000000000000001");
    let idx =
        std::fs::read_dir(&gen).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "jqi"));
    let idx = idx.expect("an index file");
    std::fs::remove_file(&idx).unwrap();
    std::fs::create_dir(&idx).unwrap();
    for _ in 0..2 {
        let store = Store::open(tmp.path(), Options { read_only: true, ..o.clone() }).unwrap();
        assert_eq!(export(&store), want);
        let set_aside = &store.report().discarded;
        assert!(set_aside.iter().any(|(_, why)| why.contains("does not map")), "{set_aside:?}");
        store.close().unwrap();
    }
    // Writable: it serves, and the directory goes aside, kept under another name.
    let store = Store::open(tmp.path(), o.clone()).unwrap();
    assert_eq!(export(&store), want);
    store.close().unwrap();
    let name = idx.file_name().unwrap().to_str().unwrap().to_string();
    let aside = std::fs::read_dir(&gen).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
    let aside: Vec<String> = aside.filter(|n| n.starts_with(&format!("{name}.set-aside-"))).collect();
    assert!(aside.len() == 1 && gen.join(&aside[0]).is_dir(), "{aside:?}");
    assert!(!idx.is_dir(), "the name is free again");
    assert_eq!(export(&Store::open(tmp.path(), o).unwrap()), want);
}
