//! Compaction: same answers, fewer records, ids never reused, refused while the
//! store is held, and a crash at any call leaves the old store or the new, never a mix.

use std::sync::Arc;
use std::time::Duration;

use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{compact, PushResult};
use jobq::{Error, Options, Store};

fn opts(sim: &SimFs, clock: &Arc<ManualClock>) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: clock.clone(),
        background: false,
        memtable_entries: 7,
        bulk_entries: 9,
        segment_bytes: 4096,
        ..Options::default()
    }
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn order(store: &Store) -> Vec<u64> {
    let all = Paging { count: 100_000, start: 0, stop: None, startafter: None };
    store.snapshot().list(1, &Filter::default(), &all).unwrap().iter().map(|h| h.local).collect()
}

/// A store with history: pushes, updates (superseded versions), deletions.
fn history(sim: &SimFs, clock: &Arc<ManualClock>) {
    let store = Store::open("/db", opts(sim, clock)).unwrap();
    for i in 0..40u32 {
        clock.advance(10);
        let spec = parse_push(&format!(r#"{{"spider":"s{}","tags":["t{}"],"n":{i}}}"#, i % 3, i % 2)).unwrap();
        store.push(1, &[spec], Some("a")).unwrap();
        if i % 2 == 0 {
            let k = format!("1/{}/{}", 1 + i % 3, 1 + i / 3);
            let state = if i % 4 == 0 { "finished" } else { "deleted" };
            store
                .update(1, &[parse_update(&format!(r#"{{"key":"{k}","state":"{state}"}}"#), 1).unwrap()], None)
                .unwrap();
        }
    }
    store.close().unwrap();
}

#[test]
fn compaction_keeps_answers_and_never_reuses_ids() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    history(&sim, &clock);
    let store = Store::open("/db", opts(&sim, &clock)).unwrap();
    let (before, order_before) = (export(&store), order(&store));
    drop(store);
    let r = compact("/db".as_ref(), opts(&sim, &clock), None, &mut |_, _| {}).unwrap();
    assert!(r.records_after < r.records_before, "{r:?}");
    assert_eq!(r.records_after, 40);
    assert_eq!((r.generation_before, r.generation_after), (1, 2));
    let store = Store::open("/db", opts(&sim, &clock)).unwrap();
    assert_eq!(store.report().generation, 2);
    assert_eq!(store.report().replayed_frames, 0);
    assert_eq!(export(&store), before);
    assert_eq!(order(&store), order_before);
    // New jobs and spiders get fresh ids.
    let r = store
        .push(1, &[parse_push(r#"{"spider":"s0"}"#).unwrap(), parse_push(r#"{"spider":"new"}"#).unwrap()], None)
        .unwrap();
    assert_eq!(r[0], PushResult::Pushed { key: JobKey::new(1, 1, 15), auth: None });
    assert_eq!(r[1], PushResult::Pushed { key: JobKey::new(1, 4, 1), auth: None });
}

#[test]
fn retention_drops_old_deleted_jobs_but_not_their_ids() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    history(&sim, &clock);
    clock.advance(3_600_000);
    let r = compact("/db".as_ref(), opts(&sim, &clock), Some(Duration::from_secs(60)), &mut |_, _| {}).unwrap();
    assert_eq!(r.dropped, 10, "{r:?}");
    let store = Store::open("/db", opts(&sim, &clock)).unwrap();
    let deleted = Filter { states: vec![jobq::JobState::Deleted], ..Filter::default() };
    assert_eq!(store.snapshot().count(1, &deleted).unwrap(), 0);
    // The highest job of spider 3 (1/3/14) was deleted and dropped: its id stays taken.
    assert!(store.snapshot().get(JobKey::new(1, 3, 13)).unwrap().is_none());
    let r = store.push(1, &[parse_push(r#"{"spider":"s2"}"#).unwrap()], None).unwrap();
    assert_eq!(r[0], PushResult::Pushed { key: JobKey::new(1, 3, 14), auth: None });
}

#[test]
fn compaction_refuses_a_held_store() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    history(&sim, &clock);
    let _server = Store::open("/db", opts(&sim, &clock)).unwrap();
    let e = compact("/db".as_ref(), opts(&sim, &clock), None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[test]
fn a_crash_at_any_call_leaves_the_old_or_the_new_store() {
    let sim = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    history(&sim, &clock);
    clock.advance(3_600_000);
    let store = Store::open("/db", opts(&sim, &clock)).unwrap();
    let old = export(&store);
    drop(store);
    let scratch = sim.fork();
    compact("/db".as_ref(), opts(&scratch, &clock), Some(Duration::from_secs(60)), &mut |_, _| {}).unwrap();
    let new = export(&Store::open("/db", opts(&scratch, &clock)).unwrap());
    assert_ne!(old, new);
    let calls = {
        let s = sim.fork();
        s.set_fault(None);
        compact("/db".as_ref(), opts(&s, &clock), Some(Duration::from_secs(60)), &mut |_, _| {}).unwrap();
        s.mutations()
    };
    let (mut saw_old, mut saw_new) = (0, 0);
    for at in 0..calls + 2 {
        for mode in CrashMode::ALL {
            let s = sim.fork();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let r = compact("/db".as_ref(), opts(&s, &clock), Some(Duration::from_secs(60)), &mut |_, _| {});
            s.crash(mode, at);
            let got = export(&Store::open("/db", opts(&s, &clock)).unwrap_or_else(|e| panic!("cut at {at}: {e}")));
            if got == old {
                saw_old += 1;
                assert!(r.is_err() || at >= calls, "cut at {at}: a finished compaction must stay");
            } else {
                assert_eq!(got, new, "cut at call {at} ({mode:?}): a mix of old and new");
                saw_new += 1;
            }
        }
    }
    assert!(saw_old > 0 && saw_new > 0, "old {saw_old} new {saw_new}");
}
