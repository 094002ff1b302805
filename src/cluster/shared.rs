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
use crate::fs;
use crate::store::raft::EntryLoc;
use crate::store::Store;

/// Marks a node that seeds a new cluster with a single node's jobs until every
/// peer holds them (format-spec/layout.md, "SEEDING").
pub const SEEDING_FILE: &str = "SEEDING";

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

/// Masked CRC-32s of sealed segments, by (generation, number, length, CRC-32 of
/// their last 64 KiB).
pub(crate) type SegmentCrcs = std::collections::HashMap<(u64, u32, u64, u32), u32>;

/// One node's store and log table.
#[derive(Clone)]
pub struct Node {
    pub(crate) store: Arc<Store>,
    pub(crate) table: Arc<Mutex<LogTable>>,
    pub(crate) dir: PathBuf,
    /// Held (write) while a snapshot installs; appends and cuts take it (read).
    pub(crate) installing: Arc<parking_lot::RwLock<()>>,
    /// Checksums of sealed segments a snapshot holds, by (generation, number, length).
    pub(crate) snap_crcs: Arc<Mutex<SegmentCrcs>>,
    /// Held for a whole snapshot build: builds share `snap.tmp`.
    pub(crate) snap_building: Arc<Mutex<()>>,
    /// Snapshots being sent, which newer builds leave in place until sent.
    pub(crate) snap_readers: Arc<Mutex<crate::cluster::snapshot::build::Readers>>,
    /// The `SEEDING` file is there (read at start, cleared by [`Node::seeded`]).
    seeding: Arc<std::sync::atomic::AtomicBool>,
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
        Node::start_with(store, false, None)
    }

    /// [`Node::start`]; `may_seed`: on a first start, a store a single node wrote
    /// becomes the seed of a new cluster (this node forms it: [`Node::seeding`])
    /// instead of being refused. `id`: this node's id, which `RAFT` records on
    /// the first start; a directory of another node is refused.
    pub fn start_with(store: Arc<Store>, may_seed: bool, id: Option<u64>) -> Result<Node> {
        if !store.options().raft_log {
            return Err(Error::Replication("a cluster node's store must be opened with raft_log".into()));
        }
        let dir = store.dir().to_path_buf();
        let fs = &*store.options().fs;
        if !fs.exists(&dir.join(raft_file::RAFT_FILE)).map_err(|e| Error::io("stat", &dir, e))? {
            // Jobs written outside Raft entries would be this node's alone: no
            // other node ever gets them, and reads would differ by node.
            if store.holds_frames() && !may_seed {
                return Err(Error::Unsupported {
                    path: dir.clone(),
                    what: "a store written by a single node (its jobs are in no Raft entry, so no other node would \
                           ever get them): only the node that forms the cluster (the lowest --peer id, on its first \
                           start) may seed it; every other node starts from an empty directory and gets the \
                           cluster's jobs from the leader"
                        .into(),
                });
            }
            if store.holds_frames() {
                // IMPORTANT: the mark is durable before RAFT: a crash in between
                // leaves a single node's store, which the next start seeds again.
                fs::publish_file(fs, &dir, SEEDING_FILE, b"seeding\n")
                    .map_err(|e| Error::io("publish", dir.join(SEEDING_FILE), e))?;
            }
            // Marks the directory as a node's from its first start on.
            raft_file::write(fs, &dir, &RaftState::default())?;
        }
        // A stream a sender gave up on (a timeout, a leader change) is never resumed.
        let stale = dir.join(crate::cluster::snapshot::install::RECEIVING);
        if fs.exists(&stale).map_err(|e| Error::io("stat", &stale, e))? {
            fs.remove_file(&stale).map_err(|e| Error::io("remove", &stale, e))?;
        }
        // Nor is a build a crash cut.
        crate::cluster::snapshot::build::remove_unfinished(fs, &dir)?;
        let seeding = dir.join(SEEDING_FILE);
        let seeding = fs.exists(&seeding).map_err(|e| Error::io("stat", &seeding, e))?;
        let mut state = raft_file::read(fs, &dir)?;
        if let Some(id) = id {
            let mine = u32::try_from(id)
                .ok()
                .filter(|i| *i > 0)
                .ok_or_else(|| Error::Replication(format!("a node id is 1 to {} (got {id})", u32::MAX)))?;
            match state.owner {
                // Recorded once (a directory of an older jobq records it now).
                0 => {
                    state.owner = mine;
                    raft_file::write(fs, &dir, &state)?;
                }
                o if o == mine => {}
                o => {
                    return Err(Error::Unsupported {
                        path: dir.clone(),
                        what: format!(
                            "node {o}'s data directory, started as node {id}: a node's log and vote are its own \
                             (under another id it would count twice toward a quorum). Start it with --node-id {o}, \
                             or give node {id} an empty directory"
                        ),
                    });
                }
            }
        }
        let table = load_table(&store, state)?;
        Ok(Node {
            store,
            table: Arc::new(Mutex::new(table)),
            dir,
            installing: Arc::default(),
            snap_crcs: Arc::default(),
            snap_building: Arc::default(),
            snap_readers: Arc::default(),
            seeding: Arc::new(seeding.into()),
        })
    }

    /// Whether this node is seeding a new cluster with its store's jobs and has
    /// not finished (the `SEEDING` file: format-spec/layout.md).
    pub fn seeding(&self) -> bool {
        self.seeding.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The seeding is done: every peer is a voter holding the seed.
    pub fn seeded(&self) -> Result<()> {
        let fs = &*self.store.options().fs;
        let path = self.dir.join(SEEDING_FILE);
        fs.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        // IMPORTANT: fsync folder.
        fs.sync_dir(&self.dir).map_err(|e| Error::io("fsync dir", &self.dir, e))?;
        self.seeding.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// A seeding that cannot start (the peers hold a cluster already): the
    /// directory is a single node's again. Only before this node formed anything.
    pub fn abandon_seed(&self) -> Result<()> {
        let fs = &*self.store.options().fs;
        // RAFT first: a cut in between leaves SEEDING alone, which a single node ignores
        // and the next start as a forming node publishes again.
        let raft = self.dir.join(raft_file::RAFT_FILE);
        fs.remove_file(&raft).map_err(|e| Error::io("remove", &raft, e))?;
        fs.sync_dir(&self.dir).map_err(|e| Error::io("fsync dir", &self.dir, e))?;
        self.seeded()
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

/// The log table of `store`'s log with `state` (`RAFT`): the entries after the
/// purge point, and what open applied.
pub(crate) fn load_table(store: &Store, mut state: RaftState) -> Result<LogTable> {
    let all = store.raft_entries()?;
    // A snapshot's install cut between `CURRENT` and `RAFT` (snapshot/install.rs):
    // the log is the snapshot's under the old purge point, and begins after it
    // when the sender had compacted its log. Raft would take the entries between
    // for present ones (and, without a purge point, read entry 0 at every start).
    // The snapshot's entries are all committed: its first becomes the purge
    // point, applied as open applies up to a purge point; Raft commits the rest.
    if let Some(first) = all.first().filter(|f| f.head.index > state.purged.map_or(0, |p| p.index + 1)) {
        state.purged = Some(StoredLogId { index: first.head.index, term: first.head.term, leader: first.head.leader });
        raft_file::write(&*store.options().fs, store.dir(), &state)?;
        tracing::warn!(index = first.head.index, "cluster: a snapshot's install was cut before its purge point");
        if first.end > store.raft_applied_end() {
            store.reload()?;
        }
        return load_table(store, state);
    }
    let applied_end = store.raft_applied_end();
    let mut applied = None;
    let mut applied_at = None;
    let mut membership = StoredMembership::default();
    for l in all.iter().filter(|l| l.end <= applied_end) {
        applied = Some(loc_id(l));
        applied_at = Some((l.end, [l.head.index, l.head.term, l.head.leader]));
        if l.head.kind == EntryType::Membership {
            membership = StoredMembership::new(Some(loc_id(l)), membership_of(l)?);
        }
    }
    // Compaction may have removed the frames of the last applied entry and of the
    // last membership: the purge point is applied, and the newest snapshot holds
    // the membership as of its last entry.
    if let Some(p) = state.purged.filter(|p| applied.is_none_or(|a: LogId| a.index < p.index)) {
        applied = Some(log_id(p.term, p.leader, p.index));
        applied_at = Some((applied_end, [p.index, p.term, p.leader]));
    }
    if let Some(snap) = crate::cluster::snapshot::build::newest_meta(&*store.options().fs, store.dir())? {
        if snap.last_membership.log_id() > membership.log_id() {
            membership = snap.last_membership;
        }
    }
    // The highest commit point any entry frame states, when that entry is here.
    let stamp = all.iter().filter_map(|l| l.head.committed).max();
    let committed = stamp.and_then(|c| all.binary_search_by_key(&c, |l| l.head.index).ok()).map(|i| loc_id(&all[i]));
    let purged = state.purged.map(|p| p.index);
    let entries: VecDeque<EntryLoc> = all.into_iter().filter(|l| purged.is_none_or(|p| l.head.index > p)).collect();
    store.set_raft_keep_from(keep_from(store, &entries));
    store.set_raft_applied(applied_at);
    Ok(LogTable {
        entries,
        recent: VecDeque::new(),
        state,
        committed: committed.max(applied),
        applied,
        applied_membership: membership,
    })
}

/// The oldest segment `entries` (those not purged) need: compaction may remove
/// the segments before it. None left: the segment being written, where the next
/// entries go.
fn keep_from(store: &Store, entries: &VecDeque<EntryLoc>) -> u32 {
    entries.front().map_or_else(|| store.raft_log_end().segment, |l| l.at.segment)
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

    /// The entries whose index is in `range`, in order (indices ascend).
    pub fn range<'a, R: std::ops::RangeBounds<u64>>(&'a self, range: &'a R) -> impl Iterator<Item = &'a EntryLoc> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = self.entries.partition_point(|l| l.head.index < start);
        self.entries.range(from..).take_while(move |l| range.contains(&l.head.index))
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        let purged = self.state.purged.map(|p| log_id(p.term, p.leader, p.index));
        self.entries.back().map(loc_id).or(purged)
    }
}
