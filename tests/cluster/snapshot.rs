//! Snapshots (issue 14): a node behind the leader's purge point catches up from
//! a snapshot; an install keeps the entries the node held after it; a damaged
//! snapshot is refused with the node's state untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use jobq::cluster::memnet::{Raft, Router};
use jobq::cluster::Node;
use jobq::JobState;

/// A follower cut off while the leader snapshots and purges its log catches up
/// from the snapshot (a new generation on its disk), holds what the leader
/// holds, and opens to the same state after a restart.
#[test]
fn a_node_behind_the_purge_point_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let (mut nodes, leader, behind) = three_led(tmp.path(), &router).await;
        let k0 = push(&nodes[&leader].1, "early").await.unwrap();
        router.isolate(behind, true);
        let mut keys = vec![k0];
        for i in 0..40 {
            keys.push(push(&nodes[&leader].1, &format!("spider{}", i % 4)).await.unwrap());
        }
        for k in keys.iter().step_by(3) {
            finish(&nodes[&leader].1, *k).await.unwrap();
        }
        let lr = &nodes[&leader].0;
        let at = snapshot_now(lr).await;
        purge_to(lr, at).await;
        let snaps: Vec<String> = std::fs::read_dir(dir(leader))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        assert_eq!(snaps.len(), 1, "{snaps:?}");

        router.isolate(behind, false);
        let last = push(&nodes[&leader].1, "after").await.unwrap();
        keys.push(last);
        let end = lr.metrics().borrow().last_applied.unwrap().index;
        wait_applied(&nodes[&behind].0, end).await;
        let want = jobs_of(&nodes[&leader].1);
        assert_eq!(want.len(), keys.len());
        assert_eq!(jobs_of(&nodes[&behind].1), want, "the follower holds what the leader holds");
        let fm = nodes[&behind].0.metrics().borrow().clone();
        assert!(fm.snapshot.is_some_and(|s| s.index >= at), "it installed the snapshot: {fm:?}");
        let generation = jobq::store::layout::read_current(&jobq::fs::RealFs, &dir(behind)).unwrap();
        assert!(generation > Some(1), "a new generation: {generation:?}");

        // The installed node restarts from its disk: same jobs, and it keeps up.
        let (raft, node) = nodes.remove(&behind).unwrap();
        router.remove(behind);
        let store = stop(raft, node).await;
        close(store);
        let report = jobq::store::check(&dir(behind), Arc::new(jobq::fs::RealFs)).unwrap();
        assert!(report.findings.is_empty(), "{report:?}");
        let (raft, node) = start(behind, &dir(behind), &router).await;
        assert_eq!(jobs_of(&node), want, "open shows the installed and applied state");
        let k = push(&nodes[&leader].1, "later").await.unwrap();
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        wait_applied(&raft, end).await;
        assert!(has(&node, k));
        nodes.insert(behind, (raft, node));
        stop_all(nodes).await;
    });
}

