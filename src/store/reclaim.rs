//! Online compaction: the space of superseded versions is reclaimed from the
//! oldest log segments while the store serves (Bitcask's merge, WiscKey's
//! value-log garbage collection).
//!
//! A cycle takes the oldest sealed segments (at most `reclaim_segments`, and at
//! most a tenth of the log's segments, at least one):
//! 1. relocate: every record there that is still its job's current version is
//!    appended again, byte for byte, in frames flagged `relocated` (a write like
//!    any other, through the write queue, in small throttled batches; a job
//!    changed meanwhile is skipped, its newer version being elsewhere);
//! 2. a catalog frame keeps every spider and next job id the segments held;
//! 3. everything written so far is made durable;
//! 4. index files ending before the first kept sequence number leave the chain; the
//!    one straddling it stays (its docs before the new start are superseded), or,
//!    when the retention dropped jobs it holds there, is rewritten without them;
//! 5. `CURRENT` names the first kept segment as the log's start; then the
//!    segments are removed (oldest first), then the dropped index files.
//!
//! Until step 5 the old segments are still the log's start: a crash anywhere
//! leaves a store that opens with every acknowledged write (relocated records
//! are ordinary current versions). Snapshots taken before step 5 keep reading
//! the removed segments through the log epoch. Deleted jobs past `retain_deleted`
//! are not relocated: they are gone once the segments are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index_build::IndexBuild;
use super::layout;
use super::maintain;
use super::queue::{self, Erased, Op};
use super::reclaim_role::{dict_kept, index_covers, last_removable, role, Role};
use super::version::{find_in_segments, SegmentSlot, Version};
use super::writer::Writer;
use super::Inner;
use crate::codec::frame::FrameKind;
use crate::codec::record;
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::index::{merge, DeadSet, IndexSegment, SegmentMeta};
use crate::log::scan::{FrameScanner, Step};
use crate::log::{segment, LogPos};
use crate::model::{JobKey, JobState};

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Segments removed.
    pub segments: Vec<u32>,
    /// Bytes of the segments removed, and of the records relocated from them.
    pub bytes_removed: u64,
    pub bytes_relocated: u64,
    pub records_relocated: u64,
    /// Deleted jobs dropped by the retention rule, and tombstones of purged ones.
    pub deleted_dropped: u64,
    /// Index files dropped (they ended before the new start).
    pub index_files_dropped: u64,
    pub millis: u64,
}

/// The share of the log's records that are no longer any job's current version:
/// sequence numbers used minus live jobs, over sequence numbers used (an estimate
/// of the superseded bytes' share, records being of similar sizes).
pub(crate) fn superseded_ratio(w: &Writer, first_seq: u64) -> f64 {
    let used = w.next_seq.saturating_sub(first_seq);
    if used == 0 {
        return 0.0;
    }
    let live: u64 = w.segments.iter().map(SegmentSlot::live_docs).sum::<u64>() + w.mem.len() as u64;
    1.0 - (live.min(used) as f64 / used as f64)
}

/// Run one cycle when the superseded share is at least `ratio` and there are
/// sealed segments to take; `None` when there was nothing to do.
pub(crate) fn cycle_if_due(inner: &Inner, ratio: f64) -> Result<Option<ReclaimReport>> {
    let (first, tail) = log_bounds(inner)?;
    let due = {
        let w = inner.writer.lock();
        let share = superseded_ratio(&w, first_seq(inner, first)?);
        let (_, log_bytes) = inner.counters.log.get();
        inner.counters.set_superseded_bytes((log_bytes as f64 * share) as u64);
        share >= ratio
    };
    if !due || first >= tail {
        return Ok(None);
    }
    cycle(inner).map(Some)
}

