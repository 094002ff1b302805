//! Bulk import and export. An import is one transaction: its frames carry the
//! transaction flag and count only once the commit frame follows them; a bad line
//! rolls the log back to where the import began, and a crash before the commit
//! leaves frames that recovery cuts. One fsync, at the end.

use std::io::{BufRead, Write};

use super::request::{parse_import, ImportSpec};
use super::version::SegmentSlot;
use super::writer::Writer;
use super::{Inner, Snapshot};
use crate::codec::frame::{FrameKind, FLAG_TXN};
use crate::codec::record;
use crate::error::{Error, Result};
use crate::model::Job;

/// Jobs per frame during an import.
const FRAME_JOBS: usize = 4096;

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub jobs: u64,
    pub lines: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// The writer state an import may have to restore.
struct SavePoint {
    segments: Vec<SegmentSlot>,
    catalog: super::catalog::Catalog,
    mem_lo_seq: u64,
    next_seq: u64,
    last_frame: Option<crate::log::LogPos>,
    end: crate::log::LogPos,
}

fn save(w: &Writer) -> SavePoint {
    SavePoint {
        segments: w.segments.clone(),
        catalog: w.catalog.clone(),
        mem_lo_seq: w.mem_lo_seq,
        next_seq: w.next_seq,
        last_frame: w.last_frame,
        end: w.log_end(),
    }
}

fn restore(w: &mut Writer, s: SavePoint) -> Result<()> {
    w.log.as_mut().ok_or(Error::ReadOnly)?.truncate_to(s.end, s.next_seq)?;
    w.mem.take_all();
    w.clear_uniques();
    w.segments = s.segments;
    w.set_catalog(s.catalog);
    w.mem_lo_seq = s.mem_lo_seq;
    w.next_seq = s.next_seq;
    w.last_frame = s.last_frame;
    Ok(())
}

/// Check a spider against the catalog; register it (a transaction frame) if new.
fn spider_for(w: &mut Writer, spec: &ImportSpec) -> Result<()> {
    let k = spec.job.key;
    match (w.catalog.id(k.project, &spec.spider), w.catalog.name(k.project, k.spider)) {
        (Some(id), _) if id == k.spider => Ok(()),
        (Some(id), _) => Err(Error::field(
            "spider",
            format!("{:?} is spider {id} of project {}, not {}", spec.spider, k.project, k.spider),
        )),
        (None, Some(other)) => Err(Error::field(
            "key",
            format!("spider {} of project {} is {other:?}, not {:?}", k.spider, k.project, spec.spider),
        )),
        (None, None) => {
            let mut payload = Vec::new();
            record::encode_spider(k.project, k.spider, &spec.spider, &mut payload);
            w.append(FrameKind::Spider, FLAG_TXN, 1, 0, &payload)?;
            w.register_spider(k.project, k.spider, &spec.spider);
            Ok(())
        }
    }
}

fn flush(w: &mut Writer, batch: &mut Vec<Job>) -> Result<()> {
    let first = w.next_seq;
    for (i, j) in batch.iter_mut().enumerate() {
        j.order_seq = first + i as u64;
    }
    w.append_jobs(batch, FLAG_TXN, 0)?;
    batch.clear();
    if w.mem.len() >= w.bulk_entries {
        w.freeze()?;
    }
    Ok(())
}

fn run(w: &mut Writer, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64), r: &mut ImportReport) -> Result<()> {
    let mut line = String::new();
    let mut batch: Vec<Job> = Vec::with_capacity(FRAME_JOBS);
    loop {
        line.clear();
        let n = input.read_line(&mut line).map_err(|e| Error::io("read", "import input", e))?;
        if n == 0 {
            break;
        }
        r.lines += 1;
        r.bytes += n as u64;
        if line.trim().is_empty() {
            continue;
        }
        let spec = parse_import(line.trim_end()).map_err(|e| e.at_line(r.lines))?;
        spider_for(w, &spec).map_err(|e| e.at_line(r.lines))?;
        batch.push(spec.job);
        r.jobs += 1;
        if batch.len() == FRAME_JOBS {
            flush(w, &mut batch)?;
            progress(r.bytes);
        }
    }
    flush(w, &mut batch)?;
    progress(r.bytes);
    Ok(())
}