/// A follower whose data directory is wiped (its disk replaced) and that
/// restarts on the empty directory with the same node id, after the leader
/// snapshotted and purged its log, catches up from the leader's snapshot, serves
/// the leader's jobs, and restarts from its disk. Its log went back to empty
/// behind what the leader had seen it match: the leader searches again for
/// where the logs match (openraft's `loosen-follower-log-revert`). Before, the
/// leader sent it its unpurged entries as if they began the log, and the node
/// stopped on "try to get log at index 0 but got Some(..)" at every start (a
/// debug build's leader panicked instead).
#[test]
fn a_wiped_node_rejoins_with_its_id_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let (mut nodes, leader, wiped) = three_led(tmp.path(), &router).await;
        let mut keys = Vec::new();
        for i in 0..20 {
            keys.push(push(&nodes[&leader].1, &format!("spider{}", i % 3)).await.unwrap());
        }
        let lr = nodes[&leader].0.clone();
        let at = snapshot_now(&lr).await;
        for i in 0..10 {
            keys.push(push(&nodes[&leader].1, &format!("more{}", i % 3)).await.unwrap());
        }
        // The leader has seen the node match its log up to here, past the snapshot.
        let end = lr.metrics().borrow().last_applied.unwrap().index;
        let matched = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
            let r = m.replication.as_ref().and_then(|r| r.get(&wiped).copied().flatten());
            r.is_some_and(|l| l.index >= end)
        };
        lr.wait(Some(Duration::from_secs(10))).metrics(matched, "matched").await.unwrap();
        assert!(at < end, "the leader keeps entries after its snapshot: {at} >= {end}");

        let (raft, node) = nodes.remove(&wiped).unwrap();
        router.remove(wiped);
        close(stop(raft, node).await);
        std::fs::remove_dir_all(dir(wiped)).unwrap();

        for i in 0..10 {
            keys.push(push(&nodes[&leader].1, &format!("later{}", i % 3)).await.unwrap());
        }
        for k in keys.iter().step_by(4) {
            finish(&nodes[&leader].1, *k).await.unwrap();
        }
        // The log before the snapshot goes; the entries the node matched after it stay.
        lr.trigger().purge_log(at).await.unwrap();
        lr.wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= at), "purged")
            .await
            .unwrap();

        // The same id on an empty directory.
        let (raft, node) = start(wiped, &dir(wiped), &router).await;
        keys.push(push(&nodes[&leader].1, "after").await.unwrap());
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        wait_applied(&raft, end).await;
        let lm = lr.metrics().borrow().clone();
        assert!(lm.running_state.is_ok() && lm.state == openraft::ServerState::Leader, "the leader goes on: {lm:?}");
        let want = jobs_of(&nodes[&leader].1);
        assert_eq!(want.len(), keys.len());
        assert_eq!(jobs_of(&node), want, "the wiped node holds what the leader holds");
        let fm = raft.metrics().borrow().clone();
        assert!(fm.snapshot.is_some_and(|s| s.index >= at), "it installed the snapshot: {fm:?}");
        assert!(fm.purged.is_some_and(|p| p.index >= at), "its log begins after the snapshot: {fm:?}");

        // It restarts from its disk, keeps up, and every node checks clean.
        router.remove(wiped);
        close(stop(raft, node).await);
        let (raft, node) = start(wiped, &dir(wiped), &router).await;
        assert_eq!(jobs_of(&node), want, "open shows the installed and applied state");
        let k = push(&nodes[&leader].1, "last").await.unwrap();
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        wait_applied(&raft, end).await;
        assert!(has(&node, k));
        nodes.insert(wiped, (raft, node));
        drop(lr);
        stop_all_checked(&mut nodes, &router, dir).await;
    });
}

/// A follower the leader reaches only with the chunks of a long snapshot
/// transfer counts each chunk as hearing from the leader: it does not campaign
/// while they come (openraft 0.9 takes chunks outside its election timer, and a
/// voter installing a large snapshot used to campaign and unseat the leader).
/// Chunks of a lower vote (a deposed leader's) hold nothing off: it campaigns.
#[test]
fn a_follower_receiving_snapshot_chunks_does_not_campaign() {
    use jobq::cluster::snapshot::receive::receive_chunk;
    use openraft::raft::InstallSnapshotRequest;
    let tmp = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let router = Router::default();
        let (nodes, leader, follower) = three_led(tmp.path(), &router).await;
        push(&nodes[&leader].1, "s").await.unwrap();
        let lm = nodes[&leader].0.metrics().borrow().clone();
        let fr = &nodes[&follower].0;
        wait_applied(fr, lm.last_applied.unwrap().index).await;
        let term = fr.metrics().borrow().current_term;
        router.isolate(follower, true);
        let meta = jobq::cluster::snapshot::SnapMeta {
            last_log_id: lm.last_applied,
            last_membership: lm.membership_config.as_ref().clone(),
            snapshot_id: "a-long-transfer".into(),
        };
        let mut offset = 0;
        let until = std::time::Instant::now() + Duration::from_millis(8 * ELECTION_MS);
        while std::time::Instant::now() < until {
            let data = vec![0u8; 100];
            let req = InstallSnapshotRequest { vote: lm.vote, meta: meta.clone(), offset, data, done: false };
            receive_chunk(fr, req).await.unwrap();
            offset += 100;
            // Well inside the election timeout, so that a loaded machine's late
            // wake-up is not taken for a transfer that stopped.
            tokio::time::sleep(Duration::from_millis(ELECTION_MS / 4)).await;
        }
        let m = fr.metrics().borrow().clone();
        assert_eq!(m.current_term, term, "the follower campaigned while the chunks came: {m:?}");
        let stale = openraft::Vote::new_committed(term - 1, leader);
        let meta = jobq::cluster::snapshot::SnapMeta { snapshot_id: "a-stale-transfer".into(), ..meta };
        let until = std::time::Instant::now() + Duration::from_millis(8 * ELECTION_MS);
        while std::time::Instant::now() < until {
            let req =
                InstallSnapshotRequest { vote: stale, meta: meta.clone(), offset: 0, data: vec![0; 100], done: false };
            receive_chunk(fr, req).await.unwrap();
            tokio::time::sleep(Duration::from_millis(ELECTION_MS / 4)).await;
        }
        let m = fr.metrics().borrow().clone();
        assert!(m.current_term > term, "chunks of a lower vote kept a cut-off follower from campaigning: {m:?}");
        router.isolate(follower, false);
        stop_all(nodes).await;
    });
}

