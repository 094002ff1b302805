//! `jobq serve --node-id`: one node of a Raft cluster (docs/cluster.md). Raft
//! traffic rides the API port under `/_raft/*`, signed with the cluster key
//! ([`sign`]); [`net`] is openraft's network over it, [`routes`] its server
//! side, write forwarding, read barriers and `/cluster`.

pub mod client;
pub mod net;
pub mod routes;
pub mod serve;
pub mod sign;

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use client::{Failed, Link};
use jobq::cluster::{Node, TypeConfig};
use sign::ClusterKey;

pub type Raft = openraft::Raft<TypeConfig>;

pub const HELLO: &str = "/_raft/hello";
pub const READ_INDEX: &str = "/_raft/read-index";
pub const FORWARD: &str = "/_raft/forward";

/// What a read waits for (`--read-consistency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// The leader's read index confirmed, and applied here, before the read.
    Linearizable,
    /// The local store as it is.
    Stale,
}

/// A node's part of the cluster, shared by every request.
pub struct Cluster {
    pub id: u64,
    pub raft: Raft,
    /// The store Raft runs on, and its log table.
    pub node: Node,
    pub key: ClusterKey,
    pub consistency: ReadConsistency,
    /// The smallest election timeout.
    pub election: Duration,
    /// Idle connections to peers, for forwarding and read indexes.
    pool: Mutex<Vec<Link>>,
}

/// Idle peer connections kept.
const POOL: usize = 32;
/// The longest a forwarded request may take (long polls wait inside it).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// `/_raft/hello`'s answer: who a peer is and whether it holds a cluster already.
#[derive(Serialize, Deserialize, Debug)]
pub struct Hello {
    pub id: u64,
    pub initialized: bool,
}

/// `/_raft/read-index`'s answer: the index a read must see applied.
#[derive(Serialize, Deserialize, Debug)]
pub struct ReadIndex {
    pub index: Option<u64>,
}

impl Cluster {
    pub fn new(
        id: u64,
        raft: Raft,
        node: Node,
        key: ClusterKey,
        consistency: ReadConsistency,
        election: Duration,
    ) -> Cluster {
        Cluster { id, raft, node, key, consistency, election, pool: Mutex::new(Vec::new()) }
    }

    /// The leader as this node knows it: its id and address. This node only
    /// once it leads (a restarted node's own old vote names it, as a follower).
    pub fn leader(&self) -> Option<(u64, String)> {
        known_leader(self.id, self.election, &self.raft.metrics().borrow())
    }

    /// [`Cluster::leader`], waiting up to two election timeouts for one (an
    /// election under way, a node just started).
    pub async fn await_leader(&self) -> Option<(u64, String)> {
        if let Some(l) = self.leader() {
            return Some(l);
        }
        let (id, lease) = (self.id, self.election);
        let wait = self.raft.wait(Some(self.election * 2));
        let m = wait.metrics(|m| known_leader(id, lease, m).is_some(), "a leader").await.ok()?;
        known_leader(id, lease, &m)
    }

