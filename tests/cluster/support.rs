//! In-process clusters for the cluster tests: nodes on temporary directories
//! over the in-memory network, and what the tests ask of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobq::cluster::memnet::{NodeNet, Raft, Router};
use jobq::cluster::{self, Node};
use jobq::{JobKey, JobState, Options, Store};
use openraft::BasicNode;

pub const ELECTION_MS: u64 = 400;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A test node's store options: small segments and memtables, no background work.
pub fn node_options() -> Options {
    Options { raft_log: true, background: false, memtable_entries: 8, segment_bytes: 6000, ..Options::default() }
}

pub fn open(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(dir, node_options()).unwrap())
}

pub async fn start(id: u64, dir: &std::path::Path, router: &Router) -> (Raft, Node) {
    start_with(id, dir, router, node_options()).await
}

pub async fn start_with(id: u64, dir: &std::path::Path, router: &Router, opts: Options) -> (Raft, Node) {
    let node = Node::start(Arc::new(Store::open(dir, opts).unwrap())).unwrap();
    let config = cluster::config(ELECTION_MS).unwrap();
    let raft = cluster::start(id, node.clone(), config, NodeNet { router: router.clone(), id }).await.unwrap();
    let timeout = Duration::from_secs(2);
    cluster::proposer::attach(id, &node, &raft, tokio::runtime::Handle::current(), timeout);
    router.add(id, raft.clone());
    (raft, node)
}

pub async fn stop(raft: Raft, node: Node) -> Arc<Store> {
    cluster::proposer::detach(&node);
    raft.shutdown().await.unwrap();
    drop(raft);
    node.store().clone()
}

/// Stop every node of `nodes` and close its store.
pub async fn stop_all(nodes: BTreeMap<u64, (Raft, Node)>) {
    for (_, (raft, node)) in nodes {
        close(stop(raft, node).await);
    }
}

/// Close a node's store once nothing else holds it (Raft's tasks let go of
/// their handles shortly after its shutdown returns).
pub fn close(mut store: Arc<Store>) {
    for _ in 0..200 {
        match Arc::try_unwrap(store) {
            Ok(s) => return s.close().unwrap(),
            Err(s) => store = s,
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the node's store is still shared: {} handles", Arc::strong_count(&store));
}

pub async fn push(node: &Node, spider: &str) -> jobq::Result<JobKey> {
    let store = node.store().clone();
    let line = format!(r#"{{"spider":"{spider}","tags":["a"]}}"#);
    tokio::task::spawn_blocking(move || {
        let spec = jobq::store::request::parse_push(&line).unwrap();
        match store.push(1, &[spec], Some("tester"))?.remove(0) {
            jobq::store::PushResult::Pushed { key, .. } => Ok(key),
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap()
}

pub async fn finish(node: &Node, key: JobKey) -> jobq::Result<()> {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || {
        let u = jobq::store::request::parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
        store.update(1, &[u], None).map(drop)
    })
    .await
    .unwrap()
}

pub async fn three_nodes(tmp: &std::path::Path, router: &Router) -> BTreeMap<u64, (Raft, Node)> {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, &tmp.join(format!("n{id}")), router).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
    nodes[&1].0.initialize(members).await.unwrap();
    nodes
}

pub fn state(node: &Node, key: JobKey) -> Option<JobState> {
    node.store().snapshot().get(key).unwrap().map(|j| j.state)
}

/// The leader every one of `rafts` agrees on (one of them).
pub async fn leader_of(rafts: &[&Raft]) -> u64 {
    for _ in 0..400 {
        let seen: Vec<Option<u64>> = rafts.iter().map(|r| r.metrics().borrow().current_leader).collect();
        if let Some(Some(l)) = seen.first() {
            let leads = rafts.iter().any(|r| {
                let m = r.metrics().borrow().clone();
                m.id == *l && m.state == openraft::ServerState::Leader
            });
            if leads && seen.iter().all(|s| *s == Some(*l)) {
                return *l;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader elected");
}

pub async fn wait_applied(raft: &Raft, index: u64) {
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.last_applied.is_some_and(|a| a.index >= index), "applied")
        .await
        .unwrap();
}

pub fn has(node: &Node, key: JobKey) -> bool {
    node.store().snapshot().get(key).unwrap().is_some()
}

pub fn jobs_of(node: &Node) -> Vec<(JobKey, JobState)> {
    let snap = node.store().snapshot();
    let f = jobq::query::Filter { states: JobState::ALL.to_vec(), ..Default::default() };
    let p = jobq::query::Paging { count: 10_000, ..Default::default() };
    let keys = snap.list(1, &f, &p).unwrap().iter().map(|h| JobKey::from_local(1, h.local)).collect::<Vec<_>>();
    keys.into_iter().map(|k| (k, snap.get(k).unwrap().unwrap().state)).collect()
}

/// Three nodes in `tmp`, their agreed leader, and one other node.
pub async fn three_led(tmp: &std::path::Path, router: &Router) -> (BTreeMap<u64, (Raft, Node)>, u64, u64) {
    let nodes = three_nodes(tmp, router).await;
    let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
    let leader = leader_of(&rafts).await;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    (nodes, leader, other)
}

/// Stop every node, close its store, and check its data directory clean;
/// returns their ids.
pub async fn stop_all_checked(
    nodes: &mut BTreeMap<u64, (Raft, Node)>,
    router: &Router,
    dir: impl Fn(u64) -> std::path::PathBuf,
) -> Vec<u64> {
    let ids: Vec<u64> = nodes.keys().copied().collect();
    let mut stores = Vec::new();
    for id in &ids {
        let (r, n) = nodes.remove(id).unwrap();
        router.remove(*id);
        stores.push(stop(r, n).await);
    }
    for s in stores {
        close(s);
    }
    for id in &ids {
        let report = jobq::store::check(&dir(*id), Arc::new(jobq::fs::RealFs)).unwrap();
        assert!(report.findings.is_empty(), "node {id}: {report:?}");
    }
    ids
}

/// Have `raft` build a snapshot and wait until it has one: its last index.
pub async fn snapshot_now(raft: &Raft) -> u64 {
    raft.trigger().snapshot().await.unwrap();
    let m = raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.snapshot.is_some(), "snapshot").await.unwrap();
    m.snapshot.unwrap().index
}

/// Have `raft` purge its log up to `at` and wait until it did.
pub async fn purge_to(raft: &Raft, at: u64) {
    raft.trigger().purge_log(at).await.unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= at), "purged")
        .await
        .unwrap();
}
