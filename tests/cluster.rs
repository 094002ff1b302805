//! Replication (issue 14, first part): the Raft log is the store's log. Three
//! in-process nodes over an in-memory network: entries carrying data frames are
//! appended, replicated, applied, survive a leader's loss and a node's restart.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobq::cluster::memnet::{NodeNet, Raft, Router};
use jobq::cluster::{self, Frames, Node};
use jobq::codec::frame::{self, FrameKind};
use jobq::codec::record::{self, Prev};
use jobq::model::{Job, MetaDoc};
use jobq::{JobKey, JobState, Options, Store};
use openraft::BasicNode;

const ELECTION_MS: u64 = 150;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(dir, Options { raft_log: true, background: false, ..Options::default() }).unwrap())
}

async fn start(id: u64, dir: &std::path::Path, router: &Router) -> (Raft, Node) {
    let node = Node::start(open(dir)).unwrap();
    let config = cluster::config(ELECTION_MS).unwrap();
    let raft = cluster::start(id, node.clone(), config, NodeNet { router: router.clone(), id }).await.unwrap();
    router.add(id, raft.clone());
    (raft, node)
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

async fn leader_of(rafts: &[&Raft]) -> u64 {
    for _ in 0..200 {
        for r in rafts {
            if let Some(l) = r.current_leader().await {
                if rafts.iter().any(|x| x.metrics().borrow().id == l) {
                    return l;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader elected");
}

async fn wait_applied(raft: &Raft, index: u64) {
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.last_applied.is_some_and(|a| a.index >= index), "applied")
        .await
        .unwrap();
}

fn has(node: &Node, key: JobKey) -> bool {
    node.store().snapshot().get(key).unwrap().is_some()
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
