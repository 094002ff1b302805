//! An in-process network for clusters in one process (tests, soaks): messages
//! go straight to the target's `Raft`, unless the router cuts the link (a node
//! isolated from the others, one link dropped) or its faults strike: a message
//! or its reply lost, delayed (so messages overtake each other), or delivered
//! twice.

// openraft's error types are large by design; its traits return them.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;

use super::snapshot::receive::receive_chunk;
use super::TypeConfig;

pub type Raft = openraft::Raft<TypeConfig>;

/// Faults every message meets, each drawn on its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Chance (0 to 1) that a message, or its reply, is lost.
    pub drop: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
    /// Most delay a message meets, drawn uniformly (0: none).
    pub max_delay: std::time::Duration,
}

#[derive(Default)]
struct Links {
    faults: Faults,
    /// xorshift state for the fault draws.
    rng: u64,
    nodes: BTreeMap<u64, Raft>,
    /// Nodes cut off from every other node.
    isolated: BTreeSet<u64>,
    /// Links cut one way: (from, to).
    cut: BTreeSet<(u64, u64)>,
}

/// Routes every node's messages to the others.
#[derive(Clone, Default)]
pub struct Router {
    links: Arc<Mutex<Links>>,
}

impl Router {
    pub fn add(&self, id: u64, raft: Raft) {
        self.links.lock().nodes.insert(id, raft);
    }

    pub fn remove(&self, id: u64) -> Option<Raft> {
        self.links.lock().nodes.remove(&id)
    }

    pub fn isolate(&self, id: u64, isolated: bool) {
        let mut l = self.links.lock();
        if isolated {
            l.isolated.insert(id);
        } else {
            l.isolated.remove(&id);
        }
    }

    pub fn cut(&self, from: u64, to: u64, cut: bool) {
        let mut l = self.links.lock();
        if cut {
            l.cut.insert((from, to));
        } else {
            l.cut.remove(&(from, to));
        }
    }

    /// Faults from now on (`Faults::default()`: none), drawn from `seed`.
    pub fn set_faults(&self, faults: Faults, seed: u64) {
        let mut l = self.links.lock();
        l.faults = faults;
        l.rng = seed | 1;
    }

    /// A draw in [0, 1).
    fn draw(&self) -> (f64, Faults) {
        let mut l = self.links.lock();
        let mut x = l.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        l.rng = x;
        ((x >> 11) as f64 / (1u64 << 53) as f64, l.faults)
    }

    /// Apply the faults to one message: `false`: it is lost. `true` in the
    /// second place: deliver it twice.
    async fn meet_faults(&self) -> (bool, bool) {
        let (d, f) = self.draw();
        if !f.max_delay.is_zero() {
            let (x, _) = self.draw();
            tokio::time::sleep(f.max_delay.mul_f64(x)).await;
        }
        let (dup, _) = self.draw();
        (d >= f.drop, dup < f.duplicate)
    }

    /// A client of `from`'s messages to `to`.
    pub fn client(&self, from: u64, to: u64) -> Conn {
        Conn { router: self.clone(), from, to }
    }

    fn target<E: std::error::Error>(&self, from: u64, to: u64) -> Result<Raft, RPCError<u64, BasicNode, E>> {
        let l = self.links.lock();
        let reachable = !l.isolated.contains(&from) && !l.isolated.contains(&to) && !l.cut.contains(&(from, to));
        match l.nodes.get(&to) {
            Some(r) if reachable => Ok(r.clone()),
            _ => Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "node {to} is unreachable from {from}"
            ))))),
        }
    }
}

/// The factory one node uses.
#[derive(Clone)]
pub struct NodeNet {
    pub router: Router,
    pub id: u64,
}

impl RaftNetworkFactory<TypeConfig> for NodeNet {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        self.router.client(self.id, target)
    }
}

/// One node's link to another.
pub struct Conn {
    router: Router,
    from: u64,
    to: u64,
}

impl Conn {
    /// One request through the faults: lost, delayed, delivered twice; its reply
    /// can be lost on the way back too.
    async fn deliver<Q, P, E, Fut>(
        &self,
        rpc: Q,
        call: impl Fn(Raft, Q) -> Fut,
    ) -> Result<P, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Q: Clone,
        E: std::error::Error,
        Fut: std::future::Future<Output = Result<P, RaftError<u64, E>>>,
    {
        let raft = self.router.target(self.from, self.to)?;
        let (delivered, twice) = self.router.meet_faults().await;
        if !delivered {
            return Err(lost(self.to));
        }
        if twice {
            let _ = call(raft.clone(), rpc.clone()).await;
        }
        let r = call(raft, rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)));
        self.router.target::<RaftError<u64, E>>(self.to, self.from)?;
        if !self.router.meet_faults().await.0 {
            return Err(lost(self.from));
        }
        r
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.deliver(rpc, |raft, rpc| async move { raft.append_entries(rpc).await }).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.deliver(rpc, |raft, rpc| async move { receive_chunk(&raft, rpc).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.deliver(rpc, |raft, rpc| async move { raft.vote(rpc).await }).await
    }
}

fn lost<E: std::error::Error>(to: u64) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("a message to or from node {to} was lost"))))
}
