//! Bulk import and export. An import is one transaction: its frames carry the
//! transaction flag and count only once the commit frame follows them; a bad line
//! rolls the log back to where the import began, and a crash before the commit
//! leaves frames that recovery cuts. One fsync, at the end. The imported jobs are
//! indexed in bulk (index images of up to `bulk_entries` jobs), not one by one.

use std::io::{BufRead, Write};
use std::sync::Arc;

use super::catalog::{Catalog, JobIds};
use super::open::kill_superseded_by;
use super::request::{parse_import_line, write_import_doc, ImportLine};
use super::version::SegmentSlot;
use super::writer::Writer;
use super::{Inner, Snapshot};
use crate::codec::frame::{FrameKind, FLAG_TXN};
use crate::codec::record::{self, encode_parts, RecordHead, SpiderEntry};
use crate::error::{Error, Result};
use crate::fs::MappedBytes;
use crate::index::{build, DocEntry, IndexSegment, SegmentMeta};
use crate::log::LogPos;

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
    catalog: Catalog,
    job_ids: JobIds,
    next_seq: u64,
    last_frame: Option<LogPos>,
    end: LogPos,
}

/// Index entries of the imported jobs, cut into chunks at frame boundaries.
struct Chunk {
    docs: Vec<DocEntry>,
    meta: SegmentMeta,
    catalog: Vec<SpiderEntry>,
}

struct Bulk {
    chunks: Vec<Chunk>,
    docs: Vec<DocEntry>,
    lo_seq: u64,
}

impl Bulk {
    /// Close the current chunk after the last frame appended.
    fn close(&mut self, w: &Writer) {
        let (Some(last_frame), true) = (w.last_frame, w.next_seq > self.lo_seq) else { return };
        let meta = SegmentMeta {
            generation: w.generation,
            lo_seq: self.lo_seq,
            hi_seq: w.next_seq - 1,
            log_end: w.log_end(),
            last_frame,
            docs: 0,
        };
        let docs = std::mem::take(&mut self.docs);
        self.chunks.push(Chunk { docs, meta, catalog: w.catalog.entries(&w.job_ids) });
        self.lo_seq = w.next_seq;
    }
}

fn restore(w: &mut Writer, s: SavePoint) -> Result<()> {
    w.log.as_mut().ok_or(Error::ReadOnly)?.truncate_to(s.end, s.next_seq)?;
    w.catalog = s.catalog;
    w.job_ids = s.job_ids;
    w.next_seq = s.next_seq;
    w.last_frame = s.last_frame;
    Ok(())
}

/// Jobs encoded into the next frame, with what their index entries need.
struct Pending {
    /// What the frames written now claim durable.
    durable_seq: u64,
    payload: Vec<u8>,
    /// Per record: offset in the payload, offset of its `order_seq`, index entry.
    records: Vec<(usize, usize, DocEntry)>,
    /// Spider frames to write before the jobs frame.
    spiders: Vec<u8>,
    spider_count: u32,
}

/// Check a line's spider against the catalog; register it when new (its frame is
/// written before the next jobs frame).
fn spider_for(w: &mut Writer, l: &ImportLine<'_>, pending: &mut Pending) -> Result<()> {
    let k = l.key;
    match (w.catalog.id(k.project, &l.spider), w.catalog.name(k.project, k.spider)) {
        (Some(id), _) if id == k.spider => Ok(()),
        (Some(id), _) => Err(Error::field(
            "spider",
            format!("{:?} is spider {id} of project {}, not {}", l.spider, k.project, k.spider),
        )),
        (None, Some(other)) => Err(Error::field(
            "key",
            format!("spider {} of project {} is {other:?}, not {:?}", k.spider, k.project, l.spider),
        )),
        (None, None) => {
            let mut payload = Vec::new();
            record::encode_spider(k.project, k.spider, &l.spider, &mut payload);
            pending.spiders.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            pending.spiders.extend_from_slice(&payload);
            pending.spider_count += 1;
            w.register_spider(k.project, k.spider, &l.spider);
            Ok(())
        }
    }
}

/// Encode one line's record into the pending frame.
fn stage(w: &mut Writer, l: &ImportLine<'_>, pending: &mut Pending) {
    let tags: Vec<&str> = l.tags.iter().map(|t| t.as_ref()).collect();
    let order_seq = w.next_seq + pending.records.len() as u64;
    let head = RecordHead {
        key: l.key,
        state: l.state,
        priority: l.priority,
        times: l.times,
        order_seq,
        tags: &tags,
        unique: l.unique.as_deref(),
    };
    let at = pending.payload.len();
    let seq_at = encode_parts(&head, &mut pending.payload, |out| write_import_doc(&l.doc, out));
    let entry = DocEntry {
        project: l.key.project,
        local: l.key.local(),
        ts: l.times[l.state as usize].unwrap_or(0),
        order_seq,
        state: l.state,
        priority: l.priority,
        tags: tags.iter().map(|t| w.intern(t)).collect::<Vec<_>>().into(),
        unique: l.unique.as_deref().map(Arc::from),
        loc: 0,
    };
    pending.records.push((at, seq_at, entry));
}

