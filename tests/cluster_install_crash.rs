//! Power cuts during a snapshot's install (format-spec/snapshot.md, "Crash
//! cases"): a node whose disk loses power at every few file-system calls of an
//! install restarts as it was (its old generation, its old jobs), or with the
//! snapshot's log: all of it applied, or (a cut between `CURRENT` and `RAFT`)
//! the part its entry frames say committed, which Raft then completes; never a
//! mix of the two, and it checks clean.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobq::cluster::memnet::{NodeNet, Router};
use jobq::cluster::snapshot::{build, install, SnapMeta};
use jobq::cluster::{self, Node};
use jobq::fs::{CrashMode, Fault, FaultKind, FileSystem, SimFs};
use jobq::store::request::parse_push;
use jobq::{JobKey, JobState, Options, Store};

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        raft_log: true,
        background: false,
        memtable_entries: 4,
        segment_bytes: 4096,
        ..Options::default()
    }
}

fn jobs(store: &Store) -> Vec<JobKey> {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["key"].as_str().and_then(|k| k.parse().ok()))
        .collect()
}

/// A snapshot of a one-node cluster that took `n` pushes to `project`:
/// its meta, its bytes, and the jobs it holds.
fn source(n: usize, project: u32, rt: &tokio::runtime::Runtime) -> (SimFs, SnapMeta, Vec<u8>, Vec<JobKey>) {
    let sim = SimFs::new();
    let router = Router::default();
    let node = Node::start(Arc::new(Store::open("/node", opts(&sim)).unwrap())).unwrap();
    let (meta, bytes) = rt.block_on(async {
        let raft =
            cluster::start(1, node.clone(), cluster::config(100).unwrap(), NodeNet { router: router.clone(), id: 1 })
                .await
                .unwrap();
        cluster::proposer::attach(1, &node, &raft, tokio::runtime::Handle::current(), Duration::from_secs(3));
        router.add(1, raft.clone());
        raft.initialize(BTreeMap::from([(1, openraft::BasicNode::new("n1"))])).await.unwrap();
        raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leads").await.unwrap();
        let store = node.store().clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..n {
                store.push(project, &[parse_push(&format!(r#"{{"spider":"s","i":{i}}}"#)).unwrap()], None).unwrap();
            }
        })
        .await
        .unwrap();
        raft.trigger().snapshot().await.unwrap();
        raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.snapshot.is_some(), "snapshot").await.unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let (meta, mut stream) = build::current(&fs, std::path::Path::new("/node")).unwrap().unwrap();
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes).await.unwrap();
        cluster::proposer::detach(&node);
        raft.shutdown().await.unwrap();
        (meta, bytes)
    });
    let keys = jobs(node.store());
    // Closed before the callers fork it: openraft's tasks may still hold the
    // store for a moment after the shutdown, and a close racing the forks would
    // leave each fork another durable state.
    let store = node.store().clone();
    drop(node);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while Arc::strong_count(&store) > 1 {
        assert!(std::time::Instant::now() < deadline, "the store is still held after Raft's shutdown");
        std::thread::sleep(Duration::from_millis(5));
    }
    Arc::try_unwrap(store).ok().expect("held only here").close().unwrap();
    (sim, meta, bytes, keys)
}

#[test]
fn an_install_cut_by_power_loss_leaves_the_old_state_or_the_snapshots_log() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_, meta, bytes, snap_jobs) = source(40, 1, &rt);
    assert_eq!(snap_jobs.len(), 40);
    // The node before: a store of its own with other jobs, never a cluster member's log.
    let (base, _, _, old_jobs) = source(7, 2, &rt);
    assert_eq!(old_jobs.len(), 7);
    let (mut old_seen, mut new_seen, mut part_seen) = (0, 0, 0);
    for (i, at) in (0..200u64).step_by(2).enumerate() {
        let mode = CrashMode::ALL[i % CrashMode::ALL.len()];
        let sim = base.fork();
        let node = Node::start(Arc::new(Store::open("/node", opts(&sim)).unwrap())).unwrap();
        sim.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
        let done = rt.block_on(async {
            let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
            let Ok(mut s) = install::receiving(&fs, std::path::Path::new("/node")) else { return false };
            if tokio::io::AsyncWriteExt::write_all(&mut s, &bytes).await.is_err() {
                return false;
            }
            install::install(&node, &meta, &s).is_ok()
        });
        std::mem::forget(node); // the machine is off
        sim.set_fault(None);
        sim.crash(mode, at);
        let what = format!("power cut at call {at}, {mode:?}");
        let store = Store::open("/node", opts(&sim)).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let node = Node::start(Arc::new(store)).unwrap_or_else(|e| panic!("{what}: node start: {e}"));
        let got = jobs(node.store());
        if got == old_jobs {
            assert!(!done, "{what}: the install returned, then the node was as before");
            old_seen += 1;
        } else {
            assert!(
                !got.is_empty() && got[..] == snap_jobs[..got.len()],
                "{what}: not a prefix of the snapshot: {got:?}"
            );
            for k in &got {
                assert_eq!(node.store().snapshot().get(*k).unwrap().unwrap().state, JobState::Pending);
            }
            match got.len() == snap_jobs.len() {
                true => new_seen += 1,
                false => {
                    assert!(!done, "{what}: the install returned with part of the snapshot applied");
                    part_seen += 1
                }
            }
        }
        let store = node.store().clone();
        drop(node);
        Arc::try_unwrap(store).ok().expect("no one else holds it").close().unwrap();
        let report = jobq::store::check(std::path::Path::new("/node"), Arc::new(sim.clone())).unwrap();
        assert!(report.findings.is_empty(), "{what}: {report:?}");
        if done {
            assert!(got == snap_jobs, "{what}");
        }
    }
    eprintln!("{old_seen} cuts left the old state, {part_seen} the snapshot's committed part, {new_seen} all of it");
    assert!(old_seen > 5 && new_seen > 5, "cuts before and after the switch: {old_seen} old, {new_seen} new");
}
