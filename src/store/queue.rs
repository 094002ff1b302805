//! The write queue (LevelDB's writer queue): a writer enqueues its operation and
//! waits. The first waiting writer becomes the leader: it takes every queued
//! operation and runs them one after another under the writer lock (each appends
//! its frame). Then it leaves their results with the group commit: whoever runs
//! the fsync that covers the batch hands each writer its result (the leader too
//! waits for its answer, or runs that fsync itself). Followers never take the
//! writer lock, and each writer wakes once per write.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::ops::Ctx;
use super::writer::Writer;
use super::{Durability, Inner};
use crate::error::{Error, Result};

/// An operation's result, its type erased.
pub(crate) type Erased = Box<dyn Any + Send>;
/// An operation, run by whichever writer leads its batch.
pub(crate) type Op = Box<dyn FnOnce(&mut Writer, &Ctx<'_>) -> Result<Erased> + Send>;

/// One queued write.
pub(crate) struct Request {
    actor: Option<String>,
    pub(crate) op: Mutex<Option<Op>>,
    result: Mutex<Option<Result<Erased>>>,
    /// The submitting thread, woken when the result is in or when it may lead.
    thread: std::thread::Thread,
    /// Runs whatever the free space (store/space.rs): online compaction's
    /// relocations, which free more than they take.
    uses_reserve: bool,
}

impl Request {
    pub fn new(actor: Option<&str>, op: Op) -> Arc<Request> {
        Arc::new(Request {
            actor: actor.map(str::to_string),
            op: Mutex::new(Some(op)),
            result: Mutex::new(None),
            thread: std::thread::current(),
            uses_reserve: false,
        })
    }

    /// A request that may take the space the store keeps free (see `uses_reserve`).
    pub fn using_reserve(op: Op) -> Arc<Request> {
        let mut r = Request::new(None, op);
        Arc::get_mut(&mut r).expect("not shared yet").uses_reserve = true;
        r
    }

    pub(crate) fn answer(&self, r: Result<Erased>) {
        *self.result.lock() = Some(r);
        self.thread.unpark();
    }
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<Arc<Request>>,
    leading: bool,
}

/// The queue of writes waiting for a leader. Each waiter parks; a leader wakes
/// exactly the writers it answers, and the next leader (no thundering herd).
#[derive(Default)]
pub(crate) struct WriteQueue {
    state: Mutex<QueueState>,
}

/// Most operations one leader runs before its fsync.
const MAX_BATCH: usize = 256;

impl WriteQueue {
    /// Run `req` (leading a batch if no one is) and return its result. `true` in
    /// the second place: the batch froze the tail into an index image. `req` must
    /// have been made on this thread.
    pub fn submit(&self, inner: &Inner, req: Arc<Request>) -> (Result<Erased>, bool) {
        let mut q = self.state.lock();
        q.waiting.push_back(req.clone());
        // Whether the batch this thread led (if any) froze the tail.
        let mut froze = false;
        loop {
            if let Some(r) = req.result.lock().take() {
                return (r, froze);
            }
            // Lead only while this request still waits: once taken, its batch's
            // leader will answer it.
            if !q.leading && q.waiting.iter().any(|r| Arc::ptr_eq(r, &req)) {
                q.leading = true;
                let n = q.waiting.len().min(MAX_BATCH);
                let batch: Vec<Arc<Request>> = q.waiting.drain(..n).collect();
                drop(q);
                // A cluster node: the batch is a Raft entry, and the next waits for it.
                #[cfg(feature = "cluster")]
                if inner.opts.raft_log {
                    let proposer = inner.proposer.read().clone();
                    super::raft_write::leader_batch(inner, &batch, proposer.as_deref());
                    q = self.state.lock();
                    q.leading = false;
                    if let Some(next) = q.waiting.front() {
                        next.thread.unpark();
                    }
                    continue;
                }
                let appended = append_batch(inner, &batch);
                // The next batch may append while this one waits for its fsync.
                q = self.state.lock();
                q.leading = false;
                if let Some(next) = q.waiting.front() {
                    next.thread.unpark();
                }
                drop(q);
                froze = finish_batch(inner, batch, appended);
                q = self.state.lock();
                continue;
            }
            drop(q);
            // Spurious wake-ups are harmless: the loop looks again.
            std::thread::park();
            q = self.state.lock();
        }
    }
}

/// What appending a batch did.
struct Appended {
    results: Vec<(Result<Erased>, bool)>,
    /// The last sequence number written, when something was.
    seq: Option<u64>,
    froze: bool,
    /// The batch's write failed (its frames are written together at its end).
    lost: Option<Error>,
}

/// Run every operation of a batch under the writer lock.
fn append_batch(inner: &Inner, batch: &[Arc<Request>]) -> Appended {
    let mut w = inner.writer.lock();
    if w.dirty {
        // Only after a failed rebuild (the store is poisoned then): try again.
        drop(w);
        if let Err(e) = super::rebuild::rebuild(inner) {
            inner.commit.poison(&e);
        }
        w = inner.writer.lock();
    }
    let first = w.next_seq;
    // Where the batch starts: a full disk cuts the log back to here.
    let start = w.log.as_ref().map(|l| (l.end(), l.next_seq()));
    let newest_dict = inner.reader.dicts.latest().map_or(0, |d| d.id);
    // The batch's frames go to the log in one write, once its operations ran.
    if let Some(log) = w.log.as_mut() {
        log.defer_writes();
    }
    let mut full = None;
    let results = run_ops(inner, &mut w, batch, Some(&mut full));
    let mut lost = None;
    match w.log.as_mut().map(|l| l.stop_deferring()) {
        Some(Err(e)) if e.is_append_disk_full() && inner.commit.check().is_ok() => {
            full.get_or_insert(e);
        }
        Some(Err(e)) => {
            // The batch's writes are lost: each that wrote gets this error.
            inner.commit.poison(&e);
            lost = Some(e);
        }
        _ => {}
    }
    if let Some(e) = full {
        // Not counted as writes an fsync made durable (the group commit's figures).
        w.writes -= results.iter().filter(|(_, wrote)| *wrote).count() as u64;
        cut_batch(inner, w, start, newest_dict, &e);
        return Appended { results, seq: None, froze: false, lost: Some(e) };
    }
    let (mut froze, mut seq) = (false, None);
    if w.next_seq != first {
        seq = Some(w.next_seq - 1);
        if inner.commit.check().is_ok() {
            if w.should_freeze() {
                if let Err(e) = w.freeze() {
                    inner.commit.poison(&e);
                }
            }
            froze = std::mem::take(&mut w.frozen) > 0;
            let version = w.version();
            let log = w.log.as_ref().expect("a writable store has a log");
            let end = (log.end().offset, log.next_seq());
            inner.commit.written(version.clone(), log.tail().clone(), end, w.writes);
            if inner.opts.durability == Durability::Buffered {
                inner.commit.publish_now(version);
            }
        }
    }
    Appended { results, seq, froze, lost }
}

/// A batch's append met a full disk (ENOSPC, EDQUOT on a write, not a sync):
/// cut the log back to where the batch started (nothing of it was synced, no
/// writer of it is answered but with the error), forget the dictionaries it
/// added, and rebuild the writer's state from the log (store/rebuild.rs).
/// Nothing is poisoned: later writes are taken once there is room again. A
/// batch that rotated the log, or a cut or rebuild that fails, poisons.
fn cut_batch(
    inner: &Inner,
    mut w: parking_lot::MutexGuard<'_, Writer>,
    start: Option<(crate::log::LogPos, u64)>,
    newest_dict: u32,
    full: &Error,
) {
    if inner.commit.check().is_err() {
        // Poisoned meanwhile (a sync failed): nothing more is written, nor cut.
        return;
    }
    w.mark_dirty();
    let cut = match (start, w.log.as_mut()) {
        // The segment left behind is sealed and may be shared (a backup's link).
        (Some((at, _)), Some(log)) if log.end().segment != at.segment => Err(full.again()),
        (Some((at, seq)), Some(log)) => log.truncate_to(at, seq).map(|()| at),
        _ => Err(full.again()),
    };
    let at = match cut {
        Ok(at) => at,
        Err(e) => {
            inner.commit.poison(&e);
            return;
        }
    };
    w.reader.forget_from(at.segment);
    let added: Vec<u32> = inner.reader.dicts.all().iter().map(|d| d.id).filter(|id| *id > newest_dict).collect();
    for id in added {
        inner.reader.dicts.remove(id);
    }
    inner.counters.cut_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Under both locks when maintenance is idle; else waiting for it (the
    // maintenance lock comes first), while no other batch runs (this thread leads).
    let rebuilt = match inner.maint_lock.try_lock() {
        Some(_maintenance) => super::rebuild::rebuild_locked(inner, &mut w),
        None => {
            drop(w);
            super::rebuild::rebuild(inner)
        }
    };
    if let Err(e) = rebuilt {
        inner.commit.poison(&e);
    }
}

/// Run each operation of `batch` (each says whether it wrote); a fault poisons,
/// but for a full disk met by an append when `full` is given: it is left there,
/// and the operations after it are not run (they get the same error).
pub(crate) fn run_ops(
    inner: &Inner,
    w: &mut Writer,
    batch: &[Arc<Request>],
    mut full: Option<&mut Option<Error>>,
) -> Vec<(Result<Erased>, bool)> {
    let mut results: Vec<(Result<Erased>, bool)> = Vec::with_capacity(batch.len());
    // Looked at once a batch (store/space.rs); refused before anything is written.
    let room = match batch.iter().all(|r| r.uses_reserve) {
        true => Ok(()),
        false => inner.space.check(&*inner.opts.fs, 0),
    };
    for req in batch {
        let op = req.op.lock().take().expect("an operation runs once");
        if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            results.push((Err(Error::Closed), false));
            continue;
        }
        if let Err(e) = inner.commit.check() {
            results.push((Err(e), false));
            continue;
        }
        if let Some(Some(e)) = full.as_deref() {
            results.push((Err(e.again()), false));
            continue;
        }
        if let (Err(e), false) = (&room, req.uses_reserve) {
            results.push((Err(e.again()), false));
            continue;
        }
        let ctx = Ctx {
            now: inner.opts.clock.now_ms(),
            actor: req.actor.as_deref(),
            durable_seq: inner.commit.durable_seq(),
        };
        let before = w.next_seq;
        let r = op(w, &ctx);
        let wrote = w.next_seq != before;
        w.writes += u64::from(wrote);
        if let Err(e) = &r {
            match full.as_deref_mut() {
                Some(slot) if e.is_append_disk_full() => *slot = Some(e.again()),
                // Input is refused before anything is written; anything else is a fault.
                _ if wrote || !e.is_input() => inner.commit.poison(e),
                _ => {}
            }
        }
        results.push((r, wrote));
    }
    results
}

/// Hand each operation of the batch its result once the batch is durable (Sync:
/// whoever syncs it answers; this thread may be the one).
fn finish_batch(inner: &Inner, batch: Vec<Arc<Request>>, mut a: Appended) -> bool {
    let results = std::mem::take(&mut a.results);
    if let (Some(seq), Durability::Sync, None) = (a.seq, inner.opts.durability, &a.lost) {
        let answers: Vec<_> = batch.into_iter().zip(results).collect();
        let owed = Box::new(move |durable: Result<()>| {
            for (req, (r, wrote)) in answers {
                req.answer(match (&durable, wrote) {
                    (Err(e), true) => Err(Error::Poisoned { cause: e.to_string() }),
                    _ => r,
                });
            }
        });
        inner.commit.answer_when_durable(seq, owed);
        return a.froze;
    }
    let durable = match (a.seq, inner.opts.durability) {
        (Some(_), Durability::Buffered) => inner.commit.check(),
        _ => Ok(()),
    };
    crate::crashpoint::hit("before_ack");
    for (req, (r, wrote)) in batch.iter().zip(results) {
        let r = match (&a.lost, &durable, wrote) {
            (Some(e), _, true) => Err(e.again()),
            (None, Err(e), true) => Err(Error::Poisoned { cause: e.to_string() }),
            _ => r,
        };
        req.answer(r);
    }
    a.froze
}