/// A node's snapshot as the bytes a receiver gets.
async fn snapshot_bytes(dir: &std::path::Path) -> (jobq::cluster::snapshot::SnapMeta, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let fs: Arc<dyn jobq::fs::FileSystem> = Arc::new(jobq::fs::RealFs);
    let (meta, mut stream) = jobq::cluster::snapshot::build::current(&fs, dir).unwrap().expect("a snapshot");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    (meta, bytes)
}

/// The bytes of the snapshot in `snap_dir` (a `snap-<index>` directory).
async fn snapshot_bytes_of(snap_dir: &std::path::Path) -> (jobq::cluster::snapshot::SnapMeta, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let name = snap_dir.file_name().unwrap().to_str().unwrap();
    let index = jobq::cluster::snapshot::build::parse_dir_name(name).unwrap();
    let copy = tempfile::tempdir().unwrap();
    let into = copy.path().join(jobq::cluster::snapshot::build::dir_name(index));
    std::fs::create_dir(&into).unwrap();
    for f in std::fs::read_dir(snap_dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), into.join(f.file_name())).unwrap();
    }
    let fs: Arc<dyn jobq::fs::FileSystem> = Arc::new(jobq::fs::RealFs);
    let (meta, mut stream) = jobq::cluster::snapshot::build::current(&fs, copy.path()).unwrap().expect("a snapshot");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    (meta, bytes)
}

/// Install `bytes` on `node` as if received.
async fn install(
    node: &jobq::cluster::Node,
    meta: &jobq::cluster::snapshot::SnapMeta,
    bytes: &[u8],
) -> jobq::Result<()> {
    use tokio::io::AsyncWriteExt;
    let fs: Arc<dyn jobq::fs::FileSystem> = Arc::new(jobq::fs::RealFs);
    let mut s = jobq::cluster::snapshot::install::receiving(&fs, node.store().dir()).unwrap();
    s.write_all(bytes).await.unwrap();
    // A stream that does not check whole is refused when its last chunk arrives
    // (the sender tries again), and by the install itself.
    let received = s.shutdown().await;
    let installed = jobq::cluster::snapshot::install::install(node, meta, &s);
    if received.is_err() {
        assert!(installed.is_err(), "the install took a stream refused on arrival: {received:?}");
    }
    installed
}

fn current(dir: &std::path::Path) -> Option<u64> {
    jobq::store::layout::read_current(&jobq::fs::RealFs, dir).unwrap()
}

/// Three nodes after 25 pushes, the leader's snapshot, 5 more pushes applied
/// everywhere; then a follower (`other`) stopped and cut off, its node kept.
struct Stopped {
    nodes: BTreeMap<u64, (Raft, Node)>,
    leader: u64,
    other: u64,
    node: Node,
    meta: jobq::cluster::snapshot::SnapMeta,
    bytes: Vec<u8>,
    /// The last entry applied.
    end: u64,
}

