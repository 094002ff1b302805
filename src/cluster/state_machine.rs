//! openraft's state machine: the store. Applying an entry replays its data
//! frames into the store (as open replays a log tail) and publishes the result
//! to readers. A snapshot is the log up to the applied end ([`super::snapshot`]).

// openraft's error types are large by design; its traits return them.
#![allow(clippy::result_large_err)]

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};

use super::shared::Node;
use super::snapshot::{self, SnapshotStream};
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

fn snapshot_err(e: Error) -> StorageError {
    tracing::error!("cluster snapshot: {e}");
    StorageIOError::read_snapshot(None, &e).into()
}

/// Run blocking store work off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking store task panicked")
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let node = self.node.clone();
        let (meta, stream) = blocking(move || snapshot::build::build(&node)).await.map_err(snapshot_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(stream) })
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
        blocking(move || {
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
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotStream>, StorageError> {
        let (fs, dir) = (self.node.store.options().fs.clone(), self.node.dir.clone());
        let s = blocking(move || snapshot::install::receiving(&fs, &dir)).await.map_err(snapshot_err)?;
        Ok(Box::new(s))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<SnapshotStream>,
    ) -> Result<(), StorageError> {
        let (node, meta) = (self.node.clone(), meta.clone());
        blocking(move || {
            snapshot::install::install(&node, &meta, &snapshot)?;
            // This node's own copy, for when it leads and a follower needs one.
            snapshot::build::build(&node).map(drop)
        })
        .await
        .map_err(|e| {
            tracing::error!("cluster snapshot install: {e}");
            StorageIOError::write_snapshot(None, &e).into()
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let node = self.node.clone();
        let s = blocking(move || snapshot::build::current_of(&node)).await.map_err(snapshot_err)?;
        Ok(s.map(|(meta, stream)| Snapshot { meta, snapshot: Box::new(stream) }))
    }
}