/// The first segment and the one being written.
fn log_bounds(inner: &Inner) -> Result<(u32, u32)> {
    let segs = segment::list(&*inner.opts.fs, &inner.gen_dir)?;
    let first = *segs.first().ok_or_else(|| Error::corrupt(&inner.gen_dir, 0, "the log has no segment"))?;
    let tail = inner.writer.lock().log_end().segment;
    Ok((first, tail))
}

fn first_seq(inner: &Inner, n: u32) -> Result<u64> {
    Ok(FrameScanner::segment(&*inner.opts.fs, &inner.gen_dir, n)?.0.first_seq)
}

/// Removed segments that old snapshots may hold open before compaction waits:
/// it bounds the descriptors and the disk space readers can keep (a cycle
/// removes at most `Options::reclaim_segments` more).
pub const MAX_REMOVED_HELD: usize = 64;

/// One cycle over the oldest sealed segments (none: nothing to do).
pub(crate) fn cycle(inner: &Inner) -> Result<ReclaimReport> {
    let started = Instant::now();
    let _one = inner.reclaim_lock.lock();
    inner.reclaimed.active.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = run_cycle(inner, started);
    inner.reclaimed.active.store(false, std::sync::atomic::Ordering::Relaxed);
    r
}

fn run_cycle(inner: &Inner, started: Instant) -> Result<ReclaimReport> {
    let mut report = ReclaimReport::default();
    let (first, tail) = log_bounds(inner)?;
    // A tenth of the log at most (at least one segment): the copies a cycle makes
    // before it removes anything stay small beside the store.
    let span = ((tail + 1).saturating_sub(first) / 10).clamp(1, inner.opts.reclaim_segments.max(1) as u32);
    let role = role(inner);
    let last = last_removable(inner, tail.saturating_sub(1)).min(first + span - 1);
    if first > last || tail == 0 {
        return Ok(report);
    }
    // Snapshots older than earlier cycles (a slow client's streamed answer) hold
    // the segments those removed: wait for them rather than hold more open.
    if inner.reader.removed_held() >= MAX_REMOVED_HELD {
        inner.reclaimed.deferred.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(report);
    }
    let prefix: Vec<u32> = (first..=last).collect();
    // Room for the copies: online compaction may take the space kept free (it
    // frees more than it takes), not more. The copies are estimated from the
    // log's share still current, doubled.
    let bytes = prefix.iter().map(|&n| segment_len(inner, n)).sum::<Result<u64>>()?;
    let current = 1.0 - superseded_ratio(&inner.writer.lock(), first_seq(inner, first)?);
    let copies = ((bytes as f64 * current.clamp(0.0, 1.0) * 2.0) as u64).min(bytes);
    if !inner.space.has_room(&*inner.opts.fs, copies) {
        inner.reclaimed.deferred.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(report);
    }
    // A leader decides what is current on its writer, which holds a batch ahead
    // of its entry; one cut off since may have superseded a record not relocated.
    let cuts = inner.writer.lock().cuts;
    // A cluster drops an expired job only once the leader's tombstone for it
    // applied (retention.rs): relocation keeps it until then, on every node.
    let cutoff = inner.opts.retain_deleted.filter(|_| role == Role::Single);
    let cutoff = cutoff.map(|d| inner.opts.clock.now_ms().saturating_sub(d.as_millis() as u64));
    for &n in &prefix {
        if !relocate_segment(inner, n, cutoff, role == Role::Follower, &mut report)? {
            // Not relocated by the leader yet (or not applied here): next time.
            return Ok(ReclaimReport::default());
        }
        report.bytes_removed += segment_len(inner, n)?;
    }
    // The spiders and next job ids the prefix held, kept; then all of it durable,
    // including every write that superseded a prefix record (after a crash, no job
    // may be left without its newest durable version). No need to index it: the
    // relocated copies are in the tail, and after a restart they supersede, from the
    // replay or a later index file, whatever points into the removed segments. A
    // cluster leader's writes return applied, so committed by a majority.
    if role != Role::Follower {
        submit(inner, Box::new(|w, ctx| w.append_catalog(ctx.durable_seq).map(|()| Box::new(()) as Erased)))?;
    }
    if role == Role::Single {
        durable(inner)?;
    }
    let kept_seq = first_seq(inner, last + 1)?;
    if role == Role::Follower && !index_covers(inner, kept_seq) {
        // Its spiders, next job ids and dictionaries must survive in an index
        // file's catalog: a follower writes no catalog frame.
        return Ok(ReclaimReport::default());
    }
    if inner.writer.lock().cuts != cuts {
        return Ok(ReclaimReport::default());
    }
    let _maint = inner.maint_lock.lock();
    let (removed_files, holding_dropped) = drop_indexes(inner, kept_seq, &prefix, &mut report)?;
    let fsys = &*inner.opts.fs;
    // Files that hold jobs the retention dropped go before the segments they point
    // into: a crash between two segment removals must not leave one to start the
    // chain at the new log start (its dropped jobs would point into removed
    // segments). Without them, an open there replays the log instead.
    remove_index_files(fsys, &inner.gen_dir, &holding_dropped)?;
    // IMPORTANT: the new start is durable in `CURRENT` before a segment goes: a log
    // that starts later than `CURRENT` says lost segments (layout.md).
    let generation = inner.writer.lock().generation;
    if !layout::advance_log_start(fsys, &inner.dir, generation, last + 1)? {
        // A snapshot install switched the node to another generation meanwhile.
        return Ok(ReclaimReport::default());
    }
    crate::crashpoint::hit("reclaim_start_moved");
    // IMPORTANT: segments go oldest first, so the log stays contiguous after a crash.
    for &n in &prefix {
        let p = inner.gen_dir.join(segment::file_name(n));
        fsys.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
        crate::crashpoint::hit("reclaim_segment_removed");
    }
    // IMPORTANT: fsync folder, so the removals are durable before the index files go.
    fsys.sync_dir(&inner.gen_dir).map_err(|e| Error::io("fsync dir", &inner.gen_dir, e))?;
    remove_index_files(fsys, &inner.gen_dir, &removed_files)?;
    report.segments = prefix;
    report.millis = started.elapsed().as_millis() as u64;
    inner.reclaimed.record(&report);
    inner.counters.note_compaction(report.bytes_removed.saturating_sub(report.bytes_relocated));
    Ok(report)
}

