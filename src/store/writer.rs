//! The writer's state, behind the writer lock: the log tail, the working index
//! version, and the catalog. Every write appends one frame and then applies its
//! records here; readers see the result once it is durable.

use std::path::PathBuf;
use std::sync::Arc;

use super::catalog::{Catalog, JobIds};
use super::tokens::JobTokens;
use super::version::{find_in_segments, Found, SegmentSlot, Version};
use crate::codec::docz::Prepacked;
use crate::codec::frame::{FrameKind, FLAG_RELOCATED};
use crate::codec::record::{self, Prev, SpiderEntry};
use crate::error::{Error, Result};
use crate::fs::MappedBytes;
use crate::hash::{FastMap, Interner};
use crate::index::{build, DocEntry, IndexSegment, MemTable, SegmentMeta};
use crate::log::reader::RecordReader;
use crate::log::writer::{Appended, LogWriter};
use crate::log::LogPos;
use crate::model::{Job, JobKey, JobState};

pub(crate) struct Writer {
    /// The log tail; `None` for a read-only store.
    pub log: Option<LogWriter>,
    /// The sequence number the next frame gets.
    pub next_seq: u64,
    pub generation: u64,
    pub gen_dir: PathBuf,
    pub segments: Vec<SegmentSlot>,
    pub mem: MemTable,
    /// First sequence number the tail covers.
    pub mem_lo_seq: u64,
    /// Active jobs of the tail by `unique`.
    mem_uniques: FastMap<(u32, Arc<str>), u64>,
    pub catalog: Catalog,
    pub job_ids: JobIds,
    /// [`Writer::catalog_entries`]: the catalog's stamp, and its entries then.
    catalog_entries: (u64, Vec<SpiderEntry>),
    tags: Interner,
    /// Position of the last frame appended (or replayed, or the chain's last).
    pub last_frame: Option<LogPos>,
    /// Where that frame ends, in its segment: an index file's `log_end`. The log's
    /// end may be past it, at the start of a newer segment (a writable open
    /// continues a log of an older version in a new segment).
    pub last_frame_end: Option<LogPos>,
    pub reader: Arc<RecordReader>,
    /// Freeze the tail into an index image at this many entries.
    pub freeze_at: usize,
    /// ... and during an import.
    pub bulk_entries: usize,
    /// Images frozen and not yet handed to the background writer.
    pub frozen: usize,
    /// Where replay ended (the log end of a read-only store).
    pub replay_end: LogPos,
    /// The current log epoch: versions made now hold it ([`crate::log::reader::LogEpoch`]).
    pub epoch: Arc<crate::log::reader::LogEpoch>,
    /// Running jobs' auth tokens, shared with the store's readers.
    pub tokens: Arc<JobTokens>,
    /// Writes (queued operations that appended) since the store opened: what
    /// group commit counts per fsync.
    pub writes: u64,
    buf: Vec<u8>,
    /// Packs documents with the store's newest dictionary (none until it has one).
    packer: Option<crate::codec::docz::Packer>,
    /// A cluster leader's batch, applied here ahead of its Raft entry.
    #[cfg(feature = "cluster")]
    pub spec: Option<super::raft::Speculative>,
    /// A batch the log does not hold left its records here (a cluster leader's
    /// that never became its entry; one cut after the disk filled up): the
    /// state is rebuilt from the log before anything else (store/rebuild.rs).
    pub dirty: bool,
    /// Times `dirty` was set: a compaction cycle that decided what is current
    /// while such a batch was in the writer, and saw it cut off since, starts again.
    pub cuts: u64,
    /// A cluster leader's batch runs (its frames are not an entry yet).
    #[cfg(feature = "cluster")]
    pub spec_open: bool,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        next_seq: u64,
        generation: u64,
        gen_dir: PathBuf,
        segments: Vec<SegmentSlot>,
        mem_lo_seq: u64,
        (catalog, job_ids): (Catalog, JobIds),
        reader: Arc<RecordReader>,
        freeze_at: usize,
    ) -> Writer {
        Writer {
            log: None,
            next_seq,
            generation,
            gen_dir,
            segments,
            mem: MemTable::default(),
            mem_lo_seq,
            mem_uniques: FastMap::default(),
            catalog,
            job_ids,
            catalog_entries: (0, Vec::new()),
            tags: Interner::default(),
            last_frame: None,
            last_frame_end: None,
            reader,
            freeze_at,
            bulk_entries: freeze_at,
            frozen: 0,
            replay_end: LogPos::default(),
            epoch: Arc::default(),
            tokens: Arc::default(),
            writes: 0,
            buf: Vec::new(),
            packer: None,
            #[cfg(feature = "cluster")]
            spec: None,
            dirty: false,
            cuts: 0,
            #[cfg(feature = "cluster")]
            spec_open: false,
        }
    }

    /// The state holds records the log does not (see `dirty`, `cuts`).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
        self.cuts += 1;
    }

    /// The working version.
    pub fn version(&self) -> Arc<Version> {
        Arc::new(Version {
            segments: Arc::new(self.segments.clone()),
            mem: self.mem.snapshot(),
            catalog: self.catalog.clone(),
            seq: self.next_seq - 1,
            epoch: self.epoch.clone(),
        })
    }

    pub fn find(&self, key: JobKey) -> Option<Found> {
        if let Some(e) = self.mem.get(key.project, key.local()) {
            return Some(Found::Mem { loc: e.loc });
        }
        find_in_segments(&self.segments, key.project, key.local())
    }

    /// The current version of a job (none once the retention purged it).
    pub fn load(&self, key: JobKey) -> Result<Option<Job>> {
        self.flush()?;
        match self.find(key) {
            Some(f) => Ok(Some(self.reader.read(f.loc())?).filter(|j| j.state != JobState::Purged)),
            None => Ok(None),
        }
    }

    /// Write the frames of this batch so far: the log is read next.
    fn flush(&self) -> Result<()> {
        self.log.as_ref().map_or(Ok(()), |l| l.flush())
    }

    /// The active job of `project` holding `unique`, if any.
    pub fn unique_holder(&self, project: u32, unique: &str) -> Option<JobKey> {
        if let Some(local) = self.mem_uniques.get(&(project, Arc::from(unique))) {
            return Some(JobKey::from_local(project, *local));
        }
        for s in self.segments.iter().rev() {
            let Some((sec, dead)) = s.project(project) else {
                continue;
            };
            let Some(p) = sec.unique(unique) else {
                continue;
            };
            for doc in p.docs() {
                if !dead.contains(doc) {
                    return Some(JobKey::from_local(project, sec.local(doc)));
                }
            }
        }
        None
    }

    /// The id of a spider, registering it (one spider frame) when new.
    pub fn spider_id(&mut self, project: u32, name: &str, durable_seq: u64) -> Result<u32> {
        if let Some(id) = self.catalog.id(project, name) {
            return Ok(id);
        }
        let id = self.catalog.next_spider_id(project).ok_or_else(|| no_spider_id_left(project))?;
        self.buf.clear();
        record::encode_spider(project, id, name, &mut self.buf);
        let payload = std::mem::take(&mut self.buf);
        let r = self.append(FrameKind::Spider, 0, 1, durable_seq, &payload);
        self.buf = payload;
        r?;
        self.register_spider(project, id, name);
        Ok(id)
    }

    /// Refuse, before anything is written, a write that needs `new` spider ids
    /// or `jobs[i].1` job ids of existing spiders past the last (ids are u32 and
    /// never given twice).
    pub fn check_ids_left(&self, project: u32, new: u64, jobs: &[(u32, u64)]) -> Result<()> {
        if new > self.catalog.spider_ids_left(project) {
            return Err(no_spider_id_left(project));
        }
        for &(spider, n) in jobs {
            if n > self.job_ids.left(project, spider) {
                return Err(Error::field(
                    "spider",
                    format!("spider {spider} of project {project} has no job id left (ids go up to {})", u32::MAX - 1),
                ));
            }
        }
        Ok(())
    }

    /// Learn a spider (from the log or an import).
    pub fn register_spider(&mut self, project: u32, id: u32, name: &str) {
        self.catalog.register(project, id, name);
    }

    /// Append `jobs` as one frame and apply them. Their `order_seq`s must already
    /// be set (a job entering a state gets its own record's sequence number);
    /// `prevs` says, for each, what the job's previous version was.
    pub fn append_jobs(&mut self, jobs: &[Job], prevs: &[Prev], flags: u8, durable_seq: u64) -> Result<()> {
        self.append_prepacked(jobs, prevs, &[], flags, durable_seq)
    }

    /// [`Writer::append_jobs`], with documents packed before the writer lock:
    /// `pre[i]`, when there, is `jobs[i]`'s; used while its dictionary is the newest.
    pub fn append_prepacked(
        &mut self,
        jobs: &[Job],
        prevs: &[Prev],
        pre: &[Option<Prepacked>],
        flags: u8,
        durable_seq: u64,
    ) -> Result<()> {
        let locs = self.append_records(jobs, prevs, pre, flags, durable_seq)?;
        for ((j, loc), p) in jobs.iter().zip(locs).zip(prevs) {
            self.apply_as(j, loc, *p == Prev::Created);
        }
        Ok(())
    }

    /// Append `jobs` as one frame without applying them; returns each record's
    /// packed position.
    fn append_records(
        &mut self,
        jobs: &[Job],
        prevs: &[Prev],
        pre: &[Option<Prepacked>],
        flags: u8,
        durable_seq: u64,
    ) -> Result<Vec<u64>> {
        debug_assert_eq!(jobs.len(), prevs.len());
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.buf.clear();
        let newest = self.reader.dicts.latest();
        if newest.as_ref().map(|d| d.id) != self.packer.as_ref().map(|p| p.dict_id()) {
            self.packer = newest.and_then(crate::codec::docz::Packer::new);
        }
        let mut offsets = Vec::with_capacity(jobs.len());
        for (i, (j, p)) in jobs.iter().zip(prevs).enumerate() {
            offsets.push(self.buf.len());
            let pre = pre.get(i).and_then(Option::as_ref);
            record::encode_job_packed(j, *p, &mut self.buf, self.packer.as_mut(), pre);
        }
        let payload = std::mem::take(&mut self.buf);
        let r = self.append(FrameKind::Jobs, flags, jobs.len() as u32, durable_seq, &payload);
        self.buf = payload;
        crate::log::writer::release_scratch(&mut self.buf);
        let appended = r?;
        let base = appended.pos.offset + crate::codec::frame::HEADER_LEN as u64;
        Ok(offsets
            .into_iter()
            .map(|off| LogPos { segment: appended.pos.segment, offset: base + off as u64 }.pack())
            .collect())
    }

    /// Append again, as one relocation frame, the records of `batch` (each the raw
    /// record and where it is now) that are still their job's current version;
    /// returns the records and bytes moved. Online compaction's write.
    pub fn relocate(&mut self, batch: &[(u64, Vec<u8>)], durable_seq: u64) -> Result<(u64, u64)> {
        let mut payload = Vec::new();
        let mut jobs = Vec::new();
        for (loc, raw) in batch {
            let (mut view, _) = record::decode_job(raw).map_err(|e| self.reader.corrupt(*loc, e))?;
            if self.find(view.key).map(|f| f.loc()) != Some(*loc) {
                continue;
            }
            view.unpack(&self.reader.dicts).map_err(|e| self.reader.corrupt(*loc, e))?;
            jobs.push((payload.len(), view.to_job()));
            payload.extend_from_slice(raw);
        }
        if jobs.is_empty() {
            return Ok((0, 0));
        }
        let a = self.append(FrameKind::Jobs, FLAG_RELOCATED, jobs.len() as u32, durable_seq, &payload)?;
        let base = a.pos.offset + crate::codec::frame::HEADER_LEN as u64;
        for (off, job) in &jobs {
            self.apply(job, LogPos { segment: a.pos.segment, offset: base + *off as u64 }.pack());
        }
        Ok((jobs.len() as u64, payload.len() as u64))
    }

    /// Purge the deleted jobs of `batch` (each a key and where its current version
    /// was found) that are still there and deleted since before `cutoff`: one
    /// jobs frame of tombstones (state purged, the deletion time kept, nothing
    /// else). Returns how many were purged. The retention's write.
    pub fn purge(&mut self, batch: &[(JobKey, u64)], cutoff: u64, durable_seq: u64) -> Result<u64> {
        let mut tombstones = Vec::new();
        self.flush()?;
        for &(key, loc) in batch {
            if self.find(key).map(|f| f.loc()) != Some(loc) {
                continue;
            }
            let job = self.reader.read(loc)?;
            let deleted_at = job.times[JobState::Deleted as usize];
            if job.state != JobState::Deleted || deleted_at.is_none_or(|t| t >= cutoff) {
                continue;
            }
            let mut times = [None; 4];
            times[JobState::Deleted as usize] = deleted_at;
            tombstones.push(Job {
                key,
                state: JobState::Purged,
                priority: 0,
                times,
                order_seq: self.next_seq + tombstones.len() as u64,
                tags: Vec::new(),
                unique: None,
                meta: crate::model::MetaDoc::new(),
            });
        }
        // Each purged job's version before its tombstone was deleted.
        self.append_jobs(&tombstones, &vec![Prev::State(JobState::Deleted); tombstones.len()], 0, durable_seq)?;
        Ok(tombstones.len() as u64)
    }

    /// Append a dictionary frame (its payload): new, or moved out of a segment
    /// online compaction removes. Readers know it from now on.
    pub fn append_dict(&mut self, payload: &[u8], durable_seq: u64) -> Result<()> {
        let d = crate::codec::docz::decode_dict(payload).map_err(|e| {
            Error::corrupt(&self.gen_dir, e.offset as u64, format!("a dictionary to append: {}", e.what))
        })?;
        self.append(FrameKind::Dict, 0, 1, durable_seq, payload)?;
        // A cluster leader's dictionary is learnt when its entry applies.
        #[cfg(feature = "cluster")]
        if self.spec_open {
            return Ok(());
        }
        self.reader.dicts.add(Arc::new(d));
        Ok(())
    }

    /// Append a catalog frame: every spider and its next job id.
    pub fn append_catalog(&mut self, durable_seq: u64) -> Result<()> {
        let mut payload = Vec::new();
        record::encode_catalog(self.catalog_entries(), &mut payload);
        self.append(FrameKind::Catalog, 0, 1, durable_seq, &payload).map(drop)
    }

    /// Append one frame to the log.
    pub fn append(
        &mut self,
        kind: FrameKind,
        flags: u8,
        count: u32,
        durable_seq: u64,
        payload: &[u8],
    ) -> Result<Appended> {
        let log = self.log.as_mut().ok_or(Error::ReadOnly)?;
        let a = log.append(kind, flags, count, durable_seq, payload)?;
        self.next_seq = log.next_seq();
        self.last_frame = Some(a.pos);
        self.last_frame_end = Some(log.end());
        Ok(a)
    }

    /// The end of the log.
    pub fn log_end(&self) -> LogPos {
        self.log.as_ref().map_or(self.replay_end, |l| l.end())
    }

    /// The `log_end` of an index file covering the log up to the last frame: that
    /// frame's end, always in its own segment (format-spec/index.md).
    pub fn indexed_end(&self) -> LogPos {
        self.last_frame_end.unwrap_or_else(|| self.log_end())
    }

    /// The index entry of a job version.
    pub fn entry(&mut self, job: &Job, loc: u64) -> DocEntry {
        let tags: Vec<Arc<str>> = job.tags.iter().map(|t| self.tags.get(t)).collect();
        DocEntry {
            project: job.key.project,
            local: job.key.local(),
            ts: job.ts(),
            order_seq: job.order_seq,
            state: job.state,
            priority: job.priority,
            tags: tags.into(),
            unique: job.unique.as_deref().map(Arc::from),
            close_reason: job.close_reason().map(|c| Arc::from(c.as_ref())),
            // `apply` noted the job's token first.
            token: (job.state == JobState::Running).then(|| self.tokens.get(job.key)).flatten(),
            loc,
        }
    }

    /// Make `job` (written at `loc`) the current version of its key.
    pub fn apply(&mut self, job: &Job, loc: u64) {
        self.apply_as(job, loc, false);
    }

    /// [`Writer::apply`]; `created`: the key is new (a push's fresh job id), so
    /// no index image holds an older version to kill (the search is skipped).
    fn apply_as(&mut self, job: &Job, loc: u64, created: bool) {
        let (project, local) = (job.key.project, job.key.local());
        debug_assert!(!created || self.find(job.key).is_none(), "a created job {} exists", job.key);
        self.job_ids.note(project, job.key.spider, job.key.job);
        self.tokens.note(job);
        if !created && self.mem.get(project, local).is_none() {
            if let Some(Found::Segment { slot, doc, .. }) = find_in_segments(&self.segments, project, local) {
                self.segments[slot].kill(project, doc);
            }
        }
        let entry = self.entry(job, loc);
        let new_unique = entry.unique.clone().filter(|_| entry.state.is_active());
        if let Some(old) = self.mem.upsert(entry) {
            if let (Some(u), true) = (old.unique, old.state.is_active()) {
                if self.mem_uniques.get(&(project, u.clone())) == Some(&local) {
                    self.mem_uniques.remove(&(project, u));
                }
            }
        }
        if let Some(u) = new_unique {
            self.mem_uniques.insert((project, u), local);
        }
    }

    /// Distinct tag strings the writer holds for its tail.
    #[cfg(test)]
    pub fn tag_strings(&self) -> usize {
        self.tags.len()
    }

    /// True when the tail is big enough to freeze.
    pub fn should_freeze(&self) -> bool {
        self.mem.len() >= self.freeze_at
    }

    /// Every spider with its next job id, as [`Catalog::entries`] sorts them: kept
    /// from one index image to the next, remade only when the spiders changed.
    fn catalog_entries(&mut self) -> &[SpiderEntry] {
        let stamp = self.catalog.stamp();
        if self.catalog_entries.0 == stamp {
            for e in &mut self.catalog_entries.1 {
                e.next_job = self.job_ids.next(e.project, e.spider);
            }
        } else {
            self.catalog_entries = (stamp, self.catalog.entries(&self.job_ids));
        }
        &self.catalog_entries.1
    }

    /// Turn the tail into an index image (in memory; the background writer persists
    /// it once the log under it is durable). Covers `[mem_lo_seq, next_seq)`.
    pub fn freeze(&mut self) -> Result<bool> {
        let hi = self.next_seq - 1;
        let Some(last_frame) = self.last_frame.filter(|_| hi >= self.mem_lo_seq) else {
            return Ok(false);
        };
        let docs = self.mem.take_all();
        self.mem_uniques.clear();
        // Tags are shared within a tail only: the interner would otherwise keep
        // every tag ever written (a client writing new tags grew memory forever).
        self.tags = Interner::default();
        let meta = SegmentMeta {
            generation: self.generation,
            lo_seq: self.mem_lo_seq,
            hi_seq: hi,
            log_end: self.indexed_end(),
            last_frame,
            docs: 0,
        };
        let dicts = self.reader.dicts.all();
        let image = build::build(docs, meta, self.catalog_entries(), &dicts);
        let path = self.gen_dir.join(meta.file_name());
        let seg = IndexSegment::open(MappedBytes::from_vec(image), &path, false)?;
        self.segments.push(SegmentSlot::new(Arc::new(seg)));
        self.mem_lo_seq = hi + 1;
        self.frozen += 1;
        Ok(true)
    }
}

fn no_spider_id_left(project: u32) -> Error {
    Error::field("spider", format!("project {project} has no spider id left (ids go up to {})", u32::MAX))
}
