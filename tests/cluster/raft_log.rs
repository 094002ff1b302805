//! Replication (issue 14, first part): the Raft log is the store's log. Three
//! in-process nodes over an in-memory network: entries carrying data frames are
//! appended, replicated, applied, survive a leader's loss and a node's restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::*;
use jobq::cluster::memnet::{Raft, Router};
use jobq::cluster::Frames;
use jobq::codec::frame::{self, FrameKind};
use jobq::codec::record::{self, Prev};
use jobq::model::{Job, MetaDoc};
use jobq::{JobKey, JobState};
use openraft::BasicNode;

#[test]
fn store_writes_on_the_leader_are_decided_once_and_replicated() {
    let tmp = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let router = Router::default();
        let mut nodes = three_nodes(tmp.path(), &router).await;
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();

        // A follower refuses writes and names the leader.
        match push(&nodes[&follower].1, "s").await {
            Err(jobq::Error::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
            other => panic!("a follower's push: {other:?}"),
        }
        let mut keys = Vec::new();
        for i in 0..20 {
            let r = push(&nodes[&leader].1, &format!("spider{}", i % 3)).await;
            let m = nodes[&leader].0.metrics().borrow().clone();
            keys.push(r.unwrap_or_else(|e| panic!("push {i}: {e}; leader {leader}'s metrics {m:?}")));
        }
        finish(&nodes[&leader].1, keys[0]).await.unwrap();
        let applied = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        for (raft, node) in nodes.values() {
            wait_applied(raft, applied).await;
            assert_eq!(state(node, keys[0]), Some(JobState::Finished));
            for k in &keys[1..] {
                assert_eq!(state(node, *k), Some(JobState::Pending));
            }
            // Same job, same bytes on every node: times and tokens were decided once.
            let a = nodes[&leader].1.store().snapshot().get(keys[3]).unwrap().unwrap();
            let b = node.store().snapshot().get(keys[3]).unwrap().unwrap();
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }

        // The leader is cut off: its write cannot commit, and its writer sees it
        // as in doubt; the others elect a leader and write on.
        router.isolate(leader, true);
        let lost = push(&nodes[&leader].1, "lost").await;
        assert!(matches!(lost, Err(jobq::Error::InDoubt(_))), "{lost:?}");
        let others: Vec<&Raft> = nodes.iter().filter(|(id, _)| **id != leader).map(|(_, (r, _))| r).collect();
        let new_leader = leader_of(&others).await;
        let k2 = push(&nodes[&new_leader].1, "after").await.unwrap();
        finish(&nodes[&new_leader].1, keys[1]).await.unwrap();

        // Healed: the old leader's uncommitted entry is overridden; its store
        // never shows the lost job and shows the new leader's writes.
        router.isolate(leader, false);
        let applied = nodes[&new_leader].0.metrics().borrow().last_applied.unwrap().index;
        wait_applied(&nodes[&leader].0, applied).await;
        let old = &nodes[&leader].1;
        assert_eq!(state(old, k2), Some(JobState::Pending));
        assert_eq!(state(old, keys[1]), Some(JobState::Finished));
        let spider_lost = old.store().spider_id(1, "lost", false).unwrap();
        assert_eq!(spider_lost, None, "the in-doubt push's spider is gone");
        // It writes again once it leads or forwards: as a follower, it refuses.
        assert!(matches!(push(old, "x").await, Err(jobq::Error::NotLeader { .. })));

        // Every node restarts from its directory with the same jobs.
        for id in 1..=3 {
            let (raft, node) = nodes.remove(&id).unwrap();
            router.remove(id);
            close(stop(raft, node).await);
        }
        for id in 1..=3 {
            nodes.insert(id, start(id, &tmp.path().join(format!("n{id}")), &router).await);
        }
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;
        let k3 = push(&nodes[&leader].1, "again").await.unwrap();
        let applied = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        for (raft, node) in nodes.values() {
            wait_applied(raft, applied).await;
            assert_eq!(state(node, k2), Some(JobState::Pending));
            assert_eq!(state(node, k3), Some(JobState::Pending));
            assert_eq!(state(node, keys[0]), Some(JobState::Finished));
        }
        for id in 1..=3 {
            let (raft, node) = nodes.remove(&id).unwrap();
            close(stop(raft, node).await);
        }
    });
}

/// The data frames a single node writes for a new spider and one pushed job.
fn push_frames(key: JobKey, name: &str, with_spider: bool) -> Frames {
    let mut out = Vec::new();
    let mut p = Vec::new();
    if with_spider {
        record::encode_spider(key.project, key.spider, name, &mut p);
        frame::encode(&mut out, FrameKind::Spider, 0, 1, 1, 0, &p);
    }
    let mut times = [None; 4];
    times[JobState::Pending as usize] = Some(1_700_000_000_000 + u64::from(key.job));
    let job = Job {
        key,
        state: JobState::Pending,
        priority: 2,
        times,
        order_seq: 1,
        tags: vec!["t".into()],
        unique: None,
        meta: MetaDoc::new(),
    };
    p.clear();
    record::encode_job(&job, Prev::Created, &mut p);
    frame::encode(&mut out, FrameKind::Jobs, 0, 1, 1, 0, &p);
    Frames(out)
}

