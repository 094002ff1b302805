//! `jobq serve --node-id`: one node of a Raft cluster (docs/cluster.md). Raft
//! traffic rides the API port under `/_raft/*`, signed with the cluster key
//! ([`sign`]); [`net`] is openraft's network over it, [`routes`] its server
//! side, write forwarding, read barriers and `/cluster`.

pub mod batch;
pub mod client;
pub mod net;
pub mod routes;
pub mod seed;
pub mod serve;
pub mod sign;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::CheckIsLeaderError;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use batch::Batch;
use client::{Failed, Pool};
use jobq::cluster::{Node, TypeConfig};
use net::{Acks, HttpNet};
use sign::ClusterKey;

pub type Raft = openraft::Raft<TypeConfig>;

pub const HELLO: &str = "/_raft/hello";
pub const READ_INDEX: &str = "/_raft/read-index";
pub const FORWARD: &str = "/_raft/forward";

/// What a read waits for (`--read-consistency`, `--no-read-lease`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// The leader's read index confirmed, and applied here, before the read;
    /// confirmed by the leader's lease while it holds (`lease`), else by a
    /// heartbeat round.
    Linearizable { lease: bool },
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
    /// Idle connections to peers, shared with openraft's network.
    pool: Pool,
    /// The followers' answers to this node's appends (the leader's lease).
    acks: Acks,
    /// The leader's read indexes (leadership confirmed by a heartbeat round),
    /// one round for every read here and every follower's request waiting.
    leader_reads: Batch<Result<Option<u64>, String>>,
    /// A follower's `/_raft/read-index` requests, one for every read waiting.
    follower_reads: Batch<Result<Option<u64>, String>>,
    /// Read indexes the leader's lease answered.
    lease_reads: AtomicU64,
    /// When this process started Raft.
    started: std::time::Instant,
    /// How long an added member may take to catch up (`--member-catch-up`).
    pub member_catch_up: Duration,
}

