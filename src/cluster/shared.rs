//! A node's view of its log, shared by the log storage and the state machine:
//! where each entry is, the purge point, the vote, what is committed and applied.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::raft_file::{self, RaftState, StoredLogId};
use super::{log_id, LogId, Membership, StoredMembership};
use crate::codec::entry::EntryType;
use crate::error::{Error, Result};
use crate::store::raft::EntryLoc;
use crate::store::Store;

/// The log as the node knows it.
pub(crate) struct LogTable {
    /// Entries present, by rising index (after the purge point).
    pub entries: VecDeque<EntryLoc>,
    /// The data of the last normal entries appended, by index: replication sends
    /// them without reading the log back. At most [`RECENT`].
    pub recent: VecDeque<(u64, Arc<Vec<u8>>)>,
    pub state: RaftState,
    /// Known committed (memory; stamped into the next entry frames written).
    pub committed: Option<LogId>,
    /// Applied to the store.
    pub applied: Option<LogId>,
    pub applied_membership: StoredMembership,
}

/// One node's store and log table.
#[derive(Clone)]
pub struct Node {
    pub(crate) store: Arc<Store>,
    pub(crate) table: Arc<Mutex<LogTable>>,
    pub(crate) dir: PathBuf,
}

pub(crate) fn loc_id(l: &EntryLoc) -> LogId {
    log_id(l.head.term, l.head.leader, l.head.index)
}

pub(crate) fn stored_id(id: &LogId) -> StoredLogId {
    StoredLogId { index: id.index, term: id.leader_id.term, leader: id.leader_id.node_id }
}

pub(crate) fn membership_of(l: &EntryLoc) -> Result<Membership> {
    serde_json::from_slice(&l.body)
        .map_err(|e| Error::Replication(format!("entry {}: its membership does not decode: {e}", l.head.index)))
}

impl Node {
    /// A node on `store` (opened with `raft_log`): the log table from its log and
    /// `RAFT` file. Applied: the entries open replayed.
    pub fn start(store: Arc<Store>) -> Result<Node> {
        if !store.options().raft_log {
            return Err(Error::Replication("a cluster node's store must be opened with raft_log".into()));
        }
        let dir = store.dir().to_path_buf();
        let fs = &*store.options().fs;
        if !fs.exists(&dir.join(raft_file::RAFT_FILE)).map_err(|e| Error::io("stat", &dir, e))? {
            // Marks the directory as a node's from its first start on.
            raft_file::write(fs, &dir, &RaftState::default())?;
        }
        let state = raft_file::read(fs, &dir)?;
        let all = store.raft_entries()?;
        let applied_end = store.raft_applied_end();
        let mut applied = None;
        let mut membership = StoredMembership::default();
        let mut committed = None;
        for l in all.iter().filter(|l| l.end <= applied_end) {
            applied = Some(loc_id(l));
            if l.head.kind == EntryType::Membership {
                membership = StoredMembership::new(Some(loc_id(l)), membership_of(l)?);
            }
        }
        for l in &all {
            if let Some(c) = l.head.committed {
                committed = committed.max(all.iter().find(|e| e.head.index == c).map(loc_id));
            }
        }
        let purged = state.purged.map(|p| p.index);
        let entries = all.into_iter().filter(|l| purged.is_none_or(|p| l.head.index > p)).collect();
        let table = LogTable {
            entries,
            recent: VecDeque::new(),
            state,
            committed: committed.max(applied),
            applied,
            applied_membership: membership,
        };
        Ok(Node { store, table: Arc::new(Mutex::new(table)), dir })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogId> {
        self.table.lock().applied
    }

    /// The last log id known committed: openraft saves it before it applies
    /// (and so before it acknowledges) the entries up to it.
    pub fn committed(&self) -> Option<LogId> {
        self.table.lock().committed
    }

    /// The vote as last saved: durable before openraft grants or acts on it.
    pub fn vote(&self) -> Option<raft_file::StoredVote> {
        self.table.lock().state.vote
    }
}

/// Normal entries whose data a node keeps in memory for replication.
pub(crate) const RECENT: usize = 256;

impl LogTable {
    /// Keep `data` as entry `index`'s (the newest).
    pub fn remember(&mut self, index: u64, data: Arc<Vec<u8>>) {
        self.recent.push_back((index, data));
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    pub fn recent_data(&self, index: u64) -> Option<Arc<Vec<u8>>> {
        self.recent.iter().rev().find(|(i, _)| *i == index).map(|(_, d)| d.clone())
    }

    pub fn find(&self, index: u64) -> Option<&EntryLoc> {
        let first = self.entries.front()?.head.index;
        let at = index.checked_sub(first)? as usize;
        self.entries.get(at).filter(|l| l.head.index == index).or_else(|| {
            // Indices may skip across a purge point: search.
            self.entries.iter().find(|l| l.head.index == index)
        })
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        let purged = self.state.purged.map(|p| log_id(p.term, p.leader, p.index));
        self.entries.back().map(loc_id).or(purged)
    }
}
