//! A read-only open (`jobq check`, `export`, `query`) of a log of many segments
//! holds a bounded number of descriptors: past 32 handles, sealed segments are
//! kept by their maps. They stay readable when another process (a server's
//! compaction) removes their files meanwhile. One test in this binary: it counts
//! the process's open descriptors.

use jobq::model::JobKey;
use jobq::store::request::parse_push;
use jobq::store::PushResult;
use jobq::{Options, Store};

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn a_read_only_open_of_hundreds_of_segments_holds_few_descriptors_and_outlives_their_removal() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options { segment_bytes: 16 << 10, background: false, ..Options::default() };
    let store = Store::open(dir.path(), small.clone()).unwrap();
    let mut keys: Vec<(JobKey, String)> = Vec::new();
    for i in 0..600 {
        let marker = format!("m{i}-{}", "z".repeat(8000 + i % 7));
        let line = format!(r#"{{"spider":"s","m":"{marker}"}}"#);
        match &store.push(1, &[parse_push(&line).unwrap()], None).unwrap()[0] {
            PushResult::Pushed { key, .. } => keys.push((*key, marker)),
            other => panic!("{other:?}"),
        }
    }
    store.close().unwrap();
    let gen = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gen-")))
        .unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jql"))
        .collect();
    segments.sort();
    assert!(segments.len() > 250, "{} segments", segments.len());

    let before = open_descriptors();
    let ro = Store::open(dir.path(), Options { read_only: true, create: false, ..small }).unwrap();
    let held = open_descriptors().saturating_sub(before);
    assert!(held <= 48, "{held} descriptors held for {} segments", segments.len());
    // The oldest segments go (as a server's online compaction removes them).
    for p in &segments[..segments.len() - 5] {
        std::fs::remove_file(p).unwrap();
    }
    let snap = ro.snapshot();
    for (key, marker) in &keys {
        let j = snap.get(*key).unwrap().unwrap_or_else(|| panic!("{key} gone"));
        assert_eq!(j.meta.get("m").map(|v| v.get().trim_matches('"').to_string()).as_deref(), Some(marker.as_str()));
    }
    assert!(open_descriptors().saturating_sub(before) <= 48, "reads open no more descriptors");
}
