//! Group commit and poisoning.
//!
//! Writers append under the writer lock, then wait here until their sequence number
//! is durable. The first waiter becomes the leader: it fdatasyncs the log once for
//! every frame written so far, publishes the matching version to readers, and wakes
//! everyone it covered. A failed fsync poisons the store: it is never retried
//! (the kernel may have dropped the dirty pages), and every later write fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use super::version::Version;
use crate::error::{Error, Result};
use crate::log::tail::Tail;

/// The newest write not yet known durable: its version, the segment it went to,
/// and where the log ended after it (offset, next sequence number).
struct Pending {
    version: Arc<Version>,
    tail: Arc<Tail>,
    end: (u64, u64),
}

struct SyncState {
    syncing: bool,
    pending: Option<Pending>,
}

/// Durability state shared by writers, the sync leader and readers.
pub struct Commit {
    state: Mutex<SyncState>,
    cv: Condvar,
    durable: AtomicU64,
    poisoned: AtomicBool,
    /// The poison came from a failed fsync: what reached the disk is unknown.
    sync_failed: AtomicBool,
    cause: Mutex<Option<String>>,
    published: RwLock<Arc<Version>>,
    /// fsyncs done (for tests and reports).
    pub syncs: AtomicU64,
}

impl Commit {
    pub fn new(version: Arc<Version>) -> Commit {
        Commit {
            durable: AtomicU64::new(version.seq),
            state: Mutex::new(SyncState { syncing: false, pending: None }),
            cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            cause: Mutex::new(None),
            published: RwLock::new(version),
            syncs: AtomicU64::new(0),
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

    /// Poison the store after a failed write or fsync.
    pub fn poison(&self, err: &Error) {
        let mut c = self.cause.lock();
        if c.is_none() {
            *c = Some(err.to_string());
        }
        if err.is_sync_failure() {
            self.sync_failed.store(true, Ordering::Release);
        }
        self.poisoned.store(true, Ordering::Release);
        drop(c);
        let _s = self.state.lock();
        self.cv.notify_all();
    }

    /// True when the store is poisoned by a failed fsync (not only by a failed write).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::Acquire)
    }

    /// Record a write (called under the writer lock, after the append): `end` is
    /// where the log ended after it, in `tail`.
    pub fn written(&self, version: Arc<Version>, tail: Arc<Tail>, end: (u64, u64)) {
        self.state.lock().pending = Some(Pending { version, tail, end });
    }

    /// Make a version visible without waiting for durability (buffered mode, or a
    /// change that adds no data, like an index publish).
    pub fn publish_now(&self, version: Arc<Version>) {
        self.publish(version);
    }

    /// Mark everything up to `seq` durable and publish `version` (after a sync the
    /// caller did itself, holding the writer lock).
    pub fn synced(&self, version: Arc<Version>) {
        let seq = version.seq;
        self.durable.fetch_max(seq, Ordering::AcqRel);
        let mut s = self.state.lock();
        if s.pending.as_ref().is_some_and(|p| p.version.seq <= seq) {
            s.pending = None;
        }
        drop(s);
        self.publish(version);
        self.cv.notify_all();
    }

    /// Wait until `seq` is durable, leading a sync if nobody is.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut s = self.state.lock();
        loop {
            if self.durable_seq() >= seq {
                return Ok(());
            }
            self.check()?;
            if s.syncing {
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
            crate::crashpoint::hit("before_fsync");
            let r = p.tail.sync(p.end.0, p.end.1);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            s = self.state.lock();
            s.syncing = false;
            match r {
                Ok(()) => {
                    self.durable.fetch_max(p.version.seq, Ordering::AcqRel);
                    self.publish(p.version);
                }
                Err(err) => {
                    drop(s);
                    self.poison(&err);
                    s = self.state.lock();
                }
            }
            self.cv.notify_all();
        }
    }
}
