//! Reads from one snapshot: get, count, list, summary, jobsummary, and the rows
//! they answer with. A snapshot never changes and never waits for writers.

use std::sync::Arc;

use super::places::Places;
use super::version::{find_in_segments, Found, Version};

use crate::codec::record::{self, JobView};
use crate::codec::row::{self, RowView};
use crate::codec::DecodeError;
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::log::reader::RecordReader;
use crate::model::doc::{pick_fields, write_i64, write_json_str, write_json_utf8, write_u64, Pieces};
use crate::model::job::write_tags;
use crate::model::{Clock, Job, JobKey, JobState, TIME_FIELDS};
use crate::query::docset::{count_in, DocId, DocSet};
use crate::query::exec::{self, Source};
use crate::query::ops::Exclusion;
use crate::query::plan::Resolved;
use crate::query::{Filter, Hit, Paging};

use super::plain::{PlainPage, Room};

/// Bytes of record buffer a thread keeps between renders (a larger one is freed).
const RAW_KEPT: usize = 1 << 20;

/// `,"<name>_time":` of each time slot, as a row writes it.
const TIME_KEYS: [&[u8]; 4] =
    [b",\"pending_time\":", b",\"running_time\":", b",\"finished_time\":", b",\"deleted_time\":"];

/// Fields of a job's whole metadata that its record holds outside the document
/// (as [`JobView::field_json`] answers them).
fn in_record(name: &str) -> bool {
    matches!(name, "project" | "spider" | "state" | "priority" | "unique" | "tags") || TIME_FIELDS.contains(&name)
}

/// A consistent, read-only view of the store.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) version: Arc<Version>,
    pub(crate) reader: Arc<RecordReader>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where recent listings' last rows stood (shared by the store's snapshots).
    pub(crate) places: Arc<Places>,
}

impl Snapshot {
    /// The last log sequence number this snapshot reflects.
    pub fn seq(&self) -> u64 {
        self.version.seq
    }

    /// The current version of a job (none once the retention purged it).
    pub fn get(&self, key: JobKey) -> Result<Option<Job>> {
        match self.version.find(key.project, key.local()) {
            Some(f) => Ok(Some(self.reader.read(f.loc())?).filter(|j| j.state != JobState::Purged)),
            None => Ok(None),
        }
    }

    pub fn spider_name(&self, project: u32, id: u32) -> Option<Arc<str>> {
        self.version.catalog.name(project, id).cloned()
    }

    pub fn spider_id(&self, project: u32, name: &str) -> Option<u32> {
        self.version.catalog.id(project, name)
    }

    fn order_key(&self, key: JobKey) -> Option<(u64, u64)> {
        match self.version.find(key.project, key.local())? {
            Found::Mem { .. } => {
                let p = self.version.mem.project(key.project)?;
                p.iter().find(|e| e.local == key.local()).map(|e| e.order_key())
            }
            Found::Segment { slot, doc, .. } => {
                let (sec, _) = self.version.segments[slot].project(key.project)?;
                Some((sec.ts(doc), sec.seq(doc)))
            }
        }
    }