/// Remove the index files `names` that are still there, then sync the directory
/// (when there were any).
fn remove_index_files(fsys: &dyn crate::fs::FileSystem, dir: &std::path::Path, names: &[String]) -> Result<()> {
    for name in names {
        let p = dir.join(name);
        if fsys.exists(&p).map_err(|e| Error::io("stat", &p, e))? {
            fsys.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
        }
    }
    if !names.is_empty() {
        // IMPORTANT: fsync folder, so the removals are durable before what follows.
        fsys.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
    }
    Ok(())
}

fn segment_len(inner: &Inner, n: u32) -> Result<u64> {
    let p = inner.gen_dir.join(segment::file_name(n));
    let f = inner.opts.fs.open(&p, crate::fs::OpenMode::Read).map_err(|e| Error::io("open", &p, e))?;
    f.len().map_err(|e| Error::io("stat", &p, e))
}

/// Run a write through the queue (as `Store::write` does) and let maintenance know.
pub(super) fn submit(inner: &Inner, op: Op) -> Result<Erased> {
    let (r, froze) = inner.queue.submit(inner, queue::Request::using_reserve(op));
    if froze {
        maintain::after_freeze(inner)?;
    }
    r
}

/// Wait until everything written so far is durable.
pub(super) fn durable(inner: &Inner) -> Result<()> {
    let seq = inner.writer.lock().next_seq - 1;
    inner.commit.wait_durable(seq)
}

/// The current location of each job, as of a version (the tail as a map).
struct Current {
    version: Arc<Version>,
    mem: FastMap<(u32, u64), u64>,
}