/// What a read index round answers: the index a read must see applied (none
/// before the first entry), or why there is none.
type ReadIndexResult = Result<Option<u64>, String>;
/// The longest a forwarded write may take at the leader beyond its own `wait`
/// (a write there waits up to 10 s for earlier entries to apply, then up to
/// 10 s for a majority). A leader that is replaced ends the wait sooner.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

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
        net: &HttpNet,
    ) -> Cluster {
        Cluster {
            id,
            raft,
            node,
            key,
            consistency,
            election,
            pool: net.pool.clone(),
            acks: net.acks.clone(),
            leader_reads: Batch::default(),
            follower_reads: Batch::default(),
            lease_reads: AtomicU64::new(0),
            started: std::time::Instant::now(),
            member_catch_up: Duration::from_secs(300),
        }
    }

    /// The leader as this node knows it: its id and address. This node only
    /// once it leads (a restarted node's own old vote names it, as a follower).
    pub fn leader(&self) -> Option<(u64, String)> {
        known_leader(self.id, self.election, &self.raft.metrics().borrow())
    }

    /// This node is no longer a member (`POST /cluster/members` removed it).
    pub fn removed(&self) -> bool {
        routes::removed(self.id, &self.raft.metrics().borrow())
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
        let mut link = self.pool.take(addr);
        let r = link.post(path, body, timeout).await;
        self.pool.give_back(link);
        r
    }

    /// Resolves once this node knows a leader other than `leader`: what was
    /// forwarded to `leader` will not be answered by it any more (or too late
    /// to tell).
    pub async fn replaced(&self, leader: u64) {
        // The server metrics change with the vote, state, leader or membership
        // only, not with every entry applied: a forwarded write wakes on those.
        let mut rx = self.raft.server_metrics();
        loop {
            if rx.borrow_and_update().current_leader.is_some_and(|l| l != leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
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
            Some((id, _)) if id == self.id => self.leader_read_index().await?,
            Some((id, addr)) => self.follower_reads.run(|| self.ask_read_index(id, addr, patience)).await?,
        };
        let Some(index) = index else { return Ok(()) };
        // Applied already (the store shows every entry up to it): no wait.
        if self.node.applied().is_some_and(|a| a.index >= index) {
            return Ok(());
        }
        self.raft
            .wait(Some(patience))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| format!("this node did not apply the read index {index} in time: {e}"))
    }

    /// At the leader: the index a read must see applied, from a leadership
    /// confirmation that began after this call did (shared, [`Batch`]).
    pub async fn leader_read_index(&self) -> ReadIndexResult {
        if let Some(index) = self.lease_read_index() {
            self.lease_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(index));
        }
        let deadline = tokio::time::Instant::now() + self.patience();
        self.leader_reads
            .run(|| async {
                // A heartbeat round gets one heartbeat interval: one that missed
                // its quorum (a slow peer, a busy machine) is tried again.
                loop {
                    let e = match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
                        Ok(Ok((read, _))) => return Ok(read.map(|l| l.index)),
                        Err(_) => return Err("leadership not confirmed in time".into()),
                        Ok(Err(e)) => e,
                    };
                    let quorum_missed =
                        matches!(e, openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)));
                    if !quorum_missed || tokio::time::Instant::now() >= deadline {
                        return Err(format!("leadership not confirmed: {e}"));
                    }
                }
            })
            .await
    }

    /// One `/_raft/read-index` request to the leader.
    async fn ask_read_index(&self, id: u64, addr: String, patience: Duration) -> ReadIndexResult {
        let body = self
            .post(&addr, READ_INDEX, Vec::new(), patience)
            .await
            .and_then(|a| if a.status == 200 { Ok(a.body) } else { Err(Failed::Status(a.status, a.body)) })
            .map_err(|e| format!("the leader (node {id}) gave no read index: {e}"))?;
        let r: ReadIndex =
            serde_json::from_slice(&body).map_err(|e| format!("the leader's read index does not decode: {e}"))?;
        Ok(r.index)
    }

    /// At the leader, while its lease holds: the committed index, without a
    /// heartbeat round (docs/cluster.md, "Leader lease"). The lease: a majority
    /// (this node included) answered appends of this term sent less than
    /// [`Cluster::lease`] ago, and each of them refuses to vote for another
    /// node for openraft's lease (the largest election timeout) after it took
    /// one, and elects no one for longer; this node's own saved vote is still
    /// its own leadership, so it granted no other vote either. Then no other
    /// leader exists, and the committed index, once it is of this term (this
    /// leader's first entry committed), covers every write acknowledged before.
    fn lease_read_index(&self) -> Option<u64> {
        if self.consistency != (ReadConsistency::Linearizable { lease: true }) {
            return None;
        }
        let now = std::time::Instant::now();
        let (term, voters) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            if m.state != openraft::ServerState::Leader || membership.get_joint_config().len() != 1 {
                return None;
            }
            (m.current_term, membership.voter_ids().collect::<Vec<u64>>())
        };
        let vote = self.node.vote()?;
        if (vote.term, vote.node, vote.committed) != (term, self.id, true) {
            return None;
        }
        if !lease_holds(self.id, &voters, |v| self.acks.sent(v, term), now, self.lease()) {
            return None;
        }
        let committed = self.node.committed()?;
        (committed.leader_id.term == term).then_some(committed.index)
    }

    /// How long after an append was sent its answer keeps the lease: half the
    /// smallest election timeout, a third of the time the peer refuses votes.
    pub fn lease(&self) -> Duration {
        self.election / 2
    }

    /// openraft's leader lease (the largest election timeout): how long a
    /// follower refuses votes after an append. A process just started forgot
    /// when it last took one, so for that long after starting it neither votes
    /// ([`Cluster::voting`]) nor campaigns: a lease that counted on it before
    /// a restart still holds.
    pub fn hold_votes_after_start(self: &std::sync::Arc<Self>) {
        self.raft.runtime_config().elect(false);
        let c = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((c.started + c.quiet()).into()).await;
            c.raft.runtime_config().elect(true);
        });
    }

    fn quiet(&self) -> Duration {
        self.election * 3 / 2
    }

    /// This node grants votes (not in its first [`Cluster::quiet`] after starting).
    pub fn voting(&self) -> bool {
        self.started.elapsed() >= self.quiet()
    }

    /// Read indexes asked for and rounds that answered them: (as the leader,
    /// as a follower), each (calls, rounds); and how many the leader's lease
    /// answered without a round.
    pub fn read_index_counts(&self) -> ([(u64, u64); 2], u64) {
        ([self.leader_reads.counts(), self.follower_reads.counts()], self.lease_reads.load(Ordering::Relaxed))
    }
}

