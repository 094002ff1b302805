//! Group commit and poisoning.
//!
//! Writers append under the writer lock, then wait here until their sequence number
//! is durable. A waiter that finds no sync running leads one: it fdatasyncs the
//! log once for every frame written so far, publishes the matching version to
//! readers, and wakes everyone it covered. A writable store in the background
//! mode also has a sync thread: what was written while a sync ran, it syncs as
//! soon as that sync returned (no waiter to wake and schedule first). A failed
//! fsync poisons the store: it is never retried (the kernel may have dropped the
//! dirty pages), and every later write fails.
//!
//! A write-queue leader does not wait for its batch: it leaves an [`Owed`] answer
//! here, and whoever syncs the batch hands each writer its result straight away
//! (one wake-up per writer, none for the leader in between).
//!
//! Whoever syncs times each fsync and counts the writes it made durable (writes
//! are numbered as they are appended: the fsync covers those since the last).
//!
//! Whoever waits for durable writes without writing (a change feed's long poll)
//! registers a [`DurableHook`]: it is called once per durable batch, after the
//! version is published, with the new durable sequence number.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use super::version::Version;
use crate::error::{Error, Result};
use crate::histogram::Histogram;
use crate::log::tail::Tail;

/// The newest write not yet known durable: its version, the segment it went to,
/// where the log ended after it (offset, next sequence number), and the number
/// of writes appended up to it.
struct Pending {
    version: Arc<Version>,
    tail: Arc<Tail>,
    end: (u64, u64),
    writes: u64,
}

struct SyncState {
    syncing: bool,
    pending: Option<Pending>,
    /// Writes known durable (by their number, as [`Pending::writes`]).
    synced_writes: u64,
    /// A sync thread runs: it syncs what was written while a sync ran (a waiter
    /// that found no sync running leads its own).
    syncer: bool,
    /// The sync thread is asked to end.
    stop: bool,
    /// Answers owed once a sequence number is durable (in no particular order).
    owed: Vec<(u64, Owed)>,
}

/// An answer owed to writers: called once with `Ok` when their writes are
/// durable, or with the poison's error when they never will be.
pub(crate) type Owed = Box<dyn FnOnce(Result<()>) + Send>;

/// Called with the durable sequence number each time it advances (it must be quick:
/// it runs in the thread that synced, under the sync state's lock).
pub type DurableHook = Box<dyn Fn(u64) + Send + Sync>;

