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
pub mod snapshot;
pub mod state_machine;

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use shared::Node;
pub use state_machine::StateMachine;

/// A normal entry's data: whole data frames (headers and checksums included),
/// exactly as the leader's writer made them. On the wire: one base64 string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frames(pub Vec<u8>);

impl Serialize for Frames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Frames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Frames, D::Error> {
        use base64::Engine;
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map(Frames).map_err(serde::de::Error::custom)
    }
}

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
        SnapshotData = snapshot::SnapshotStream,
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

/// Entries applied between two snapshots a node builds on its own.
pub const SNAPSHOT_EVERY: u64 = 20_000;

/// openraft's configuration for a jobq node: `election_ms` the smallest election
/// timeout (heartbeats at a fifth of it); a snapshot every [`SNAPSHOT_EVERY`]
/// entries, after which the log before it (but the last 1,000 entries, for
/// followers slightly behind) is purged. The largest election timeout
/// is 1.5x the smallest: openraft's leader lease is the largest, and a follower
/// votes only after the lease and its own timeout, so failover takes about
/// 2.5x `election_ms`.
pub fn config(election_ms: u64) -> Result<std::sync::Arc<openraft::Config>, crate::Error> {
    config_with(election_ms, SNAPSHOT_EVERY)
}

/// [`config`] with a snapshot every `snapshot_every` applied entries.
/// How long a snapshot chunk (3 MiB) may take to send and store. The last one
/// includes the receiver's check and install, which rebuilds the indexes: about
/// 40 s for 10M jobs here. A timeout makes the sender start over.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 120_000;

pub fn config_with(election_ms: u64, snapshot_every: u64) -> Result<std::sync::Arc<openraft::Config>, crate::Error> {
    let c = openraft::Config {
        cluster_name: "jobq".into(),
        heartbeat_interval: (election_ms / 5).max(1),
        election_timeout_min: election_ms,
        election_timeout_max: election_ms + (election_ms / 2).max(1),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: snapshot_every.min(1000),
        // Per 3 MiB chunk, the last one with the install: openraft's 200 ms made
        // a loaded node time out and resend chunks from the start.
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
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

#[cfg(test)]
mod tests {
    use super::Frames;

    #[test]
    fn frames_travel_as_one_base64_string() {
        let f = Frames(vec![0, 1, 2, 250, 255]);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#""AAEC+v8=""#);
        assert_eq!(serde_json::from_str::<Frames>(&json).unwrap(), f);
        assert!(serde_json::from_str::<Frames>(r#""not base64!""#).is_err());
        assert!(serde_json::from_str::<Frames>("[1,2]").is_err());
    }
}