    /// A signed POST to `addr`, on a pooled connection.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<client::Answer, Failed> {
        let pooled = {
            let mut p = self.pool.lock();
            p.iter().position(|l| l.addr == addr).map(|i| p.swap_remove(i))
        };
        let mut link = pooled.unwrap_or_else(|| Link::new(addr.to_string(), self.key.clone()));
        let r = link.post(path, body, timeout).await;
        if r.is_ok() {
            let mut p = self.pool.lock();
            if p.len() < POOL {
                p.push(link);
            }
        }
        r
    }

    /// How long a read or a forward waits for the cluster before giving up.
    pub fn patience(&self) -> Duration {
        (self.election * 5).max(Duration::from_secs(3))
    }

    /// Wait until a read here sees every write acknowledged before it began
    /// (linearizable), or at once (stale). `Err`: why not (the caller answers 503).
    pub async fn read_barrier(&self) -> Result<(), String> {
        if self.consistency == ReadConsistency::Stale {
            return Ok(());
        }
        let patience = self.patience();
        let index = match self.await_leader().await {
            None => return Err("no leader is known yet".into()),
            Some((id, _)) if id == self.id => {
                return match tokio::time::timeout(patience, self.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("leadership not confirmed: {e}")),
                    Err(_) => Err("leadership not confirmed in time".into()),
                };
            }
            Some((id, addr)) => {
                let body = self
                    .post(&addr, READ_INDEX, Vec::new(), patience)
                    .await
                    .and_then(|a| if a.status == 200 { Ok(a.body) } else { Err(Failed::Status(a.status, a.body)) })
                    .map_err(|e| format!("the leader (node {id}) gave no read index: {e}"))?;
                let r: ReadIndex = serde_json::from_slice(&body)
                    .map_err(|e| format!("the leader's read index does not decode: {e}"))?;
                r.index
            }
        };
        let Some(index) = index else { return Ok(()) };
        self.raft
            .wait(Some(patience))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| format!("this node did not apply the leader's read index {index} in time: {e}"))
    }
}

/// The leader `m` names; this node (`me`) only while a quorum acknowledged it
/// within `lease`: a node restarted from its own committed vote thinks it leads
/// until a peer tells it otherwise.
fn known_leader(me: u64, lease: Duration, m: &openraft::RaftMetrics<u64, BasicNode>) -> Option<(u64, String)> {
    let leads = m.state == openraft::ServerState::Leader
        && m.millis_since_quorum_ack.is_some_and(|ms| u128::from(ms) <= lease.as_millis());
    let id = m.current_leader.filter(|&l| l != me || leads)?;
    let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
    Some((id, addr))
}

/// Form the cluster on first start: the lowest id initializes it with every
/// peer once each answers and none holds a cluster yet; the others wait to be
/// contacted. A node with a log or vote (a restart) never initializes again.
pub async fn form(cluster: std::sync::Arc<Cluster>, peers: BTreeMap<u64, String>) {
    match cluster.raft.is_initialized().await {
        Ok(true) => {
            tracing::info!(node = cluster.id, "rejoining the cluster from the log");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "raft stopped before the cluster formed");
            return;
        }
    }
    if peers.keys().next() != Some(&cluster.id) {
        tracing::info!(node = cluster.id, "waiting for the lowest node id to form the cluster");
        return;
    }
    loop {
        let mut missing = Vec::new();
        let mut formed = false;
        for (&id, addr) in peers.iter().filter(|(&id, _)| id != cluster.id) {
            match cluster.post(addr, HELLO, Vec::new(), Duration::from_secs(2)).await {
                Ok(a) if a.status == 200 => match serde_json::from_slice::<Hello>(&a.body) {
                    Ok(h) if h.id != id => {
                        tracing::error!(peer = addr, expected = id, answered = h.id, "a peer has another node id");
                        missing.push(id);
                    }
                    Ok(h) => formed |= h.initialized,
                    Err(_) => missing.push(id),
                },
                Ok(a) => {
                    tracing::warn!(
                        peer = addr,
                        status = a.status,
                        "a peer refused the hello (is the cluster key the same?)"
                    );
                    missing.push(id);
                }
                Err(_) => missing.push(id),
            }
        }
        if formed {
            tracing::info!("a peer already holds the cluster; waiting to be contacted");
            return;
        }
        if missing.is_empty() {
            break;
        }
        tracing::info!(?missing, "waiting for every peer to answer before forming the cluster");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members: BTreeMap<u64, BasicNode> = peers.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
    match cluster.raft.initialize(members).await {
        Ok(()) => tracing::info!(node = cluster.id, "formed the cluster"),
        Err(e) => tracing::warn!(error = %e, "initialize refused (the cluster is already formed)"),
    }
}
