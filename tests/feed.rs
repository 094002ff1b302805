//! The change feed of the engine (`Store::changes`): every job version written,
//! in write order, with the state before it, after a log position, durable ones
//! only; relocated copies never; a position compaction removed is gone; paging by
//! count resumes exactly; filters are record-level.

use std::collections::HashMap;
use std::sync::Arc;

mod common;
use common::copy_dir;

use jobq::fs::SimFs;
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::ChangeFilter;
use jobq::store::request::{parse_push, parse_update, Changes};
use jobq::store::{Change, FeedFrom, FeedPage, PushResult};
use jobq::{Durability, Options, Store};

fn opts(sim: &SimFs, clock: &Arc<ManualClock>) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: clock.clone(),
        background: false,
        memtable_entries: 16,
        segment_bytes: 8 << 10,
        reclaim_segments: 3,
        ..Options::default()
    }
}

fn open(sim: &SimFs) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    (Store::open("/db", opts(sim, &clock)).unwrap(), clock)
}

fn push(store: &Store, project: u32, line: &str) -> JobKey {
    match &store.push(project, &[parse_push(line).unwrap()], Some("alice")).unwrap()[0] {
        PushResult::Pushed { key, .. } => *key,
        PushResult::Conflict { .. } => panic!("no unique here"),
    }
}

fn update(store: &Store, project: u32, line: &str) {
    store.update(project, &[parse_update(line, project).unwrap()], Some("bob")).unwrap();
}

fn filter(pairs: &[(&str, &str)]) -> ChangeFilter {
    let p: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    ChangeFilter::parse(&p, 1).unwrap()
}

/// Every change after `since`, `count` at a time, resuming alternately from the
/// mark and from the position alone; the last page is caught up at the feed's position.
fn all_changes(store: &Store, project: u32, since: u64, f: &ChangeFilter, count: usize) -> Vec<Change> {
    let mut out = Vec::new();
    let mut from = FeedFrom::Seq(since);
    for round in 0.. {
        let FeedPage::Changes { changes, mark, caught_up } = store.changes(project, from, f, count).unwrap() else {
            panic!("gone")
        };
        assert!(changes.len() <= count);
        if let Some(last) = changes.last() {
            assert!(mark.seq >= last.seq);
        }
        out.extend(changes);
        if caught_up {
            assert_eq!(mark.seq, store.feed_position());
            return out;
        }
        from = if round % 2 == 0 { FeedFrom::Mark(mark) } else { FeedFrom::Seq(mark.seq) };
    }
    unreachable!()
}

/// Each change's `prevstate` is the state of the change before it of the same job
/// (none for the first, which created it), and positions ascend.
fn assert_chained(changes: &[Change]) {
    let mut last: HashMap<JobKey, JobState> = HashMap::new();
    for w in changes.windows(2) {
        assert!(w[0].seq < w[1].seq, "positions ascend: {w:?}");
    }
    for c in changes {
        assert_eq!(c.prevstate, last.get(&c.key).copied(), "{c:?}");
        last.insert(c.key, c.state);
    }
}

