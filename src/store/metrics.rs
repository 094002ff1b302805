//! What an operator watches: [`Store::metrics`] (sizes, counters, fsync and
//! group-commit histograms, jobs per state) and [`Store::health`] (does the
//! store take writes, and if not why). Both read memory only: counters kept as
//! the work is done, the published snapshot, never a file-system call or the
//! writer's lock, so a hung disk cannot hang them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Store;
use crate::histogram::HistogramSnapshot;
use crate::log::writer::LogFootprint;
use crate::model::JobState;

/// Counters the store keeps as it works (group commit keeps its own).
#[derive(Debug, Default)]
pub(crate) struct EngineCounters {
    /// Index merges installed, and the docs they wrote.
    merges: AtomicU64,
    merged_docs: AtomicU64,
    /// Compactions done, and the bytes they freed.
    compactions: AtomicU64,
    compaction_reclaimed_bytes: AtomicU64,
    /// Deleted jobs the retention purged.
    purged: AtomicU64,
    /// Write batches cut from the log after an append met a full disk (queue.rs).
    pub cut_batches: AtomicU64,
    /// Bytes of superseded versions in the log, plus one; 0 while not computed.
    superseded_bytes: AtomicU64,
    /// The log's files and bytes, kept by whichever log writer the store has.
    pub log: Arc<LogFootprint>,
}

impl EngineCounters {
    /// A merge of index files, writing `docs` docs, was installed.
    pub(crate) fn note_merge(&self, docs: u64) {
        self.merges.fetch_add(1, Ordering::Relaxed);
        self.merged_docs.fetch_add(docs, Ordering::Relaxed);
    }

    /// A compaction finished, freeing `reclaimed_bytes` of disk.
    pub(crate) fn note_compaction(&self, reclaimed_bytes: u64) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.compaction_reclaimed_bytes.fetch_add(reclaimed_bytes, Ordering::Relaxed);
    }

    /// The retention purged `n` deleted jobs.
    pub(crate) fn note_purged(&self, n: u64) {
        self.purged.fetch_add(n, Ordering::Relaxed);
    }

    /// The log bytes that hold only superseded versions, as last estimated.
    pub(crate) fn set_superseded_bytes(&self, bytes: u64) {
        self.superseded_bytes.store(bytes.saturating_add(1), Ordering::Relaxed);
    }

    fn superseded_bytes(&self) -> Option<u64> {
        self.superseded_bytes.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// The store's figures at one moment. Counters count since the store opened.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineMetrics {
    /// The highest log sequence number known durable.
    pub durable_seq: u64,
    /// Current jobs per state, over every project (every state listed).
    pub jobs: [(JobState, u64); 4],
    /// Job versions in the log's tail, not yet in an index file (replayed at the next open).
    pub tail_jobs: u64,
    /// Log segment files and the bytes of the log in them (0 for a read-only
    /// store; the last segment's preallocated zeros, at most 1 MiB, not counted).
    pub log_segments: u64,
    pub log_bytes: u64,
    /// Index files in use and their bytes (images still in memory not counted).
    pub index_files: u64,
    pub index_bytes: u64,
    /// Memory of the index files' caches of decoded posting blocks
    /// (index/block_cache.rs).
    pub index_cached_bytes: u64,
    /// Index merges installed.
    pub merges: u64,
    /// Docs the merges wrote: over the docs written, how often a doc is
    /// rewritten (a few times, one per size class it passes).
    pub merged_docs: u64,
    /// Compactions done and the disk bytes they freed.
    pub compactions: u64,
    pub compaction_reclaimed_bytes: u64,
    /// Removed log segments old snapshots still hold open, and the compaction
    /// cycles that waited for them ([`crate::store::MAX_REMOVED_HELD`]).
    pub segments_held: u64,
    pub compactions_deferred: u64,
    /// Deleted jobs the retention purged (this process).
    pub purged_jobs: u64,
    /// Write batches refused after their append met a full disk (ENOSPC,
    /// EDQUOT): cut from the log, their writers answered with the error, the
    /// store still taking writes.
    pub writes_cut_disk_full: u64,
    /// Log bytes that hold only superseded versions (what a compaction would
    /// free); `None` while the store does not compute it.
    pub superseded_bytes: Option<u64>,
    /// Group-commit fsyncs of the log: duration of each, in nanoseconds.
    pub fsync_ns: HistogramSnapshot,
    /// Group-commit fsyncs: writes each one made durable.
    pub batch_writes: HistogramSnapshot,
    /// Why the store refuses writes, when it does.
    pub poison: Option<Poison>,
}

/// Why a store refuses writes: its first failed write or fsync.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poison {
    /// The failure, as its error message.
    pub cause: String,
    /// The failure was the file system being full (ENOSPC) or the quota spent (EDQUOT).
    pub disk_full: bool,
}

