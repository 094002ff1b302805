//! `startafter` paging (issue 13, item 3) through the library: a pager continues
//! from where it saw its last job even when that job has moved since (a runner
//! started it, it was finished again), a summary does not move that place, a job
//! retention dropped still continues its pager, and with 8 concurrent pushers and
//! the pager's own last job moved after every page, every job that matched
//! throughout is visited exactly once and none twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use jobq::fs::SimFs;
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{Durability, Options, Store};

fn sim_store(clock: &Arc<ManualClock>) -> Store {
    let opts = Options {
        fs: Arc::new(SimFs::new()),
        clock: clock.clone(),
        durability: Durability::Buffered,
        background: false,
        memtable_entries: 16,
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

fn set_state(store: &Store, key: JobKey, state: &str) {
    let u = parse_update(&format!(r#"{{"key":"{key}","state":"{state}"}}"#), key.project).unwrap();
    store.update(key.project, &[u], None).unwrap();
}

fn page(store: &Store, project: u32, f: &Filter, count: u64, after: Option<JobKey>) -> Vec<JobKey> {
    let p = Paging { count, startafter: after, ..Paging::default() };
    store.snapshot().list(project, f, &p).unwrap().iter().map(|h| JobKey::from_local(project, h.local)).collect()
}

fn pending() -> Filter {
    Filter { states: vec![JobState::Pending], ..Filter::default() }
}

#[test]
fn a_pager_of_pending_jobs_whose_last_one_starts_sees_each_once() {
    // A runner starts the pager's last job after each page: it moves to the top of
    // the order, out of the filter. The next page continues below where it stood.
    let clock = Arc::new(ManualClock::new(1_000));
    let store = sim_store(&clock);
    let keys: Vec<JobKey> = (0..40)
        .map(|_| {
            clock.advance(1);
            push(&store, 1, r#"{"spider":"s"}"#)
        })
        .collect();
    let (mut seen, mut after) = (Vec::new(), None);
    while seen.len() <= keys.len() {
        let got = page(&store, 1, &pending(), 7, after);
        let Some(last) = got.last().copied() else { break };
        seen.extend(got);
        clock.advance(1);
        set_state(&store, last, "running");
        after = Some(last);
    }
    assert_eq!(seen, keys.iter().rev().copied().collect::<Vec<_>>(), "each pending job once, newest first");
}

#[test]
fn a_summary_ending_with_the_job_does_not_move_a_pagers_place() {
    let clock = Arc::new(ManualClock::new(1_000));
    let store = sim_store(&clock);
    let keys: Vec<JobKey> = (0..10)
        .map(|_| {
            clock.advance(1);
            push(&store, 1, r#"{"spider":"s"}"#)
        })
        .collect();
    let first = page(&store, 1, &pending(), 4, None);
    assert_eq!(first, keys[6..].iter().rev().copied().collect::<Vec<_>>());
    // The pager's last job starts running; a summary of running jobs ends with it.
    clock.advance(1);
    set_state(&store, keys[6], "running");
    let mut line = Vec::new();
    let p = Paging { count: 5, ..Paging::default() };
    store.snapshot().summary_line(1, &Filter::default(), JobState::Running, &p, None, &|| false, &mut line).unwrap();
    assert!(String::from_utf8(line).unwrap().contains(&format!("\"key\":\"{}\"", keys[6])));
    let next = page(&store, 1, &pending(), 4, Some(keys[6]));
    assert_eq!(next, keys[2..6].iter().rev().copied().collect::<Vec<_>>(), "continues below where the pager saw it");
}

#[test]
fn a_pager_continues_after_a_job_retention_dropped() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let sim = SimFs::new();
    let opts = Options {
        fs: Arc::new(sim),
        clock: clock.clone(),
        background: false,
        memtable_entries: 8,
        segment_bytes: 16 << 10,
        reclaim_segments: 3,
        retain_deleted: Some(std::time::Duration::from_secs(60)),
        ..Options::default()
    };
    let store = Store::open("/db", opts).unwrap();
    let pad = "p".repeat(300);
    let keys: Vec<JobKey> = (0..60)
        .map(|_| {
            clock.advance(10);
            push(&store, 1, &format!(r#"{{"spider":"s","state":"deleted","pad":"{pad}"}}"#))
        })
        .collect();
    let deleted = Filter { states: vec![JobState::Deleted], ..Filter::default() };
    let first = page(&store, 1, &deleted, 30, None);
    let last = *first.last().unwrap();
    clock.advance(120_000);
    for _ in 0..50 {
        store.reclaim().unwrap();
    }
    assert!(store.snapshot().get(last).unwrap().is_none(), "retention dropped {last}");
    let fresh = push(&store, 1, r#"{"spider":"s","state":"deleted"}"#);
    let next = page(&store, 1, &deleted, 30, Some(last));
    assert!(!next.contains(&fresh) && next.iter().all(|k| !first.contains(k)), "{next:?}");
    let never = JobKey::new(1, 1, keys.len() as u32 + 100);
    let e = store.snapshot().list(1, &deleted, &Paging { count: 5, startafter: Some(never), ..Paging::default() });
    assert!(e.unwrap_err().to_string().contains(&format!("{never} is not a job of project 1")));
}

#[test]
fn paging_beside_8_pushers_visits_every_job_once() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options { durability: Durability::Buffered, memtable_entries: 2_000, ..Options::default() };
    let store = Arc::new(Store::open(tmp.path(), opts).unwrap());
    let finished = Filter { states: vec![JobState::Finished], ..Filter::default() };
    let batch: Vec<_> = (0..1000).map(|_| parse_push(r#"{"spider":"s","state":"finished"}"#).unwrap()).collect();
    for _ in 0..20 {
        store.push(1, &batch, None).unwrap();
    }
    let before: Vec<JobKey> = {
        let all = Paging { count: u64::MAX, ..Paging::default() };
        store.snapshot().list(1, &finished, &all).unwrap().iter().map(|h| JobKey::from_local(1, h.local)).collect()
    };
    let done = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let pushers: Vec<_> = (0..8)
        .map(|i| {
            let (store, done, pushed) = (store.clone(), done.clone(), pushed.clone());
            std::thread::spawn(move || {
                let line = format!(r#"{{"spider":"p{i}","state":"finished"}}"#);
                let batch: Vec<_> = (0..20).map(|_| parse_push(&line).unwrap()).collect();
                while !done.load(Ordering::Relaxed) {
                    store.push(1, &batch, None).unwrap();
                    pushed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while pushed.load(Ordering::Relaxed) < 8 {
        std::thread::yield_now();
    }
    let pushed_before = pushed.load(Ordering::Relaxed);
    // Page 1,000 at a time; after each page its last job is deleted and finished
    // again (it moves to the top, still matching).
    let (mut seen, mut moved, mut after) = (Vec::new(), HashSet::new(), None);
    for _ in 0..before.len() / 1000 + 10 {
        let got = page(&store, 1, &finished, 1000, after);
        let Some(last) = got.last().copied() else { break };
        seen.extend(got);
        set_state(&store, last, "deleted");
        set_state(&store, last, "finished");
        moved.insert(last);
        after = Some(last);
        // Pushes land between every two pages.
        let at = pushed.load(Ordering::Relaxed);
        while pushed.load(Ordering::Relaxed) < at + 2 {
            std::thread::yield_now();
        }
    }
    let pushed_during = pushed.load(Ordering::Relaxed) - pushed_before;
    done.store(true, Ordering::Relaxed);
    pushers.into_iter().for_each(|h| h.join().unwrap());
    assert!(pushed_during > 0, "no push while paging");
    let unique: HashSet<JobKey> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a job listed twice");
    let untouched: Vec<JobKey> = before.iter().filter(|k| !moved.contains(k)).copied().collect();
    let before: HashSet<JobKey> = before.into_iter().collect();
    let seen_untouched: Vec<JobKey> =
        seen.iter().filter(|k| before.contains(k) && !moved.contains(k)).copied().collect();
    assert_eq!(seen_untouched, untouched, "every job that matched throughout, once, in order");
}