#[test]
fn every_version_in_write_order_with_the_state_before() {
    let sim = SimFs::new();
    let (store, clock) = open(&sim);
    let start = store.feed_position();
    let a = push(&store, 1, r#"{"spider":"sa","tags":["t1"]}"#);
    let b = push(&store, 1, r#"{"spider":"sb"}"#);
    push(&store, 2, r#"{"spider":"other"}"#);
    clock.advance(5);
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"running"}}"#));
    update(&store, 1, &format!(r#"{{"key":"{a}","add_tag":"t2"}}"#));
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"running"}}"#)); // changes nothing: no version
    assert_eq!(store.cancel(1, &[b], None).unwrap(), 1);
    clock.advance(5);
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"finished","close_reason":"failed"}}"#));
    store.edit(a, &Changes { tags: Some(vec!["t3".into()]), ..Changes::default() }, None).unwrap();
    update(&store, 1, &format!(r#"{{"key":"{b}","state":"deleted"}}"#));
    let got = all_changes(&store, 1, start, &ChangeFilter::default(), 2);
    let seen: Vec<(JobKey, JobState, Option<JobState>)> = got.iter().map(|c| (c.key, c.state, c.prevstate)).collect();
    use JobState::*;
    assert_eq!(
        seen,
        [
            (a, Pending, None),
            (b, Pending, None),
            (a, Running, Some(Pending)),
            (a, Running, Some(Running)),
            (b, Finished, Some(Pending)),
            (a, Finished, Some(Running)),
            (a, Finished, Some(Finished)),
            (b, Deleted, Some(Finished)),
        ]
    );
    assert_chained(&got);
    assert_eq!((got[0].spider.as_ref(), got[1].spider.as_ref()), ("sa", "sb"));
    assert_eq!(got[2].ts, 1_700_000_000_005, "ts: when the version's state was entered");
    assert_eq!(got[3].ts, got[2].ts, "a tag change keeps the state and its time");
    // Positions are the records' sequence numbers: each answer names how far it got.
    let page = |since, count| match store.changes(1, FeedFrom::Seq(since), &ChangeFilter::default(), count).unwrap() {
        FeedPage::Changes { changes, mark, caught_up } => (changes, mark.seq, caught_up),
        FeedPage::Gone { .. } => panic!("gone"),
    };
    let (two, seq, caught_up) = page(start, 2);
    assert_eq!((two.len(), seq, caught_up), (2, got[1].seq, false));
    let (rest, seq, caught_up) = page(got[5].seq, 100);
    assert_eq!((rest, seq, caught_up), (got[6..].to_vec(), store.feed_position(), true));
    // From now: nothing; ahead of the log: refused, naming `since`.
    let now = store.feed_position();
    assert_eq!(page(now, 10), (vec![], now, true));
    let e = store.changes(1, FeedFrom::Seq(now + 1), &ChangeFilter::default(), 10).unwrap_err();
    assert!(e.to_string().contains("since") && e.to_string().contains("ahead"), "{e}");
}

#[test]
fn filters_apply_to_each_version() {
    let sim = SimFs::new();
    let (store, _clock) = open(&sim);
    let a = push(&store, 1, r#"{"spider":"sa","tags":["x","y"]}"#);
    let b = push(&store, 1, r#"{"spider":"sb","tags":["x"]}"#);
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"finished","close_reason":"failed"}}"#));
    update(&store, 1, &format!(r#"{{"key":"{b}","state":"finished","close_reason":"finished"}}"#));
    let keys = |pairs: &[(&str, &str)]| -> Vec<(JobKey, JobState)> {
        all_changes(&store, 1, 0, &filter(pairs), 1000).iter().map(|c| (c.key, c.state)).collect()
    };
    use JobState::*;
    assert_eq!(keys(&[("spider", "sb")]), [(b, Pending), (b, Finished)]);
    assert_eq!(keys(&[("state", "finished")]), [(a, Finished), (b, Finished)]);
    assert_eq!(keys(&[("has_tag_all", "x"), ("has_tag_all", "y")]), [(a, Pending), (a, Finished)]);
    assert_eq!(keys(&[("has_tag", "x"), ("lacks_tag", "y")]), [(b, Pending), (b, Finished)]);
    assert_eq!(keys(&[("close_reason", "failed"), ("close_reason", "cancelled")]), [(a, Finished)]);
    // A filter that matches little still pages: each answer says how far it looked.
    let f = filter(&[("close_reason", "finished")]);
    let got = all_changes(&store, 1, 0, &f, 1);
    assert_eq!(got.iter().map(|c| c.key).collect::<Vec<_>>(), [b]);
}

#[test]
fn only_durable_writes_are_reported() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Store::open("/db", Options { durability: Durability::Buffered, ..opts(&sim, &clock) }).unwrap();
    let start = store.feed_position();
    push(&store, 1, r#"{"spider":"s"}"#);
    assert_eq!(store.snapshot().count(1, &jobq::query::Filter::default()).unwrap(), 1, "visible, not durable");
    assert_eq!(store.feed_position(), start);
    assert!(all_changes(&store, 1, start, &ChangeFilter::default(), 10).is_empty());
    let told = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = told.clone();
    store.on_durable(Box::new(move |seq| t.store(seq, std::sync::atomic::Ordering::SeqCst)));
    store.sync().unwrap();
    assert_eq!(told.load(std::sync::atomic::Ordering::SeqCst), store.feed_position(), "the hook hears of it");
    assert_eq!(all_changes(&store, 1, start, &ChangeFilter::default(), 10).len(), 1);
}

#[test]
fn relocated_copies_are_no_changes_and_removed_positions_are_gone() {
    let sim = SimFs::new();
    let (store, clock) = open(&sim);
    let mut keys = Vec::new();
    for i in 0..60 {
        clock.advance(1);
        keys.push(push(&store, 1 + i % 2, &format!(r#"{{"spider":"s","pad":"{}"}}"#, "p".repeat(200))));
    }
    for k in &keys {
        update(&store, k.project, &format!(r#"{{"key":"{k}","state":"finished"}}"#));
    }
    let before = all_changes(&store, 1, 0, &ChangeFilter::default(), 7);
    assert_eq!(before.len(), 60);
    assert_chained(&before);
    // Cycles (each takes a tenth of the log at most) until some current versions were moved.
    let mut relocated = 0;
    for _ in 0..20 {
        let report = store.reclaim().unwrap();
        relocated += report.records_relocated;
        if relocated > 0 {
            break;
        }
    }
    assert!(relocated > 0, "compaction moved current versions");
    // The relocated copies are written after everything: none is reported.
    let oldest = match store.changes(1, FeedFrom::Seq(0), &ChangeFilter::default(), 10).unwrap() {
        FeedPage::Gone { oldest } => oldest,
        FeedPage::Changes { .. } => panic!("the first segments were removed"),
    };
    assert!(oldest > before[0].seq && oldest < before[before.len() - 1].seq, "oldest {oldest}");
    let after = all_changes(&store, 1, oldest, &ChangeFilter::default(), 7);
    let want: Vec<Change> = before.iter().filter(|c| c.seq > oldest).cloned().collect();
    assert!(!want.is_empty());
    assert_eq!(after, want, "the same changes, no copy");
    // A read of nothing (count 0) is gone too, as any other count.
    for count in [10, 0] {
        assert!(matches!(
            store.changes(1, FeedFrom::Seq(oldest - 1), &ChangeFilter::default(), count).unwrap(),
            FeedPage::Gone { oldest: o } if o == oldest
        ));
    }
    assert!(matches!(
        store.changes(1, FeedFrom::Seq(oldest), &ChangeFilter::default(), 0).unwrap(),
        FeedPage::Changes { ref changes, caught_up: false, .. } if changes.is_empty()
    ));
    // Writes after the compaction follow.
    update(&store, 1, &format!(r#"{{"key":"{}","state":"deleted"}}"#, keys[0]));
    let last = all_changes(&store, 1, oldest, &ChangeFilter::default(), 100).pop().unwrap();
    assert_eq!((last.key, last.state, last.prevstate), (keys[0], JobState::Deleted, Some(JobState::Finished)));
}

#[test]
fn imports_report_their_versions_once_committed() {
    let sim = SimFs::new();
    let (store, _clock) = open(&sim);
    let a = push(&store, 1, r#"{"spider":"s"}"#);
    let start = store.feed_position();
    let lines = format!(
        "{}\n{}\n{}\n",
        r#"{"key":"1/1/1","spider":"s","state":"running","running_time":5,"pending_time":4}"#,
        r#"{"key":"1/1/7","spider":"s","state":"pending","pending_time":6}"#,
        r#"{"key":"1/1/7","spider":"s","state":"finished","finished_time":8,"pending_time":6}"#
    );
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    let got: Vec<(JobKey, JobState, Option<JobState>)> = all_changes(&store, 1, start, &ChangeFilter::default(), 2)
        .iter()
        .map(|c| (c.key, c.state, c.prevstate))
        .collect();
    let b = JobKey::new(1, 1, 7);
    use JobState::*;
    assert_eq!(got, [(a, Running, Some(Pending)), (b, Pending, None), (b, Finished, Some(Pending))]);
}

/// Records written before format 3 do not name the previous state; the feed
/// derives it from the record where that is exact (the v2 fixture's history).
#[test]
fn older_records_get_their_previous_state_from_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    copy_dir(std::path::Path::new("tests/fixtures/v2/store"), &dir);
    let store = Store::open(&dir, Options { read_only: true, create: false, ..Options::default() }).unwrap();
    // Pushes and updates (the import of project 60 holds versions whose times predate the store).
    for project in [53, 54] {
        let got = all_changes(&store, project, 0, &ChangeFilter::default(), 5);
        assert!(!got.is_empty());
        assert_chained(&got);
    }
}

/// Offline compaction writes copies (relocated frames) with positions going on:
/// a follower at the end sees nothing new; one further back is told it is gone.
#[test]
fn offline_compaction_keeps_positions_and_reports_no_copies() {
    let sim = SimFs::new();
    let (store, clock) = open(&sim);
    let a = push(&store, 1, r#"{"spider":"s"}"#);
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"finished"}}"#));
    let end = store.feed_position();
    let before = all_changes(&store, 1, 0, &ChangeFilter::default(), 10);
    assert_eq!(before.len(), 2);
    store.close().unwrap();
    jobq::store::compact(std::path::Path::new("/db"), opts(&sim, &clock), None, &mut |_, _| {}).unwrap();
    let store = Store::open("/db", opts(&sim, &clock)).unwrap();
    assert!(store.feed_position() > end, "the copies used positions after the old ones");
    assert!(all_changes(&store, 1, end, &ChangeFilter::default(), 10).is_empty(), "copies are no changes");
    assert!(matches!(
        store.changes(1, FeedFrom::Seq(0), &ChangeFilter::default(), 10).unwrap(),
        FeedPage::Gone { oldest } if oldest == end
    ));
    update(&store, 1, &format!(r#"{{"key":"{a}","state":"deleted"}}"#));
    let after = all_changes(&store, 1, end, &ChangeFilter::default(), 10);
    assert_eq!(
        after.iter().map(|c| (c.state, c.prevstate)).collect::<Vec<_>>(),
        [(JobState::Deleted, Some(JobState::Finished))]
    );
}

/// A read stops after its frame budget, with how far it got: read on from there,
/// nothing is skipped or repeated (a rare filter over a long log pages this way).
#[test]
fn a_read_that_runs_out_of_budget_says_how_far_it_got() {
    let sim = SimFs::new();
    let (store, _clock) = open(&sim);
    for i in 0..20 {
        push(&store, 1 + i % 2, r#"{"spider":"s"}"#);
    }
    let want = all_changes(&store, 1, 0, &ChangeFilter::default(), 100);
    let (mut from, mut got, mut reads) = (FeedFrom::Seq(0), Vec::new(), 0);
    loop {
        reads += 1;
        let FeedPage::Changes { changes, mark, caught_up } =
            store.changes_scanning(1, from, &ChangeFilter::default(), 100, 1).unwrap()
        else {
            panic!("gone")
        };
        assert!(changes.len() <= 1, "one frame a read");
        got.extend(changes);
        if caught_up {
            break;
        }
        from = FeedFrom::Mark(mark);
    }
    assert_eq!(got, want);
    assert!(reads >= 20, "{reads}");
}

/// A job the retention purged is gone from the feed: neither its tombstone nor
/// its earlier changes are reported (from positions the log still holds), in the
/// tail and once indexed.
#[test]
fn purged_jobs_leave_the_feed() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let keep = std::time::Duration::from_secs(60);
    let store = Store::open("/db", Options { retain_deleted: Some(keep), ..opts(&sim, &clock) }).unwrap();
    let gone = push(&store, 1, r#"{"spider":"s"}"#);
    let kept = push(&store, 1, r#"{"spider":"s"}"#);
    update(&store, 1, &format!(r#"{{"key":"{gone}","state":"deleted"}}"#));
    update(&store, 1, &format!(r#"{{"key":"{kept}","state":"deleted"}}"#));
    let keys = |s: &Store| all_changes(s, 1, 0, &ChangeFilter::default(), 2).iter().map(|c| c.key).collect::<Vec<_>>();
    assert_eq!(keys(&store), [gone, kept, gone, kept]);
    clock.advance(keep.as_millis() as u64 + 1);
    update(&store, 1, &format!(r#"{{"key":"{kept}","note":1}}"#));
    // Only `gone` was deleted long enough ago... and `kept` too: keep one by undeleting it.
    update(&store, 1, &format!(r#"{{"key":"{kept}","state":"finished"}}"#));
    assert_eq!(store.purge_expired().unwrap(), 1);
    assert_eq!(keys(&store), [kept, kept, kept, kept], "in the tail");
    store.flush_indexes().unwrap();
    assert_eq!(keys(&store), [kept, kept, kept, kept], "indexed");
}

// It found a real race: a read beside a segment being sealed (cut back to its last
// frame) asked for bytes past the new end, by a length learnt before the cut.
#[test]
fn reads_racing_online_compaction_answer_changes_or_gone() {
    // Readers from position 0 while cycles remove the segments they read: every
    // answer is the changes or "gone", never an error about a missing file.
    let sim = SimFs::new();
    let (store, clock) = open(&sim);
    let store = Arc::new(store);
    let mut keys = Vec::new();
    for i in 0..80 {
        clock.advance(1);
        keys.push(push(&store, 1, &format!(r#"{{"spider":"s","pad":"{}","i":{i}}}"#, "p".repeat(200))));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for since in [0, 5, 40] {
                        match store.changes(1, FeedFrom::Seq(since), &ChangeFilter::default(), 1000) {
                            Ok(_) => reads += 1,
                            Err(e) => panic!("a read from {since} beside a compaction: {e}"),
                        }
                    }
                }
                reads
            })
        })
        .collect();
    for round in 0..6 {
        for k in &keys {
            update(&store, k.project, &format!(r#"{{"key":"{k}","round":{round}}}"#));
        }
        for _ in 0..5 {
            store.reclaim().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
