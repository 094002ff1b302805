//! Three in-process nodes over a faulty network (messages lost, delayed past
//! each other, delivered twice; nodes isolated, links cut, the leader too) while
//! four clients push (some with `unique`), start and finish jobs at whichever
//! node leads. Their calls are logged as acknowledged, refused or in doubt, and
//! the history is checked once the network heals: every acknowledged push
//! exists exactly once and a refused one not at all, a linearizable read right
//! after an acknowledgement sees it, no job is started twice, no two active jobs
//! share a `unique`, every node holds the same jobs. The leader snapshots and
//! purges its log while a node is cut off, so nodes catch up from snapshots,
//! and every node runs online compaction each round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobq::cluster::memnet::{Faults, NodeNet, Raft, Router};
use jobq::cluster::{self, Node};
use jobq::store::request::{parse_push, parse_update, Changes};
use jobq::store::PushResult;
use jobq::{Error, JobKey, JobState, Options, Store};

/// How long the chaos lasts: 8 s in CI, `JOBQ_SOAK_SECS` as a soak.
fn chaos() -> Duration {
    Duration::from_secs(std::env::var("JOBQ_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8))
}

#[derive(Debug, Clone)]
enum Outcome {
    Acked,
    Refused,
    InDoubt,
}

#[derive(Default)]
struct History {
    /// marker -> outcome of its push
    pushes: HashMap<String, Outcome>,
    started: Vec<JobKey>,
    stale_reads: Vec<String>,
}

struct Cluster {
    nodes: BTreeMap<u64, (Raft, Node)>,
}

impl Cluster {
    fn leader(&self) -> Option<u64> {
        self.nodes.values().find_map(|(r, _)| {
            let m = r.metrics().borrow().clone();
            (m.state == openraft::ServerState::Leader).then_some(m.id)
        })
    }
}

fn outcome<T>(r: &jobq::Result<T>) -> Option<Outcome> {
    match r {
        Ok(_) => Some(Outcome::Acked),
        Err(Error::NotLeader { .. }) => None, // nothing written: try again at the leader
        Err(Error::InDoubt(_)) => Some(Outcome::InDoubt),
        Err(Error::Replication(_)) => None,
        Err(_) => Some(Outcome::Refused),
    }
}

fn client(c: usize, cluster: &Cluster, rt: &tokio::runtime::Handle, stop: &AtomicBool, h: &Mutex<History>) {
    let mut i = 0;
    let mut mine: Vec<JobKey> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Some(l) = cluster.leader() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let store = cluster.nodes[&l].1.store().clone();
        match i % 4 {
            0 | 1 => {
                let marker = format!("c{c}-{i}");
                let unique = if i % 8 == 1 { format!(r#","unique":"u{}""#, i % 3) } else { String::new() };
                let line = format!(r#"{{"spider":"s{c}","m":"{marker}"{unique}}}"#);
                let r = store.push(1, &[parse_push(&line).unwrap()], Some("client"));
                let Some(o) = outcome(&r) else { continue };
                if let Ok(res) = &r {
                    if let PushResult::Pushed { key, .. } = &res[0] {
                        // A linearizable read at another node sees it.
                        let other = cluster.nodes.keys().copied().find(|n| *n != l).unwrap();
                        if !read_sees(cluster, l, other, *key, rt) {
                            h.lock().unwrap().stale_reads.push(format!("{key} at node {other}"));
                        }
                    } else {
                        // refused: an active job holds the unique value
                        h.lock().unwrap().pushes.insert(marker, Outcome::Refused);
                        continue;
                    }
                }
                h.lock().unwrap().pushes.insert(marker, o);
            }
            2 => {
                let r = store.start_next(1, &Changes::default(), Some("client"));
                if let Ok(Some(job)) = &r {
                    h.lock().unwrap().started.push(job.key);
                    mine.push(job.key);
                }
            }
            _ => {
                if let Some(key) = mine.pop() {
                    let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
                    let r = store.update(1, &[u], None);
                    if outcome(&r).is_none() {
                        mine.push(key);
                    }
                }
            }
        }
    }
}

/// After an acknowledgement at `leader`: the leader confirms its read index, `node`
/// waits until it applied that far, and its store has `key`. A node that is not
/// there within a second is taken as cut off (a longer wait starves the clients).
fn read_sees(cluster: &Cluster, leader: u64, node: u64, key: JobKey, rt: &tokio::runtime::Handle) -> bool {
    let lr = cluster.nodes[&leader].0.clone();
    let nr = cluster.nodes[&node].0.clone();
    let ok = rt.block_on(async move {
        let Ok(Some(read)) = lr.ensure_linearizable().await else { return None };
        let waited = nr
            .wait(Some(Duration::from_secs(1)))
            .metrics(|m| m.last_applied.is_some_and(|a| a.index >= read.index), "read index")
            .await;
        Some(waited.is_ok())
    });
    match ok {
        None => true,        // leadership moved: no read index, nothing to check
        Some(false) => true, // the node is cut off: it cannot serve a linearizable read
        Some(true) => cluster.nodes[&node].1.store().snapshot().get(key).unwrap().is_some(),
    }
}

/// Push `line` at whichever node leads, until one takes it; returns that node.
fn push_at_leader(cluster: &Cluster, line: &str) -> u64 {
    // A cluster whose Raft cores stopped fails the test, not hangs it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no leader took a push in 120 s");
        if let Some(l) = cluster.leader() {
            if cluster.nodes[&l].1.store().push(1, &[parse_push(line).unwrap()], None).is_ok() {
                return l;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cut a follower off, push past it, have both other nodes snapshot and purge
/// their logs (whichever leads next must send a snapshot), and heal. Returns the
/// follower and its store generation before.
fn fall_behind_a_purge(
    cluster: &Cluster,
    router: &Router,
    rt: &tokio::runtime::Runtime,
    leader: u64,
    dir: &std::path::Path,
) -> (u64, Option<u64>) {
    let behind = cluster.nodes.keys().copied().find(|n| *n != leader).unwrap();
    let generation = jobq::store::layout::read_current(&jobq::fs::RealFs, &dir.join(format!("n{behind}"))).unwrap();
    router.isolate(behind, true);
    let mut pushed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pushed < 20 {
        assert!(Instant::now() < deadline, "two healthy nodes took no push in 60 s");
        let Some(l) = cluster.leader().filter(|l| *l != behind) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let line = format!(r#"{{"spider":"behind","m":"b{pushed}"}}"#);
        if cluster.nodes[&l].1.store().push(1, &[parse_push(&line).unwrap()], None).is_ok() {
            pushed += 1;
        }
    }
    for (id, (raft, _)) in &cluster.nodes {
        if *id == behind {
            continue;
        }
        let raft = raft.clone();
        rt.block_on(async move {
            let applied = raft.metrics().borrow().last_applied.unwrap().index;
            raft.trigger().snapshot().await.unwrap();
            let m = raft.wait(Some(Duration::from_secs(20)));
            let m = m.metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "snapshot").await;
            let at = m.unwrap_or_else(|e| panic!("node {id} built no snapshot: {e}")).snapshot.unwrap().index;
            raft.trigger().purge_log(at).await.unwrap();
            let purged = raft.wait(Some(Duration::from_secs(20)));
            let purged = purged.metrics(|m| m.purged.is_some_and(|p| p.index >= at), "purged").await;
            purged.unwrap_or_else(|e| panic!("node {id} did not purge its log to {at}: {e}"));
        });
    }
    router.isolate(behind, false);
    (behind, generation)
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn histories_under_a_faulty_network_keep_every_promise() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let opts = Options {
            raft_log: true,
            background: false,
            memtable_entries: 64,
            segment_bytes: 4 << 10,
            ..Options::default()
        };
        let store = Store::open(tmp.path().join(format!("n{id}")), opts).unwrap();
        let node = Node::start(Arc::new(store)).unwrap();
        let raft = rt.block_on(async {
            let net = NodeNet { router: router.clone(), id };
            let raft = cluster::start(id, node.clone(), cluster::config(300).unwrap(), net).await.unwrap();
            cluster::proposer::attach(id, &node, &raft, tokio::runtime::Handle::current(), Duration::from_secs(2));
            raft
        });
        router.add(id, raft.clone());
        nodes.insert(id, (raft, node));
    }
    let members: BTreeMap<u64, openraft::BasicNode> =
        (1..=3).map(|id| (id, openraft::BasicNode::new(format!("n{id}")))).collect();
    rt.block_on(nodes[&1].0.initialize(members)).unwrap();
    let cluster = Arc::new(Cluster { nodes });
    let faults = Faults { drop: 0.03, duplicate: 0.05, max_delay: Duration::from_millis(15) };
    router.set_faults(faults, 0x5eed);
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::default()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (cluster, stop, history, rt) = (cluster.clone(), stop.clone(), history.clone(), rt.handle().clone());
            std::thread::spawn(move || client(c, &cluster, &rt, &stop, &history))
        })
        .collect();
    // Chaos: isolate a node (often the leader) or cut a link, then heal.
    let started = Instant::now();
    let mut round = 0u64;
    let mut removed = 0;
    let installs = || {
        (1..=3u64)
            .map(|id| jobq::store::layout::read_current(&jobq::fs::RealFs, &tmp.path().join(format!("n{id}"))).unwrap())
            .filter(|g| *g > Some(1))
            .count()
    };
    let acked = || history.lock().unwrap().pushes.values().filter(|o| matches!(o, Outcome::Acked)).count();
    // The chaos lasts its time, and longer (up to 4x) until compaction removed a
    // segment and 20 pushes were acknowledged. Whether a node falls behind a
    // purge in it is chance; the phase after the chaos makes one do so.
    while started.elapsed() < chaos() || (removed == 0 || acked() < 20) && started.elapsed() < chaos() * 4 {
        round += 1;
        let victim = if round.is_multiple_of(2) { cluster.leader().unwrap_or(1) } else { 1 + round % 3 };
        if round.is_multiple_of(3) {
            router.cut(victim, 1 + (victim % 3), true);
        } else {
            router.isolate(victim, true);
        }
        std::thread::sleep(Duration::from_millis(300));
        // The leader snapshots and purges its log meanwhile: the node cut off
        // comes back behind the purge point and catches up from a snapshot.
        if let Some(l) = cluster.leader() {
            let raft = cluster.nodes[&l].0.clone();
            rt.block_on(async {
                let _ = raft.trigger().snapshot().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(at) = raft.metrics().borrow().snapshot {
                    let _ = raft.trigger().purge_log(at.index).await;
                }
            });
        }
        // Online compaction on every node: the leader relocates through Raft, the
        // others remove what it relocated and Raft purged.
        for (id, (_, node)) in &cluster.nodes {
            match node.store().reclaim() {
                Ok(r) => removed += r.segments.len(),
                Err(e) => assert!(e.is_cluster_transient(), "compaction on node {id}: {e}"),
            }
        }
        router.isolate(victim, false);
        router.cut(victim, 1 + (victim % 3), false);
        std::thread::sleep(Duration::from_millis(600));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    router.set_faults(Faults::default(), 1);
    // Healed: a leader commits a last entry, every node applies it.
    let leader = push_at_leader(&cluster, r#"{"spider":"final","m":"final"}"#);
    let (behind, generation_before) = fall_behind_a_purge(&cluster, &router, &rt, leader, tmp.path());
    let leader = push_at_leader(&cluster, r#"{"spider":"final","m":"after"}"#);
    let last = cluster.nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
    for (raft, _) in cluster.nodes.values() {
        rt.block_on(raft.wait(Some(Duration::from_secs(20))).applied_index_at_least(Some(last), "healed")).unwrap();
    }
    let h = history.lock().unwrap();
    let acked = h.pushes.values().filter(|o| matches!(o, Outcome::Acked)).count();
    assert!(acked >= 20, "the clients got {acked} pushes acknowledged in {:?} of chaos", chaos());
    assert!(h.stale_reads.is_empty(), "linearizable reads missed acknowledged pushes: {:?}", h.stale_reads);
    let mut seen = HashSet::new();
    for k in &h.started {
        assert!(seen.insert(*k), "job {k} was started twice");
    }
    let reference = export(cluster.nodes[&leader].1.store());
    for (id, (_, node)) in &cluster.nodes {
        assert_eq!(export(node.store()), reference, "node {id} holds other jobs than the leader");
    }
    // Every acknowledged push exactly once, a refused one never.
    let mut count: HashMap<String, usize> = HashMap::new();
    for line in reference.lines() {
        if let Some(i) = line.find(r#""m":"c"#) {
            let rest = &line[i + 5..];
            let m = &rest[..rest.find('"').unwrap()];
            *count.entry(m.to_string()).or_default() += 1;
        }
    }
    for (m, o) in h.pushes.iter() {
        let n = count.get(m).copied().unwrap_or(0);
        match o {
            Outcome::Acked => assert_eq!(n, 1, "acknowledged push {m} is there {n} times"),
            Outcome::Refused => assert_eq!(n, 0, "refused push {m} is there"),
            Outcome::InDoubt => assert!(n <= 1, "in-doubt push {m} is there {n} times"),
        }
    }
    // No two active jobs share a unique value.
    let snap = cluster.nodes[&leader].1.store().snapshot();
    let mut active_unique: HashMap<String, JobKey> = HashMap::new();
    for line in reference.lines().filter(|l| l.contains(r#""unique":"#)) {
        let key: JobKey = {
            let i = line.find(r#""key":""#).unwrap() + 7;
            line[i..i + line[i..].find('"').unwrap()].parse().unwrap()
        };
        let job = snap.get(key).unwrap().unwrap();
        if matches!(job.state, JobState::Pending | JobState::Running) {
            let u = job.unique.clone().unwrap();
            assert!(active_unique.insert(u.clone(), key).is_none(), "two active jobs hold unique {u}");
        }
    }
    drop(h);
    let in_doubt = history.lock().unwrap().pushes.values().filter(|o| matches!(o, Outcome::InDoubt)).count();
    let installed = installs();
    eprintln!(
        "history: {acked} pushes acknowledged, {in_doubt} in doubt, {} jobs started, {round} chaos rounds, \
         {installed} nodes installed a snapshot, {removed} segments compacted away",
        history.lock().unwrap().started.len()
    );
    let generation_after = jobq::store::layout::read_current(&jobq::fs::RealFs, &tmp.path().join(format!("n{behind}")));
    assert!(
        generation_after.unwrap() > generation_before,
        "node {behind} fell behind a purged log and caught up without installing a snapshot"
    );
    assert!(removed > 0, "compaction removed no segment");
    let cluster = Arc::try_unwrap(cluster).ok().expect("clients are done");
    for (_, (raft, node)) in cluster.nodes {
        cluster::proposer::detach(&node);
        rt.block_on(raft.shutdown()).unwrap();
    }
}
