//! openraft's log storage on the store's log: entries appended as entry frames
//! and their data frames with one fdatasync, read back from the log, cut with
//! the log's own cut; the vote and purge point in `RAFT`.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, StorageIOError};

use super::raft_file::{self, StoredVote};
use super::shared::{loc_id, membership_of, stored_id, Node};
use super::{Entry, Frames, LogId, StorageError, TypeConfig, Vote};
use crate::codec::entry::{EntryHead, EntryType};
use crate::error::Error;
use crate::store::raft::{scan_data, EntryLoc, RaftEntry, RaftSync};

/// openraft's log storage for one node.
#[derive(Clone)]
pub struct LogStore {
    node: Node,
    syncer: std::sync::mpsc::Sender<(RaftSync, LogFlushed<TypeConfig>)>,
}

impl LogStore {
    pub fn new(node: Node) -> LogStore {
        let (syncer, rx) = std::sync::mpsc::channel();
        // Weak: the thread ends with the last LogStore, and never keeps the store open.
        let store = std::sync::Arc::downgrade(&node.store);
        std::thread::Builder::new()
            .name("jobq-raft-sync".into())
            .spawn(move || sync_loop(&store, &rx))
            .expect("a thread for the log's syncs");
        LogStore { node, syncer }
    }
}

/// Group commit for appended entries: one fdatasync covers every append queued
/// while the previous one ran; openraft hears of each, in order, once durable.
/// Appends return once written, so the leader replicates while it syncs.
fn sync_loop(
    store: &std::sync::Weak<crate::store::Store>,
    rx: &std::sync::mpsc::Receiver<(RaftSync, LogFlushed<TypeConfig>)>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // The last one's tail covers the others (a rotation synced the segments before it).
        let last = &batch.last().expect("one at least").0;
        let r = match store.upgrade() {
            Some(s) => s.raft_sync(last),
            None => Err(Error::Closed),
        };
        for (_, callback) in batch {
            callback.log_io_completed(r.as_ref().map(drop).map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}

fn read_err(e: Error) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: Error) -> StorageError {
    tracing::error!("cluster log storage: {e}");
    StorageIOError::write_logs(&e).into()
}

/// Run blocking store work off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking store task panicked")
}

/// An entry as stored in the log, with `committed` the node's commit point.
fn to_raft_entry(e: &Entry, committed: Option<u64>) -> Result<RaftEntry, Error> {
    let (kind, body, data) = match &e.payload {
        EntryPayload::Blank => (EntryType::Blank, Vec::new(), Vec::new()),
        EntryPayload::Normal(Frames(d)) => (EntryType::Normal, Vec::new(), d.clone()),
        EntryPayload::Membership(m) => {
            let body = serde_json::to_vec(m).map_err(|e| Error::Replication(format!("membership: {e}")))?;
            (EntryType::Membership, body, Vec::new())
        }
    };
    let index = e.log_id.index;
    let mut head = EntryHead {
        index,
        term: e.log_id.leader_id.term,
        leader: e.log_id.leader_id.node_id,
        committed: committed.and_then(|c| Some(c.min(index.checked_sub(1)?))),
        kind,
        frames: 0,
        data_len: data.len() as u32,
    };
    if kind == EntryType::Normal {
        if data.len() > crate::codec::entry::MAX_ENTRY_DATA as usize {
            return Err(Error::Replication(format!("entry {index}: {} bytes of data, over the limit", data.len())));
        }
        // Counted and checked here: the sender is not trusted.
        head.frames = scan_data(index, &data).map_err(Error::Replication)?.len() as u32;
    }
    Ok(RaftEntry { head, body, data })
}

/// The openraft entry an entry location holds.
pub(crate) fn read_entry(node: &Node, l: &EntryLoc) -> Result<Entry, Error> {
    let payload = match l.head.kind {
        EntryType::Blank => EntryPayload::Blank,
        EntryType::Normal => EntryPayload::Normal(Frames(node.store.raft_data(l)?)),
        EntryType::Membership => EntryPayload::Membership(membership_of(l)?),
    };
    Ok(Entry { log_id: loc_id(l), payload })
}

