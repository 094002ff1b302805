//! Offline compaction: rewrite the log without superseded versions (and, if asked,
//! without jobs deleted long ago), with fresh index files, as the next generation.
//!
//! The new generation is written beside the live one: a catalog frame first (so no
//! job or spider id is ever allocated again), then every kept job's current record,
//! written again as a compact record with every field kept, in the order the jobs
//! entered their states (in frames flagged relocated, with sequence numbers
//! continuing the old generation's: the change feed's positions go on, and the
//! copies are no changes); it is fsynced and
//! indexed; then `CURRENT` is switched atomically, and only then is the old
//! generation removed. A crash before the switch leaves the old store (the new
//! directory is removed at the next open; a failure removes it at once); after
//! it, the new one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout;
use super::{Options, Store};
use crate::codec::docz::{Dict, Packer};
use crate::codec::frame::{FrameKind, FLAG_RELOCATED, HEADER_LEN as FRAME_HEADER};
use crate::codec::record::{self, SpiderEntry};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem};
use crate::index::{build, DocEntry, SegmentMeta};
use crate::log::scan::{FrameScanner, Step};
use crate::log::segment;
use crate::log::writer::LogWriter;
use crate::log::LogPos;
use crate::model::JobState;

/// Records per frame in the new log.
const FRAME_JOBS: usize = 4096;
/// A frame is written once its records reach this many bytes: 4,096 documents
/// of up to 16 MiB each would pass a frame's limit (1 GiB, log.md).
const FRAME_BYTES: usize = 64 << 20;

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub generation_before: u64,
    pub generation_after: u64,
    /// Job records in the log (every version) before, and after.
    pub records_before: u64,
    pub records_after: u64,
    /// Bytes of the log (to its end, preallocated zeros not counted) and the
    /// index files, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Deleted jobs dropped by the retention rule.
    pub dropped: u64,
    pub millis: u64,
}

/// Bytes of a generation's log segments (the last one to the log's `end`, its
/// preallocated zeros not counted) and index files.
fn store_bytes(fsys: &dyn FileSystem, dir: &Path, end: LogPos) -> Result<u64> {
    let mut total = 0;
    for name in fsys.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let segment = segment::parse_name(&name);
        if segment.is_none() && crate::index::format::parse_name(&name).is_none() {
            continue;
        }
        let p = dir.join(&name);
        let Ok(f) = fsys.open(&p, fs::OpenMode::Read) else { continue };
        let len = f.len().map_err(|e| Error::io("stat", &p, e))?;
        total += if segment == Some(end.segment) { len.min(end.offset) } else { len };
    }
    Ok(total)
}

/// The new generation until `CURRENT` names it. Dropped armed (the run failed),
/// it is removed, best effort, if `CURRENT` still names the old generation (a
/// failed switch may have renamed it: then both stay, as after a crash); the
/// next writable open removes what is left.
struct Partial<'a> {
    fsys: &'a dyn FileSystem,
    dir: &'a Path,
    new_dir: std::path::PathBuf,
    old: u64,
    armed: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if !self.armed || layout::read_current(self.fsys, self.dir).ok().flatten() != Some(self.old) {
            return;
        }
        if self.fsys.remove_dir_all(&self.new_dir).is_ok() {
            let _ = self.fsys.sync_dir(self.dir);
        }
    }
}

/// Job records in every frame of a log.
fn count_records(fsys: &dyn FileSystem, dir: &Path) -> Result<u64> {
    let mut n = 0;
    for s in segment::list(fsys, dir)? {
        let (_, mut sc) = FrameScanner::segment(fsys, dir, s)?;
        while let Step::Frame { header, .. } = sc.next_step()? {
            if header.kind == FrameKind::Jobs {
                n += u64::from(header.count);
            }
        }
    }
    Ok(n)
}

/// The new generation's log and the index chunks of what it holds.
struct NewGeneration {
    log: LogWriter,
    generation: u64,
    payload: Vec<u8>,
    pending: Vec<(usize, DocEntry)>,
    docs: Vec<DocEntry>,
    catalog: Vec<SpiderEntry>,
    /// The dictionaries the index files' catalogs copy.
    dicts: Vec<Arc<Dict>>,
    fsys: Arc<dyn FileSystem>,
    dir: std::path::PathBuf,
    lo_seq: u64,
    last_frame: LogPos,
    chunk_docs: usize,
}