/// Append the pending jobs as one frame and collect their index entries.
fn flush(w: &mut Writer, pending: &mut Pending, bulk: &mut Bulk) -> Result<()> {
    let spiders = std::mem::take(&mut pending.spiders);
    let mut at = 0;
    for _ in 0..std::mem::take(&mut pending.spider_count) {
        let len = u32::from_le_bytes(spiders[at..at + 4].try_into().expect("length prefix")) as usize;
        w.append(FrameKind::Spider, FLAG_TXN, 1, pending.durable_seq, &spiders[at + 4..at + 4 + len])?;
        at += 4 + len;
    }
    if pending.records.is_empty() {
        return Ok(());
    }
    // The spider frames moved the frame's first sequence number.
    let first = w.next_seq;
    for (i, (at, seq_at, e)) in pending.records.iter_mut().enumerate() {
        if e.order_seq != first + i as u64 {
            e.order_seq = first + i as u64;
            pending.payload[*seq_at..*seq_at + 8].copy_from_slice(&e.order_seq.to_le_bytes());
            record::seal(&mut pending.payload, *at);
        }
    }
    let a = w.append(FrameKind::Jobs, FLAG_TXN, pending.records.len() as u32, pending.durable_seq, &pending.payload)?;
    let base = a.pos.offset + crate::codec::frame::HEADER_LEN as u64;
    for (at, _, mut e) in pending.records.drain(..) {
        e.loc = LogPos { segment: a.pos.segment, offset: base + at as u64 }.pack();
        w.job_ids.note(e.project, (e.local >> 32) as u32, e.local as u32);
        bulk.docs.push(e);
    }
    pending.payload.clear();
    if bulk.docs.len() >= w.bulk_entries {
        bulk.close(w);
    }
    Ok(())
}

/// Input read per step: whole lines, about this many bytes.
const READ_CHUNK: usize = 8 << 20;

fn run(
    w: &mut Writer,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(u64),
    r: &mut ImportReport,
    bulk: &mut Bulk,
    durable_seq: u64,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK + (1 << 20));
    let mut pending = Pending {
        durable_seq,
        payload: Vec::with_capacity(4 << 20),
        records: Vec::with_capacity(FRAME_JOBS),
        spiders: Vec::new(),
        spider_count: 0,
    };
    let mut eof = false;
    while !eof || !buf.is_empty() {
        while !eof && buf.len() < READ_CHUNK {
            let at = buf.len();
            buf.resize(at + (1 << 20), 0);
            let n = loop {
                match input.read(&mut buf[at..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("read", "import input", e)),
                }
            };
            buf.truncate(at + n);
            eof = n == 0;
        }
        // Whole lines only; the rest waits for the next read.
        let end = if eof { buf.len() } else { buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
        if end == 0 && !eof {
            if buf.len() > 64 * READ_CHUNK {
                return Err(Error::input("a line longer than 512 MiB").at_line(r.lines + 1));
            }
            continue;
        }
        let text = std::str::from_utf8(&buf[..end]).map_err(|e| {
            let line = buf[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() as u64;
            Error::input("not UTF-8").at_line(r.lines + line + 1)
        })?;
        let mut fields = Vec::with_capacity(32);
        for line in text.split_terminator('\n') {
            r.lines += 1;
            r.bytes += line.len() as u64 + 1;
            let line = line.trim_end_matches('\r');
            if line.trim_start().is_empty() {
                continue;
            }
            let l = parse_import_line(line, &mut fields).map_err(|e| e.at_line(r.lines))?;
            spider_for(w, &l, &mut pending).map_err(|e| e.at_line(r.lines))?;
            stage(w, &l, &mut pending);
            r.jobs += 1;
            if pending.records.len() >= FRAME_JOBS.min(w.bulk_entries) {
                flush(w, &mut pending, bulk)?;
            }
        }
        drop(fields);
        buf.drain(..end);
        progress(r.bytes);
    }
    flush(w, &mut pending, bulk)?;
    progress(r.bytes);
    Ok(())
}

/// Keep the newest version of each key of a chunk.
fn newest_per_key(mut docs: Vec<DocEntry>) -> Vec<DocEntry> {
    docs.sort_unstable_by_key(|d| (d.project, d.local, std::cmp::Reverse(d.order_seq)));
    docs.dedup_by_key(|d| (d.project, d.local));
    docs
}

/// Build the chunks' index images and add them to the working version.
fn install(w: &mut Writer, bulk: Bulk) -> Result<()> {
    for c in bulk.chunks {
        let image = build::build(newest_per_key(c.docs), c.meta, &c.catalog);
        let path = w.gen_dir.join(c.meta.file_name());
        let seg = IndexSegment::open(MappedBytes::from_vec(image), &path, false)?;
        w.segments.push(SegmentSlot::new(Arc::new(seg)));
        let newest = w.segments.len() - 1;
        kill_superseded_by(&mut w.segments, newest);
        w.frozen += 1;
    }
    w.mem_lo_seq = w.next_seq;
    Ok(())
}

/// Import JSON lines (the export format) as one transaction.
pub(crate) fn import(inner: &Inner, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<ImportReport> {
    let started = std::time::Instant::now();
    let mut w = inner.writer.lock();
    inner.commit.check()?;
    // The import's index files follow the tail's.
    w.freeze()?;
    let saved = SavePoint {
        catalog: w.catalog.clone(),
        job_ids: w.job_ids.clone(),
        next_seq: w.next_seq,
        last_frame: w.last_frame,
        end: w.log_end(),
    };
    let txn_first = w.next_seq;
    let mut bulk = Bulk { chunks: Vec::new(), docs: Vec::new(), lo_seq: txn_first };
    let mut report = ImportReport::default();
    let durable_seq = inner.commit.durable_seq();
    if let Err(e) = run(&mut w, input, progress, &mut report, &mut bulk, durable_seq) {
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
            w.append(FrameKind::Commit, 0, 1, durable_seq, &payload)?;
            bulk.close(&w);
        }
        w.log.as_ref().ok_or(Error::ReadOnly)?.sync()?;
        install(&mut w, bulk)
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
    let mut n = 0;
    let mut line = Vec::with_capacity(1024);
    for p in snap.version.projects().into_iter().filter(|p| project.is_none_or(|q| q == *p)) {
        for (_, loc) in snap.version.live_docs(p) {
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