    fn resolve<'f>(&self, project: u32, filter: &'f Filter, paging: Option<&Paging>) -> Result<Resolved<'f>> {
        let spider = filter.spider.as_ref().map(|s| self.spider_id(project, s));
        let after = match paging.and_then(|p| p.startafter) {
            Some(k) => Some(self.place_after(project, k)?),
            None => None,
        };
        Ok(Resolved {
            filter,
            spider: spider.flatten(),
            nothing: matches!(spider, Some(None)),
            stop: paging.and_then(|p| p.stop).and_then(|k| self.order_key(k)),
            after,
        })
    }

    /// Where a listing continues after job `k`: where `k` stood when the last
    /// listing that ended with it was answered, if remembered (it may have moved
    /// since: a pager continues from the place it saw), else its current place.
    /// A key of no job of the project that no listing ended with is refused: an
    /// empty page would end a pager's loop silently.
    fn place_after(&self, project: u32, k: JobKey) -> Result<(u64, u64)> {
        let remembered = (k.project == project).then(|| self.places.recall(project, k.local())).flatten();
        let place = remembered.or_else(|| (k.project == project).then(|| self.order_key(k)).flatten());
        place.ok_or_else(|| Error::field("startafter", format!("{k} is not a job of project {project}")))
    }

    /// The sources of a count, or of a listing (`listing`: see [`Resolved::plan_listing`]).
    fn sources<'a>(&'a self, project: u32, r: &Resolved<'_>, listing: bool) -> Vec<Source<'a>> {
        let mut out = Vec::new();
        for slot in self.version.segments.iter() {
            if let Some((sec, dead)) = slot.project(project) {
                let planned = if listing { r.plan_listing(&sec, dead) } else { r.plan(&sec, dead) };
                if let Some((set, lo, hi)) = planned {
                    out.push(Source::Section { set, sec, lo, hi });
                }
            }
        }
        if let Some(p) = self.version.mem.project(project) {
            out.push(Source::tail(p.iter().filter(|e| r.matches_entry(e)).collect()));
        }
        out
    }

    /// Hits for an explicit key list: each key's current version, tested by the
    /// indexes as a count would test it (no record read): a tail entry by its
    /// fields, an indexed doc by the section's filter cursor, sought in doc order.
    fn key_hits(&self, project: u32, keys: &[JobKey], r: &Resolved<'_>) -> Result<Vec<Hit>> {
        let mut hits = Vec::new();
        // The keys of the project asked for, each once, ascending.
        let mut locals: Vec<u64> = keys.iter().filter(|k| k.project == project).map(|k| k.local()).collect();
        locals.sort_unstable();
        locals.dedup();
        // The tail in one pass (it is in no order): a key found there is answered
        // there, matching or not.
        let mut in_tail = vec![false; locals.len()];
        for e in self.version.mem.project(project).into_iter().flat_map(|p| p.iter()) {
            if let Ok(i) = locals.binary_search(&e.local) {
                in_tail[i] = true;
                if r.matches_entry(e) {
                    hits.push(Hit { local: e.local, ts: e.ts, seq: e.order_seq, loc: e.loc, listed_ms: 0 });
                }
            }
        }
        // `(slot, doc)` of the keys found in index files.
        let mut indexed: Vec<(usize, DocId)> = Vec::new();
        for (&local, _) in locals.iter().zip(&in_tail).filter(|(_, t)| !**t) {
            if let Some(Found::Segment { slot, doc, .. }) = find_in_segments(&self.version.segments, project, local) {
                indexed.push((slot, doc));
            }
        }
        indexed.sort_unstable();
        for group in indexed.chunk_by(|a, b| a.0 == b.0) {
            let Some((sec, dead)) = self.version.segments[group[0].0].project(project) else { continue };
            let Some((mut set, _, _)) = r.plan(&sec, dead) else { continue };
            for &(_, doc) in group {
                if set.seek(doc) == doc {
                    hits.push(Hit {
                        local: sec.local(doc),
                        ts: sec.ts(doc),
                        seq: sec.seq(doc),
                        loc: sec.loc(doc),
                        listed_ms: 0,
                    });
                }
            }
        }
        hits.sort_unstable_by_key(|h| std::cmp::Reverse((h.ts, h.seq)));
        Ok(hits)
    }

    /// The number of jobs of `project` matching `filter`.
    pub fn count(&self, project: u32, filter: &Filter) -> Result<u64> {
        let r = self.resolve(project, filter, None)?;
        if let Some(keys) = &filter.keys {
            return Ok(self.key_hits(project, keys, &r)?.len() as u64);
        }
        Ok(exec::count(&mut self.sources(project, &r, false)))
    }

    /// Matching jobs, newest first, paged: a listing. Where its last row stands
    /// is remembered for a `startafter` naming that job.
    pub fn list(&self, project: u32, filter: &Filter, paging: &Paging) -> Result<Vec<Hit>> {
        let hits = self.hits(project, filter, paging)?;
        if let Some(last) = hits.last() {
            self.places.remember(project, last.local, (last.ts, last.seq));
        }
        Ok(hits)
    }

    /// [`Snapshot::list`] without remembering anything (a summary's rows).
    pub(crate) fn hits(&self, project: u32, filter: &Filter, paging: &Paging) -> Result<Vec<Hit>> {
        let r = self.resolve(project, filter, Some(paging))?;
        Ok(match &filter.keys {
            Some(keys) => {
                let hits = self.key_hits(project, keys, &r)?;
                hits.into_iter().skip(paging.start as usize).take(paging.count as usize).collect()
            }
            None => exec::list(&mut self.sources(project, &r, true), paging.start, paging.count),
        })
        .map(|mut hits| {
            if hits.is_empty() {
                // An empty page reads no clock and touches no log.
                return hits;
            }
            let now = self.clock.now_ms();
            for h in &mut hits {
                h.listed_ms = now;
            }
            self.reader.prefetch(hits.iter().map(|h| h.loc));
            hits
        })
    }

    /// Append one listing row as JSON: without `jobmeta`, key, state, spider, ts,
    /// elapsed, the `*_time` fields and tags (when any); with it, key, state, ts,
    /// elapsed and the fields asked for that the job has. Renders from the record
    /// in place (in the log's map, or read into a buffer kept per thread); a row
    /// without `jobmeta` reads only the record's fixed part and tags, allocating
    /// nothing (codec/row.rs).
    pub fn render_row(&self, project: u32, hit: &Hit, jobmeta: Option<&[String]>, out: &mut Vec<u8>) -> Result<()> {
        thread_local! {
            static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        RAW.with(|raw| {
            let mut raw = raw.borrow_mut();
            // The closure answers a small error, made a store error once outside.
            let r = self.reader.with_checked_record(hit.loc, &mut raw, |bytes, _| match jobmeta {
                None => row::decode_row(bytes).and_then(|row| self.render_plain(project, &row, hit.listed_ms, out)),
                Some(fields) => {
                    // Checked whole just now or before: the checksum need not be
                    // computed again.
                    let (mut view, _) = record::decode_checked_job(bytes)?;
                    if fields.iter().any(|f| !in_record(f)) {
                        view.unpack(&self.reader.dicts)?;
                    }
                    self.render_view(project, &view, jobmeta, hit.listed_ms, out);
                    Ok(())
                }
            });
            // A thread keeps at most RAW_KEPT: the blocking pool has many threads.
            if raw.capacity() > RAW_KEPT {
                *raw = Vec::new();
            }
            r?.map_err(|e| self.reader.corrupt(hit.loc, e))
        })
    }

    /// [`Snapshot::render_row`] for each of `hits`, each row followed by a
    /// newline: rows without `jobmeta` are rendered a run of mapped records at a
    /// time (one lock of the maps, the project's names looked up once, the common
    /// row in one pass: see plain.rs). The same bytes as row by row.
    pub fn render_rows(&self, project: u32, hits: &[Hit], jobmeta: Option<&[String]>, out: &mut Vec<u8>) -> Result<()> {
        self.render_rows_within(project, hits, jobmeta, out, usize::MAX).map(|_| ())
    }

    /// [`Snapshot::render_rows`], stopping after the first row that takes `out`
    /// to `limit` bytes or more: how many rows it rendered (at least one of a
    /// run that has any). A stream renders a chunk's worth this way, however
    /// large its rows are.
    pub fn render_rows_within(
        &self,
        project: u32,
        hits: &[Hit],
        jobmeta: Option<&[String]>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize> {
        if hits.is_empty() {
            return Ok(0);
        }
        if jobmeta.is_some() {
            for (n, h) in hits.iter().enumerate() {
                self.render_row(project, h, jobmeta, out)?;
                out.push(b'\n');
                if out.len() >= limit {
                    return Ok(n + 1);
                }
            }
            return Ok(hits.len());
        }
        let mut page = PlainPage::new(project, self.version.catalog.names_json(project));
        let mut room = Room::new(out, hits.len());
        let full = std::cell::Cell::new(false);
        let mut i = 0;
        while i < hits.len() && !full.get() {
            let mut k = i;
            let locs = hits[i..].iter().take_while(|_| !full.get()).map(|h| h.loc);
            i += self.reader.each_mapped(locs, |bytes| {
                let now = hits[k].listed_ms;
                k += 1;
                if !page.row(bytes, now, &mut room) {
                    let out = room.vec();
                    let r = row::decode_row(bytes).and_then(|row| self.render_plain(project, &row, now, out));
                    out.push(b'\n');
                    r?;
                }
                full.set(room.vec().len() >= limit);
                Ok(())
            })?;
            if let Some(h) = hits.get(i).filter(|_| !full.get()) {
                // Not in a map: read the general way.
                let out = room.vec();
                self.render_row(project, h, None, out)?;
                out.push(b'\n');
                full.set(out.len() >= limit);
                i += 1;
            }
        }
        Ok(i)
    }

    /// A row without `jobmeta` (as [`Snapshot::render_view`] writes it). The
    /// constant strings and numbers go through [`Pieces`]: at most 70 bytes
    /// before the spider's name (three 10-digit ids, an 8-letter state), at most
    /// 206 after it (two 20-digit numbers, four `*_time` fields).
    fn render_plain(&self, project: u32, row: &RowView<'_>, now: u64, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let ts = row.ts();
        let mut p = Pieces::default();
        p.put(b"{\"key\":\"");
        p.u64(u64::from(row.key.project));
        p.put(b"/");
        p.u64(u64::from(row.key.spider));
        p.put(b"/");
        p.u64(u64::from(row.key.job));
        p.put(b"\",\"state\":\"");
        p.put(row.state.as_str().as_bytes());
        p.put(b"\",\"spider\":");
        p.take(out);
        match self.version.catalog.name_json(project, row.key.spider) {
            Some(json) => out.extend_from_slice(json),
            None => write_json_str(out, self.version.catalog.name(project, row.key.spider).map_or("", |n| &**n)),
        }
        p.put(b",\"ts\":");
        let ts_at = p.len();
        p.u64(ts);
        let ts_end = p.len();
        p.put(b",\"elapsed\":");
        p.i64((now as i64).wrapping_sub(ts as i64));
        let slot = row.state.time_slot();
        for (i, t) in row.times.iter().enumerate() {
            if let Some(t) = t {
                p.put(TIME_KEYS[i]);
                if i == slot {
                    // `ts` is this slot's time: its digits are already written.
                    p.repeat(ts_at, ts_end);
                } else {
                    p.u64(*t);
                }
            }
        }
        p.take(out);
        if row.has_tags() {
            out.extend_from_slice(b",\"tags\":[");
            for (i, tag) in row.tags().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_json_utf8(out, tag) {
                    return Err(DecodeError::new(0, "a tag is not UTF-8"));
                }
            }
            out.push(b']');
        }
        out.push(b'}');
        Ok(())
    }

    /// [`Snapshot::render_row`] for a job already read.
    pub fn render_job(&self, project: u32, job: &Job, jobmeta: Option<&[String]>, out: &mut Vec<u8>) {
        self.render_view(project, &JobView::of(job), jobmeta, self.clock.now_ms(), out);
    }

    fn render_view(&self, project: u32, job: &JobView<'_>, jobmeta: Option<&[String]>, now: u64, out: &mut Vec<u8>) {
        let name = self.version.catalog.name(project, job.key.spider);
        let name = name.map_or("", |n| &**n);
        let ts = job.ts();
        let elapsed = now as i64 - ts as i64;
        // Written byte by byte: a listing renders a thousand rows a page.
        out.extend_from_slice(b"{\"key\":\"");
        for (i, id) in [job.key.project, job.key.spider, job.key.job].into_iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            write_u64(out, u64::from(id));
        }
        out.extend_from_slice(b"\",\"state\":\"");
        out.extend_from_slice(job.state.as_str().as_bytes());
        out.push(b'"');
        let ts_elapsed = |out: &mut Vec<u8>| {
            out.extend_from_slice(b",\"ts\":");
            write_u64(out, ts);
            out.extend_from_slice(b",\"elapsed\":");
            write_i64(out, elapsed);
        };
        match jobmeta {
            None => {
                out.extend_from_slice(b",\"spider\":");
                write_json_str(out, name);
                ts_elapsed(out);
                for (i, t) in job.times.iter().enumerate() {
                    if let Some(t) = t {
                        out.extend_from_slice(b",\"");
                        out.extend_from_slice(TIME_FIELDS[i].as_bytes());
                        out.extend_from_slice(b"\":");
                        write_u64(out, *t);
                    }
                }
                if !job.tags.is_empty() {
                    out.extend_from_slice(b",\"tags\":");
                    write_tags(&job.tags, out);
                }
            }
            Some(fields) => {
                ts_elapsed(out);
                // The document's fields are picked in one pass over it, the others
                // come from the record.
                let wanted: FastMap<&str, usize> =
                    fields.iter().enumerate().filter(|(_, f)| !in_record(f)).map(|(i, f)| (f.as_str(), i)).collect();
                let mut picked = vec![None; fields.len()];
                if !wanted.is_empty() {
                    pick_fields(job.doc(), &wanted, &mut picked);
                }
                for (f, value) in fields.iter().zip(picked) {
                    if matches!(f.as_str(), "key" | "state" | "ts" | "elapsed") {
                        continue;
                    }
                    let mark = out.len();
                    out.push(b',');
                    write_json_str(out, f);
                    out.push(b':');
                    let found = match value {
                        Some(v) => {
                            out.extend_from_slice(v.get().as_bytes());
                            true
                        }
                        None => in_record(f) && job.field_json(f, name, out),
                    };
                    if !found {
                        out.truncate(mark);
                    }
                }
            }
        }
        out.push(b'}');
    }

    /// A job's whole metadata as one JSON object (`key` first when `with_key`).
    pub fn render_metadata(&self, job: &Job, with_key: bool, out: &mut Vec<u8>) {
        let name = self.spider_name(job.key.project, job.key.spider);
        let key = format!("\"{}\"", job.key);
        let extra: Vec<(&str, &str)> = if with_key { vec![("key", key.as_str())] } else { vec![] };
        job.write_metadata(name.as_deref().unwrap_or(""), &extra, out);
    }

    /// One summary line: `{"name": state, "count": n, "summary": [rows]}`: the
    /// jobs in `state` that pass `filter` (whose own states are ignored), counted, and
    /// the first of them listed per `paging`. Once `cancelled()` is true no more
    /// rows are rendered and the line is left incomplete (its reader gave up).
    #[allow(clippy::too_many_arguments)]
    pub fn summary_line(
        &self,
        project: u32,
        filter: &Filter,
        state: JobState,
        paging: &Paging,
        jobmeta: Option<&[String]>,
        cancelled: &dyn Fn() -> bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let filter = Filter { states: vec![state], ..filter.clone() };
        let n = self.count(project, &filter)?;
        let hits = self.hits(project, &filter, paging)?;
        out.extend_from_slice(format!("{{\"name\":\"{}\",\"count\":{n},\"summary\":[", state.as_str()).as_bytes());
        for (i, h) in hits.iter().enumerate() {
            if cancelled() {
                return Ok(());
            }
            if i > 0 {
                out.push(b',');
            }
            self.render_row(project, h, jobmeta, out)?;
        }
        out.extend_from_slice(b"]}");
        Ok(())
    }

    /// Current jobs per state (indexed by `JobState as usize`) over every
    /// project: each section's state posting lists, less its superseded docs,
    /// plus the tail's entries. No record is read.
    pub fn jobs_by_state(&self) -> [u64; 4] {
        let mut n = [0u64; 4];
        for slot in self.version.segments.iter() {
            for i in 0..slot.dead.len() {
                let (sec, dead) = (slot.seg.section_at(i), &slot.dead[i]);
                for s in JobState::ALL {
                    let Some(p) = sec.state(s) else { continue };
                    n[s as usize] += if dead.is_empty() {
                        u64::from(p.len())
                    } else {
                        count_in(&mut Exclusion::new(Box::new(p.cursor()), Box::new(dead.cursor())), 0, sec.len())
                    };
                }
            }
        }
        for (_, project) in self.version.mem.projects() {
            for e in project.iter().filter(|e| e.state != JobState::Purged) {
                n[e.state as usize] += 1;
            }
        }
        n
    }

    /// Index files and tail entries in this snapshot.
    pub fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            index_files: self.version.segments.len(),
            indexed_docs: self.version.segments.iter().map(|s| s.seg.meta().docs).sum(),
            live_indexed_docs: self.version.segments.iter().map(|s| s.live_docs()).sum(),
            tail_entries: self.version.mem.len(),
            seq: self.version.seq,
        }
    }
}

/// Sizes of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    pub index_files: usize,
    pub indexed_docs: u64,
    pub live_indexed_docs: u64,
    pub tail_entries: usize,
    pub seq: u64,
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
