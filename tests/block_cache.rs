//! Index files whose posting lists have array containers large enough for the
//! block cache (index/block_cache.rs): counts and listings of filter
//! combinations, asked cold and again from the cache, against the naive model.

mod common;

use std::sync::Arc;

use common::model::{MPush, Model};
use common::push_json;
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::parse_push;
use jobq::{Options, Store};

/// Job `i`: 20 spiders, tags of 1/4, 1/19, 1/23 and 1/97, half finished, one
/// in 18 closed by timeout. Lists under 1/16 of the docs are array containers:
/// in the first file (20,000 jobs) of 200 to 1,100 values, the cache's size.
fn job(i: u64) -> MPush {
    let tags = [
        ("a", i.is_multiple_of(4)),
        ("b", i.is_multiple_of(19)),
        ("c", i.is_multiple_of(23)),
        ("rare", i.is_multiple_of(97)),
    ];
    MPush {
        spider: format!("s{}", i % 20),
        state: if i.is_multiple_of(2) { JobState::Finished } else { JobState::Pending },
        priority: None,
        tags: tags.iter().filter(|(_, on)| *on).map(|(t, _)| t.to_string()).collect(),
        unique: None,
        field: (i.is_multiple_of(18)).then(|| ("close_reason".to_string(), "\"timeout\"".to_string())),
    }
}

fn filters() -> Vec<Filter> {
    let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let fin = vec![JobState::Finished];
    vec![
        Filter { spider: Some("s0".into()), states: vec![], ..Filter::default() },
        Filter { spider: Some("s1".into()), has_tags: s(&["a"]), ..Filter::default() },
        Filter { has_tags: s(&["a", "b"]), states: fin.clone(), ..Filter::default() },
        Filter { has_tags_all: s(&["a", "b"]), ..Filter::default() },
        Filter { spider: Some("s2".into()), lacks_tags: s(&["c"]), ..Filter::default() },
        Filter {
            spider: Some("s0".into()),
            has_tags: s(&["b"]),
            close_reasons: s(&["timeout"]),
            states: fin.clone(),
            ..Filter::default()
        },
        Filter { has_tags: s(&["rare", "c"]), ..Filter::default() },
        Filter { states: vec![JobState::Pending], lacks_tags: s(&["a", "b"]), ..Filter::default() },
        Filter { has_tags: s(&["b"]), startts: Some(1_000 + 20), endts: Some(1_000 + 45), ..Filter::default() },
        Filter { has_tags: s(&["b", "c"]), lacks_tags: s(&["a"]), ..Filter::default() },
        Filter { has_tags_all: s(&["a", "c"]), lacks_tags: s(&["b"]), states: fin, ..Filter::default() },
    ]
}

fn check(store: &Store, model: &Model, context: &str) {
    let snap = store.snapshot();
    for f in filters() {
        assert_eq!(snap.count(1, &f).unwrap(), model.count(1, &f), "{context}: count {f:?}");
        for (start, count) in [(0, 100), (7, 100), (150, 1000), (900, 100), (2500, 50), (9000, 100)] {
            let p = Paging { count, start, stop: None, startafter: None };
            let got: Vec<JobKey> =
                snap.list(1, &f, &p).unwrap().iter().map(|h| JobKey::from_local(1, h.local)).collect();
            assert_eq!(got, model.list(1, &f, &p), "{context}: list {f:?} {p:?}");
        }
    }
}

#[test]
fn cached_blocks_answer_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let opts = Options { clock: clock.clone(), background: false, memtable_entries: 100_000, ..Options::default() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut model = Model::default();
    let mut i = 0;
    for round in 0..2 {
        // 20,000 jobs in one index file, then 4,000 more in a second one, then a tail.
        for _ in 0..[50, 10][round] {
            let lines: Vec<MPush> = (i..i + 400).map(job).collect();
            i += 400;
            let specs: Vec<_> = lines.iter().map(|l| parse_push(&push_json(l)).unwrap()).collect();
            store.push(1, &specs, None).unwrap();
            model.push(1, &lines, jobq::model::Clock::now_ms(&*clock), None);
            clock.advance(1);
        }
        store.flush_indexes().unwrap();
        for pass in ["cold", "cached", "cached again"] {
            check(&store, &model, &format!("{} files, {pass}", round + 1));
        }
        let cached = store.metrics().index_cached_bytes;
        assert!(cached > 0 && cached <= 2 * (16 << 20), "{cached} bytes of cached blocks");
    }
    let lines: Vec<MPush> = (i..i + 300).map(job).collect();
    let specs: Vec<_> = lines.iter().map(|l| parse_push(&push_json(l)).unwrap()).collect();
    store.push(1, &specs, None).unwrap();
    model.push(1, &lines, jobq::model::Clock::now_ms(&*clock), None);
    check(&store, &model, "files and a tail");
}
