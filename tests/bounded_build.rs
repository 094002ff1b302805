//! Index files rebuilt from others (merges, online compaction's trims) past
//! `bulk_entries` go through spilled sorted runs instead of memory: the files must
//! be byte for byte those an in-memory build makes, and `jobq compact`, which
//! publishes one chunk's index at a time, must keep every answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobq::fs::{FileSystem, MappedBytes, SimFs};
use jobq::index::{build, merge, DeadSet, IndexSegment, SegmentMeta};
use jobq::model::ManualClock;
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{compact, Durability, PushResult};
use jobq::{Options, Store};

fn opts(sim: &SimFs, clock: &Arc<ManualClock>, bulk_entries: usize) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: clock.clone(),
        durability: Durability::Sync,
        background: false,
        memtable_entries: 16,
        bulk_entries,
        merge_fanout: 2,
        segment_bytes: 16 << 10,
        ..Options::default()
    }
}

/// Pushes and updates over several projects, with tags, `unique`, close
/// reasons, running jobs (tokens) and superseded versions; index flushes (and so
/// merges) along the way.
fn history(store: &Store, clock: &ManualClock) {
    for i in 0..600u32 {
        clock.advance(7);
        let project = 1 + i % 3;
        let unique = if i % 5 == 0 { format!(r#","unique":"u{i}""#) } else { String::new() };
        let body =
            format!(r#"{{"spider":"s{}","tags":["t{}","x{}"],"priority":{}{unique}}}"#, i % 4, i % 2, i % 7, i % 5);
        let pushed = store.push(project, &[parse_push(&body).unwrap()], None).unwrap();
        let Some(PushResult::Pushed { key, .. }) = pushed.first() else { panic!("{pushed:?}") };
        if i % 5 != 0 {
            let (state, reason) =
                if i % 2 == 0 { ("running", "") } else { ("finished", r#","close_reason":"finished""#) };
            let line = format!(r#"{{"key":"{key}","state":"{state}"{reason}}}"#);
            store.update(project, &[parse_update(&line, project).unwrap()], None).unwrap();
        }
        if i % 97 == 0 {
            store.flush_indexes().unwrap();
        }
    }
    store.flush_indexes().unwrap();
}

fn index_files(sim: &SimFs) -> BTreeMap<String, Vec<u8>> {
    let dir = std::path::Path::new("/db/gen-0000000000000001");
    let mut out = BTreeMap::new();
    for name in sim.read_dir(dir).unwrap() {
        if name.ends_with(".jqi") {
            out.insert(name.clone(), jobq::fs::read_all(sim, &dir.join(&name)).unwrap());
        }
        assert!(!name.ends_with(".tmp"), "a temp file was left: {name}");
    }
    out
}

/// The file an in-memory build makes of the entries `bytes` holds.
fn rebuilt(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = std::path::Path::new(name);
    let seg = IndexSegment::open(MappedBytes::from_vec(bytes.to_vec()), path, true).unwrap();
    let mut docs = Vec::new();
    for i in 0..seg.projects().count() {
        merge::live_entries(&seg.section_at(i), &DeadSet::new(), &mut docs);
    }
    build::build(docs, SegmentMeta { docs: 0, ..*seg.meta() }, &seg.catalog(), &seg.dicts().unwrap())
}

fn answers(store: &Store) -> Vec<Vec<u64>> {
    let all = Paging { count: 100_000, start: 0, stop: None, startafter: None };
    let snap = store.snapshot();
    let mut out = Vec::new();
    for project in 1..=3 {
        for f in [
            Filter::default(),
            Filter { states: vec![jobq::model::JobState::Running], ..Filter::default() },
            Filter { has_tags: vec!["t1".into()], ..Filter::default() },
            Filter { close_reasons: vec!["finished".into()], ..Filter::default() },
        ] {
            out.push(snap.list(project, &f, &all).unwrap().iter().map(|h| h.local).collect());
        }
    }
    out
}

#[test]
fn spilled_merges_and_trims_make_what_memory_makes() {
    let mut files = Vec::new();
    let mut lists = Vec::new();
    for bulk in [1 << 20, 5] {
        let sim = SimFs::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Store::open("/db", opts(&sim, &clock, bulk)).unwrap();
        history(&store, &clock);
        assert!(store.stats().snapshot.index_files < 20, "merges ran");
        let trimmed = store.reclaim().unwrap();
        assert!(!trimmed.segments.is_empty(), "a reclaim cycle ran: {trimmed:?}");
        lists.push(answers(&store));
        store.close().unwrap();
        let reopened = Store::open("/db", opts(&sim, &clock, bulk)).unwrap();
        assert_eq!(&answers(&reopened), lists.last().unwrap());
        reopened.close().unwrap();
        files.push(index_files(&sim));
    }
    // Running jobs' tokens are random: the two stores' files differ there only.
    assert!(!files[0].is_empty());
    assert_eq!(files[0].keys().collect::<Vec<_>>(), files[1].keys().collect::<Vec<_>>());
    for (name, bytes) in &files[0] {
        assert_eq!(bytes.len(), files[1][name].len(), "{name}");
    }
    for (name, bytes) in files.iter().flatten() {
        assert!(bytes == &rebuilt(name, bytes), "{name} is not what an in-memory build of its entries makes");
    }
    assert_eq!(lists[0], lists[1]);
    assert!(lists[0].iter().all(|l| !l.is_empty()), "every filter finds jobs: {:?}", lists[0]);
}

#[test]
fn compaction_in_chunks_keeps_every_answer() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open("/db", opts(&sim, &clock, 1 << 20)).unwrap();
    history(&store, &clock);
    let before = answers(&store);
    store.close().unwrap();
    let report = compact(std::path::Path::new("/db"), opts(&sim, &clock, 50), None, &mut |_, _| {}).unwrap();
    assert_eq!(report.generation_after, 2);
    let dir = std::path::Path::new("/db/gen-0000000000000002");
    let idx = sim.read_dir(dir).unwrap().into_iter().filter(|n| n.ends_with(".jqi")).count();
    assert!(idx > 5, "one index file per chunk of 50 jobs, got {idx}");
    let store = Store::open("/db", opts(&sim, &clock, 1 << 20)).unwrap();
    assert_eq!(answers(&store), before);
    store.close().unwrap();
    let checked = jobq::store::check(std::path::Path::new("/db"), Arc::new(sim.clone())).unwrap();
    assert!(checked.is_clean(), "{checked:?}");
}