impl Current {
    fn new(version: Arc<Version>) -> Current {
        let mem = version.mem.projects().flat_map(|(p, m)| m.iter().map(move |e| ((p, e.local), e.loc))).collect();
        Current { version, mem }
    }

    fn loc(&self, key: JobKey) -> Option<u64> {
        let (p, l) = (key.project, key.local());
        self.mem.get(&(p, l)).copied().or_else(|| find_in_segments(&self.version.segments, p, l).map(|f| f.loc()))
    }
}

/// Relocate the current versions held by segment `n`, in throttled batches.
/// `dry` (a cluster follower): relocate nothing; false when the segment still
/// holds a current version (or a dictionary no index file keeps).
fn relocate_segment(inner: &Inner, n: u32, cutoff: Option<u64>, dry: bool, report: &mut ReclaimReport) -> Result<bool> {
    const BATCH_RECORDS: usize = 512;
    const BATCH_BYTES: usize = 1 << 20;
    let current = Current::new(inner.writer.lock().version());
    let (_, mut sc) = FrameScanner::segment(&*inner.opts.fs, &inner.gen_dir, n)?;
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    let mut scanned = Instant::now();
    loop {
        if scanned.elapsed() > Duration::from_millis(5) {
            // Reading and decoding the segment is paced like the writes.
            pause(scanned.elapsed());
            scanned = Instant::now();
        }
        let (offset, header, payload) = match sc.next_step()? {
            Step::End => break,
            Step::Bad { offset, reason } => {
                return Err(Error::corrupt(inner.gen_dir.join(segment::file_name(n)), offset, reason))
            }
            Step::Frame { offset, header, payload } => (offset, header, payload),
        };
        if header.kind == FrameKind::Dict && dry {
            if !dict_kept(inner, payload)? {
                return Ok(false);
            }
            continue;
        }
        if header.kind == FrameKind::Dict {
            // Records anywhere may use it: written again before the segment goes.
            let payload = payload.to_vec();
            submit(
                inner,
                Box::new(move |w, ctx| w.append_dict(&payload, ctx.durable_seq).map(|()| Box::new(()) as Erased)),
            )?;
            continue;
        }
        if header.kind != FrameKind::Jobs {
            continue;
        }
        let path = || inner.gen_dir.join(segment::file_name(n));
        let recs = record::decode_jobs(payload, header.count)
            .map_err(|e| Error::corrupt(path(), offset + 32 + e.offset as u64, e.what))?;
        let ends: Vec<usize> = recs.iter().skip(1).map(|(o, _)| *o).chain([payload.len()]).collect();
        for ((off, view), end) in recs.iter().zip(ends) {
            let loc = LogPos { segment: n, offset: offset + 32 + *off as u64 }.pack();
            if current.loc(view.key) != Some(loc) {
                continue;
            }
            // Tombstones go with their segment: every older version of their job
            // is in this segment or an older one, gone too.
            let deleted_at = view.times[JobState::Deleted as usize];
            let expired = view.state == JobState::Deleted && cutoff.zip(deleted_at).is_some_and(|(c, t)| t < c);
            if expired || view.state == JobState::Purged {
                report.deleted_dropped += 1;
                continue;
            }
            if dry {
                return Ok(false);
            }
            batch.push((loc, payload[*off..end].to_vec()));
            bytes += end - off;
            if batch.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                relocate_batch(inner, std::mem::take(&mut batch), report)?;
                bytes = 0;
            }
        }
    }
    relocate_batch(inner, batch, report)?;
    Ok(true)
}

/// Compaction works at most a third of the time: after `worked`, twice as long a
/// pause (at most 200 ms).
fn pause(worked: Duration) {
    std::thread::sleep((worked * 2).min(Duration::from_millis(200)));
}

