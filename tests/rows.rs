//! Listing rows: a row rendered by the fast path (codec/row.rs: the record's
//! fixed part and tags, read in place from the log's maps, checked once) is
//! byte for byte the row rendered from the whole job, for random jobs: every
//! state, unicode and escapes in spider names and tags, many tags, records in
//! index files, in the tail, in sealed and in open segments, read a first time
//! (checked) and again (trusted). A page rendered at once (store/plain.rs) is
//! the same bytes as its rows one by one, and as its rows rendered in runs that
//! stop at a byte limit (a stream's chunks).

use std::io::Cursor;
use std::sync::Arc;

use proptest::prelude::*;

use jobq::fs::SimFs;
use jobq::model::{JobKey, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::{Durability, Options, Store};

const SPIDERS: [&str; 4] = ["s", "é\"x", "tab\tq\\", "😀/\u{7f}\u{2028}"];
const STATES: [&str; 4] = ["pending", "running", "finished", "deleted"];
const TIMES: [&str; 4] = ["pending_time", "running_time", "finished_time", "deleted_time"];

#[derive(Clone, Debug)]
struct GenJob {
    spider: usize,
    state: usize,
    times: [Option<u64>; 4],
    tags: Vec<String>,
    extra: Option<String>,
}

fn gen_job() -> impl Strategy<Value = GenJob> {
    (
        0..SPIDERS.len(),
        0..STATES.len(),
        proptest::array::uniform4(proptest::option::of(1u64..2_000_000_000_000)),
        proptest::collection::vec("[a-zé\"\\\\\t\n\u{1}\u{1f}😀 /]{1,8}", 0..12),
        proptest::option::of("[a-z\"\\\\é]{0,12}"),
    )
        .prop_map(|(spider, state, mut times, tags, extra)| {
            times[state].get_or_insert(1_000 + state as u64);
            GenJob { spider, state, times, tags, extra }
        })
}

fn import_line(i: usize, j: &GenJob) -> String {
    let mut m = serde_json::Map::new();
    m.insert("key".into(), format!("1/{}/{}", j.spider + 1, i + 1).into());
    m.insert("spider".into(), SPIDERS[j.spider].into());
    m.insert("state".into(), STATES[j.state].into());
    for (k, t) in j.times.iter().enumerate() {
        if let Some(t) = t {
            m.insert(TIMES[k].into(), (*t).into());
        }
    }
    if !j.tags.is_empty() {
        m.insert("tags".into(), j.tags.clone().into());
    }
    if let Some(x) = &j.extra {
        m.insert("note".into(), x.clone().into());
    }
    serde_json::Value::Object(m).to_string()
}

fn open(sim: &SimFs) -> Store {
    let opts = Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(3_000_000_000_000)),
        durability: Durability::Buffered,
        background: false,
        memtable_entries: 16,
        segment_bytes: 4096,
        ..Options::default()
    };
    Store::open("/db", opts).unwrap()
}