async fn snapshot_then_stop_one(tmp: &std::path::Path, router: &Router) -> Stopped {
    let (mut nodes, leader, other) = three_led(tmp, router).await;
    for i in 0..25 {
        push(&nodes[&leader].1, &format!("spider{}", i % 3)).await.unwrap();
    }
    nodes[&leader].0.trigger().snapshot().await.unwrap();
    let lr = nodes[&leader].0.clone();
    lr.wait(Some(Duration::from_secs(10))).metrics(|m| m.snapshot.is_some(), "snapshot").await.unwrap();
    let (meta, bytes) = snapshot_bytes(&tmp.join(format!("n{leader}"))).await;
    for _ in 0..5 {
        push(&nodes[&leader].1, "after").await.unwrap();
    }
    let end = lr.metrics().borrow().last_applied.unwrap().index;
    wait_applied(&nodes[&other].0, end).await;
    let (raft, node) = nodes.remove(&other).unwrap();
    router.remove(other);
    jobq::cluster::proposer::detach(&node);
    raft.shutdown().await.unwrap();
    drop(raft);
    Stopped { nodes, leader, other, node, meta, bytes, end }
}

/// Close `node` (`other`'s), start it again from `dir`: it applies up to `end`
/// and holds the leader's jobs. Then every node stops.
async fn restart_as_the_leader(
    mut nodes: BTreeMap<u64, (Raft, Node)>,
    leader: u64,
    other: u64,
    node: Node,
    dir: &std::path::Path,
    router: &Router,
    end: u64,
) {
    let store = node.store().clone();
    drop(node);
    close(store);
    let (raft, node) = start(other, dir, router).await;
    wait_applied(&raft, end).await;
    assert_eq!(jobs_of(&node), jobs_of(&nodes[&leader].1));
    nodes.insert(other, (raft, node));
    stop_all(nodes).await;
}

/// A damaged or cut snapshot is refused before anything of the node changes;
/// a good one installs, and the entries the node held after its last one stay
/// in its log (they may have counted toward a majority).
#[test]
fn an_install_refuses_damage_and_keeps_the_entries_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let Stopped { nodes, leader, other, node, meta, bytes, end } =
            snapshot_then_stop_one(tmp.path(), &router).await;
        let at = meta.last_log_id.unwrap().index;
        let before = (current(&dir(other)), jobs_of(&node));

        // Damage anywhere (head, table, a segment's header, frames, the end) or a cut.
        let len = bytes.len();
        for at in [3, 20, 40, 70, 150, 200, 12_300, len / 2, len - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(install(&node, &meta, &bad).await.is_err(), "a flipped byte at {at} of {len}");
            assert_eq!((current(&dir(other)), jobs_of(&node)), before, "the node is as it was");
        }
        assert!(install(&node, &meta, &bytes[..len - 1]).await.is_err(), "a cut snapshot");
        let mut other_meta = meta.clone();
        other_meta.last_log_id = Some(jobq::cluster::LogId::new(openraft::CommittedLeaderId::new(99, 1), at));
        assert!(install(&node, &other_meta, &bytes).await.is_err(), "a snapshot of another log id");
        assert_eq!((current(&dir(other)), jobs_of(&node)), before);

        install(&node, &meta, &bytes).await.unwrap();
        assert!(current(&dir(other)) > before.0, "a new generation");
        let held = node.store().raft_entries().unwrap().last().unwrap().head.index;
        assert_eq!(held, end, "the entries after the snapshot's stay");
        restart_as_the_leader(nodes, leader, other, node, &dir(other), &router, end).await;
    });
}

/// openraft hands a snapshot to the state machine and purges the log up to its
/// last entry at once, on its own task: the purge may run before the install
/// starts. The entries the node held after the snapshot's last one stay then
/// too (openraft counts them as the node's log, and appends after them).
#[test]
fn an_install_after_the_purge_to_its_last_entry_keeps_the_entries_after_it() {
    use openraft::storage::RaftLogStorage;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let Stopped { nodes, leader, other, node, meta, bytes, end } =
            snapshot_then_stop_one(tmp.path(), &router).await;

        // The purge openraft issues with the install, first.
        let mut log = jobq::cluster::LogStore::new(node.clone());
        log.purge(meta.last_log_id.unwrap()).await.unwrap();
        install(&node, &meta, &bytes).await.unwrap();
        let held = node.store().raft_entries().unwrap().last().unwrap().head.index;
        assert_eq!(held, end, "the entries after the snapshot's stay in the log");
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(end), "and in the node's log table");
        drop(log);
        restart_as_the_leader(nodes, leader, other, node, &dir(other), &router, end).await;
    });
}

