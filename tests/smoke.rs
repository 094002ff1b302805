use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::{JobKey, JobState, Options, Store};

#[test]
fn push_update_list_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { background: false, memtable_entries: 8, ..Options::default() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let specs: Vec<_> =
        (0..20).map(|i| parse_push(&format!(r#"{{"spider":"s{}","tags":["t{}"]}}"#, i % 3, i % 2)).unwrap()).collect();
    let res = store.push(53, &specs, Some("me")).unwrap();
    assert_eq!(res.len(), 20);
    let upd: Vec<_> =
        (1..=5).map(|j| parse_update(&format!(r#"{{"key":"53/1/{j}","state":"finished"}}"#), 53).unwrap()).collect();
    let prev = store.update(53, &upd, None).unwrap();
    assert_eq!(prev.len(), 5);
    let snap = store.snapshot();
    let f = Filter { states: vec![JobState::Finished], ..Filter::default() };
    assert_eq!(snap.count(53, &f).unwrap(), 5);
    let pending = Filter { states: vec![JobState::Pending], ..Filter::default() };
    assert_eq!(snap.count(53, &pending).unwrap(), 15);
    let hits = snap.list(53, &f, &Paging { count: 100, start: 0, stop: None, startafter: None }).unwrap();
    assert_eq!(hits.len(), 5);
    let first = JobKey::from_local(53, hits[0].local);
    assert_eq!(first, JobKey::new(53, 1, 5));
    drop(snap);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.count(53, &f).unwrap(), 5);
    assert_eq!(snap.count(53, &pending).unwrap(), 15);
    let job = snap.get(JobKey::new(53, 2, 3)).unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    let mut out = Vec::new();
    snap.render_metadata(&job, true, &mut out);
    println!("{}", String::from_utf8_lossy(&out));
    println!("{:?}", store.report());
    println!("{:?}", store.stats());
}

#[test]
fn export_import_round_trip_and_rollback() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = Options { background: false, memtable_entries: 16, ..Options::default() };
    let store = Store::open(a.path(), opts.clone()).unwrap();
    let specs: Vec<_> = (0..50)
        .map(|i| {
            parse_push(&format!(
                r#"{{"spider":"s{}","tags":["t{}"],"x":{{"big":123456789012345678901234567890}}}}"#,
                i % 3,
                i % 2
            ))
            .unwrap()
        })
        .collect();
    store.push(7, &specs, None).unwrap();
    let upd: Vec<_> =
        (1..=9).map(|j| parse_update(&format!(r#"{{"key":"7/1/{j}","state":"finished"}}"#), 7).unwrap()).collect();
    store.update(7, &upd, None).unwrap();
    let mut out = Vec::new();
    assert_eq!(store.export(None, &mut out).unwrap(), 50);
    let other = Store::open(b.path(), opts.clone()).unwrap();
    let r = other.import(&mut &out[..], &mut |_| {}).unwrap();
    assert_eq!(r.jobs, 50);
    let mut again = Vec::new();
    other.export(None, &mut again).unwrap();
    assert_eq!(String::from_utf8(out.clone()).unwrap(), String::from_utf8(again).unwrap());
    let all = Filter { states: vec![], ..Filter::default() };
    let p = Paging { count: 1000, start: 0, stop: None, startafter: None };
    let order = |s: &Store| -> Vec<(u64, u64)> {
        s.snapshot().list(7, &all, &p).unwrap().iter().map(|h| (h.local, h.ts)).collect()
    };
    assert_eq!(order(&store), order(&other));
    // A bad line stores nothing of the file.
    let mut bad = out.clone();
    bad.extend_from_slice(b"{\"key\":\"7/1/999\",\"spider\":\"s1\",\"state\":\"finished\"}\n");
    let c = tempfile::tempdir().unwrap();
    let third = Store::open(c.path(), opts.clone()).unwrap();
    let err = third.import(&mut &bad[..], &mut |_| {}).unwrap_err();
    // 50 jobs after a catalog line per spider (3).
    assert!(err.to_string().contains("line 54"), "{err}");
    assert_eq!(third.snapshot().count(7, &all).unwrap(), 0);
    third.close().unwrap();
    let third = Store::open(c.path(), opts).unwrap();
    assert_eq!(third.snapshot().count(7, &all).unwrap(), 0);
}

/// Many writers through the write queue at once (real fsyncs): every push is
/// answered once with its own key, and no job is started twice.
#[test]
fn concurrent_writers_each_get_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options { background: false, ..Options::default() }).unwrap();
    let spec = parse_push(r#"{"spider":"s"}"#).unwrap();
    let (pushers, each, starters) = (24, 40, 8);
    let (pushed, started) = std::thread::scope(|s| {
        let push: Vec<_> = (0..pushers)
            .map(|_| {
                s.spawn(|| {
                    (0..each)
                        .map(|_| match store.push(7, std::slice::from_ref(&spec), None).unwrap().remove(0) {
                            jobq::store::PushResult::Pushed { key, .. } => key,
                            other => panic!("not pushed: {other:?}"),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let start: Vec<_> = (0..starters)
            .map(|_| {
                s.spawn(|| {
                    (0..each)
                        .filter_map(|_| store.start_next(7, &Default::default(), Some("runner")).unwrap())
                        .map(|j| j.key)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let pushed: Vec<JobKey> = push.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let started: Vec<JobKey> = start.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (pushed, started)
    });
    let distinct = |v: &[JobKey]| v.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(distinct(&pushed), pushers * each, "every push has its own key");
    assert_eq!(distinct(&started), started.len(), "no job started twice");
    let snap = store.snapshot();
    let running = Filter { states: vec![JobState::Running], ..Filter::default() };
    assert_eq!(snap.count(7, &running).unwrap(), started.len() as u64);
    assert_eq!(snap.count(7, &Filter::default()).unwrap(), (pushers * each) as u64);
}

/// Deep `start` over several index files of more than one 65,536-doc block each,
/// plus the in-memory tail: every page equals the same slice of the whole listing.
#[test]
fn deep_start_across_multi_block_index_files_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { background: false, bulk_entries: 90_000, merge_fanout: 100, ..Options::default() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut lines = String::new();
    for i in 0..200_000u64 {
        let (state, tag) = (["finished", "deleted", "pending"][(i % 7 % 3) as usize], i % 5);
        // ts interleaves the two halves, so both index files hold every stretch of time.
        let ts = 1_600_000_000_000 + (i % 100_000) * 2 + i / 100_000;
        lines.push_str(&format!(
            "{{\"key\":\"9/{}/{}\",\"spider\":\"s{}\",\"state\":\"{state}\",\"{state}_time\":{ts},\"tags\":[\"t{tag}\"]}}\n",
            1 + i % 3,
            1 + i / 3,
            1 + i % 3
        ));
    }
    let (first, second) = lines.split_at(lines.match_indices('\n').nth(99_999).unwrap().0 + 1);
    store.import(&mut first.as_bytes(), &mut |_| {}).unwrap();
    store.import(&mut second.as_bytes(), &mut |_| {}).unwrap();
    let spec = parse_push(r#"{"spider":"s1","tags":["t1"],"state":"finished"}"#).unwrap();
    for _ in 0..50 {
        store.push(9, std::slice::from_ref(&spec), None).unwrap();
    }
    let snap = store.snapshot();
    let filters = [
        Filter::default(),
        Filter { states: vec![JobState::Finished], ..Filter::default() },
        Filter { has_tags: vec!["t1".into(), "t3".into()], lacks_tags: vec!["t3".into()], ..Filter::default() },
    ];
    for f in &filters {
        let all = snap.list(9, f, &Paging { count: 1_000_000, start: 0, stop: None, startafter: None }).unwrap();
        let all: Vec<u64> = all.iter().map(|h| h.local).collect();
        assert_eq!(all.len() as u64, snap.count(9, f).unwrap());
        let n = all.len() as u64;
        for start in [1, 49, 50, 51, 65_535, 65_536, 70_001, n / 2, n - 1, n, n + 3] {
            let page = snap.list(9, f, &Paging { count: 7, start, stop: None, startafter: None }).unwrap();
            let page: Vec<u64> = page.iter().map(|h| h.local).collect();
            let want: Vec<u64> = all.iter().skip(start as usize).take(7).copied().collect();
            assert_eq!(page, want, "{f:?} start {start}");
        }
    }
}