/// Import JSON lines (the export format) as one transaction.
pub(crate) fn import(inner: &Inner, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<ImportReport> {
    let started = std::time::Instant::now();
    let mut w = inner.writer.lock();
    inner.commit.check()?;
    // The import's index files must follow the tail's.
    w.freeze()?;
    let saved = save(&w);
    let txn_first = w.next_seq;
    let mut report = ImportReport::default();
    if let Err(e) = run(&mut w, input, progress, &mut report) {
        if e.is_input() || matches!(e, Error::Io { op: "read", .. }) {
            if let Err(e2) = restore(&mut w, saved) {
                inner.commit.poison(&e2);
                return Err(e2);
            }
            return Err(e);
        }
        inner.commit.poison(&e);
        return Err(e);
    }
    let done = (|| {
        if w.next_seq > txn_first {
            let mut payload = Vec::new();
            record::encode_commit(txn_first, &mut payload);
            w.append(FrameKind::Commit, 0, 1, 0, &payload)?;
        }
        w.log.as_ref().ok_or(Error::ReadOnly)?.sync()?;
        w.freeze()
    })();
    if let Err(e) = done {
        inner.commit.poison(&e);
        return Err(e);
    }
    w.frozen = 0;
    inner.commit.synced(w.version());
    drop(w);
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Write every job (or one project's) as JSON lines: whole metadata plus `key`,
/// per project in the order the jobs entered their states, so that importing the
/// output reproduces the listings. Returns the number of jobs.
pub(crate) fn export(snap: &Snapshot, project: Option<u32>, out: &mut dyn Write) -> Result<u64> {
    let v = &snap.version;
    let mut projects: Vec<u32> = v.segments.iter().flat_map(|s| s.seg.projects().collect::<Vec<_>>()).collect();
    projects.extend(v.mem.projects().map(|(p, _)| p));
    projects.sort_unstable();
    projects.dedup();
    projects.retain(|p| project.is_none_or(|q| q == *p));
    let mut n = 0;
    let mut line = Vec::with_capacity(1024);
    for p in projects {
        let mut docs: Vec<(u64, u64)> = Vec::new();
        for slot in v.segments.iter() {
            if let Some((sec, dead)) = slot.project(p) {
                docs.extend((0..sec.len()).filter(|d| !dead.contains(*d)).map(|d| (sec.seq(d), sec.loc(d))));
            }
        }
        if let Some(m) = v.mem.project(p) {
            docs.extend(m.iter().map(|e| (e.order_seq, e.loc)));
        }
        docs.sort_unstable();
        for (_, loc) in docs {
            let job = snap.reader.read(loc)?;
            line.clear();
            snap.render_metadata(&job, true, &mut line);
            line.push(b'\n');
            out.write_all(&line).map_err(|e| Error::io("write", "export output", e))?;
            n += 1;
        }
    }
    Ok(n)
}

impl super::Store {
    /// Import JSON lines (the export format) as one transaction: all of it, or on
    /// a bad line (reported with its number) nothing. `progress` gets bytes read.
    pub fn import(&self, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<ImportReport> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let r = import(&self.inner, input, progress)?;
        self.after_freeze()?;
        Ok(r)
    }

    /// Write jobs as JSON lines from the current snapshot; see [`Snapshot::export`].
    pub fn export(&self, project: Option<u32>, out: &mut dyn Write) -> Result<u64> {
        export(&self.snapshot(), project, out)
    }
}

impl Snapshot {
    /// Write every job of `project` (or all) as JSON lines, importable.
    pub fn export(&self, project: Option<u32>, out: &mut dyn Write) -> Result<u64> {
        export(self, project, out)
    }
}
