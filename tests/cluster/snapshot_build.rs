//! Snapshot builds on one node: openraft's own build (`build_snapshot`, on a
//! task it spawns) and the build after an install may run at once; they must
//! not share a temporary directory (format-spec/snapshot.md, "The sender's
//! directory").

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use crate::support::*;
use jobq::cluster::memnet::{Raft, Router};
use jobq::cluster::snapshot::{build, install};
use jobq::cluster::Node;
use jobq::fs::{FileSystem, OpenMode, RealFs};
use openraft::BasicNode;

/// A single-node cluster in `dir`, led by its node, with `n` pushes applied.
async fn one_node(dir: &std::path::Path, router: &Router, n: usize) -> (Raft, Node) {
    let (raft, node) = start(1, dir, router).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await.unwrap();
    leader_of(&[&raft]).await;
    for i in 0..n {
        push(&node, &format!("spider{}", i % 5)).await.unwrap();
    }
    (raft, node)
}

/// The node's newest snapshot, read as a receiver gets it, checks whole.
async fn check_current(node: &Node, scratch: &std::path::Path) -> u64 {
    use tokio::io::AsyncReadExt;
    let (meta, mut stream) = build::current_of(node).unwrap().expect("a snapshot");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let path = scratch.join("received");
    std::fs::write(&path, &bytes).unwrap();
    let file = RealFs.open(&path, OpenMode::Read).unwrap();
    let table = install::check_stream(&*file, &path).unwrap();
    assert_eq!(Some(table.last.0), meta.last_log_id.map(|l| l.index));
    table.last.0
}

/// Two builds started at once on one node both succeed, and the snapshot they
/// leave reads back whole. They shared `snap.tmp`: one removed the other's
/// files mid-way (or renamed its half-built directory into place), and the
/// failed build stopped openraft's core.
#[test]
fn two_builds_at_once_both_succeed_and_leave_a_whole_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    runtime().block_on(async {
        let router = Router::default();
        let (raft, node) = one_node(&dir, &router, 60).await;
        let applied = raft.metrics().borrow().last_applied.unwrap().index;
        for round in 0..20 {
            let gate = Arc::new(Barrier::new(2));
            let builds: Vec<_> = (0..2)
                .map(|_| {
                    let (node, gate) = (node.clone(), gate.clone());
                    std::thread::spawn(move || {
                        gate.wait();
                        build::build(&node).map(|(meta, _)| meta.last_log_id.unwrap().index)
                    })
                })
                .collect();
            for b in builds {
                let built = b.join().unwrap();
                assert_eq!(built.as_ref().ok(), Some(&applied), "round {round}: {built:?}");
            }
            assert_eq!(check_current(&node, tmp.path()).await, applied, "round {round}");
            let snaps: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("snap"))
                .collect();
            assert_eq!(snaps, [build::dir_name(applied)], "round {round}: one snapshot, no temporary left");
        }
        close(stop(raft, node).await);
    });
}

/// A build cut by a crash leaves its temporary directory: the node's start
/// removes it, and builds after go on.
#[test]
fn a_crashed_builds_temporary_directory_goes_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    runtime().block_on(async {
        let router = Router::default();
        let (raft, node) = one_node(&dir, &router, 20).await;
        router.remove(1);
        close(stop(raft, node).await);
        let left = dir.join("snap.tmp");
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join("log-0000000001.jql"), b"half a copy").unwrap();
        let node = Node::start(open(&dir)).unwrap();
        assert!(!left.exists(), "the leftover is removed at start");
        let (meta, _) = tokio::task::spawn_blocking({
            let node = node.clone();
            move || build::build(&node).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(check_current(&node, tmp.path()).await, meta.last_log_id.unwrap().index);
        let store = node.store().clone();
        drop(node);
        close(store);
    });
}

