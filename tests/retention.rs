//! Retention as a policy (`Options::retain_deleted`, `serve --retain-deleted`):
//! deleted jobs older than the retention are purged while the store serves. From
//! then on they are gone from every answer (counts and lists of any filter, get,
//! update, export, metrics), after a restart and an index rebuild too; their ids
//! are never given again; online and offline compaction drop the tombstones; a
//! power cut at any call of a purge leaves the store as before it or after it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{check, PushResult};
use jobq::{Options, Store};

const DIR: &str = "/db";
const KEEP: Duration = Duration::from_secs(60);

fn opts(sim: &SimFs, clock: &Arc<ManualClock>) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: clock.clone(),
        background: false,
        memtable_entries: 16,
        segment_bytes: 16 << 10,
        retain_deleted: Some(KEEP),
        ..Options::default()
    }
}

fn push(store: &Store, project: u32, line: &str) -> JobKey {
    match &store.push(project, &[parse_push(line).unwrap()], None).unwrap()[0] {
        PushResult::Pushed { key, .. } => *key,
        PushResult::Conflict { .. } => unreachable!(),
    }
}

fn set(store: &Store, k: JobKey, change: &str) -> usize {
    let u = parse_update(&format!(r#"{{"key":"{k}",{change}}}"#), k.project).unwrap();
    store.update(k.project, &[u], None).unwrap().len()
}

/// 40 finished jobs in two projects (tagged, some with `unique`), then 30 deleted:
/// the first 20 at the start, the next 10 `KEEP` later. Returns the keys.
fn setup(store: &Store, clock: &ManualClock) -> Vec<JobKey> {
    let mut keys = Vec::new();
    for i in 0..40u32 {
        clock.advance(10);
        let line =
            format!(r#"{{"spider":"s{}","tags":["t{}"],"unique":"u{i}","pad":"{}"}}"#, i % 3, i % 2, "p".repeat(200));
        keys.push(push(store, 1 + i % 2, &line));
    }
    for k in &keys {
        clock.advance(10);
        set(store, *k, r#""state":"finished""#);
    }
    for k in &keys[..20] {
        clock.advance(10);
        set(store, *k, r#""state":"deleted""#);
    }
    clock.advance(KEEP.as_millis() as u64);
    for k in &keys[20..30] {
        clock.advance(10);
        set(store, *k, r#""state":"deleted""#);
    }
    clock.advance(1_000);
    keys
}

fn count(store: &Store, project: u32, states: &[JobState], spider: Option<&str>) -> u64 {
    let f = Filter { states: states.to_vec(), spider: spider.map(String::from), ..Filter::default() };
    store.snapshot().count(project, &f).unwrap()
}

fn listed(store: &Store, project: u32, states: &[JobState]) -> Vec<u64> {
    let f = Filter { states: states.to_vec(), ..Filter::default() };
    let paging = Paging { count: 1000, start: 0, stop: None, startafter: None };
    store.snapshot().list(project, &f, &paging).unwrap().into_iter().map(|h| h.local).collect()
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Everything the purge of `keys[..20]` must show, from every angle.
fn assert_purged(store: &Store, keys: &[JobKey], context: &str) {
    let all = [JobState::Pending, JobState::Running, JobState::Finished, JobState::Deleted];
    let deleted_left = keys[20..30].iter().filter(|k| k.project == 1).count() as u64;
    assert_eq!(count(store, 1, &[JobState::Deleted], None), deleted_left, "{context}: deleted count");
    let live = keys.iter().filter(|k| k.project == 1).count() as u64 - 10;
    assert_eq!(count(store, 1, &all, None), live, "{context}: every state");
    assert_eq!(count(store, 1, &[], None), live, "{context}: no state filter");
    let s0 = keys[..30].iter().filter(|k| k.project == 1 && k.spider == keys[0].spider).count();
    let spider_total = keys.iter().filter(|k| k.project == 1 && k.spider == keys[0].spider).count();
    let in_spider = count(store, 1, &[], Some("s0"));
    assert!(in_spider < spider_total as u64 && s0 > 0, "{context}: spider filter counts purged jobs");
    for k in &keys[..20] {
        assert!(store.snapshot().get(*k).unwrap().is_none(), "{context}: {k} still answers");
        assert_eq!(set(store, *k, r#""state":"pending""#), 0, "{context}: {k} can be updated");
        assert!(!listed(store, k.project, &all).contains(&k.local()), "{context}: {k} listed");
        assert!(!listed(store, k.project, &[]).contains(&k.local()), "{context}: {k} listed without states");
        assert!(!export(store).contains(&format!("\"key\":\"{k}\"")), "{context}: {k} exported");
    }
    for k in &keys[20..] {
        assert!(store.snapshot().get(*k).unwrap().is_some(), "{context}: {k} lost");
    }
    let m = store.metrics();
    let deleted = m.jobs.iter().find(|(s, _)| *s == JobState::Deleted).unwrap().1;
    assert_eq!(deleted, 10, "{context}: metrics' deleted jobs");
}

#[test]
fn purged_jobs_leave_every_answer_and_stay_gone() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let keys = setup(&store, &clock);
    assert_eq!(count(&store, 1, &[JobState::Deleted], None), 15, "deleted in project 1 before the purge");
    assert_eq!(store.purge_expired().unwrap(), 20, "the 20 deleted before the cutoff");
    assert_eq!(store.purge_expired().unwrap(), 0, "purged once");
    assert_purged(&store, &keys, "after the purge");
    assert_eq!(store.metrics().purged_jobs, 20);
    store.close().unwrap();
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    assert_purged(&store, &keys, "after a restart");
    store.flush_indexes().unwrap();
    drop(store);
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    assert_purged(&store, &keys, "from index files");
    // Ids stay taken, `unique` values of purged jobs are free (they were not active).
    let highest = keys.iter().filter(|k| k.project == 1 && k.spider == keys[0].spider).map(|k| k.job).max().unwrap();
    let again = push(&store, 1, r#"{"spider":"s0","unique":"u0"}"#);
    assert!(again.job > highest, "id {again} given again");
    drop(store);
    let r = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{:#?}", r.findings);
}

#[test]
fn a_job_restored_before_the_purge_is_kept() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    let keys = setup(&store, &clock);
    assert_eq!(set(&store, keys[0], r#""state":"finished""#), 1);
    assert_eq!(store.purge_expired().unwrap(), 19);
    assert!(store.snapshot().get(keys[0]).unwrap().is_some());
}

#[test]
fn compaction_drops_the_tombstones_online_and_offline() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = Options { reclaim_segments: 2, ..opts(&sim, &clock) };
    let store = Store::open(DIR, o.clone()).unwrap();
    let keys = setup(&store, &clock);
    store.purge_expired().unwrap();
    // Enough writes after it that every segment with a tombstone gets reclaimed.
    for i in 0..60 {
        clock.advance(10);
        push(&store, 3, &format!(r#"{{"spider":"later","pad":"{}","i":{i}}}"#, "q".repeat(300)));
    }
    let want = export(&store);
    let mut dropped = 0;
    for _ in 0..100 {
        let r = store.reclaim().unwrap();
        dropped += r.deleted_dropped;
        if r.segments.is_empty() {
            break;
        }
        assert_eq!(export(&store), want);
    }
    assert!(dropped >= 20, "tombstones dropped: {dropped}");
    assert_purged(&store, &keys, "after online compaction");
    store.close().unwrap();
    let store = Store::open(DIR, o.clone()).unwrap();
    assert_purged(&store, &keys, "reopened after online compaction");
    drop(store);
    let r = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(r.is_clean(), "{:#?}", r.findings);
    jobq::store::compact(Path::new(DIR), o.clone(), None, &mut |_, _| {}).unwrap();
    let store = Store::open(DIR, o).unwrap();
    assert_purged(&store, &keys, "after offline compaction");
    assert_eq!(export(&store), want);
}

#[test]
fn the_background_thread_purges_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = Options {
        clock: clock.clone(),
        reclaim_every: Duration::from_millis(20),
        retain_deleted: Some(KEEP),
        ..Options::default()
    };
    let store = Store::open(dir.path(), o).unwrap();
    let keys = setup(&store, &clock);
    let started = std::time::Instant::now();
    while store.snapshot().get(keys[0]).unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(20), "never purged");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_purged(&store, &keys, "purged in the background");
}

/// A power cut at every file-system call of a purge, in every damage mode: the
/// store opens with every job either purged or as it was (all purged once the
/// purge returned), and is clean.
#[test]
fn a_power_cut_at_every_call_of_a_purge() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, opts(&sim, &clock)).unwrap();
    setup(&store, &clock);
    let before = export(&store);
    drop(store);
    let calls = {
        let s = sim.fork();
        let store = Store::open(DIR, opts(&s, &clock)).unwrap();
        s.set_fault(None);
        assert_eq!(store.purge_expired().unwrap(), 20);
        s.mutations()
    };
    let after = {
        let s = sim.fork();
        let store = Store::open(DIR, opts(&s, &clock)).unwrap();
        store.purge_expired().unwrap();
        export(&store)
    };
    for at in 0..calls + 2 {
        for (m, mode) in CrashMode::ALL.into_iter().enumerate() {
            let s = sim.fork();
            let store = Store::open(DIR, opts(&s, &clock)).unwrap();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let acknowledged = store.purge_expired().is_ok();
            drop(store);
            s.crash(mode, at * 7 + m as u64);
            let context = format!("cut at call {at} of {calls} ({mode:?})");
            let store = Store::open(DIR, opts(&s, &clock)).unwrap_or_else(|e| panic!("{context}: {e}"));
            let got = export(&store);
            // Each job is as it was or purged (projects are purged one after the other).
            let expired: Vec<&str> = before.lines().filter(|l| !after.lines().any(|a| a == *l)).collect();
            assert_eq!(expired.len(), 20);
            for line in before.lines() {
                assert!(got.lines().any(|g| g == line) || expired.contains(&line), "{context}: lost {line}");
            }
            assert_eq!(
                got.lines().count() + 20 - expired.iter().filter(|l| got.contains(**l)).count(),
                before.lines().count()
            );
            assert!(!acknowledged || got == after, "{context}: an acknowledged purge undone");
            let r = check(Path::new(DIR), Arc::new(s.clone())).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
        }
    }
}

/// The reader written from format-spec/ alone sees what jobq sees: tombstones in
/// index files and in the replayed tail hide their jobs from its export, listing
/// and counts.
#[test]
fn the_spec_reader_hides_purged_jobs_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = Options {
        clock: clock.clone(),
        background: false,
        memtable_entries: 16,
        retain_deleted: Some(KEEP),
        ..Options::default()
    };
    let store = Store::open(dir.path(), o.clone()).unwrap();
    let keys = setup(&store, &clock);
    store.purge_expired().unwrap();
    // Some tombstones indexed, the last ones left in the tail.
    set(&store, keys[35], r#""state":"deleted""#);
    clock.advance(KEEP.as_millis() as u64 + 1);
    assert_eq!(store.purge_expired().unwrap(), 11);
    let want = export(&store);
    let listed_1: Vec<String> =
        listed(&store, 1, &[]).into_iter().map(|l| JobKey::from_local(1, l).to_string()).collect();
    let deleted = count(&store, 1, &[JobState::Deleted], None);
    store.close().unwrap();
    let reader = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg("tests/spec_reader/reader.py")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("python3 runs the spec reader");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(reader(&["export"]), want);
    assert_eq!(reader(&["list", "1"]).lines().collect::<Vec<_>>(), listed_1);
    assert_eq!(reader(&["count", "1", "deleted"]).trim(), deleted.to_string());
    reader(&["check"]);
}

/// More expired jobs than one purge write takes: all purged, a batch at a time.
#[test]
fn many_expired_jobs_are_purged_batch_by_batch() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open(DIR, Options { memtable_entries: 4096, ..opts(&sim, &clock) }).unwrap();
    let specs: Vec<_> = (0..1300).map(|i| parse_push(&format!(r#"{{"spider":"s{}"}}"#, i % 4)).unwrap()).collect();
    let keys: Vec<JobKey> = store
        .push(7, &specs, None)
        .unwrap()
        .iter()
        .map(|r| match r {
            PushResult::Pushed { key, .. } => *key,
            PushResult::Conflict { .. } => unreachable!(),
        })
        .collect();
    let deletes: Vec<_> =
        keys.iter().map(|k| parse_update(&format!(r#"{{"key":"{k}","state":"deleted"}}"#), 7).unwrap()).collect();
    store.update(7, &deletes, None).unwrap();
    clock.advance(KEEP.as_millis() as u64 + 1);
    assert_eq!(store.purge_expired().unwrap(), 1300);
    assert_eq!(count(&store, 7, &[], None), 0);
    assert_eq!(store.metrics().purged_jobs, 1300);
}