/// Upper bounds of the fsync-latency buckets, in nanoseconds (100 µs to 10 s).
pub const FSYNC_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the writes-per-fsync buckets (up to the queue's batch and beyond).
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Durability state shared by writers, the sync leader and readers.
pub struct Commit {
    state: Mutex<SyncState>,
    /// Waiters for durability wait here.
    cv: Condvar,
    /// The sync thread waits here for a write to sync after a sync returned.
    work: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    durable: AtomicU64,
    poisoned: AtomicBool,
    /// The poison came from a failed fsync: what reached the disk is unknown.
    sync_failed: AtomicBool,
    cause: Mutex<Option<String>>,
    /// The poison came from a full file system (ENOSPC, EDQUOT).
    disk_full: AtomicBool,
    published: RwLock<Arc<Version>>,
    hooks: RwLock<Vec<DurableHook>>,
    /// fsyncs done (for tests and reports).
    pub syncs: AtomicU64,
    /// Group-commit fsyncs: how long each took (ns) ...
    pub fsync_ns: Histogram,
    /// ... and how many writes each made durable.
    pub batch_writes: Histogram,
}

impl Commit {
    pub fn new(version: Arc<Version>) -> Commit {
        Commit {
            durable: AtomicU64::new(version.seq),
            state: Mutex::new(SyncState {
                syncing: false,
                pending: None,
                synced_writes: 0,
                syncer: false,
                stop: false,
                owed: Vec::new(),
            }),
            cv: Condvar::new(),
            work: Condvar::new(),
            thread: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            cause: Mutex::new(None),
            disk_full: AtomicBool::new(false),
            published: RwLock::new(version),
            hooks: RwLock::new(Vec::new()),
            syncs: AtomicU64::new(0),
            fsync_ns: Histogram::new(&FSYNC_BOUNDS_NS),
            batch_writes: Histogram::new(&BATCH_BOUNDS),
        }
    }

    /// The version readers see.
    pub fn published(&self) -> Arc<Version> {
        self.published.read().clone()
    }

    fn publish(&self, v: Arc<Version>) {
        let mut p = self.published.write();
        if v.seq >= p.seq {
            *p = v;
        }
    }

    /// Call `hook` each time the durable sequence number advances.
    pub fn on_durable(&self, hook: DurableHook) {
        self.hooks.write().push(hook);
    }

    /// The durable sequence number advanced (the version is published).
    fn tell_durable(&self) {
        let seq = self.durable_seq();
        for h in self.hooks.read().iter() {
            h(seq);
        }
    }

    /// The highest sequence number known durable.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let cause = self.cause.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    /// Why the store is poisoned (the first failure), and whether that was a
    /// full file system; `None` while it accepts writes. Memory only.
    pub fn poison_cause(&self) -> Option<(String, bool)> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.cause.lock().clone().unwrap_or_default();
        Some((cause, self.disk_full.load(Ordering::Acquire)))
    }

    /// Poison the store after a failed write or fsync.
    pub fn poison(&self, err: &Error) {
        let mut c = self.cause.lock();
        if c.is_none() {
            *c = Some(err.to_string());
            self.disk_full.store(err.is_disk_full(), Ordering::Release);
        }
        if err.is_sync_failure() {
            self.sync_failed.store(true, Ordering::Release);
        }
        self.poisoned.store(true, Ordering::Release);
        drop(c);
        let mut s = self.state.lock();
        // A sync under way may still make some owed writes durable: its end answers.
        let owed = if s.syncing { Vec::new() } else { std::mem::take(&mut s.owed) };
        self.cv.notify_all();
        drop(s);
        self.refuse(owed);
    }

    /// Answer writers whose writes will never be durable (the store is poisoned).
    fn refuse(&self, owed: Vec<(u64, Owed)>) {
        for (_, answer) in owed {
            answer(self.check());
        }
    }

    /// True when the store is poisoned by a failed fsync (not only by a failed write).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::Acquire)
    }

    /// Record a write (called under the writer lock, after the append): `end` is
    /// where the log ended after it, in `tail`; `writes` is how many writes were
    /// appended so far (this one included).
    pub fn written(&self, version: Arc<Version>, tail: Arc<Tail>, end: (u64, u64), writes: u64) {
        self.state.lock().pending = Some(Pending { version, tail, end, writes });
    }

    /// Start a thread that syncs what was written during a sync as soon as it
    /// returned: the next fsync starts without waiting for a waiter to be woken
    /// and scheduled (on few cores, most of the gap between fsyncs). A writer
    /// that finds no sync running still syncs itself (no hand-off for one writer).
    pub fn start_syncer(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let t = std::thread::Builder::new().name("jobq-sync".into()).spawn(move || me.sync_loop())?;
        self.state.lock().syncer = true;
        *self.thread.lock() = Some(t);
        Ok(())
    }

    /// End the sync thread (waiters lead their syncs again), and wait for it.
    pub fn stop_syncer(&self) {
        {
            let mut s = self.state.lock();
            s.stop = true;
            self.work.notify_all();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.cv.notify_all();
    }

    fn sync_loop(&self) {
        let mut s = self.state.lock();
        loop {
            let poisoned = self.poisoned.load(Ordering::Acquire);
            if s.syncing || s.pending.is_none() || poisoned {
                // Leaders that left their answers here count on this thread:
                // it ends only once what they wrote is synced (or never can be).
                if s.stop && (poisoned || (!s.syncing && s.pending.is_none())) {
                    s.syncer = false;
                    self.cv.notify_all();
                    return;
                }
                self.work.wait(&mut s);
                continue;
            }
            let p = s.pending.take().expect("a pending write");
            s.syncing = true;
            drop(s);
            self.sync_one(p);
            s = self.state.lock();
        }
    }

    /// Sync the log up to `p` (this thread marked the state `syncing`), then
    /// publish and wake the waiters; a failure poisons.
    fn sync_one(&self, p: Pending) {
        crate::crashpoint::hit("before_fsync");
        let started = Instant::now();
        let r = p.tail.sync(p.end.0, p.end.1);
        self.fsync_ns.observe(started.elapsed().as_nanos() as u64);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock();
        s.syncing = false;
        let mut ready = Vec::new();
        match r {
            Ok(()) => {
                self.batch_writes.observe(p.writes.saturating_sub(s.synced_writes));
                s.synced_writes = s.synced_writes.max(p.writes);
                self.durable.fetch_max(p.version.seq, Ordering::AcqRel);
                self.publish(p.version);
                self.tell_durable();
                ready = take_owed(&mut s.owed, self.durable_seq());
            }
            Err(err) => {
                drop(s);
                self.poison(&err);
                s = self.state.lock();
            }
        }
        let refused = if self.poisoned.load(Ordering::Acquire) { std::mem::take(&mut s.owed) } else { Vec::new() };
        // The thread syncs what was written meanwhile (or ends, when asked to).
        if s.syncer && (s.pending.is_some() || s.stop) {
            self.work.notify_one();
        }
        drop(s);
        self.cv.notify_all();
        deliver(ready);
        self.refuse(refused);
    }

    /// Make a version visible without waiting for durability (buffered mode, or a
    /// change that adds no data, like an index publish).
    pub fn publish_now(&self, version: Arc<Version>) {
        self.publish(version);
    }

    /// Mark everything up to `seq` durable and publish `version` (after a sync the
    /// caller did itself, holding the writer lock, with `writes` appended so far).
    pub fn synced(&self, version: Arc<Version>, writes: u64) {
        let seq = version.seq;
        self.durable.fetch_max(seq, Ordering::AcqRel);
        let mut s = self.state.lock();
        s.synced_writes = s.synced_writes.max(writes);
        if s.pending.as_ref().is_some_and(|p| p.version.seq <= seq) {
            s.pending = None;
        }
        let ready = take_owed(&mut s.owed, self.durable_seq());
        drop(s);
        self.publish(version);
        self.tell_durable();
        self.cv.notify_all();
        deliver(ready);
    }

    /// Answer with `answer` once `seq` is durable, and see that a sync covers it:
    /// lead one if none runs; if the sync thread runs one, leave it to the thread
    /// (it syncs what is pending as soon as that sync returns); without the
    /// thread, wait for the running sync and look again. `seq` must be written.
    pub(crate) fn answer_when_durable(&self, seq: u64, answer: Owed) {
        let mut s = self.state.lock();
        if self.durable_seq() >= seq {
            drop(s);
            return deliver(vec![answer]);
        }
        if self.poisoned.load(Ordering::Acquire) && !s.syncing {
            drop(s);
            return answer(self.check());
        }
        s.owed.push((seq, answer));
        loop {
            if self.durable_seq() >= seq || self.poisoned.load(Ordering::Acquire) {
                return;
            }
            if s.syncing {
                if s.syncer {
                    return;
                }
                self.cv.wait(&mut s);
                continue;
            }
            let Some(p) = s.pending.take() else {
                // Written, not durable, and no sync left to cover it: never expected,
                // but no writer may wait forever (the poison answers them all).
                drop(s);
                return self.poison(&Error::Poisoned { cause: "a write was lost before its sync".into() });
            };
            s.syncing = true;
            drop(s);
            self.sync_one(p);
            s = self.state.lock();
        }
    }

    /// Wait until `seq` is durable, leading a sync if nobody is.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut s = self.state.lock();
        // Once it waited for a sync, the sync thread (if any) runs the next one.
        let mut waited = false;
        loop {
            if self.durable_seq() >= seq {
                return Ok(());
            }
            self.check()?;
            if s.syncing {
                waited = true;
                self.cv.wait(&mut s);
                continue;
            }
            if waited && s.syncer && s.pending.is_some() {
                self.work.notify_one();
                self.cv.wait(&mut s);
                continue;
            }
            let Some(p) = s.pending.take() else {
                // Someone synced everything but `durable` lags: only after a poison.
                self.check()?;
                return Err(Error::Poisoned { cause: "a write was lost before its sync".into() });
            };
            s.syncing = true;
            drop(s);
            self.sync_one(p);
            s = self.state.lock();
        }
    }
}

/// Take the answers owed up to `durable`.
fn take_owed(owed: &mut Vec<(u64, Owed)>, durable: u64) -> Vec<Owed> {
    let mut ready = Vec::new();
    let mut i = 0;
    while i < owed.len() {
        if owed[i].0 <= durable {
            ready.push(owed.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    ready
}

/// Hand durable writers their answers (the last step before an acknowledgement).
fn deliver(ready: Vec<Owed>) {
    if ready.is_empty() {
        return;
    }
    crate::crashpoint::hit("before_ack");
    for answer in ready {
        answer(Ok(()));
    }
}