/// A snapshot being sent stays whole while its node builds others (of the same
/// entry again, of a later one), and goes once its last stream ends: a sender
/// whose snapshot's files went beside its stream failed the next read, which
/// stopped its Raft.
#[test]
fn a_snapshot_being_sent_stays_until_its_stream_ends() {
    use jobq::cluster::snapshot::build;
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let (nodes, leader, _) = three_led(tmp.path(), &router).await;
        let node = nodes[&leader].1.clone();
        for i in 0..25 {
            push(&node, &format!("spider{}", i % 3)).await.unwrap();
        }
        let built = |node: &jobq::cluster::Node| {
            let node = node.clone();
            async move { tokio::task::spawn_blocking(move || build::build(&node).unwrap().0).await.unwrap() }
        };
        let at = built(&node).await.last_log_id.unwrap().index;
        let (meta, mut sending) = build::current_of(&node).unwrap().expect("a snapshot");
        assert_eq!(meta.last_log_id.unwrap().index, at);
        let mut begun = vec![0u8; 100];
        sending.read_exact(&mut begun).await.unwrap();
        // The same entry again, then a later one.
        assert_eq!(built(&node).await.last_log_id.unwrap().index, at);
        for _ in 0..5 {
            push(&node, "after").await.unwrap();
        }
        let later = built(&node).await.last_log_id.unwrap().index;
        assert!(later > at);
        let snap_dir = |i: u64| dir(leader).join(build::dir_name(i));
        assert!(snap_dir(at).exists(), "the snapshot being sent stays");
        let mut rest = Vec::new();
        sending.read_to_end(&mut rest).await.unwrap();
        begun.extend_from_slice(&rest);
        let (_, whole) = snapshot_bytes_of(&snap_dir(at)).await;
        assert_eq!(begun, whole, "the stream reads the snapshot whole");
        drop(sending);
        assert!(!snap_dir(at).exists(), "and goes after its stream");
        assert!(snap_dir(later).exists());
        drop(node);
        stop_all(nodes).await;
    });
}

fn first_segment(dir: &std::path::Path) -> u32 {
    let gen = current(dir).unwrap();
    let gen_dir = jobq::store::layout::gen_dir(dir, gen);
    jobq::log::segment::list(&jobq::fs::RealFs, &gen_dir).unwrap()[0]
}

async fn reclaim(node: &jobq::cluster::Node) -> jobq::store::ReclaimReport {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || store.reclaim()).await.unwrap().unwrap()
}

