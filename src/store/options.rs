//! How a store is opened: [`Options`] and the [`Durability`] of its writes.

use std::sync::Arc;

use crate::fs::{FileSystem, RealFs};
use crate::log::recovery::RecoveryPolicy;
use crate::model::{Clock, SystemClock};

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// After fdatasync (shared by concurrent writers): survives power loss.
    #[default]
    Sync,
    /// After write(2): survives a process crash, not power loss, until
    /// [`Store::sync`] or close.
    Buffered,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Options {
    pub fs: Arc<dyn FileSystem>,
    pub durability: Durability,
    pub recovery: RecoveryPolicy,
    /// Open without the lock, writing nothing (beside a running server).
    pub read_only: bool,
    /// Create the directory and an empty store when missing.
    pub create: bool,
    pub clock: Arc<dyn Clock>,
    /// Log segment size.
    pub segment_bytes: u64,
    /// Preallocate the last log segment with zeroed chunks, so that a group
    /// commit's fdatasync overwrites instead of appending (format-spec/durability.md,
    /// "Preallocation"). Off: frames are appended as format 4 wrote them (the
    /// segments are of version 4 either way); for benchmarks comparing the two.
    pub preallocate: bool,
    /// Tail entries that trigger an index image.
    pub memtable_entries: usize,
    /// Tail entries per index image during replay and import.
    pub bulk_entries: usize,
    /// Adjacent index files of one size class merged at once.
    pub merge_fanout: usize,
    /// Online compaction: run a cycle when at least this share of the log's records
    /// are superseded (checked every `reclaim_every`); `None`: never on its own.
    pub compact_when: Option<f64>,
    pub reclaim_every: std::time::Duration,
    /// Oldest segments one compaction cycle takes at most (and at most a tenth of
    /// the log's, at least one).
    pub reclaim_segments: usize,
    /// Deleted jobs older than this are purged (by the background thread, and by
    /// [`Store::purge_expired`]), and dropped by compaction.
    pub retain_deleted: Option<std::time::Duration>,
    /// Persist and merge indexes on a background thread (else inline, after the
    /// write that froze the tail: deterministic, for tests).
    pub background: bool,
    /// The log holds Raft entries (a cluster node, docs/cluster.md): open applies
    /// only those known committed, and the node appends and applies the rest.
    pub raft_log: bool,
    /// Open a log whose first segments are gone (it starts later than `CURRENT`
    /// says) instead of refusing it: `jobq repair` only, which rewrites the store.
    #[doc(hidden)]
    pub accept_lost_start: bool,
    /// Bytes kept free on the data directory's file system (store/space.rs):
    /// writes, imports, index merges and compaction cycles are refused, with
    /// nothing written and the store sound, while less is free. `None`: 64 MiB,
    /// or a twentieth of the file system when that is less; `Some(0)`: no check.
    pub keep_free: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fs: Arc::new(RealFs),
            durability: Durability::Sync,
            recovery: RecoveryPolicy::Strict,
            read_only: false,
            create: true,
            clock: Arc::new(SystemClock),
            segment_bytes: 64 << 20,
            preallocate: true,
            memtable_entries: 4096,
            bulk_entries: 1 << 20,
            merge_fanout: 4,
            compact_when: None,
            reclaim_every: std::time::Duration::from_secs(10),
            reclaim_segments: 4,
            retain_deleted: None,
            background: true,
            raft_log: false,
            accept_lost_start: false,
            keep_free: None,
        }
    }
}
