//! openraft's state machine: the store. Applying an entry replays its data
//! frames into the store (as open replays a log tail) and publishes the result
//! to readers. Snapshots are not built yet (docs/cluster.md, "Snapshots"): a node
//! runs with openraft's snapshot policy `Never` and keeps its whole log, so a new
//! or lagging node catches up from the log.

// openraft's error types are large by design; its traits return them.
#![allow(clippy::result_large_err)]

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};

use super::shared::Node;
use super::{Applied, Entry, LogId, StorageError, StoredMembership, TypeConfig};
use crate::error::Error;

/// openraft's state machine for one node.
#[derive(Clone)]
pub struct StateMachine {
    node: Node,
}

impl StateMachine {
    pub fn new(node: Node) -> StateMachine {
        StateMachine { node }
    }
}

fn no_snapshots() -> StorageError {
    let e = Error::Replication("snapshots are not supported yet: nodes catch up from the whole log".into());
    StorageIOError::read_state_machine(&e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(no_snapshots())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let t = self.node.table.lock();
        Ok((t.applied, t.applied_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                let loc = node.table.lock().find(e.log_id.index).cloned();
                let loc = loc.ok_or_else(|| {
                    let why = Error::Replication(format!("entry {} applied before it was appended", e.log_id.index));
                    StorageError::from(StorageIOError::apply(e.log_id, &why))
                })?;
                node.store.raft_apply(&loc).map_err(|why| {
                    tracing::error!("cluster state machine: {why}");
                    StorageIOError::apply(e.log_id, &why)
                })?;
                let mut t = node.table.lock();
                t.applied = Some(e.log_id);
                t.committed = t.committed.max(Some(e.log_id));
                if let EntryPayload::Membership(m) = e.payload {
                    t.applied_membership = StoredMembership::new(Some(e.log_id), m);
                }
                out.push(Applied { index: e.log_id.index });
            }
            Ok(out)
        })
        .await
        .expect("a blocking store task panicked")
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Err(no_snapshots())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<u64, openraft::BasicNode>,
        _snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}