#[test]
fn entries_replicate_apply_and_survive_a_leader_loss_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, start(id, &dir(id), &router).await);
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
        nodes[&1].0.initialize(members).await.unwrap();
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;

        let k1 = JobKey::new(1, 1, 1);
        let w = nodes[&leader].0.client_write(push_frames(k1, "spider-a", true)).await.unwrap();
        for (raft, node) in nodes.values() {
            wait_applied(raft, w.log_id.index).await;
            assert!(has(node, k1), "node {} lacks the job", raft.metrics().borrow().id);
        }
        // Every node's store holds the same job, spider name included.
        for (_, node) in nodes.values() {
            let snap = node.store().snapshot();
            assert_eq!(snap.get(k1).unwrap().unwrap().state, JobState::Pending);
        }

        // The leader goes away: the others elect a new one and take writes.
        let (old, old_node) = nodes.remove(&leader).unwrap();
        router.remove(leader);
        old.shutdown().await.unwrap();
        drop(old);
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let new_leader = leader_of(&rafts).await;
        assert_ne!(new_leader, leader);
        let k2 = JobKey::new(1, 1, 2);
        let w2 = nodes[&new_leader].0.client_write(push_frames(k2, "spider-a", false)).await.unwrap();
        for (raft, node) in nodes.values() {
            wait_applied(raft, w2.log_id.index).await;
            assert!(has(node, k2));
        }

        // The old leader restarts from its data directory and catches up.
        let store = old_node.store().clone();
        drop(old_node);
        let store = Arc::try_unwrap(store).ok().expect("the old node's store is no longer shared");
        store.close().unwrap();
        let (raft, node) = start(leader, &dir(leader), &router).await;
        assert!(has(&node, k1), "open replays the committed entries");
        wait_applied(&raft, w2.log_id.index).await;
        assert!(has(&node, k2), "the restarted node caught up from the log");
        for (r, _) in nodes.values() {
            r.shutdown().await.unwrap();
        }
        raft.shutdown().await.unwrap();
    });
}

/// Replicated entries are not trusted: data frames with a flipped byte, a wrong
/// count or length, a commit frame or the transaction flag are refused before
/// anything is written, and the node appends good entries after.
#[test]
fn hostile_replicated_entries_are_refused_and_nothing_is_written() {
    use jobq::codec::entry::{EntryHead, EntryType};
    use jobq::store::raft::RaftEntry;
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("n"));
    let good = push_frames(JobKey::new(1, 1, 1), "s", true).0;
    let head = |index: u64, frames: u32, data: &[u8]| EntryHead {
        index,
        term: 1,
        leader: 1,
        committed: None,
        kind: EntryType::Normal,
        frames,
        data_len: data.len() as u32,
    };
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut commit = Vec::new();
    frame::encode(&mut commit, FrameKind::Commit, 0, 1, 1, 0, &5u64.to_le_bytes());
    let mut txn = Vec::new();
    frame::encode(&mut txn, FrameKind::Spider, frame::FLAG_TXN, 1, 1, 0, &good[32..32 + 15]);
    let cases: Vec<(&str, RaftEntry)> = vec![
        ("a flipped byte", RaftEntry { head: head(1, 2, &flipped), body: Vec::new(), data: flipped.clone() }),
        ("a wrong frame count", RaftEntry { head: head(1, 3, &good), body: Vec::new(), data: good.clone() }),
        (
            "a wrong data length",
            RaftEntry { head: EntryHead { data_len: 7, ..head(1, 2, &good) }, body: Vec::new(), data: good.clone() },
        ),
        (
            "cut short",
            RaftEntry {
                head: head(1, 2, &good[..good.len() - 3]),
                body: Vec::new(),
                data: good[..good.len() - 3].to_vec(),
            },
        ),
        ("a commit frame", RaftEntry { head: head(1, 1, &commit), body: Vec::new(), data: commit }),
        ("the transaction flag", RaftEntry { head: head(1, 1, &txn), body: Vec::new(), data: txn }),
    ];
    let end = store.raft_applied_end();
    for (what, e) in cases {
        let r = store.raft_append(&[e]);
        assert!(matches!(r, Err(jobq::Error::Replication(_))), "{what}: {r:?}");
        assert!(store.raft_entries().unwrap().is_empty(), "{what}: nothing written");
    }
    assert_eq!(store.raft_applied_end(), end);
    let ok = RaftEntry { head: head(1, 2, &good), body: Vec::new(), data: good };
    let locs = store.raft_append(&[ok]).unwrap();
    store.raft_apply(&locs[0]).unwrap();
    assert_eq!(store.snapshot().get(JobKey::new(1, 1, 1)).unwrap().unwrap().state, JobState::Pending);
}
