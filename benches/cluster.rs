//! Criterion bench of a cluster (issue 14), in one process: three nodes over the
//! in-memory network (src/cluster/memnet.rs), each on its own data directory with
//! real fdatasyncs, against one single node.
//! - durable pushes from 32 writers: at a single node, and at the leader of the
//!   three-node cluster (a write is acknowledged after the leader's and one
//!   follower's fdatasync);
//! - a count at a follower after a linearizable read-index check at the leader,
//!   against the same count there without it (what a single node with the same
//!   jobs pays).
//!
//! Run: `cargo bench --bench cluster`. Stores go under target/jobq-bench/.

#[allow(dead_code)]
#[path = "support/cached.rs"]
mod cached;
#[allow(dead_code)]
#[path = "support/dataset.rs"]
mod dataset;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jobq::cluster::memnet::{NodeNet, Raft, Router};
use jobq::cluster::{self, Node};
use jobq::query::Filter;
use jobq::store::request::parse_push;
use jobq::{JobState, Options, Store};

const JOB: &str = r#"{"spider":"spider-7","priority":2,"tags":["tag-0","tag-13"],"units":1,"version":"1.4.27-py3","spider_args":{"start_url":"https://www.shop-1234.example.com/c/77123?page=3","max_pages":120},"scheduled_by":"user17@example.org"}"#;
fn writers() -> u64 {
    std::env::var("JOBQ_WRITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(32)
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = cached::bench_root().join(format!("cluster-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn pushes(store: &Store, iters: u64) -> Duration {
    let spec = parse_push(JOB).expect("spec");
    let t = Instant::now();
    std::thread::scope(|s| {
        let writers = writers();
        for w in 0..writers {
            let n = iters / writers + u64::from(w < iters % writers);
            let spec = spec.clone();
            s.spawn(move || {
                for _ in 0..n {
                    store.push(1, std::slice::from_ref(&spec), None).expect("push");
                }
            });
        }
    });
    t.elapsed()
}

struct Three {
    rt: tokio::runtime::Runtime,
    nodes: BTreeMap<u64, (Raft, Node)>,
    leader: u64,
}

fn three() -> Three {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let router = Router::default();
    let root = dir("three");
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let store =
            Store::open(root.join(format!("n{id}")), Options { raft_log: true, ..Options::default() }).expect("open");
        let node = Node::start(Arc::new(store)).expect("node");
        let raft = rt.block_on(async {
            let net = NodeNet { router: router.clone(), id };
            let raft =
                cluster::start(id, node.clone(), cluster::config(1000).expect("config"), net).await.expect("raft");
            cluster::proposer::attach(id, &node, &raft, tokio::runtime::Handle::current(), Duration::from_secs(10));
            raft
        });
        router.add(id, raft.clone());
        nodes.insert(id, (raft, node));
    }
    let members: BTreeMap<u64, openraft::BasicNode> =
        (1..=3).map(|id| (id, openraft::BasicNode::new(format!("n{id}")))).collect();
    rt.block_on(nodes[&1].0.initialize(members)).expect("initialize");
    rt.block_on(nodes[&1].0.wait(Some(Duration::from_secs(10))).current_leader(1, "leader")).expect("leader");
    // The blank entry of the term applied before the first write.
    std::thread::sleep(Duration::from_millis(200));
    Three { rt, nodes, leader: 1 }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(1));
    let single = Store::open(dir("single"), Options::default()).expect("open");
    g.bench_function("durable pushes, 32 writers, single node", |b| b.iter_custom(|iters| pushes(&single, iters)));
    let cl = three();
    let leader_store = cl.nodes[&cl.leader].1.store().clone();
    g.bench_function("durable pushes, 32 writers, 3-node cluster leader", |b| {
        b.iter_custom(|iters| pushes(&leader_store, iters))
    });
    let filter = Filter { states: vec![JobState::Pending], ..Filter::default() };
    g.bench_function("count, single node", |b| b.iter(|| single.snapshot().count(1, &filter).expect("count")));
    let follower = cl.nodes[&2].clone();
    // The same count on the same jobs, without the read index: a single node's cost.
    g.bench_function("count at a follower, stale", |b| {
        b.iter(|| follower.1.store().snapshot().count(1, &filter).expect("count"))
    });
    let leader_raft = cl.nodes[&cl.leader].0.clone();
    g.bench_function("linearizable count at a follower", |b| {
        b.iter(|| {
            let read = cl.rt.block_on(leader_raft.ensure_linearizable()).expect("read index").expect("a log id");
            cl.rt
                .block_on(follower.0.wait(None).applied_index_at_least(Some(read.index), "read index"))
                .expect("applied");
            follower.1.store().snapshot().count(1, &filter).expect("count")
        })
    });
    g.finish();
    for (_, (raft, node)) in cl.nodes {
        cluster::proposer::detach(&node);
        let _ = cl.rt.block_on(raft.shutdown());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
