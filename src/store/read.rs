//! Reads from one snapshot: get, count, list, summary, jobsummary, and the rows
//! they answer with. A snapshot never changes and never waits for writers.

use std::sync::Arc;

use super::version::{Found, Version};
use std::io::Write;

use crate::codec::record::{self, JobView};
use crate::error::Result;
use crate::hash::FastMap;
use crate::log::reader::RecordReader;
use crate::model::doc::{pick_fields, write_json_str};
use crate::model::job::write_tags;
use crate::model::{Clock, Job, JobKey, JobState, TIME_FIELDS};
use crate::query::docset::count_in;
use crate::query::exec::{self, Source};
use crate::query::ops::Exclusion;
use crate::query::plan::Resolved;
use crate::query::{Filter, Hit, Paging};

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

    fn resolve<'f>(&self, project: u32, filter: &'f Filter, stop: Option<JobKey>) -> Resolved<'f> {
        let spider = filter.spider.as_ref().map(|s| self.spider_id(project, s));
        Resolved {
            filter,
            spider: spider.flatten(),
            nothing: matches!(spider, Some(None)),
            stop: stop.and_then(|k| self.order_key(k)),
        }
    }

    fn sources<'a>(&'a self, project: u32, r: &Resolved<'_>) -> Vec<Source<'a>> {
        let mut out = Vec::new();
        for slot in self.version.segments.iter() {
            if let Some((sec, dead)) = slot.project(project) {
                if let Some((set, lo, hi)) = r.plan(&sec, dead) {
                    out.push(Source::Section { set, sec, lo, hi });
                }
            }
        }
        if let Some(p) = self.version.mem.project(project) {
            out.push(Source::tail(p.iter().filter(|e| r.matches_entry(e)).collect()));
        }
        out
    }

    /// Hits for an explicit key list: each key's current version, tested.
    fn key_hits(&self, project: u32, filter: &Filter, keys: &[JobKey], stop: Option<(u64, u64)>) -> Result<Vec<Hit>> {
        let mut hits = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &k in keys {
            if !seen.insert(k) {
                continue;
            }
            let Some(f) = self.version.find(project, k.local()) else {
                continue;
            };
            let job = self.reader.read(f.loc())?;
            let name = self.spider_name(project, k.spider).map(|n| n.to_string()).unwrap_or_default();
            let Some(order) = self.order_key(k) else {
                continue;
            };
            if filter.matches(&job, &name) && stop.is_none_or(|s| order > s) {
                hits.push(Hit { local: k.local(), ts: order.0, seq: order.1, loc: f.loc() });
            }
        }
        hits.sort_unstable_by_key(|h| std::cmp::Reverse((h.ts, h.seq)));
        Ok(hits)
    }

    /// The number of jobs of `project` matching `filter`.
    pub fn count(&self, project: u32, filter: &Filter) -> Result<u64> {
        let r = self.resolve(project, filter, None);
        if let Some(keys) = &filter.keys {
            return Ok(self.key_hits(project, filter, keys, None)?.len() as u64);
        }
        Ok(exec::count(&mut self.sources(project, &r)))
    }

    /// Matching jobs, newest first, paged.
    pub fn list(&self, project: u32, filter: &Filter, paging: &Paging) -> Result<Vec<Hit>> {
        let r = self.resolve(project, filter, paging.stop);
        if let Some(keys) = &filter.keys {
            let hits = self.key_hits(project, filter, keys, r.stop)?;
            return Ok(hits.into_iter().skip(paging.start as usize).take(paging.count as usize).collect());
        }
        Ok(exec::list(&mut self.sources(project, &r), paging.start, paging.count))
    }

    /// Append one listing row as JSON: without `jobmeta`, key, state, spider, ts,
    /// elapsed, the `*_time` fields and tags (when any); with it, key, state, ts,
    /// elapsed and the fields asked for that the job has. Reads the record into a
    /// buffer kept per thread and renders from it without copying.
    pub fn render_row(&self, project: u32, hit: &Hit, jobmeta: Option<&[String]>, out: &mut Vec<u8>) -> Result<()> {
        thread_local! {
            static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        RAW.with(|raw| {
            let mut raw = raw.borrow_mut();
            let n = self.reader.read_raw(hit.loc, &mut raw)?;
            let (view, _) = record::decode_job(&raw[..n]).map_err(|e| self.reader.corrupt(hit.loc, e))?;
            self.render_view(project, &view, jobmeta, out);
            Ok(())
        })
    }

    /// [`Snapshot::render_row`] for a job already read.
    pub fn render_job(&self, project: u32, job: &Job, jobmeta: Option<&[String]>, out: &mut Vec<u8>) {
        self.render_view(project, &JobView::of(job), jobmeta, out);
    }

    fn render_view(&self, project: u32, job: &JobView<'_>, jobmeta: Option<&[String]>, out: &mut Vec<u8>) {
        let name = self.version.catalog.name(project, job.key.spider);
        let name = name.map_or("", |n| &**n);
        let ts = job.ts();
        let elapsed = self.clock.now_ms() as i64 - ts as i64;
        let _ = write!(out, "{{\"key\":\"{}\",\"state\":\"{}\"", job.key, job.state.as_str());
        match jobmeta {
            None => {
                out.extend_from_slice(b",\"spider\":");
                write_json_str(out, name);
                let _ = write!(out, ",\"ts\":{ts},\"elapsed\":{elapsed}");
                for (i, t) in job.times.iter().enumerate() {
                    if let Some(t) = t {
                        let _ = write!(out, ",\"{}\":{t}", TIME_FIELDS[i]);
                    }
                }
                if !job.tags.is_empty() {
                    out.extend_from_slice(b",\"tags\":");
                    write_tags(&job.tags, out);
                }
            }
            Some(fields) => {
                let _ = write!(out, ",\"ts\":{ts},\"elapsed\":{elapsed}");
                // The document's fields are picked in one pass over it, the others
                // come from the record.
                let wanted: FastMap<&str, usize> =
                    fields.iter().enumerate().filter(|(_, f)| !in_record(f)).map(|(i, f)| (f.as_str(), i)).collect();
                let mut picked = vec![None; fields.len()];
                if !wanted.is_empty() {
                    pick_fields(job.doc, &wanted, &mut picked);
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
        let hits = self.list(project, &filter, paging)?;
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
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use crate::fs::SimFs;
    use crate::model::JobState;
    use crate::query::{Filter, Paging};
    use crate::store::request::parse_push;
    use crate::{Durability, Options, Store};

    #[test]
    fn a_summary_line_stops_between_rows_once_cancelled() {
        let opts = Options {
            fs: Arc::new(SimFs::new()),
            durability: Durability::Buffered,
            background: false,
            ..Options::default()
        };
        let store = Store::open("/db", opts).unwrap();
        let specs: Vec<_> = (0..5).map(|_| parse_push(r#"{"spider":"s"}"#).unwrap()).collect();
        store.push(1, &specs, None).unwrap();
        let snap = store.snapshot();
        let paging = Paging { count: 5, ..Paging::default() };
        let line = |cancel_after: usize| {
            let asked = Cell::new(0);
            let cancelled = || {
                asked.set(asked.get() + 1);
                asked.get() > cancel_after
            };
            let mut out = Vec::new();
            snap.summary_line(1, &Filter::default(), JobState::Pending, &paging, None, &cancelled, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(usize::MAX).matches("\"key\"").count(), 5);
        assert_eq!(line(2).matches("\"key\"").count(), 2, "no row rendered after the cancel");
    }
}
