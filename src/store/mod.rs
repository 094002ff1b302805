//! The store: one data directory, one writer at a time, group-committed durable
//! writes, snapshot reads, and index maintenance in the background.

mod backup;
pub mod catalog;
mod chain;
mod check;
mod commit;
mod compact;
mod export;
mod feed;
pub mod fields;
mod import;
mod import_fast;
mod import_keys;
mod import_line;
mod import_parse;
mod import_spill;
mod index_build;
pub mod layout;
mod leftovers;
mod maintain;
mod metrics;
mod open;
mod ops;
mod options;
mod places;
#[doc(hidden)]
pub mod plain;
mod queue;
#[cfg(feature = "cluster")]
pub mod raft;
#[cfg(feature = "cluster")]
mod raft_write;
mod read;
mod rebuild;
mod reclaim;
mod reclaim_role;
mod repair;
mod repair_catalog;
mod repair_header;
pub mod request;
mod retention;
mod space;
mod staged;
mod tokens;
mod training;
pub mod version;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use backup::{backup, BackupReport};
pub use check::{check, CheckReport, Finding};
pub use compact::{compact, CompactReport};
pub use feed::{Change, FeedFrom, FeedMark, FeedPage, MAX_SCAN_BYTES};
pub use import::ImportReport;
pub use layout::segments_named;
pub use metrics::{EngineMetrics, Health, Poison};
pub use open::OpenReport;
pub use ops::PushResult;
pub use options::{Durability, Options};
#[cfg(feature = "cluster")]
pub use raft_write::Proposer;
pub use read::{Snapshot, SnapshotStats};
pub use reclaim::{ReclaimReport, ReclaimStats, MAX_REMOVED_HELD};
pub use repair::{repair, RepairReport};
pub use repair_header::RebuiltHeader;
pub use request::{Changes, PushSpec, Target, UpdateSpec};
pub use space::DiskSpace;
pub use training::TRAIN_AT;

use crate::error::{Error, Result};
use crate::fs::LockGuard;
use crate::log::reader::RecordReader;
use crate::model::{Job, JobKey, JobState};
use commit::Commit;
use ops::Ctx;
use writer::Writer;

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub gen_dir: PathBuf,
    pub opts: Options,
    pub writer: Mutex<Writer>,
    pub queue: queue::WriteQueue,
    pub commit: Arc<Commit>,
    pub reader: Arc<RecordReader>,
    pub report: OpenReport,
    pub closed: AtomicBool,
    pub maintenance: Mutex<Option<maintain::Background>>,
    /// Serialises index maintenance (persist, merge, sweep).
    pub maint_lock: Mutex<()>,
    /// One online compaction cycle at a time.
    pub reclaim_lock: Mutex<()>,
    /// What online compaction did so far.
    pub reclaimed: Arc<reclaim::ReclaimStats>,
    /// The online compaction thread, when one runs.
    pub reclaimer: Mutex<Option<reclaim::Reclaimer>>,
    pub lock: Mutex<Option<LockGuard>>,
    /// Running jobs' auth tokens (the writer keeps them current).
    pub tokens: Arc<tokens::JobTokens>,
    /// Figures kept for [`Store::metrics`].
    pub counters: metrics::EngineCounters,
    /// Where recent listings' last rows stood (`startafter`).
    pub places: Arc<places::Places>,
    /// Log positions the change feed learnt.
    pub feed: crate::log::cursor::SeqIndex,
    /// The free space writes leave on the data directory's file system.
    pub space: space::SpaceGuard,
    /// Signalled under the writer lock each time a cluster node applies an entry.
    #[cfg(feature = "cluster")]
    pub applied: parking_lot::Condvar,
    /// Held by a cluster node's entry syncs and cuts: a cut never races a sync.
    #[cfg(feature = "cluster")]
    pub raft_sync: Mutex<()>,
    /// A cluster node's last applied entry: where it ends and its (index, term,
    /// leader); set under the writer lock with what it applied.
    #[cfg(feature = "cluster")]
    pub raft_applied: Mutex<Option<(crate::log::LogPos, [u64; 3])>>,
    /// A cluster node's oldest segment holding an entry Raft has not purged:
    /// online compaction removes only segments before it (0: none may go).
    #[cfg(feature = "cluster")]
    pub raft_keep_from: std::sync::atomic::AtomicU32,
    /// A cluster node's link to Raft (none: writes are refused).
    #[cfg(feature = "cluster")]
    pub proposer: parking_lot::RwLock<Option<Arc<dyn raft_write::Proposer>>>,
}

