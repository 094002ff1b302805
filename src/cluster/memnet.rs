//! An in-process network for clusters in one process (tests, soaks): messages
//! go straight to the target's `Raft`, unless the router cuts the link: a node
//! isolated from the others, or one link dropped.

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

use super::TypeConfig;

pub type Raft = openraft::Raft<TypeConfig>;

#[derive(Default)]
struct Links {
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

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.router.target(self.from, self.to)?;
        let r = raft.append_entries(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)));
        // A reply can be lost on the way back too.
        self.router.target::<RaftError<u64>>(self.to, self.from)?;
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        let raft = self.router.target(self.from, self.to)?;
        raft.install_snapshot(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.router.target(self.from, self.to)?;
        let r = raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)));
        self.router.target::<RaftError<u64>>(self.to, self.from)?;
        r
    }
}
