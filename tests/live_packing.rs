//! A store that grows only through writes (no import, no compaction) trains its
//! first dictionary in the background once it holds enough jobs, and packs every
//! document written after it: the log grows less per job, every job reads back
//! as written, after a reopen too, and `check` is clean.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq::model::JobKey;
use jobq::store::request::parse_push;
use jobq::store::PushResult;
use jobq::{Options, Store};

fn push_batch(store: &Store, from: u32, n: u32) -> Vec<JobKey> {
    let specs: Vec<_> = (from..from + n)
        .map(|i| {
            parse_push(&format!(
                r#"{{"spider":"spider-{}","tags":["t{}"],"units":1,"version":"1.4.{}-py3","spider_args":{{"url":"https://news-{}.example.com/c/{}","pages":{}}},"scheduled_by":"user{}@example.org"}}"#,
                i % 7,
                i % 5,
                i % 30,
                i % 997,
                i,
                i % 311,
                i % 41
            ))
            .unwrap()
        })
        .collect();
    store
        .push(1, &specs, None)
        .unwrap()
        .into_iter()
        .map(|r| match r {
            PushResult::Pushed { key, .. } => key,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn log_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            total += log_bytes(&e.path());
        } else if e.file_name().to_string_lossy().ends_with(".jql") {
            // Preallocated zeros are not log: count up to the store's end instead.
            total += e.metadata().unwrap().len();
        }
    }
    total
}

#[test]
fn documents_written_after_enough_jobs_are_packed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options { preallocate: false, ..Options::default() };
    let store = Store::open(dir.path(), opts()).unwrap();
    let mut keys = Vec::new();
    let mut i = 0;
    // The maintenance thread looks after each index flush (every 4,096 writes).
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().dictionaries == 0 {
        assert!(Instant::now() < deadline && (i as u64) < 4 * jobq::store::TRAIN_AT, "no dictionary was trained");
        keys.extend(push_batch(&store, i, 500));
        i += 500;
        if (i as u64) >= jobq::store::TRAIN_AT + 4096 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(i as u64 >= jobq::store::TRAIN_AT, "trained at {i} jobs");
    let before = log_bytes(dir.path());
    let texts = log_bytes(dir.path()) / u64::from(i);
    keys.extend(push_batch(&store, i, 2000));
    let packed = (log_bytes(dir.path()) - before) / 2000;
    assert!(packed * 2 < texts, "{packed} B a job packed against {texts} as text");
    let want: Vec<String> =
        keys.iter().map(|k| store.snapshot().get(*k).unwrap().unwrap().meta.as_str().to_string()).collect();
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.stats().dictionaries, 1);
    for (k, w) in keys.iter().zip(&want) {
        assert_eq!(store.snapshot().get(*k).unwrap().unwrap().meta.as_str(), w, "{k}");
    }
    store.close().unwrap();
    let report = jobq::store::check(dir.path(), Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
}

/// Pushes to a store with a dictionary: documents are built and packed before
/// the writer lock (pending and finished lines, with an actor or without) or
/// under it (a running line: its token needs its key). Each reads back as the
/// service builds it, updates too, after a reopen, and `check` is clean.
#[test]
fn pushes_packed_before_the_lock_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options { preallocate: false, ..Options::default() };
    let store = Store::open(dir.path(), opts()).unwrap();
    let mut lines = String::new();
    for j in 1..=3000u32 {
        lines += &format!(
            r#"{{"key":"1/1/{j}","spider":"s1","state":"finished","finished_time":{j},"units":1,"version":"1.4.{}-py3","spider_args":{{"url":"https://news-{}.example.com/c/{j}"}},"scheduled_by":"user{}@example.org"}}"#,
            j % 30,
            j % 997,
            j % 41
        );
        lines.push('\n');
    }
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(store.stats().dictionaries, 1);
    let doc = |i: u32| {
        format!(
            r#""units":2,"version":"1.4.{}-py3","spider_args":{{"url":"https://news-{i}.example.com/c/{i}"}}"#,
            i % 30
        )
    };
    let mut want = Vec::new();
    for i in 0..400u32 {
        let state = ["pending", "running", "finished", "deleted"][i as usize % 4];
        let actor = (i % 3 != 0).then(|| format!("user{i}"));
        let spec = parse_push(&format!(r#"{{"spider":"s{}","state":"{state}",{}}}"#, i % 3, doc(i))).unwrap();
        let r = store.push(1, &[spec], actor.as_deref()).unwrap();
        let PushResult::Pushed { key, auth } = &r[0] else { panic!("{r:?}") };
        let mut meta = format!("{{{}", doc(i));
        if let Some(a) = &actor {
            let by = match state {
                "pending" => "scheduled_by",
                "running" => "started_by",
                "finished" => "completed_by",
                _ => "deleted_by",
            };
            meta += &format!(r#","{by}":"{a}""#);
        }
        assert_eq!(auth.is_some(), state == "running");
        if let Some(t) = auth {
            meta += &format!(r#","auth":"{t}""#);
        }
        meta.push('}');
        want.push((*key, meta));
    }
    // An update merges under the lock.
    let (k0, m0) = &mut want[0];
    let up = jobq::store::request::parse_update(&format!(r#"{{"key":"{k0}","state":"running"}}"#), 1).unwrap();
    store.update(1, &[up], None).unwrap();
    let got = store.snapshot().get(*k0).unwrap().unwrap().meta.as_str().to_string();
    assert!(got.starts_with(&m0[..m0.len() - 1]) && got.contains(r#""auth":""#), "{got}");
    *m0 = got;
    let check = |store: &Store| {
        for (k, m) in &want {
            assert_eq!(store.snapshot().get(*k).unwrap().unwrap().meta.as_str(), m, "{k}");
        }
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    check(&store);
    store.close().unwrap();
    let report = jobq::store::check(dir.path(), Arc::new(jobq::fs::RealFs)).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
}
