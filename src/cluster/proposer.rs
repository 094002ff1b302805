//! The store's link to Raft on a node: whether it leads, and proposing a
//! write-queue batch's frames as a normal entry (waiting until it applied here).

use std::sync::mpsc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use super::{Frames, Node, TypeConfig};
use crate::error::{Error, Result};
use crate::store::Proposer;

/// How long a proposal may wait for a majority, by default, before its writers
/// are told the outcome is unknown.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's Raft, seen by its store.
pub struct RaftProposer {
    pub id: u64,
    pub raft: openraft::Raft<TypeConfig>,
    pub runtime: tokio::runtime::Handle,
    pub timeout: Duration,
}

impl Proposer for RaftProposer {
    fn leader(&self) -> std::result::Result<(), Option<u64>> {
        let m = self.raft.metrics().borrow().clone();
        match m.state == ServerState::Leader && m.current_leader == Some(self.id) {
            true => Ok(()),
            false => Err(m.current_leader.filter(|l| *l != self.id)),
        }
    }

    fn propose(&self, data: Vec<u8>) -> Result<u64> {
        let (tx, rx) = mpsc::channel();
        let raft = self.raft.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(raft.client_write(Frames(data)).await);
        });
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(r)) => Ok(r.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Error::NotLeader { leader: f.leader_id.filter(|l| *l != self.id) })
            }
            Ok(Err(e)) => Err(Error::Replication(e.to_string())),
            Err(_) => Err(Error::InDoubt(format!("no majority applied it within {:?}", self.timeout))),
        }
    }
}

/// Route `node`'s store writes through `raft` (`runtime` runs its proposals).
/// The store then holds the Raft handle: [`detach`] before shutting down.
pub fn attach(
    id: u64,
    node: &Node,
    raft: &openraft::Raft<TypeConfig>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
) {
    let p = RaftProposer { id, raft: raft.clone(), runtime, timeout };
    node.store.set_proposer(Some(std::sync::Arc::new(p)));
}

/// Stop routing `node`'s writes (they are refused from now on).
pub fn detach(node: &Node) {
    node.store.set_proposer(None);
}