/// Whether the store takes writes, from memory alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The highest log sequence number known durable.
    pub durable_seq: u64,
    /// Set once a write or fsync failed: every later write is refused.
    pub poison: Option<Poison>,
    /// The store is closing or closed.
    pub closed: bool,
    /// Opened read-only: it never takes writes.
    pub read_only: bool,
}

impl Health {
    /// True when a write could succeed now.
    pub fn accepts_writes(&self) -> bool {
        self.poison.is_none() && !self.closed && !self.read_only
    }
}

impl Store {
    /// Whether the store takes writes, and if not why. Reads atomics and one
    /// small mutex: no file-system call, no wait for writers.
    pub fn health(&self) -> Health {
        let inner = self.inner();
        let inner = &*inner;
        Health {
            durable_seq: inner.commit.durable_seq(),
            poison: inner.commit.poison_cause().map(|(cause, disk_full)| Poison { cause, disk_full }),
            closed: inner.closed.load(Ordering::Acquire),
            read_only: inner.opts.read_only,
        }
    }

    /// The store's figures now. Memory only (no file-system call, not the
    /// writer's lock); the cost grows with index files times projects, not with
    /// jobs (jobs per state come from the state posting lists).
    pub fn metrics(&self) -> EngineMetrics {
        let inner = self.inner();
        let inner = &*inner;
        let snap = self.snapshot();
        let by_state = snap.jobs_by_state();
        let persisted = || snap.version.segments.iter().filter(|s| s.seg.is_persisted());
        let (log_segments, log_bytes) = inner.counters.log.get();
        let c = &inner.counters;
        EngineMetrics {
            durable_seq: inner.commit.durable_seq(),
            jobs: JobState::ALL.map(|s| (s, by_state[s as usize])),
            tail_jobs: snap.version.mem.len() as u64,
            log_segments,
            log_bytes,
            index_files: persisted().count() as u64,
            index_bytes: persisted().map(|s| s.seg.size() as u64).sum(),
            index_cached_bytes: snap.version.segments.iter().map(|s| s.seg.cached_bytes()).sum(),
            merges: c.merges.load(Ordering::Relaxed),
            merged_docs: c.merged_docs.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            compaction_reclaimed_bytes: c.compaction_reclaimed_bytes.load(Ordering::Relaxed),
            segments_held: inner.reader.removed_held() as u64,
            compactions_deferred: inner.reclaimed.deferred.load(Ordering::Relaxed),
            purged_jobs: c.purged.load(Ordering::Relaxed),
            writes_cut_disk_full: c.cut_batches.load(Ordering::Relaxed),
            superseded_bytes: c.superseded_bytes(),
            fsync_ns: inner.commit.fsync_ns.snapshot(),
            batch_writes: inner.commit.batch_writes.snapshot(),
            poison: self.health().poison,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::fs::{Fault, FaultKind, FileSystem, SimFs};
    use crate::model::{JobState, ManualClock};
    use crate::store::request::{parse_push, parse_update};
    use crate::{Durability, Options, Store};

    fn opts(sim: &SimFs) -> Options {
        Options {
            fs: Arc::new(sim.clone()),
            clock: Arc::new(ManualClock::new(5000)),
            durability: Durability::Sync,
            background: false,
            memtable_entries: 8,
            merge_fanout: 2,
            segment_bytes: 1024,
            ..Options::default()
        }
    }

    fn push(store: &Store, project: u32, n: usize) {
        let specs: Vec<_> = (0..n).map(|i| parse_push(&format!(r#"{{"spider":"s{}"}}"#, i % 3)).unwrap()).collect();
        store.push(project, &specs, None).unwrap();
    }

    fn finish(store: &Store, project: u32, spider: u32, job: u32) {
        let u = parse_update(&format!(r#"{{"key":"{project}/{spider}/{job}","state":"finished"}}"#), project).unwrap();
        store.update(project, &[u], None).unwrap();
    }

    /// Sizes of the files of the current generation whose names pass `keep`.
    fn files(sim: &SimFs, keep: impl Fn(&str) -> bool) -> (u64, u64) {
        let gen = Path::new("/db/gen-0000000000000001");
        let names: Vec<String> = sim.read_dir(gen).unwrap().into_iter().filter(|n| keep(n)).collect();
        // A log segment's preallocated zeros after its last frame are not log bytes
        // (a jobs frame, the last of every segment here, never ends in a zero).
        let len = |b: Vec<u8>| b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1) as u64;
        let bytes = names
            .iter()
            .map(|n| {
                let b = sim.read_file(&gen.join(n)).unwrap();
                if n.ends_with(".jql") {
                    len(b)
                } else {
                    b.len() as u64
                }
            })
            .sum();
        (names.len() as u64, bytes)
    }

    fn by_state(store: &Store) -> Vec<u64> {
        store.metrics().jobs.iter().map(|(_, n)| *n).collect()
    }

    /// Jobs per state from the posting lists match what `count` answers, with
    /// versions superseded across index files, the tail, and several projects;
    /// the log and index figures match the files; merges are counted.
    #[test]
    fn figures_match_the_store() {
        let sim = SimFs::new();
        let store = Store::open("/db", opts(&sim)).unwrap();
        for p in 1..=3 {
            push(&store, p, 10);
        }
        store.flush_indexes().unwrap();
        finish(&store, 1, 1, 1);
        finish(&store, 2, 2, 2);
        store.start_next(3, &Default::default(), None).unwrap();
        push(&store, 1, 20);
        store.flush_indexes().unwrap();
        finish(&store, 1, 1, 4);
        let snap = store.snapshot();
        let mut want = vec![0u64; 4];
        for p in 1..=3 {
            for s in JobState::ALL {
                let f = crate::query::Filter { states: vec![s], ..Default::default() };
                want[s as usize] += snap.count(p, &f).unwrap();
            }
        }
        assert_eq!(want, vec![46, 1, 3, 0]);
        assert_eq!(by_state(&store), want);
        let m = store.metrics();
        assert!(m.merges > 0, "{m:?}");
        assert!(m.tail_jobs >= 1);
        assert_eq!((m.log_segments, m.log_bytes), files(&sim, |n| n.ends_with(".jql")));
        assert!(m.log_segments > 1, "small segments rotated: {m:?}");
        assert_eq!((m.index_files, m.index_bytes), files(&sim, |n| n.ends_with(".jqi")));
        assert_eq!(m.superseded_bytes, None);
        drop(store);
        // Reopened: the sealed segments' sizes are learnt from the files.
        let store = Store::open("/db", opts(&sim)).unwrap();
        let m = store.metrics();
        assert_eq!((m.log_segments, m.log_bytes), files(&sim, |n| n.ends_with(".jql")));
        assert_eq!(by_state(&store), want);
    }

    /// Each group-commit fsync is timed and counts the writes it made durable.
    #[test]
    fn fsyncs_and_batches_are_counted() {
        let sim = SimFs::new();
        let store = Arc::new(Store::open("/db", Options { memtable_entries: 1 << 20, ..opts(&sim) }).unwrap());
        let before = store.metrics();
        assert_eq!(before.fsync_ns.count, 0);
        push(&store, 1, 3);
        finish(&store, 1, 1, 1);
        let m = store.metrics();
        assert_eq!(m.fsync_ns.count, 2, "one fsync per write when writes come one at a time");
        assert_eq!((m.batch_writes.count, m.batch_writes.sum), (2, 2));
        assert_eq!(m.batch_writes.cumulative[0], 2, "both in the le=1 bucket");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || (0..20).for_each(|_| push(&s, 2, 1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let m = store.metrics();
        assert_eq!(m.batch_writes.sum, 2 + 160, "every write is counted in exactly one fsync");
        assert_eq!(m.fsync_ns.count, m.batch_writes.count);
        assert_eq!(m.durable_seq, store.health().durable_seq);
        assert!(store.health().accepts_writes());
    }

    /// A failed write poisons the store; health says why. A full disk met by an
    /// append cuts its batch instead: nothing poisoned, the cut counted.
    #[test]
    fn health_names_the_poison_and_a_full_disk() {
        for kind in [FaultKind::Enospc, FaultKind::Eio, FaultKind::DiskFull] {
            let sim = SimFs::new();
            let store = Store::open("/db", opts(&sim)).unwrap();
            push(&store, 1, 1);
            assert_eq!(store.health().poison, None);
            sim.set_fault(Some(Fault { at: 0, kind, sticky: false }));
            let big = format!(r#"{{"spider":"s","pad":"{}"}}"#, "x".repeat(5000));
            let e = store.push(1, &[parse_push(&big).unwrap()], None).unwrap_err();
            let h = store.health();
            assert_eq!(store.metrics().poison, h.poison);
            if kind == FaultKind::Eio {
                let p = h.poison.clone().expect("poisoned");
                assert!(!p.disk_full && !h.accepts_writes(), "{}", p.cause);
                continue;
            }
            // A full disk still takes writes into the preallocated space: the
            // first to fail is the append past it, or the next segment's file.
            let failed = ["append to", "create segment"];
            assert!(e.is_disk_full() && failed.iter().any(|f| e.to_string().contains(f)), "{kind:?}: {e}");
            assert!(h.accepts_writes(), "{kind:?}: {h:?}");
            assert_eq!(store.metrics().writes_cut_disk_full, 1);
            sim.set_fault(None);
            store.push(1, &[parse_push(&big).unwrap()], None).unwrap();
            assert_eq!(store.metrics().writes_cut_disk_full, 1);
        }
    }
}