impl NewGeneration {
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Copies of current versions: no change a feed reports (positions go on).
        let a = self.log.append(FrameKind::Jobs, FLAG_RELOCATED, self.pending.len() as u32, 0, &self.payload)?;
        self.last_frame = a.pos;
        let base = a.pos.offset + FRAME_HEADER as u64;
        for (at, mut e) in self.pending.drain(..) {
            e.loc = LogPos { segment: a.pos.segment, offset: base + at as u64 }.pack();
            self.docs.push(e);
        }
        self.payload.clear();
        if self.docs.len() >= self.chunk_docs {
            self.close_chunk()?;
        }
        Ok(())
    }

    /// Index what was written since the last chunk: sync the log under it, then
    /// publish its index file, so that memory holds one chunk's entries at most.
    fn close_chunk(&mut self) -> Result<()> {
        let hi = self.log.next_seq() - 1;
        if hi < self.lo_seq {
            return Ok(());
        }
        let meta = SegmentMeta {
            generation: self.generation,
            lo_seq: self.lo_seq,
            hi_seq: hi,
            log_end: self.log.end(),
            last_frame: self.last_frame,
            docs: 0,
        };
        // IMPORTANT: an index is never ahead of the durable log.
        self.log.sync()?;
        let image = build::build(std::mem::take(&mut self.docs), meta, &self.catalog, &self.dicts);
        let name = meta.file_name();
        fs::publish_file(&*self.fsys, &self.dir, &name, &image)
            .map_err(|e| Error::io("publish", self.dir.join(&name), e))?;
        self.lo_seq = hi + 1;
        Ok(())
    }
}

