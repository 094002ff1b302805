//! Term and key lookups (issue 11, "term lookup and key lists"): an empty listing
//! costs no clock read and no row, absent and present terms are told apart in
//! index files and the tail alike, and key lists find each key's current version
//! wherever it lives (tail, newest or older index file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jobq::fs::SimFs;
use jobq::model::{Clock, JobKey, JobState, Millis};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{Durability, Options, Store};

/// A clock that counts its reads.
#[derive(Debug, Default)]
struct CountingClock(AtomicU64);

impl Clock for CountingClock {
    fn now_ms(&self) -> Millis {
        self.0.fetch_add(1, Ordering::SeqCst);
        1_000_000
    }
}

fn store(clock: Arc<dyn Clock>, memtable_entries: usize) -> Store {
    let opts = Options {
        fs: Arc::new(SimFs::new()),
        clock,
        durability: Durability::Buffered,
        background: false,
        memtable_entries,
        ..Options::default()
    };
    Store::open("/db", opts).unwrap()
}

fn push(store: &Store, project: u32, line: &str) -> JobKey {
    match &store.push(project, &[parse_push(line).unwrap()], None).unwrap()[0] {
        PushResult::Pushed { key, .. } => *key,
        PushResult::Conflict { .. } => unreachable!("no unique values here"),
    }
}

fn keys(store: &Store, project: u32, f: &Filter) -> Vec<JobKey> {
    let p = Paging { count: 1_000, ..Paging::default() };
    store.snapshot().list(project, f, &p).unwrap().iter().map(|h| JobKey::from_local(project, h.local)).collect()
}

fn tag(t: &str) -> Filter {
    Filter { has_tags: vec![t.into()], states: JobState::ALL.to_vec(), ..Filter::default() }
}

#[test]
fn an_empty_listing_reads_no_clock_and_renders_nothing() {
    let clock = Arc::new(CountingClock::default());
    let store = store(clock.clone(), 8);
    for i in 0..20 {
        push(&store, 1, &format!(r#"{{"spider":"s{}","tags":["a","b{}"]}}"#, i % 3, i % 2));
    }
    let snap = store.snapshot();
    assert!(snap.stats().index_files > 1, "{:?}", snap.stats());
    let empty = Paging { count: 100, ..Paging::default() };
    let before = clock.0.load(Ordering::SeqCst);
    for f in [tag("no-such-tag"), Filter { spider: Some("no-such-spider".into()), ..tag("a") }] {
        let hits = snap.list(1, &f, &empty).unwrap();
        assert!(hits.is_empty());
        let mut out = b"kept".to_vec();
        snap.render_rows(1, &hits, None, &mut out).unwrap();
        assert_eq!(out, b"kept");
    }
    assert_eq!(clock.0.load(Ordering::SeqCst), before, "an empty listing read the clock");
    // A listing with rows reads it once.
    assert_eq!(snap.list(1, &tag("b1"), &empty).unwrap().len(), 10);
    assert_eq!(clock.0.load(Ordering::SeqCst), before + 1);
}

#[test]
fn terms_are_found_in_index_files_and_the_tail() {
    let store = store(Arc::new(CountingClock::default()), 16);
    let mut by_tag: std::collections::BTreeMap<String, Vec<JobKey>> = Default::default();
    // 200 tags over 300 jobs: several index files and a tail, each with its own
    // dictionary; tags that share prefixes and differ in length.
    for i in 0..300u32 {
        let t = format!("t{}", i % 200);
        let k = push(&store, 1, &format!(r#"{{"spider":"s{}","tags":["{t}","{t}x","z"]}}"#, i % 7));
        by_tag.entry(t).or_default().push(k);
    }
    let stats = store.snapshot().stats();
    assert!(stats.index_files >= 2 && stats.tail_entries > 0, "{stats:?}");
    for (t, want) in &by_tag {
        let (mut got, mut want) = (keys(&store, 1, &tag(t)), want.clone());
        got.sort();
        want.sort();
        assert_eq!(got, want, "tag {t}");
        assert_eq!(keys(&store, 1, &tag(&format!("{t}x"))).len(), want.len(), "tag {t}x");
    }
    for absent in ["t200", "t1xx", "x", "t", "T1"] {
        assert!(keys(&store, 1, &tag(absent)).is_empty(), "tag {absent}");
    }
    assert_eq!(keys(&store, 1, &tag("z")).len(), 300);
    assert_eq!(keys(&store, 1, &Filter { spider: Some("s3".into()), ..tag("t3") }).len(), 1);
    assert!(keys(&store, 2, &tag("t3")).is_empty(), "another project");
}

#[test]
fn key_lists_find_each_current_version() {
    let store = store(Arc::new(CountingClock::default()), 32);
    let all: Vec<JobKey> = (0..200).map(|i| push(&store, 1, &format!(r#"{{"spider":"s{}"}}"#, i % 4))).collect();
    // Every third job finished: its newest version in a newer file or the tail.
    for k in all.iter().step_by(3) {
        let u = parse_update(&format!(r#"{{"key":"{k}","state":"finished"}}"#), 1).unwrap();
        store.update(1, &[u], None).unwrap();
    }
    let stats = store.snapshot().stats();
    assert!(stats.index_files >= 2 && stats.tail_entries > 0, "{stats:?}");
    let finished: Vec<JobKey> = all.iter().step_by(3).copied().collect();
    let mut asked: Vec<JobKey> = all.iter().rev().step_by(2).copied().collect();
    asked.extend([all[3], all[3], JobKey::new(1, 9, 9), JobKey::new(2, 1, 1), JobKey::new(1, 1, u32::MAX)]);
    for states in [vec![JobState::Finished], vec![JobState::Pending], JobState::ALL.to_vec()] {
        let f = Filter { keys: Some(asked.clone()), states: states.clone(), ..Filter::default() };
        let mut got = keys(&store, 1, &f);
        got.sort();
        let mut want: Vec<JobKey> = all
            .iter()
            .filter(|k| asked.contains(k))
            .filter(|k| states.len() > 1 || finished.contains(k) == (states[0] == JobState::Finished))
            .copied()
            .collect();
        want.sort();
        assert_eq!(got, want, "states {states:?}");
        assert_eq!(store.snapshot().count(1, &f).unwrap(), want.len() as u64);
    }
}