/// Append the records of `batch` that are still current, as one relocation frame;
/// then pause.
fn relocate_batch(inner: &Inner, batch: Vec<(u64, Vec<u8>)>, report: &mut ReclaimReport) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let done = submit(
        inner,
        Box::new(move |w, ctx| {
            let t = Instant::now();
            w.relocate(&batch, ctx.durable_seq).map(|r| Box::new((r, t.elapsed())) as Erased)
        }),
    )?;
    let ((records, bytes), held) = *done.downcast::<((u64, u64), Duration)>().expect("relocate answers its counts");
    report.records_relocated += records;
    report.bytes_relocated += bytes;
    // Paced by the time it held the writer, not by the fsync it waited for.
    pause(held);
    Ok(())
}

/// Take out of the chain the index files that end before `kept_seq`. The one that
/// straddles it stays when its docs before the new start are all superseded (by
/// relocated copies); when some are not (deleted jobs the retention dropped), it is
/// rewritten as `[kept_seq, hi]` without them. Retire the removed segments; returns
/// the names of the files no longer used, and of those the ones that hold dropped
/// jobs (they must go before the segments).
fn drop_indexes(
    inner: &Inner,
    kept_seq: u64,
    prefix: &[u32],
    report: &mut ReclaimReport,
) -> Result<(Vec<String>, Vec<String>)> {
    let boundary = LogPos { segment: prefix[prefix.len() - 1] + 1, offset: 0 };
    let straddler = {
        let w = inner.writer.lock();
        let at = w.segments.iter().take_while(|s| s.seg.meta().hi_seq < kept_seq).count();
        w.segments.get(at).filter(|s| s.seg.meta().lo_seq < kept_seq).cloned()
    };
    // Without retention drops, every doc before the new start was relocated.
    let dropped_some = report.deleted_dropped > 0;
    let trimmed = match straddler.filter(|s| dropped_some && holds_live_before(s, boundary)) {
        Some(s) => Some((s.clone(), trim(inner, &s, boundary, kept_seq)?)),
        None => None,
    };
    let mut w = inner.writer.lock();
    let at = w.segments.iter().take_while(|s| s.seg.meta().hi_seq < kept_seq).count();
    let mut holding: Vec<String> = w.segments[..at]
        .iter()
        .filter(|s| dropped_some && holds_live_before(s, boundary))
        .map(|s| s.seg.meta().file_name())
        .collect();
    let mut gone: Vec<String> = w.segments.drain(..at).map(|s| s.seg.meta().file_name()).collect();
    if let Some((old, new)) = trimmed {
        let Some(now) = w.segments.first().filter(|s| Arc::ptr_eq(&s.seg, &old.seg)).cloned() else {
            return Err(Error::corrupt(&inner.gen_dir, 0, "index files changed under a compaction"));
        };
        let mut slot = SegmentSlot::new(new.clone());
        for (i, project) in now.seg.projects().enumerate() {
            let sec = now.seg.section_at(i);
            for doc in now.dead[i].docs() {
                if let Some(d) = new.section(project).and_then(|m| m.find(sec.local(doc))) {
                    slot.kill(project, d);
                }
            }
        }
        w.segments[0] = slot;
        gone.push(old.seg.meta().file_name());
        holding.push(old.seg.meta().file_name());
    }
    report.index_files_dropped = gone.len() as u64;
    // Tail entries still pointing into the prefix are jobs dropped there (the
    // relocated ones point at their copies now).
    if dropped_some {
        w.mem.retain(|e| LogPos::unpack(e.loc) >= boundary);
    }
    // The prefix's handles stay with the versions made before; new ones go without.
    let handles = inner.reader.retire(prefix)?;
    inner.feed.retire(prefix);
    w.epoch = w.epoch.end(handles);
    if let Some(log) = w.log.as_mut() {
        log.forget_segments(prefix);
    }
    maintain::publish_if_clean(inner, &w);
    gone.retain(|n| !holding.contains(n));
    Ok((gone, holding))
}