/// Online compaction on a cluster: nothing goes before Raft purged it; the
/// leader relocates through Raft; a follower removes a segment only once the
/// leader's relocation applied there; every node keeps the same jobs, restarts
/// to them, and checks clean.
#[test]
fn compaction_relocates_through_raft_and_removes_only_what_raft_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let (mut nodes, leader, follower) = three_led(tmp.path(), &router).await;
        // Jobs that stay as first written (current in the oldest segment), then
        // jobs finished later (superseded there).
        for i in 0..10 {
            push(&nodes[&leader].1, &format!("kept{i}")).await.unwrap();
        }
        let mut keys = Vec::new();
        for i in 0..40 {
            keys.push(push(&nodes[&leader].1, &format!("spider{}", i % 4)).await.unwrap());
        }
        for k in &keys {
            finish(&nodes[&leader].1, *k).await.unwrap();
        }
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        for (r, _) in nodes.values() {
            wait_applied(r, end).await;
        }
        let r = reclaim(&nodes[&leader].1).await;
        assert!(r.segments.is_empty(), "nothing goes before Raft purged it: {r:?}");
        for (r, _) in nodes.values() {
            r.trigger().snapshot().await.unwrap();
            let m = r.wait(Some(Duration::from_secs(10))).metrics(|m| m.snapshot.is_some(), "snapshot").await.unwrap();
            r.trigger().purge_log(m.snapshot.unwrap().index).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = reclaim(&nodes[&follower].1).await;
        assert!(r.segments.is_empty(), "a follower waits for the leader's relocation: {r:?}");
        assert_eq!(first_segment(&dir(follower)), 1);

        let r = reclaim(&nodes[&leader].1).await;
        assert!(!r.segments.is_empty() && r.records_relocated > 0, "the leader relocates and removes: {r:?}");
        assert!(first_segment(&dir(leader)) > 1);
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        for (r, _) in nodes.values() {
            wait_applied(r, end).await;
        }
        let r = reclaim(&nodes[&follower].1).await;
        assert!(!r.segments.is_empty() && r.records_relocated == 0, "the follower removes, writes nothing: {r:?}");
        let want = jobs_of(&nodes[&leader].1);
        assert_eq!(want.len(), 50);
        for (id, (_, n)) in &nodes {
            assert_eq!(jobs_of(n), want, "node {id}");
        }
        // Writes go on; then every node restarts to the same jobs and checks clean.
        push(&nodes[&leader].1, "after").await.unwrap();
        stop_all_checked(&mut nodes, &router, dir).await;
        // The two compacted nodes alone (their membership entries went with the
        // removed segments: it comes from their snapshots) elect a leader.
        let compacted = [leader, follower];
        for id in compacted {
            nodes.insert(id, start(id, &dir(id), &router).await);
        }
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;
        let k = push(&nodes[&leader].1, "restarted").await.unwrap();
        let third = (1..=3).find(|id| !compacted.contains(id)).unwrap();
        nodes.insert(third, start(third, &dir(third), &router).await);
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        for (r, _) in nodes.values() {
            wait_applied(r, end).await;
        }
        let want = jobs_of(&nodes[&leader].1);
        assert_eq!(want.len(), 52);
        for (id, (_, n)) in &nodes {
            assert_eq!(jobs_of(n), want, "node {id} after the restart");
            assert!(has(n, k));
        }
        stop_all(nodes).await;
    });
}

async fn purge_expired(node: &jobq::cluster::Node) -> jobq::Result<u64> {
    let store = node.store().clone();
    tokio::task::spawn_blocking(move || store.purge_expired()).await.unwrap()
}

/// Retention on a cluster: which jobs expired is decided once, on the leader's
/// clock. A follower whose clock is far ahead purges nothing (`NotLeader`); the
/// leader's tombstones are an entry, so every node drops the same jobs, restarts
/// to them and checks clean.
#[test]
fn retention_purges_on_the_leaders_clock_and_every_node_applies_it() {
    use jobq::model::ManualClock;
    const KEEP: Duration = Duration::from_secs(60);
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    let start_ms = 1_700_000_000_000;
    let clocks: Vec<Arc<ManualClock>> = (0..3).map(|_| Arc::new(ManualClock::new(start_ms))).collect();
    let opts = |id: u64| jobq::Options {
        clock: clocks[id as usize - 1].clone(),
        retain_deleted: Some(KEEP),
        ..node_options()
    };
    runtime().block_on(async {
        let router = Router::default();
        let mut nodes = std::collections::BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, start_with(id, &dir(id), &router, opts(id)).await);
        }
        let members = (1..=3)
            .map(|id| (id, openraft::BasicNode::new(format!("n{id}"))))
            .collect::<std::collections::BTreeMap<_, _>>();
        nodes[&1].0.initialize(members).await.unwrap();
        let rafts: Vec<&Raft> = nodes.values().map(|(r, _)| r).collect();
        let leader = leader_of(&rafts).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let mut keys = Vec::new();
        for i in 0..12 {
            keys.push(push(&nodes[&leader].1, &format!("s{}", i % 3)).await.unwrap());
        }
        let store = nodes[&leader].1.store().clone();
        let deleted = keys[..8].to_vec();
        tokio::task::spawn_blocking(move || {
            for k in deleted {
                let u =
                    jobq::store::request::parse_update(&format!(r#"{{"key":"{k}","state":"deleted"}}"#), 1).unwrap();
                store.update(1, &[u], None).unwrap();
            }
        })
        .await
        .unwrap();
        let settled = |nodes: &std::collections::BTreeMap<u64, (Raft, jobq::cluster::Node)>| {
            nodes[&leader].0.metrics().borrow().last_applied.unwrap().index
        };
        let end = settled(&nodes);
        for (r, _) in nodes.values() {
            wait_applied(r, end).await;
        }
        let deleted_on = |n: &jobq::cluster::Node| jobs_of(n).iter().filter(|(_, s)| *s == JobState::Deleted).count();
        // A follower's clock far ahead: it decides nothing.
        clocks[follower as usize - 1].advance(10 * KEEP.as_millis() as u64);
        let e = purge_expired(&nodes[&follower].1).await.unwrap_err();
        assert!(matches!(e, jobq::Error::NotLeader { .. }), "{e}");
        // The leader's clock not yet past the retention: nothing expired.
        assert_eq!(purge_expired(&nodes[&leader].1).await.unwrap(), 0);
        for (id, (_, n)) in &nodes {
            assert_eq!(deleted_on(n), 8, "node {id}");
        }
        clocks[leader as usize - 1].advance(2 * KEEP.as_millis() as u64);
        assert_eq!(purge_expired(&nodes[&leader].1).await.unwrap(), 8);
        assert_eq!(purge_expired(&nodes[&leader].1).await.unwrap(), 0, "purged once");
        let end = settled(&nodes);
        for (r, _) in nodes.values() {
            wait_applied(r, end).await;
        }
        let want = jobs_of(&nodes[&leader].1);
        assert_eq!(want.len(), 4);
        for (id, (_, n)) in &nodes {
            assert_eq!(jobs_of(n), want, "node {id}");
            for k in &keys[..8] {
                assert!(!has(n, *k), "{k} purged on node {id}");
            }
        }
        for id in stop_all_checked(&mut nodes, &router, dir).await {
            let store =
                jobq::Store::open(dir(id), jobq::Options { raft_log: true, ..jobq::Options::default() }).unwrap();
            assert_eq!(
                store
                    .snapshot()
                    .count(1, &jobq::query::Filter { states: JobState::ALL.to_vec(), ..Default::default() })
                    .unwrap(),
                4,
                "node {id} reopened"
            );
            store.close().unwrap();
        }
    });
}