/// A majority of `voters` (`me` counts) answered appends sent (`sent`) less
/// than `lease` before `now`.
fn lease_holds(
    me: u64,
    voters: &[u64],
    sent: impl Fn(u64) -> Option<std::time::Instant>,
    now: std::time::Instant,
    lease: Duration,
) -> bool {
    let fresh = |v: u64| v == me || sent(v).is_some_and(|at| now.saturating_duration_since(at) < lease);
    voters.iter().filter(|v| fresh(**v)).count() * 2 > voters.len()
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
    let seeding = cluster.node.seeding();
    match cluster.raft.is_initialized().await {
        Ok(true) if seeding => {
            tracing::info!(node = cluster.id, "resuming the seeding of the cluster");
            return seed::seed(cluster, peers).await;
        }
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
        if formed && seeding {
            // Its jobs are in no entry: joining would leave them on this node alone.
            // (It took no cluster traffic meanwhile: routes::raft_call refuses it.)
            tracing::error!(
                node = cluster.id,
                "this node's store holds a single node's jobs, but a peer already holds a cluster: \
                 start this node on an empty directory to join it (the directory is a single node's again)"
            );
            if let Err(e) = cluster.node.abandon_seed() {
                tracing::error!(error = %e, "could not return the directory to a single node");
            }
            std::process::exit(1);
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
    if seeding {
        tracing::info!(node = cluster.id, "seeding a new cluster with this store's jobs");
        return seed::seed(cluster, peers).await;
    }
    let members: BTreeMap<u64, BasicNode> = peers.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
    match cluster.raft.initialize(members).await {
        Ok(()) => tracing::info!(node = cluster.id, "formed the cluster"),
        Err(e) => tracing::warn!(error = %e, "initialize refused (the cluster is already formed)"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_lease_holds_while_a_majority_answered_recently() {
        let now = Instant::now();
        let lease = Duration::from_millis(300);
        let ago = |ms| Some(now - Duration::from_millis(ms));
        // Three voters: one recent answer besides this node's own is a majority.
        assert!(lease_holds(1, &[1, 2, 3], |v| if v == 2 { ago(100) } else { None }, now, lease));
        assert!(lease_holds(1, &[1, 2, 3], |v| if v == 3 { ago(299) } else { ago(5000) }, now, lease));
        // Answers older than the lease, or none: no lease.
        assert!(!lease_holds(1, &[1, 2, 3], |_| ago(300), now, lease));
        assert!(!lease_holds(1, &[1, 2, 3], |_| None, now, lease));
        // Five voters need two answers; a node outside the voters (a learner) never counts.
        assert!(!lease_holds(1, &[1, 2, 3, 4, 5], |v| if v == 2 { ago(1) } else { None }, now, lease));
        assert!(lease_holds(1, &[1, 2, 3, 4, 5], |v| if v <= 3 { ago(1) } else { None }, now, lease));
        assert!(!lease_holds(9, &[1, 2, 3], |v| if v == 9 || v == 1 { ago(1) } else { None }, now, lease));
        // A single voter: itself.
        assert!(lease_holds(1, &[1], |_| None, now, lease));
    }
}