/// openraft spawns its build (`build_snapshot`) and goes on to the next state
/// machine command, an install, whose own build follows it: a build that
/// began while the install ran waited for it, then ran beside the install's.
/// Both must succeed (either failing stops openraft's core).
#[test]
fn a_build_waiting_for_an_install_runs_after_the_installs_build() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    runtime().block_on(async {
        let router = Router::default();
        let (raft, node) = one_node(&dir, &router, 60).await;
        router.remove(1);
        jobq::cluster::proposer::detach(&node);
        raft.shutdown().await.unwrap();
        drop(raft);
        let sm = jobq::cluster::StateMachine::new(node.clone());
        let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
        for round in 0..10 {
            let (meta, bytes) = {
                let (meta, mut s) = match build::current_of(&node).unwrap() {
                    Some(s) => s,
                    None => build::build(&node).unwrap(),
                };
                let mut bytes = Vec::new();
                s.read_to_end(&mut bytes).await.unwrap();
                (meta, bytes)
            };
            let mut received = install::receiving(&fs, &dir).unwrap();
            received.write_all(&bytes).await.unwrap();
            received.shutdown().await.unwrap();
            let installing = {
                let mut sm = sm.clone();
                tokio::spawn(async move { sm.install_snapshot(&meta, Box::new(received)).await })
            };
            // openraft's build, asked for while the install runs.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let building = {
                let mut sm = sm.clone();
                tokio::spawn(async move { sm.build_snapshot().await.map(|s| s.meta) })
            };
            let (installed, built) = (installing.await.unwrap(), building.await.unwrap());
            assert!(installed.is_ok(), "round {round}: {installed:?}");
            assert!(built.is_ok(), "round {round}: {built:?}");
            check_current(&node, tmp.path()).await;
        }
        let store = node.store().clone();
        drop((sm, node));
        close(store);
    });
}

/// A snapshot retired while a stream sends it stays only as long as that
/// stream: openraft 0.9's chunked sender owns the stream and gives up on a
/// follower that went away mid-stream (each chunk within
/// `install_snapshot_timeout`, five unreachable tries in a row at most), and
/// the retired snapshot goes with it. Nothing here bounds it but openraft.
#[test]
fn a_snapshot_retired_under_a_stream_to_a_vanished_follower_goes() {
    use jobq::cluster::memnet::{Faults, NodeNet};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        // Small chunks, so that the stream takes many messages.
        let base = jobq::cluster::config(ELECTION_MS).unwrap();
        let config = Arc::new(openraft::Config { snapshot_max_chunk_size: 256, ..(*base).clone() });
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let node = Node::start(open(&dir(id))).unwrap();
            let net = NodeNet { router: router.clone(), id };
            let raft = jobq::cluster::start(id, node.clone(), config.clone(), net).await.unwrap();
            let timeout = Duration::from_secs(2);
            jobq::cluster::proposer::attach(id, &node, &raft, tokio::runtime::Handle::current(), timeout);
            router.add(id, raft.clone());
            nodes.insert(id, (raft, node));
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
        nodes[&1].0.initialize(members).await.unwrap();
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;
        let other = (1..=3).find(|id| *id != leader).unwrap();
        let (lr, ln) = nodes[&leader].clone();

        router.isolate(other, true);
        for i in 0..40 {
            push(&ln, &format!("spider{}", i % 4)).await.unwrap();
        }
        let at = snapshot_now(&lr).await;
        purge_to(&lr, at).await;

        // The follower comes back, the leader streams its snapshot, and the
        // follower vanishes mid-stream.
        router.set_faults(Faults { max_delay: Duration::from_millis(20), ..Faults::default() }, 7);
        router.isolate(other, false);
        let receiving = dir(other).join(install::RECEIVING);
        let began = Instant::now();
        while !std::fs::metadata(&receiving).is_ok_and(|m| m.len() > 0) {
            assert!(began.elapsed() < Duration::from_secs(10), "no stream began");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        router.isolate(other, true);

        // A newer snapshot retires the one being sent; it stays for the stream.
        push(&ln, "later").await.unwrap();
        let built = tokio::task::spawn_blocking({
            let ln = ln.clone();
            move || build::build(&ln).unwrap().0.last_log_id.unwrap().index
        });
        let later = built.await.unwrap();
        assert!(later > at);
        let snap_dir = |i: u64| dir(leader).join(build::dir_name(i));
        assert!(snap_dir(at).exists(), "the snapshot being sent stays while its stream lives");
        let retired = Instant::now();
        while snap_dir(at).exists() {
            assert!(retired.elapsed() < Duration::from_secs(20), "the retired snapshot outlived its stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("the retired snapshot went {:?} after it was retired", retired.elapsed());
        assert!(snap_dir(later).exists());

        router.set_faults(Faults::default(), 1);
        drop((lr, ln));
        stop_all(nodes).await;
    });
}
