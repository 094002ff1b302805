//! Seeding a new cluster with a single node's store (docs/cluster.md,
//! "Seeding from a single node"). The seed's jobs are in no Raft entry, so no
//! peer may ever catch up from the log alone: the forming node
//! 1. forms a cluster of itself only and applies its first entries;
//! 2. builds a snapshot (its whole log: the seed's frames and those entries) and
//!    purges the log up to it, so that openraft can bring a peer up to date only
//!    through that snapshot;
//! 3. adds each peer as a learner, waits until each has installed the snapshot
//!    (it matched past the purge point), then makes them all voters;
//! 4. removes its `SEEDING` mark.
//!
//! Each step is idempotent: a restart with the mark still there runs them again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{BasicNode, ServerState};

use super::Cluster;

/// How long one step may wait before it is logged and tried again.
const STEP: Duration = Duration::from_secs(30);
/// How long a peer may take to receive and install the seed's snapshot.
const CATCH_UP: Duration = Duration::from_secs(600);

/// Run the seeding to its end (retrying each step until it succeeds).
pub async fn seed(c: std::sync::Arc<Cluster>, peers: BTreeMap<u64, String>) {
    let mut pause = Duration::from_millis(200);
    loop {
        match step(&c, &peers).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "seeding the cluster: retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One pass; `Ok(true)` once the seeding is done.
async fn step(c: &Cluster, peers: &BTreeMap<u64, String>) -> Result<bool, String> {
    let all: BTreeSet<u64> = peers.keys().copied().collect();
    let voters = |c: &Cluster| -> BTreeSet<u64> {
        c.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    };
    let initialized = c.raft.is_initialized().await.map_err(|e| e.to_string())?;
    if initialized && voters(c) == all {
        // Every peer is a voter: it holds the seed (a learner becomes a voter
        // only after it caught up, through the snapshot).
        c.node.seeded().map_err(|e| e.to_string())?;
        tracing::info!(node = c.id, "seeded the cluster: every peer holds this store's jobs");
        return Ok(true);
    }
    if initialized && voters(c) != BTreeSet::from([c.id]) {
        // Only the membership the seeding made, or the one it ends with, is ever seen here.
        return Err(format!("unexpected voters {:?} while seeding: nothing is changed", voters(c)));
    }
    if !initialized {
        let me = BTreeMap::from([(c.id, BasicNode { addr: peers[&c.id].clone() })]);
        c.raft.initialize(me).await.map_err(|e| format!("forming a cluster of this node: {e}"))?;
        tracing::info!(node = c.id, "seeding: formed a cluster of this node alone");
    }
    // Leading alone, with its entries applied.
    let m = c
        .raft
        .wait(Some(STEP))
        .metrics(
            |m| {
                m.state == ServerState::Leader
                    && m.last_applied.is_some()
                    && m.last_applied.map(|l| l.index) == m.last_log_index
            },
            "leading with every entry applied",
        )
        .await
        .map_err(|e| e.to_string())?;
    let applied = m.last_applied.expect("waited for it");
    if m.snapshot.is_none_or(|s| s.index < applied.index) {
        c.raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        c.raft
            .wait(Some(STEP))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied.index), "a snapshot of the seed")
            .await
            .map_err(|e| e.to_string())?;
    }
    // IMPORTANT: purged before any peer is added: a peer can then only catch up
    // from the snapshot, which holds the seed.
    if m.purged.is_none_or(|p| p.index < applied.index) {
        c.raft.trigger().purge_log(applied.index).await.map_err(|e| e.to_string())?;
        c.raft
            .wait(Some(STEP))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= applied.index), "the log purged up to the seed")
            .await
            .map_err(|e| e.to_string())?;
    }
    for (&id, addr) in peers.iter().filter(|(&id, _)| id != c.id) {
        tracing::info!(node = c.id, peer = id, "seeding: adding a peer as a learner (it gets the snapshot)");
        // Not blocking: openraft counts a learner up to date by entries alone
        // (`replication_lag_threshold`), and the seed is in none.
        let add = c.raft.add_learner(id, BasicNode { addr: addr.clone() }, false);
        match tokio::time::timeout(STEP, add).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("adding node {id}: {e}")),
            Err(_) => return Err(format!("adding node {id}: no answer within {STEP:?}")),
        }
    }
    // Voters only once each holds the snapshot (matched past the purge point):
    // until then the cluster commits on this node alone and keeps taking writes.
    for &id in peers.keys().filter(|id| **id != c.id) {
        let caught_up = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
            matched.is_some_and(|l| l.index >= applied.index)
        };
        c.raft
            .wait(Some(CATCH_UP))
            .metrics(caught_up, "a peer holding the seed")
            .await
            .map_err(|e| format!("node {id} did not install the seed's snapshot within {CATCH_UP:?}: {e}"))?;
        tracing::info!(node = c.id, peer = id, "seeding: the peer holds the seed");
    }
    c.raft.change_membership(all, false).await.map_err(|e| format!("making every peer a voter: {e}"))?;
    Ok(false)
}
