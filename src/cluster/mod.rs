//! Replication on openraft (docs/cluster.md). The Raft log is the store's own
//! log: an entry is an entry frame followed by the data frames a single node
//! would write ([`crate::store::raft`]); the state machine is the store, and
//! applying an entry replays its frames. One concern a file: [`raft_file`] the
//! vote and purge point, [`log_store`] openraft's log storage, [`state_machine`]
//! its state machine, [`shared`] what both see of the log.

pub mod log_store;
pub mod memnet;
pub mod proposer;
pub mod raft_file;
pub mod shared;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use shared::Node;
pub use state_machine::StateMachine;

/// A normal entry's data: whole data frames (headers and checksums included),
/// exactly as the leader's writer made them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frames(pub Vec<u8>);

/// What applying an entry returns: its index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
}

openraft::declare_raft_types!(
    /// jobq's Raft types: node ids are u64, nodes are addresses.
    pub TypeConfig:
        D = Frames,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::Membership<u64, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;

fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, leader), index)
}

/// openraft's configuration for a jobq node: `election_ms` the smallest election
/// timeout (heartbeats at a fifth of it); snapshots never built on their own, so
/// the log is never purged (see [`state_machine`]).
pub fn config(election_ms: u64) -> Result<std::sync::Arc<openraft::Config>, crate::Error> {
    let c = openraft::Config {
        cluster_name: "jobq".into(),
        heartbeat_interval: (election_ms / 5).max(1),
        election_timeout_min: election_ms,
        election_timeout_max: election_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..Default::default()
    };
    let c = c.validate().map_err(|e| crate::Error::Replication(format!("configuration: {e}")))?;
    Ok(std::sync::Arc::new(c))
}

/// Start Raft for `node` with `network`.
pub async fn start<N: openraft::network::RaftNetworkFactory<TypeConfig>>(
    id: u64,
    node: Node,
    config: std::sync::Arc<openraft::Config>,
    network: N,
) -> Result<openraft::Raft<TypeConfig>, crate::Error> {
    openraft::Raft::new(id, config, network, LogStore::new(node.clone()), StateMachine::new(node))
        .await
        .map_err(|e| crate::Error::Replication(format!("starting node {id}: {e}")))
}