/// Compact the store in `dir` (which no other process may hold). With
/// `retain_deleted`, jobs deleted longer ago than that are dropped. `progress`
/// gets (jobs written, jobs in all).
pub fn compact(
    dir: &Path,
    opts: Options,
    retain_deleted: Option<Duration>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CompactReport> {
    let store = Store::open(dir, Options { background: false, read_only: false, create: false, ..opts })?;
    compact_store(dir, store, retain_deleted, progress)
}

/// Compact `store`, opened writable on `dir` (with its lock), into a new generation.
pub(crate) fn compact_store(
    dir: &Path,
    store: Store,
    retain_deleted: Option<Duration>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CompactReport> {
    let started = Instant::now();
    let inner = store.inner();
    let fsys = inner.opts.fs.clone();
    let w = super::rebuild::clean_writer(&inner)?;
    let old_dir = w.gen_dir.clone();
    let generation = w.generation;
    let mut report = CompactReport {
        generation_before: generation,
        generation_after: generation + 1,
        records_before: count_records(&*fsys, &old_dir)?,
        bytes_before: store_bytes(&*fsys, &old_dir, w.log.as_ref().map_or(w.replay_end, |l| l.end()))?,
        ..CompactReport::default()
    };
    let cutoff = retain_deleted.map(|d| inner.opts.clock.now_ms().saturating_sub(d.as_millis() as u64));
    let catalog: Vec<SpiderEntry> = w.catalog.entries(&w.job_ids);
    let version = w.version();
    let first_seq = w.next_seq;
    drop(w);
    let projects = version.projects();
    let total: u64 = projects.iter().map(|p| version.live_docs(*p).len() as u64).sum();
    // Room for the copy, looked at before anything is written: the live jobs'
    // share of today's bytes (their records packed again, the index rebuilt).
    let need = u128::from(report.bytes_before) * u128::from(total) / u128::from(report.records_before.max(1));
    inner.space.check_now(&*fsys, u64::try_from(need).unwrap_or(u64::MAX))?;

    let new_dir = layout::gen_dir(dir, generation + 1);
    if fsys.exists(&new_dir).map_err(|e| Error::io("stat", &new_dir, e))? {
        fsys.remove_dir_all(&new_dir).map_err(|e| Error::io("remove", &new_dir, e))?;
    }
    fsys.create_dir(&new_dir).map_err(|e| Error::io("create", &new_dir, e))?;
    let mut partial = Partial { fsys: &*fsys, dir, new_dir: new_dir.clone(), old: generation, armed: true };
    // IMPORTANT: fsync folder, so the new generation's directory exists durably.
    fsys.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
    let log = LogWriter::create(fsys.clone(), &new_dir, generation + 1, first_seq, inner.opts.segment_bytes)?;
    let mut g = NewGeneration {
        log,
        generation: generation + 1,
        payload: Vec::with_capacity(4 << 20),
        pending: Vec::new(),
        docs: Vec::new(),
        catalog: catalog.clone(),
        dicts: Vec::new(),
        fsys: fsys.clone(),
        dir: new_dir.clone(),
        lo_seq: first_seq,
        last_frame: LogPos::default(),
        chunk_docs: inner.opts.bulk_entries.max(1),
    };
    let mut payload = Vec::new();
    record::encode_catalog(&catalog, &mut payload);
    g.last_frame = g.log.append(FrameKind::Catalog, 0, 1, 0, &payload)?.pos;

    // Every document is written packed with one dictionary trained on a sample
    // of them (the new generation's dictionary 1), written before any record.
    let dict = train_dict(&inner, &version, &projects, total)?;
    let mut packer = dict.clone().and_then(Packer::new);
    if let Some(d) = &dict {
        payload.clear();
        crate::codec::docz::encode_dict(d, &mut payload);
        g.last_frame = g.log.append(FrameKind::Dict, 0, 1, 0, &payload)?.pos;
    }
    g.dicts = dict.into_iter().collect();
    let mut done = 0;
    let mut raw = Vec::new();
    for p in projects {
        for (_, loc) in version.live_docs(p) {
            let len = inner.reader.read_raw(loc, &mut raw)?;
            let raw = &raw[..len];
            let (mut view, _) = record::decode_job(raw).map_err(|e| inner.reader.corrupt(loc, e))?;
            view.unpack(&inner.reader.dicts).map_err(|e| inner.reader.corrupt(loc, e))?;
            done += 1;
            if view.state == JobState::Purged {
                report.dropped += 1;
                continue;
            }
            let deleted_at = view.times[JobState::Deleted as usize];
            if view.state == JobState::Deleted && cutoff.zip(deleted_at).is_some_and(|(c, t)| t < c) {
                report.dropped += 1;
                continue;
            }
            let entry = DocEntry {
                project: view.key.project,
                local: view.key.local(),
                ts: view.ts(),
                order_seq: view.order_seq,
                state: view.state,
                priority: view.priority,
                tags: view.tags.iter().map(|t| Arc::<str>::from(*t)).collect::<Vec<_>>().into(),
                unique: view.unique.map(Arc::from),
                close_reason: view.close_reason().map(|c| Arc::from(c.as_ref())),
                token: (view.state == JobState::Running).then(|| super::tokens::token_in(view.doc())).flatten(),
                loc: 0,
            };
            g.pending.push((g.payload.len(), entry));
            // Every record is written again compact, its fields (prev, order_seq) kept.
            record::encode_view_packed(&view, &mut g.payload, packer.as_mut());
            report.records_after += 1;
            if g.pending.len() >= FRAME_JOBS.min(g.chunk_docs) || g.payload.len() >= FRAME_BYTES {
                g.flush()?;
                progress(done, total);
            }
        }
    }
    g.flush()?;
    g.close_chunk()?;
    // Sealed as a clean close leaves a log: no preallocated zeros, a final mark.
    g.log.seal()?;
    progress(done, total);
    // The switch: before it the old generation is the store, after it the new one.
    crate::crashpoint::hit("compact_before_switch");
    layout::write_current(&*fsys, dir, generation + 1, 1)?;
    partial.armed = false;
    crate::crashpoint::hit("compact_after_switch");
    fsys.remove_dir_all(&old_dir).map_err(|e| Error::io("remove", &old_dir, e))?;
    // IMPORTANT: fsync folder, so the old generation stays removed.
    fsys.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
    report.bytes_after = store_bytes(&*fsys, &new_dir, g.log.end())?;
    drop(inner);
    store.abandon();
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Documents a dictionary is trained on, at most.
const SAMPLES: usize = 20_000;

/// A dictionary trained on up to [`SAMPLES`] live documents spread over the
/// store (None when there are too few documents to train on).
pub(crate) fn train_dict(
    inner: &super::Inner,
    version: &super::version::Version,
    projects: &[u32],
    total: u64,
) -> Result<Option<Arc<Dict>>> {
    if total < crate::codec::docz::MIN_SAMPLES as u64 {
        return Ok(None);
    }
    let step = (total / SAMPLES as u64).max(1);
    let (mut samples, mut raw, mut i) = (Vec::new(), Vec::new(), 0u64);
    for p in projects {
        for (_, loc) in version.live_docs(*p) {
            i += 1;
            if i % step != 0 || samples.len() >= SAMPLES {
                continue;
            }
            let len = inner.reader.read_raw(loc, &mut raw)?;
            let (mut view, _) = record::decode_job(&raw[..len]).map_err(|e| inner.reader.corrupt(loc, e))?;
            view.unpack(&inner.reader.dicts).map_err(|e| inner.reader.corrupt(loc, e))?;
            samples.push(view.doc().as_bytes().to_vec());
        }
    }
    Ok(Dict::train(1, &samples).map(Arc::new))
}