/// How many of `locs` (the entries present in `range`, by rising index) follow
/// one another from the range's start. openraft takes an answer as the entries
/// from the start on: a leader sends them after the entry before the start, a
/// follower applies them from there. An answer that began later (the start
/// purged) would put a gap in the receiver's log: such a leader sent a wiped
/// follower its entries from its purge point on as if they began the log, and
/// the follower stopped at every start ("try to get log at index 0 but got
/// Some(..)"). So the answer is the run from the start: none when it is gone.
fn run_from_start<R: RangeBounds<u64>>(range: &R, locs: &[EntryLoc]) -> usize {
    use std::ops::Bound;
    let mut next = match range.start_bound() {
        Bound::Included(s) => Some(*s),
        Bound::Excluded(s) => s.checked_add(1),
        Bound::Unbounded => locs.first().map(|l| l.head.index),
    };
    locs.iter()
        .take_while(|l| {
            let follows = next == Some(l.head.index);
            next = l.head.index.checked_add(1);
            follows
        })
        .count()
}

/// Data one replication request carries at most (beyond its first entry): the
/// leader must send a request within a heartbeat interval (openraft's timeout for
/// it), and asks for up to `max_payload_entries` (300) entries at a time. A
/// follower behind by 300 entries of a megabyte never caught up.
const SEND_BYTES: u64 = 1 << 20;