/// Every row of project 1, by the fast path and from the whole job; with and
/// without `jobmeta`.
fn rows(store: &Store) -> Vec<(String, String)> {
    let snap = store.snapshot();
    let all = Paging { count: 100_000, ..Paging::default() };
    let meta: Vec<String> = ["spider", "tags", "note", "state", "finished_time", "absent"].map(String::from).to_vec();
    let mut out = Vec::new();
    let hits = snap.list(1, &Filter::default(), &all).unwrap();
    // A page rendered at once is the rows rendered one by one.
    for jobmeta in [None, Some(meta.as_slice())] {
        let (mut page, mut one_by_one) = (b"x".to_vec(), b"x".to_vec());
        snap.render_rows(1, &hits, jobmeta, &mut page).unwrap();
        for h in &hits {
            snap.render_row(1, h, jobmeta, &mut one_by_one).unwrap();
            one_by_one.push(b'\n');
        }
        // In runs that stop at a byte limit (a stream's chunks): the same bytes.
        for limit in [1, 300, 4096] {
            let (mut chunks, mut at) = (b"x".to_vec(), 0);
            while at < hits.len() {
                let before = chunks.len();
                let n = snap.render_rows_within(1, &hits[at..], jobmeta, &mut chunks, before + limit).unwrap();
                assert!(n >= 1 && (limit > 1 || n == 1), "{n} rows at limit {limit}");
                at += n;
            }
            assert_eq!(chunks, page, "rows rendered in runs up to {limit} bytes");
        }
        out.push((String::from_utf8(page).unwrap(), String::from_utf8(one_by_one).unwrap()));
    }
    for h in hits {
        let job = snap.get(JobKey::from_local(1, h.local)).unwrap().unwrap();
        for jobmeta in [None, Some(meta.as_slice())] {
            let (mut fast, mut whole) = (Vec::new(), Vec::new());
            snap.render_row(1, &h, jobmeta, &mut fast).unwrap();
            snap.render_job(1, &job, jobmeta, &mut whole);
            out.push((String::from_utf8(fast).unwrap(), String::from_utf8(whole).unwrap()));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn fast_rows_are_the_rows_rendered_from_the_job(
        imported in proptest::collection::vec(gen_job(), 1..80),
        pushed in proptest::collection::vec(0..SPIDERS.len(), 0..20),
        reopen in any::<bool>(),
    ) {
        let sim = SimFs::new();
        let mut store = open(&sim);
        let lines: String = imported.iter().enumerate().map(|(i, j)| import_line(i, j) + "\n").collect();
        store.import(&mut Cursor::new(lines.into_bytes()), &mut |_| {}).unwrap();
        for s in &pushed {
            let line = serde_json::json!({"spider": SPIDERS[*s], "tags": ["t\"", "ü"]}).to_string();
            store.push(1, &[jobq::store::request::parse_push(&line).unwrap()], None).unwrap();
        }
        if reopen {
            store.close().unwrap();
            store = open(&sim);
        }
        let first = rows(&store);
        prop_assert_eq!(first.len(), 2 + 2 * (imported.iter().filter(|j| j.state < 4).count() + pushed.len()));
        for (fast, whole) in &first[..2] {
            prop_assert_eq!(fast, whole);
        }
        for (fast, whole) in &first[2..] {
            prop_assert_eq!(fast, whole);
            let v: serde_json::Value = serde_json::from_str(fast).unwrap();
            prop_assert!(v.get("key").is_some());
        }
        // Again: the records are now known checked.
        prop_assert_eq!(rows(&store), first);
    }
}

/// Filters of several lists over index sections large enough to be walked a
/// block at a time (query/blocked.rs) list what the filter says, in order, for
/// every paging.
#[test]
fn compound_filters_list_what_the_filter_says() {
    let sim = SimFs::new();
    let store = open(&sim);
    let mut lines = String::new();
    let mut x = 7u64;
    for i in 0..6_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = x >> 33;
        let tags: Vec<&str> =
            ["a", "b", "c", "d"].into_iter().enumerate().filter(|(k, _)| r >> k & 1 == 1).map(|t| t.1).collect();
        let state = STATES[(r >> 8) as usize % 4];
        let time = TIMES[(r >> 8) as usize % 4];
        let line = serde_json::json!({
            "key": format!("1/{}/{}", 1 + (r >> 12) % 3, i + 1), "spider": SPIDERS[((r >> 12) % 3) as usize],
            "state": state, time: 1_000_000 + (r >> 16) % 5_000, "tags": tags,
        });
        lines.push_str(&format!("{line}\n"));
    }
    store.import(&mut Cursor::new(lines.into_bytes()), &mut |_| {}).unwrap();
    store.flush_indexes().unwrap();
    let snap = store.snapshot();
    let everything = Paging { count: 1_000_000, ..Paging::default() };
    let all: Vec<jobq::model::Job> = snap
        .list(1, &Filter { states: vec![], ..Filter::default() }, &everything)
        .unwrap()
        .iter()
        .map(|h| snap.get(JobKey::from_local(1, h.local)).unwrap().unwrap())
        .collect();
    let v = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let filters = [
        Filter { spider: Some(SPIDERS[1].into()), has_tags: v(&["a"]), ..Filter::default() },
        Filter { has_tags: v(&["a", "b"]), lacks_tags: v(&["c"]), ..Filter::default() },
        Filter { has_tags_all: v(&["a", "d"]), states: vec![jobq::JobState::Finished], ..Filter::default() },
        Filter {
            spider: Some(SPIDERS[2].into()),
            has_tags_all: v(&["b"]),
            lacks_tags: v(&["a", "d"]),
            startts: Some(1_002_000),
            ..Filter::default()
        },
        Filter { lacks_tags: v(&["a"]), ..Filter::default() },
    ];
    for f in &filters {
        let names = |j: &jobq::model::Job| snap.spider_name(1, j.key.spider).unwrap().to_string();
        let want: Vec<JobKey> = all.iter().filter(|j| f.matches(j, &names(j))).map(|j| j.key).collect();
        assert!(want.len() > 150, "{f:?}: {} jobs", want.len());
        for (start, count) in [(0, 100), (0, 1_000_000), (37, 100), (want.len() as u64 - 20, 100)] {
            let paging = Paging { start, count, ..Paging::default() };
            let got: Vec<JobKey> =
                snap.list(1, f, &paging).unwrap().iter().map(|h| JobKey::from_local(1, h.local)).collect();
            let end = (start + count).min(want.len() as u64) as usize;
            assert_eq!(got, want[start as usize..end], "{f:?} start {start} count {count}");
        }
        let stop = Paging { count: 50, stop: Some(want[120]), ..Paging::default() };
        let got: Vec<JobKey> = snap.list(1, f, &stop).unwrap().iter().map(|h| JobKey::from_local(1, h.local)).collect();
        assert_eq!(got, want[..50], "{f:?} stop");
        assert_eq!(snap.count(1, f).unwrap(), want.len() as u64, "{f:?} count");
    }
}

/// The edges of a page's one-pass rows (store/plain.rs): tags around its 8-,
/// 16- and 64-byte limits with an escape at each place, a row of many tags,
/// spider names past 256 bytes, times around 10^8 and 10^16, a time after the
/// clock (negative `elapsed`), records in maps and past them. A page is the
/// same bytes as its rows rendered one by one, and those as from the whole job.
#[test]
fn page_rows_at_the_edges_of_the_one_pass_path() {
    let sim = SimFs::new();
    let store = open(&sim);
    let long_name = "n".repeat(300);
    let names = ["s", long_name.as_str(), "q\"s", &"m".repeat(256)];
    let mut tags: Vec<String> = Vec::new();
    for len in [1usize, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
        tags.push("a".repeat(len));
        for at in [0, len / 2, len - 1] {
            for c in ['"', '\\', '\u{1}', 'é'] {
                let mut t: Vec<char> = "b".repeat(len).chars().collect();
                t[at] = c;
                tags.push(t.into_iter().collect());
            }
        }
    }
    let times =
        [1u64, 99_999_999, 100_000_000, 100_000_001, 9_999_999_999_999_999, 10_000_000_000_000_000, u64::MAX / 2];
    let mut lines = String::new();
    let mut n = 0;
    let mut line = |spider: usize, state: usize, time: u64, tags: &[String]| {
        n += 1;
        let v = serde_json::json!({
            "key": format!("1/{}/{n}", spider + 1), "spider": names[spider], "state": STATES[state],
            TIMES[state]: time, "pending_time": 1_763_070_961_247u64, "tags": tags,
        });
        lines.push_str(&format!("{v}\n"));
    };
    for (i, t) in tags.iter().enumerate() {
        line(i % 4, i % 4, 1_763_071_345_230 + i as u64, std::slice::from_ref(t));
    }
    for (i, t) in times.iter().enumerate() {
        line(0, 2, *t, &tags[i..i + 2]);
    }
    line(0, 2, 4_000_000_000_000, &[]);
    line(2, 1, 1_763_071_345_230, &tags);
    line(0, 2, 1_763_071_345_231, &vec!["t".to_string(); 200]);
    store.import(&mut Cursor::new(lines.into_bytes()), &mut |_| {}).unwrap();
    store.flush_indexes().unwrap();
    for name in &names[..3] {
        let line = serde_json::json!({"spider": name, "tags": ["t\"", "ü", "plain"]}).to_string();
        store.push(1, &[jobq::store::request::parse_push(&line).unwrap()], None).unwrap();
    }
    for _ in 0..2 {
        let first = rows(&store);
        assert_eq!(first.len(), 2 + 2 * (n + 3));
        for (page, one) in &first {
            assert_eq!(page, one);
        }
        assert!(first[0].0.contains("\"elapsed\":-"), "a time after the clock");
    }
}

/// Descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn reads_and_the_feed_across_many_segments_keep_few_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options {
        background: false,
        clock: Arc::new(ManualClock::new(5000)),
        segment_bytes: 4096,
        memtable_entries: 50,
        ..Options::default()
    };
    let before = open_fds();
    let store = Store::open(dir.path(), opts()).unwrap();
    let line = format!(r#"{{"spider":"s","pad":"{}"}}"#, "x".repeat(1500));
    for _ in 0..300 {
        store.push(1, &[jobq::store::request::parse_push(&line).unwrap()], None).unwrap();
    }
    store.close().unwrap();
    let segments = std::fs::read_dir(dir.path().join("gen-0000000000000001"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("log-"))
        .count();
    assert!(segments > 100, "{segments} segments");
    // Every record read (some positionally, some through maps), twice.
    let store = Store::open(dir.path(), opts()).unwrap();
    for _ in 0..2 {
        let mut out = Vec::new();
        assert_eq!(store.export(None, &mut out).unwrap(), 300);
    }
    // And the change feed from the log's start, a page at a time.
    let (mut from, mut seen) = (jobq::store::FeedFrom::Seq(0), 0);
    loop {
        let page = store.changes(1, from, &jobq::query::ChangeFilter::default(), 40).unwrap();
        let jobq::store::FeedPage::Changes { changes, mark, caught_up } = page else { panic!("gone") };
        seen += changes.len();
        if caught_up {
            break;
        }
        from = jobq::store::FeedFrom::Seq(mark.seq);
    }
    assert_eq!(seen, 300);
    let held = open_fds().saturating_sub(before);
    // Tests beside this one may hold a few; the log alone would hold one per segment.
    assert!(held <= jobq::log::reader::MAX_OPEN_SEGMENTS + 24, "{held} descriptors for {segments} segments");
    store.close().unwrap();
}