/// Start the store's background work (or run it once, inline).
fn start_background(inner: &Arc<Inner>) -> Result<()> {
    if inner.opts.read_only {
        return Ok(());
    }
    if inner.opts.background {
        *inner.maintenance.lock() = Some(maintain::Background::start(inner));
        let o = &inner.opts;
        if o.durability == Durability::Sync && !o.raft_log {
            inner.commit.start_syncer().map_err(|e| Error::io("start the sync thread", &inner.dir, e))?;
        }
        // On a cluster node the leader relocates and purges through Raft
        // (docs/cluster.md); a follower removes what those entries allow.
        if o.compact_when.is_some() || o.retain_deleted.is_some() {
            *inner.reclaimer.lock() = Some(reclaim::Reclaimer::start(inner, o.compact_when));
        }
        Ok(())
    } else {
        maintain::run(inner)
    }
}

/// An open jobq store: one data directory, written by one process at a time
/// (readers may open it read-only beside the writer).
///
/// Writes are acknowledged once durable (group-committed `fdatasync`); reads go
/// through a [`Snapshot`], a consistent view of everything acknowledged so far.
///
/// ```
/// use jobq::query::{Filter, Paging};
/// use jobq::store::request::{parse_push, parse_update};
/// use jobq::store::PushResult;
/// use jobq::{JobKey, JobState, Options, Store};
///
/// # fn main() -> jobq::Result<()> {
/// # let tmp = tempfile::tempdir().expect("a temporary directory");
/// # let dir = tmp.path().join("jobq-data");
/// // Open (or create) the store.
/// let store = Store::open(&dir, Options::default())?;
///
/// // Push a job to project 53; it is durable when `push` returns.
/// let line = parse_push(r#"{"spider":"spider1","tags":["tagA"],"priority":3}"#)?;
/// let key = match &store.push(53, &[line], Some("alice"))?[0] {
///     PushResult::Pushed { key, .. } => *key,
///     PushResult::Conflict { unique } => panic!("an active job holds {unique}"),
/// };
/// assert_eq!(key, "53/1/1".parse::<JobKey>()?);
///
/// // Finish it.
/// let update = parse_update(r#"{"key":"53/1/1","state":"finished","close_reason":"ok"}"#, 53)?;
/// assert_eq!(store.update(53, &[update], Some("alice"))?, vec![(key, JobState::Pending)]);
///
/// // Count and list from a snapshot: finished jobs with tag `tagA`, newest first.
/// let snap = store.snapshot();
/// let finished = Filter { states: vec![JobState::Finished], ..Filter::default() };
/// assert_eq!(snap.count(53, &finished)?, 1);
/// let tagged = Filter { has_tags: vec!["tagA".into()], ..finished };
/// let hits = snap.list(53, &tagged, &Paging { count: 100, ..Paging::default() })?;
/// assert_eq!(JobKey::from_local(53, hits[0].local), key);
/// let job = snap.get(key)?.expect("the job exists");
/// assert_eq!(job.meta.get("close_reason").map(|v| v.get()), Some("\"ok\""));
///
/// // Close: the log's tail is indexed and the durable mark sealed.
/// store.close()?;
/// # Ok(())
/// # }
/// ```
pub struct Store {
    /// Replaced whole only when a cluster node installs a snapshot ([`Store::reload`]).
    inner: parking_lot::RwLock<Arc<Inner>>,
    dir: PathBuf,
    opts: Options,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        Store::open_held(dir.as_ref(), opts, None)
    }

    /// Open with the directory's lock already held (`held`), or taking it.
    pub(crate) fn open_held(dir: &Path, opts: Options, held: Option<LockGuard>) -> Result<Store> {
        let inner = if opts.read_only && held.is_none() {
            // Beside a server, a file may vanish or shrink while we read it (an
            // index merge, a segment online compaction removed, a rotation's cut
            // of the preallocated zeros): the store moved on; open it again.
            let mut attempt = 0;
            loop {
                match open_inner(dir, opts.clone(), None) {
                    Err(e) if moved_on(&e) && attempt < READ_ONLY_ATTEMPTS => attempt += 1,
                    // Beside a server, files read at different moments may not
                    // agree (an index chain read before online compaction removed
                    // the segment it ends in: "log segment missing"). Damage fails
                    // the same way every time, and is reported after the last try.
                    Err(Error::Corrupt { .. }) if attempt < READ_ONLY_ATTEMPTS && served(&*opts.fs, dir) => {
                        attempt += 1
                    }
                    r => break r?,
                }
            }
        } else {
            open_inner(dir, opts, held)?
        };
        Ok(Store { dir: inner.dir.clone(), opts: inner.opts.clone(), inner: parking_lot::RwLock::new(inner) })
    }

    /// Reopen on what the directory holds now (a cluster node, after its
    /// `CURRENT` switched to an installed snapshot's generation). Calls running
    /// finish on the old state; the lock is released and taken again between.
    #[cfg(feature = "cluster")]
    pub(crate) fn reload(&self) -> Result<()> {
        let old = self.inner();
        self.shutdown(false)?;
        let fresh = open_inner(&self.dir, self.opts.clone(), None)?;
        *fresh.proposer.write() = old.proposer.read().clone();
        *self.inner.write() = fresh;
        old.applied.notify_all();
        Ok(())
    }
}