/// A follower behind by many large entries catches up from the log: each
/// replication request carries about a megabyte, not the 300 entries openraft
/// asks for (300 entries of a megabyte were never written within the heartbeat
/// interval, openraft's timeout for a request, so the follower never caught up).
#[test]
fn a_follower_behind_by_large_entries_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |id: u64| tmp.path().join(format!("n{id}"));
    runtime().block_on(async {
        let router = Router::default();
        let (mut nodes, leader, behind) = three_led(tmp.path(), &router).await;
        push(&nodes[&leader].1, "s").await.unwrap();
        let (raft, node) = nodes.remove(&behind).unwrap();
        router.remove(behind);
        close(stop(raft, node).await);
        // 60 entries of 50 jobs of 20 KB: about 1 MB each.
        let pad = "p".repeat(20_000);
        for i in 0..60 {
            let store = nodes[&leader].1.store().clone();
            let lines: Vec<String> = (0..50).map(|j| format!(r#"{{"spider":"s","pad":"{pad}{i}-{j}"}}"#)).collect();
            tokio::task::spawn_blocking(move || {
                let specs: Vec<_> = lines.iter().map(|l| jobq::store::request::parse_push(l).unwrap()).collect();
                store.push(1, &specs, Some("tester")).unwrap();
            })
            .await
            .unwrap();
        }
        let end = nodes[&leader].0.metrics().borrow().last_applied.unwrap().index;
        // What one request of the leader's carries: about a megabyte, at least one entry.
        {
            use openraft::storage::RaftLogReader;
            let mut log = jobq::cluster::LogStore::new(nodes[&leader].1.clone());
            let got = log.limited_get_log_entries(end - 59, end + 1).await.unwrap();
            assert!((1..=2).contains(&got.len()), "{} entries of about 1 MB in one request", got.len());
            assert_eq!(got[0].log_id.index, end - 59);
        }
        let (raft, node) = start(behind, &dir(behind), &router).await;
        wait_applied(&raft, end).await;
        assert_eq!(jobs_of(&node), jobs_of(&nodes[&leader].1));
        nodes.insert(behind, (raft, node));
        stop_all_checked(&mut nodes, &router, dir).await;
    });
}
