//! Power cuts on a cluster node (a single-member cluster, so that every write
//! commits on this node's own fsync): a cut at every few file-system calls of a
//! workload of pushes and finishes, each crash mode in turn; the node restarts
//! from what survived, as its own leader again, and every acknowledged write is
//! there, every push whole or absent, nothing uncommitted shown before it commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobq::cluster::memnet::{NodeNet, Raft, Router};
use jobq::cluster::{self, Node};
use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::PushResult;
use jobq::{Options, Store};

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(7000)),
        raft_log: true,
        background: false,
        memtable_entries: 3,
        merge_fanout: 2,
        segment_bytes: 4096,
        ..Options::default()
    }
}

async fn start(sim: &SimFs, router: &Router) -> jobq::Result<(Raft, Node)> {
    let store = Store::open("/node", opts(sim))?;
    let node = Node::start(Arc::new(store))?;
    let raft =
        cluster::start(1, node.clone(), cluster::config(100)?, NodeNet { router: router.clone(), id: 1 }).await?;
    cluster::proposer::attach(1, &node, &raft, tokio::runtime::Handle::current(), Duration::from_secs(3));
    router.add(1, raft.clone());
    Ok((raft, node))
}

async fn stop(raft: Raft, node: Node, router: &Router) {
    cluster::proposer::detach(&node);
    router.remove(1);
    let _ = raft.shutdown().await;
    drop(raft);
    // No close: the machine is off.
    std::mem::forget(node);
}

async fn leads(raft: &Raft) {
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leader").await.expect("the node leads again");
}

#[derive(Default, Debug)]
struct Acks {
    pushes: Vec<(Vec<JobKey>, bool)>,
    finished: BTreeMap<JobKey, bool>,
}

/// Pushes of one or two jobs, then a finish of each: until the first failure.
fn workload(store: &Store, round: usize, acks: &mut Acks) {
    for i in 0..6usize {
        let n = 1 + (i + round) % 2;
        let specs: Vec<_> =
            (0..n).map(|k| parse_push(&format!(r#"{{"spider":"s{}","i":{i},"k":{k}}}"#, i % 2)).unwrap()).collect();
        let keys: Vec<JobKey> = match store.push(1, &specs, None) {
            Ok(r) => r
                .iter()
                .map(|x| match x {
                    PushResult::Pushed { key, .. } => *key,
                    PushResult::Conflict { .. } => unreachable!(),
                })
                .collect(),
            Err(_) => return acks.pushes.push((Vec::new(), false)),
        };
        acks.pushes.push((keys.clone(), true));
        for key in keys {
            let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
            let ok = store.update(1, &[u], None).is_ok();
            acks.finished.insert(key, ok);
            if !ok {
                return;
            }
        }
    }
}

fn verify(store: &Store, acks: &Acks, what: &str) {
    let snap = store.snapshot();
    for (keys, acked) in &acks.pushes {
        let present: Vec<bool> = keys.iter().map(|k| snap.get(*k).unwrap().is_some()).collect();
        if *acked {
            assert!(present.iter().all(|p| *p), "{what}: an acknowledged push lost a job: {keys:?}");
        }
        assert!(present.iter().all(|p| *p) || present.iter().all(|p| !*p), "{what}: a push half there");
    }
    for (key, acked) in &acks.finished {
        let state = snap.get(*key).unwrap().map(|j| j.state);
        if *acked {
            assert_eq!(state, Some(JobState::Finished), "{what}: an acknowledged finish of {key} was lost");
        }
    }
}

#[test]
fn a_node_keeps_every_acknowledged_write_through_power_cuts_at_every_few_calls() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (mut rounds, mut cut_mid_workload) = (0, 0);
        for (i, at) in (0..240u64).step_by(9).enumerate() {
            let mode = CrashMode::ALL[i % CrashMode::ALL.len()];
            let sim = SimFs::new();
            let router = Router::default();
            let (raft, node) = start(&sim, &router).await.unwrap();
            let members: BTreeMap<u64, openraft::BasicNode> = [(1, openraft::BasicNode::new("n1"))].into();
            raft.initialize(members).await.unwrap();
            leads(&raft).await;
            sim.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let store = node.store().clone();
            let mut acks = tokio::task::spawn_blocking(move || {
                let mut acks = Acks::default();
                workload(&store, i, &mut acks);
                acks
            })
            .await
            .unwrap();
            cut_mid_workload +=
                usize::from(acks.pushes.iter().any(|(_, ok)| !ok) || acks.finished.values().any(|ok| !ok));
            stop(raft, node, &router).await;
            sim.set_fault(None);
            sim.crash(mode, at);
            let what = format!("power cut at call {at}, {mode:?}");
            let (raft, node) = start(&sim, &router).await.unwrap_or_else(|e| panic!("{what}: restart: {e}"));
            leads(&raft).await;
            let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
            raft.wait(Some(Duration::from_secs(10)))
                .metrics(|m| m.last_applied.is_some_and(|a| a.index >= last), "applied")
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            verify(node.store(), &acks, &what);
            // It takes writes again, and they survive a clean restart.
            let store = node.store().clone();
            let more = tokio::task::spawn_blocking(move || {
                let mut more = Acks::default();
                workload(&store, 1, &mut more);
                more
            })
            .await
            .unwrap();
            assert!(more.pushes.iter().all(|(_, ok)| *ok), "{what}: writes after the restart: {more:?}");
            acks.pushes.extend(more.pushes);
            acks.finished.extend(more.finished);
            verify(node.store(), &acks, &what);
            rounds += 1;
            cluster::proposer::detach(&node);
            router.remove(1);
            raft.shutdown().await.unwrap();
            drop(raft);
            let mut store = node.store().clone();
            drop(node);
            // openraft's tasks let go of the node as they wind down.
            let mut closed = false;
            for _ in 0..200 {
                match Arc::try_unwrap(store) {
                    Ok(s) => {
                        s.close().unwrap();
                        closed = true;
                        break;
                    }
                    Err(s) => store = s,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(closed, "{what}: the node's store is still held after shutdown");
            let again = Store::open("/node", Options { read_only: true, ..opts(&sim) }).unwrap();
            verify(&again, &acks, &format!("{what}, reopened read-only"));
        }
        assert!(rounds >= 20);
        assert!(cut_mid_workload * 2 >= rounds, "{cut_mid_workload} of {rounds} cuts came during the workload");
    });
}
