//! The write queue writes a batch's frames in one write, once its operations
//! ran: an operation that reads a record written earlier in its own batch (a
//! spider-wide update reads every job of the spider, one pushed by another
//! writer a moment before among them) reads it all the same, and the fsyncs
//! cover every frame (a reopen finds every job as written).

use jobq::model::JobKey;
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{Options, Store};

#[test]
fn operations_read_records_of_their_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let spec = parse_push(r#"{"spider":"s","units":1,"note":"a document of some length"}"#).unwrap();
    let push = || match &store.push(1, std::slice::from_ref(&spec), None).unwrap()[0] {
        PushResult::Pushed { key, .. } => *key,
        other => panic!("{other:?}"),
    };
    let first = push();
    let update = parse_update(&format!(r#"{{"key":"1/{}","add_tag":"seen"}}"#, first.spider), 1).unwrap();
    let pushed: Vec<JobKey> = std::thread::scope(|s| {
        let pushers: Vec<_> = (0..4).map(|_| s.spawn(|| (0..100).map(|_| push()).collect::<Vec<_>>())).collect();
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..60 {
                    store.update(1, std::slice::from_ref(&update), None).unwrap();
                }
            });
        }
        pushers.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    assert_eq!(pushed.len(), 400);
    store.update(1, &[update], None).unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for k in pushed.iter().chain([&first]) {
        let j = store.snapshot().get(*k).unwrap().unwrap();
        assert_eq!(j.tags, ["seen"], "{k}");
        assert_eq!(j.meta.as_str(), r#"{"units":1,"note":"a document of some length"}"#, "{k}");
    }
    store.close().unwrap();
}

/// A writable store in the background mode syncs on a thread of its own
/// (`jobq-sync`, joined when the store closes): 8 writers' pushes are answered
/// and all durable, over 5 opens and closes.
#[test]
fn the_sync_thread_serves_every_writer_and_ends_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let spec = parse_push(r#"{"spider":"s"}"#).unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let keys: Vec<JobKey> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| match &store.push(1, std::slice::from_ref(&spec), None).unwrap()[0] {
                                PushResult::Pushed { key, .. } => *key,
                                other => panic!("{other:?}"),
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(keys.len(), 400);
        all.extend(keys);
        store.close().unwrap();
    }
    let ro = Store::open(dir.path(), Options { read_only: true, create: false, ..Options::default() }).unwrap();
    for k in &all {
        assert!(ro.snapshot().get(*k).unwrap().is_some(), "{k} acknowledged, then lost");
    }
}