/// Opens a read-only opener tries before it gives up on a store that keeps moving.
const READ_ONLY_ATTEMPTS: u32 = 32;

/// Another process (a server) holds the store's lock.
pub(crate) fn served(fs: &dyn crate::fs::FileSystem, dir: &Path) -> bool {
    let lock = dir.join(layout::LOCK);
    // No lock file: no server, and none is made here.
    fs.exists(&lock).unwrap_or(false) && matches!(fs.lock(&lock), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A file of a store that vanished or shrank under a reader: a server beside it
/// moved on (a damaged store fails the same way every time).
pub(crate) fn moved_on(e: &Error) -> bool {
    use std::io::ErrorKind::{NotFound, UnexpectedEof};
    matches!(e, Error::Io { source, .. } if matches!(source.kind(), NotFound | UnexpectedEof))
}

fn open_inner(dir: &Path, opts: Options, held: Option<LockGuard>) -> Result<Arc<Inner>> {
    let mut o = open::open(dir, &opts, held)?;
    let counters = metrics::EngineCounters::default();
    if let Some(log) = o.writer.log.as_mut() {
        log.share_footprint(counters.log.clone());
        log.set_preallocate(opts.preallocate);
    }
    let version = o.writer.version();
    let reader = o.writer.reader.clone();
    // The tail's running jobs were noted as it was replayed; the index files'
    // current running jobs' tokens are in their token postings.
    for slot in &o.writer.segments {
        o.writer.tokens.learn_segment(slot);
    }
    let tokens = o.writer.tokens.clone();
    let inner = Arc::new(Inner {
        dir: dir.to_path_buf(),
        gen_dir: o.gen_dir,
        writer: Mutex::new(o.writer),
        queue: queue::WriteQueue::default(),
        commit: Arc::new(Commit::new(version)),
        reader,
        report: o.report,
        closed: AtomicBool::new(false),
        maintenance: Mutex::new(None),
        maint_lock: Mutex::new(()),
        reclaim_lock: Mutex::new(()),
        reclaimed: Arc::default(),
        reclaimer: Mutex::new(None),
        lock: Mutex::new(o.lock),
        tokens,
        counters,
        places: Arc::default(),
        feed: Default::default(),
        space: space::SpaceGuard::new(dir.to_path_buf(), opts.keep_free),
        #[cfg(feature = "cluster")]
        applied: parking_lot::Condvar::new(),
        #[cfg(feature = "cluster")]
        raft_sync: Mutex::new(()),
        #[cfg(feature = "cluster")]
        raft_applied: Mutex::new(None),
        #[cfg(feature = "cluster")]
        raft_keep_from: std::sync::atomic::AtomicU32::new(0),
        #[cfg(feature = "cluster")]
        proposer: parking_lot::RwLock::new(None),
        opts,
    });
    start_background(&inner)?;
    Ok(inner)
}

impl Store {
    /// The store's current state: what a call works on from start to end.
    fn inner(&self) -> Arc<Inner> {
        self.inner.read().clone()
    }

    /// Open with default options.
    pub fn open_default(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open(dir, Options::default())
    }

    /// What opening found: the index chain, what recovery cut, what was replayed
    /// (a cluster node: the last open, or the reopen after a snapshot's install).
    pub fn report(&self) -> OpenReport {
        self.inner().report.clone()
    }

    /// Whether any frame was ever written to the store's log (sequence numbers
    /// start at 1 and are never reused).
    pub fn holds_frames(&self) -> bool {
        self.inner().writer.lock().next_seq > 1
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// A consistent view of everything acknowledged so far.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.inner().commit.published(),
            reader: self.inner().reader.clone(),
            clock: self.inner().opts.clock.clone(),
            places: self.inner().places.clone(),
        }
    }

    /// The auth token of a running job, from memory: no record is read, and the
    /// cost does not depend on the job's size. `None` when the job does not
    /// exist, is not running, or has no token.
    pub fn running_job_token(&self, key: JobKey) -> Option<Arc<str>> {
        self.inner().tokens.get(key)
    }

    /// Run a write through the write queue: it is durable when this returns Ok.
    fn write<T: Send + 'static>(
        &self,
        actor: Option<&str>,
        f: impl FnOnce(&mut Writer, &Ctx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner();
        let inner = &*inner;
        if inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let op: queue::Op = Box::new(move |w, ctx| f(w, ctx).map(|v| Box::new(v) as queue::Erased));
        let (result, froze) = inner.queue.submit(inner, queue::Request::new(actor, op));
        if froze {
            self.after_freeze()?;
        }
        result.map(|v| *v.downcast::<T>().expect("a request gets its own result type"))
    }

    fn after_freeze(&self) -> Result<()> {
        maintain::after_freeze(&self.inner())
    }

    /// Push jobs (one per spec) into `project`; one answer per spec, in order.
    pub fn push(&self, project: u32, specs: &[PushSpec], actor: Option<&str>) -> Result<Vec<PushResult>> {
        // Clones share the parsed lines: no copy of their fields.
        let specs = specs.to_vec();
        // Documents are built and packed here, outside the writer lock.
        let docs = ops::push_docs(&specs, actor, &self.inner().reader.dicts);
        self.write(actor, move |w, ctx| ops::push(w, project, &specs, docs, ctx))
    }

    /// Apply updates; answers `(key, previous state)` per job changed, in order.
    pub fn update(&self, project: u32, specs: &[UpdateSpec], actor: Option<&str>) -> Result<Vec<(JobKey, JobState)>> {
        for s in specs {
            let p = match s.target {
                Target::Job(k) => k.project,
                Target::Spider(k) => k.project,
            };
            if p != project {
                return Err(Error::field("key", format!("a key of project {p} in a request for project {project}")));
            }
        }
        let specs = specs.to_vec();
        self.write(actor, move |w, ctx| ops::update(w, &specs, ctx))
    }

    /// Start the next pending job of `project` (highest priority, then oldest),
    /// merging `changes` into it. `None` when nothing is pending.
    pub fn start_next(&self, project: u32, changes: &Changes, actor: Option<&str>) -> Result<Option<Job>> {
        let changes = changes.clone();
        self.write(actor, move |w, ctx| ops::start_next(w, project, &changes, ctx))
    }

    /// Cancel jobs: pending ones finish as cancelled, running ones are marked.
    /// Returns how many were pending or running.
    pub fn cancel(&self, project: u32, keys: &[JobKey], actor: Option<&str>) -> Result<u64> {
        if let Some(k) = keys.iter().find(|k| k.project != project) {
            return Err(Error::field("key", format!("{k} is not a job of project {project}")));
        }
        let keys = keys.to_vec();
        self.write(actor, move |w, ctx| ops::cancel(w, &keys, ctx))
    }

    /// Change a job's fields; false when the job does not exist.
    pub fn edit(&self, key: JobKey, changes: &Changes, actor: Option<&str>) -> Result<bool> {
        let changes = changes.clone();
        self.write(actor, move |w, ctx| ops::edit(w, key, &changes, ctx))
    }

    /// The id of a spider of `project`; with `create`, allocated when new.
    pub fn spider_id(&self, project: u32, name: &str, create: bool) -> Result<Option<u32>> {
        if !create {
            return Ok(self.snapshot().spider_id(project, name));
        }
        if name.is_empty() || name.len() > request::MAX_NAME {
            return Err(Error::field("spider", format!("a spider name is 1 to {} bytes", request::MAX_NAME)));
        }
        if let Some(id) = rebuild::clean_writer(&self.inner())?.catalog.id(project, name) {
            return Ok(Some(id));
        }
        let name = name.to_string();
        self.write(None, move |w, ctx| w.spider_id(project, &name, ctx.durable_seq)).map(Some)
    }

    /// Make every write so far durable (for the buffered mode).
    pub fn sync(&self) -> Result<()> {
        if self.inner().opts.read_only {
            return Ok(());
        }
        let inner = self.inner();
        let w = inner.writer.lock();
        self.inner().commit.check()?;
        let log = w.log.as_ref().expect("a writable store has a log");
        if let Err(e) = log.sync() {
            self.inner().commit.poison(&e);
            return Err(e);
        }
        // A cluster node publishes what it applies, nothing else.
        if !self.inner().opts.raft_log {
            self.inner().commit.synced(w.version(), w.writes);
        }
        Ok(())
    }

    /// Refuse what a cluster node cannot do yet (docs/cluster.md).
    pub(crate) fn not_in_cluster(&self, what: &str) -> Result<()> {
        match self.inner().opts.raft_log {
            true => Err(Error::Replication(format!("{what} is not available on a cluster node yet"))),
            false => Ok(()),
        }
    }

    /// Run one online compaction cycle now over the oldest sealed segments (see
    /// `Options::compact_when` for the automatic ones): their current versions are
    /// relocated, then the segments removed. Nothing to do gives an empty report.
    pub fn reclaim(&self) -> Result<ReclaimReport> {
        if self.inner().opts.read_only {
            return Err(Error::ReadOnly);
        }
        reclaim::cycle(&self.inner()).inspect_err(|e| {
            if !e.leaves_store_sound() && !e.is_input() {
                self.inner().commit.poison(e);
            }
        })
    }

    /// Purge now the deleted jobs older than `Options::retain_deleted` (the
    /// background thread does it every `reclaim_every`): each becomes a tombstone
    /// and leaves every answer. Returns how many were purged.
    pub fn purge_expired(&self) -> Result<u64> {
        if self.inner().opts.read_only {
            return Err(Error::ReadOnly);
        }
        retention::purge_expired(&self.inner()).inspect_err(|e| {
            if !e.leaves_store_sound() && !e.is_input() {
                self.inner().commit.poison(e);
            }
        })
    }

    /// Online compaction so far: cycles, bytes removed and relocated, whether one runs.
    pub fn reclaim_stats(&self) -> Arc<reclaim::ReclaimStats> {
        self.inner().reclaimed.clone()
    }

    /// The share of the log's records no longer any job's current version (what
    /// online compaction reclaims), estimated from sequence numbers and live jobs.
    pub fn superseded_ratio(&self) -> Result<f64> {
        let inner = self.inner();
        let w = inner.writer.lock();
        let first = segment_first_seq(&self.inner())?;
        Ok(reclaim::superseded_ratio(&w, first))
    }

    /// Index the tail now and persist every index image (then reopening replays
    /// nothing). Runs merges due.
    pub fn flush_indexes(&self) -> Result<()> {
        if self.inner().opts.read_only {
            return Ok(());
        }
        {
            let inner = self.inner();
            let mut w = rebuild::clean_writer(&inner)?;
            self.inner().commit.check()?;
            if self.inner().opts.raft_log && cluster_busy(&w) {
                // A leader's batch is in the writer ahead of its entry: index later.
                return Ok(());
            }
            if let Err(e) = w.freeze() {
                self.inner().commit.poison(&e);
                return Err(e);
            }
            w.frozen = 0;
            let log = w.log.as_ref().expect("a writable store has a log");
            if let Err(e) = log.sync() {
                self.inner().commit.poison(&e);
                return Err(e);
            }
            self.inner().commit.synced(w.version(), w.writes);
        }
        maintain::run(&self.inner())
    }

    /// Make the log's durable mark name its end, so that the next open can tell
    /// any later damage from a torn write without a doubt.
    fn seal_log(&self) -> Result<()> {
        let inner = self.inner();
        let mut w = inner.writer.lock();
        #[cfg(feature = "cluster")]
        raft::drop_unappended(&mut w)?;
        let Some(log) = w.log.as_mut() else { return Ok(()) };
        log.seal().inspect_err(|e| self.inner().commit.poison(e))
    }

    /// Flush indexes, stop background work, release the directory.
    pub fn close(self) -> Result<()> {
        self.shutdown(true)
    }

    /// Stop and release the directory without writing anything more (the store's
    /// files were replaced, as by compaction).
    pub(crate) fn abandon(self) {
        let _ = self.shutdown(false);
    }

    fn shutdown(&self, flush: bool) -> Result<()> {
        if self.inner().closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(r) = self.inner().reclaimer.lock().take() {
            r.stop();
        }
        if let Some(bg) = self.inner().maintenance.lock().take() {
            bg.stop();
        }
        self.inner().commit.stop_syncer();
        let r = if flush && !self.inner().opts.read_only && self.inner().commit.check().is_ok() {
            self.inner().closed.store(false, Ordering::Release);
            let r = self.flush_indexes().and_then(|()| self.seal_log());
            self.inner().closed.store(true, Ordering::Release);
            r
        } else if flush && !self.inner().opts.read_only && !self.inner().commit.sync_failed() {
            // A failed write (a full disk, say) left what it wrote since the last
            // sync, never acknowledged: cut it now, as the next open would.
            let inner = self.inner();
            let mut w = inner.writer.lock();
            w.log.as_mut().map_or(Ok(()), |log| log.cut_unsynced())
        } else {
            Ok(())
        };
        self.inner().lock.lock().take();
        r
    }

    /// Statistics of the current snapshot and the store.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            snapshot: self.snapshot().stats(),
            syncs: self.inner().commit.syncs.load(Ordering::Relaxed),
            dictionaries: self.inner().reader.dicts.all().len(),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown(true);
    }
}

/// A cluster leader's batch is ahead of its entry, or was cut off.
fn cluster_busy(w: &Writer) -> bool {
    #[cfg(feature = "cluster")]
    if w.spec.is_some() {
        return true;
    }
    w.dirty
}

fn segment_first_seq(inner: &Inner) -> Result<u64> {
    let segs = crate::log::segment::list(&*inner.opts.fs, &inner.gen_dir)?;
    let first = *segs.first().ok_or_else(|| Error::corrupt(&inner.gen_dir, 0, "the log has no segment"))?;
    Ok(crate::log::scan::FrameScanner::segment(&*inner.opts.fs, &inner.gen_dir, first)?.0.first_seq)
}

/// Counters of an open store.
#[derive(Clone, Copy, Debug)]
pub struct StoreStats {
    pub snapshot: SnapshotStats,
    /// fdatasyncs done by group commit.
    pub syncs: u64,
    /// Dictionaries documents are packed with (the writer packs with the newest).
    pub dictionaries: usize,
}