impl RaftLogReader<TypeConfig> for LogStore {
    /// The entries from `start` on, up to `end` (exclusive) or [`SEND_BYTES`] of
    /// data, at least one: openraft sends the rest in the next request.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let end = {
            let t = self.node.table.lock();
            let mut bytes = 0u64;
            let range = start..end;
            let over = t.range(&range).find(|l| {
                bytes += u64::from(l.head.data_len);
                l.head.index > start && bytes > SEND_BYTES
            });
            over.map_or(end, |l| l.head.index)
        };
        self.try_get_log_entries(start..end).await
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        type Data = Option<std::sync::Arc<Vec<u8>>>;
        let (mut locs, mut recent): (Vec<EntryLoc>, Vec<Data>) = {
            let t = self.node.table.lock();
            t.range(&range).map(|l| (l.clone(), t.recent_data(l.head.index))).unzip()
        };
        let run = run_from_start(&range, &locs);
        locs.truncate(run);
        recent.truncate(run);
        let normal = |l: &EntryLoc| l.head.kind == EntryType::Normal;
        if locs.iter().zip(&recent).all(|(l, d)| d.is_some() || !normal(l)) {
            // Just appended: no read of the log.
            let mut out = Vec::with_capacity(locs.len());
            for (l, d) in locs.iter().zip(recent) {
                let payload = match d {
                    Some(d) => EntryPayload::Normal(Frames(d.as_ref().clone())),
                    None if l.head.kind == EntryType::Blank => EntryPayload::Blank,
                    None => EntryPayload::Membership(membership_of(l).map_err(read_err)?),
                };
                out.push(Entry { log_id: loc_id(l), payload });
            }
            return Ok(out);
        }
        let node = self.node.clone();
        blocking(move || {
            // A stale replication stream may ask for entries a cut is removing
            // beside it: the answer ends before the first one no longer in the
            // table (openraft allows a shorter answer), instead of an error,
            // which openraft takes as fatal.
            let present =
                |l: &EntryLoc| node.table.lock().find(l.head.index).is_some_and(|t| t.at == l.at && t.head == l.head);
            let mut out = Vec::with_capacity(locs.len());
            for l in &locs {
                match read_entry(&node, l) {
                    Ok(e) if present(l) => out.push(e),
                    Err(e) if present(l) => return Err(e),
                    _ => break,
                }
            }
            Ok(out)
        })
        .await
        .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let t = self.node.table.lock();
        let last_purged_log_id = t.state.purged.map(|p| super::log_id(p.term, p.leader, p.index));
        Ok(LogState { last_purged_log_id, last_log_id: t.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let node = self.node.clone();
        let v = StoredVote { term: vote.leader_id.term, node: vote.leader_id.node_id, committed: vote.committed };
        blocking(move || {
            let mut state = node.table.lock().state;
            state.vote = Some(v);
            // IMPORTANT: durable before the vote is granted or used.
            raft_file::write(&*node.store.options().fs, &node.dir, &state)?;
            node.table.lock().state.vote = Some(v);
            Ok(())
        })
        .await
        .map_err(|e: Error| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let v = self.node.table.lock().state.vote;
        Ok(v.map(|v| {
            let mut vote = Vote::new(v.term, v.node);
            vote.committed = v.committed;
            vote
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Memory only: the next entry frames written carry it, and a restart
        // re-learns the rest from the leader.
        let mut t = self.node.table.lock();
        t.committed = t.committed.max(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.node.table.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let node = self.node.clone();
        let r = blocking(move || {
            let _installed = node.installing.read();
            let (committed, last) = {
                let t = node.table.lock();
                (t.committed.map(|c| c.index), t.last_log_id())
            };
            // openraft appends right after the last entry (or the purge point),
            // having cut any conflicting ones first. A log with a gap could never
            // be read back from its purge point: refuse it (Raft stops, the log
            // on disk stays whole) rather than store it.
            let next = last.map_or(0, |l| l.index + 1);
            if let Some(first) = entries.first().filter(|e| e.log_id.index != next) {
                return Err(Error::Replication(format!(
                    "entry {} appended after {}: the log would not follow on",
                    first.log_id,
                    last.map_or("an empty log".to_string(), |l| format!("entry {l}")),
                )));
            }
            let raw = entries.iter().map(|e| to_raft_entry(e, committed)).collect::<Result<Vec<_>, _>>()?;
            let (locs, sync) = node.store.raft_write(&raw)?;
            let mut t = node.table.lock();
            for e in raw.into_iter().filter(|e| e.head.kind == EntryType::Normal) {
                t.remember(e.head.index, std::sync::Arc::new(e.data));
            }
            t.entries.extend(locs);
            Ok::<RaftSync, Error>(sync)
        })
        .await;
        match r {
            Ok(sync) => {
                // Durable (and then acknowledged to openraft) by the sync thread.
                if let Err(std::sync::mpsc::SendError((_, callback))) = self.syncer.send((sync, callback)) {
                    callback.log_io_completed(Err(std::io::Error::other("the node's sync thread stopped")));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let node = self.node.clone();
        blocking(move || {
            let _installed = node.installing.read();
            // The entries leave the table before their bytes go: a read beside the
            // cut then sees them gone, not damaged.
            let first = {
                let mut t = node.table.lock();
                let first = t.entries.iter().find(|l| l.head.index >= log_id.index).cloned();
                t.entries.retain(|e| e.head.index < log_id.index);
                t.recent.retain(|(i, _)| *i < log_id.index);
                first
            };
            match first {
                Some(l) => node.store.raft_truncate(&l),
                None => Ok(()),
            }
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let node = self.node.clone();
        blocking(move || {
            let _installed = node.installing.read();
            let mut state = node.table.lock().state;
            if state.purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            state.purged = Some(stored_id(&log_id));
            // The purge point is durable before the entries are forgotten. The
            // bytes stay in the log until compaction drops whole segments.
            raft_file::write(&*node.store.options().fs, &node.dir, &state)?;
            let front = {
                let mut t = node.table.lock();
                t.state.purged = state.purged;
                t.entries.retain(|e| e.head.index > log_id.index);
                t.entries.front().map(|l| l.at.segment)
            };
            // Compaction may now remove the segments before the oldest entry kept.
            node.store.set_raft_keep_from(front.unwrap_or_else(|| node.store.raft_log_end().segment));
            Ok(())
        })
        .await
        .map_err(write_err)
    }
}