/// Does a doc of `slot` before `boundary` still count (not superseded)?
fn holds_live_before(slot: &SegmentSlot, boundary: LogPos) -> bool {
    (0..slot.seg.projects().count()).any(|i| {
        let sec = slot.seg.section_at(i);
        (0..sec.len()).any(|d| !slot.dead[i].contains(d) && LogPos::unpack(sec.loc(d)) < boundary)
    })
}

/// `slot`'s docs from `boundary` on, as a new published file `[kept_seq, hi]`.
fn trim(inner: &Inner, slot: &SegmentSlot, boundary: LogPos, kept_seq: u64) -> Result<Arc<IndexSegment>> {
    let meta = SegmentMeta { lo_seq: kept_seq, docs: 0, ..*slot.seg.meta() };
    let mut out =
        IndexBuild::new(inner, slot.seg.meta().docs, &format!("trim-{:016x}-{:016x}", meta.lo_seq, meta.hi_seq))?;
    for i in 0..slot.seg.projects().count() {
        merge::for_live_entries(&slot.seg.section_at(i), &DeadSet::new(), merge::CHUNK_DOCS, &mut |mut docs| {
            docs.retain(|d| LogPos::unpack(d.loc) >= boundary);
            out.push(docs)
        })?;
    }
    Ok(Arc::new(out.publish(inner, meta, &slot.seg.catalog())?))
}

/// What online compaction did since the store opened.
#[derive(Debug, Default)]
pub struct ReclaimStats {
    /// A cycle is running.
    pub active: std::sync::atomic::AtomicBool,
    pub cycles: std::sync::atomic::AtomicU64,
    pub bytes_removed: std::sync::atomic::AtomicU64,
    pub bytes_relocated: std::sync::atomic::AtomicU64,
    /// Cycles put off: old snapshots still held removed segments, or the disk
    /// had no room for the copies.
    pub deferred: std::sync::atomic::AtomicU64,
}

impl ReclaimStats {
    fn record(&self, r: &ReclaimReport) {
        use std::sync::atomic::Ordering::Relaxed;
        self.cycles.fetch_add(1, Relaxed);
        self.bytes_removed.fetch_add(r.bytes_removed, Relaxed);
        self.bytes_relocated.fetch_add(r.bytes_relocated, Relaxed);
    }
}

/// The thread that, every `reclaim_every`, purges the deleted jobs past the
/// retention (when there is one), then runs a cycle whenever the superseded share
/// reaches the ratio (when there is one).
pub(crate) struct Reclaimer {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl Reclaimer {
    pub fn start(inner: &Arc<Inner>, ratio: Option<f64>) -> Reclaimer {
        let weak = Arc::downgrade(inner);
        let every = inner.opts.reclaim_every;
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("jobq-reclaim".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.commit.check().is_err() || inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                        continue;
                    }
                    // A follower purges nothing: its leader's tombstones reach it as entries.
                    let purged = match role(&inner) {
                        Role::Follower => Ok(0),
                        Role::Single | Role::Leader => super::retention::purge_expired(&inner),
                    };
                    if let Err(e) = purged {
                        // A leadership lost mid-purge: the next leader purges; a
                        // disk short of space (or its batch cut): the next round.
                        if !e.leaves_store_sound() {
                            inner.commit.poison(&e);
                        }
                        continue;
                    }
                    // While due, cycle after cycle (each paces itself); then wait.
                    while let Some(ratio) = ratio {
                        match cycle_if_due(&inner, ratio) {
                            Ok(Some(r))
                                if !r.segments.is_empty()
                                    && !inner.closed.load(std::sync::atomic::Ordering::Acquire) => {}
                            Ok(_) => break,
                            Err(e) => {
                                if !e.leaves_store_sound() {
                                    inner.commit.poison(&e);
                                }
                                break;
                            }
                        }
                    }
                }
            })
            .expect("spawning the compaction thread");
        Reclaimer { stop, handle }
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}
