//! Bulk import (export is in [`super::export`]). An import is one transaction: its frames carry the
//! transaction flag and count only once the commit frame follows them; a bad line
//! rolls the log back to where the import began, and a crash before the commit
//! leaves frames that recovery cuts. One fsync, at the end. The imported jobs are
//! indexed in bulk, not one by one: their index entries are sorted in runs on a
//! thread of their own and spilled to a temp file (an external sort), then merged
//! into one index file once the commit is durable. Memory holds a run at a time.

use std::io::{BufRead, Read};
use std::sync::mpsc;
use std::sync::Arc;

use super::catalog::{Catalog, JobIds};
use super::chain::kill_superseded_by;
use super::import_keys::Uniques;
use super::import_parse::{parse_chunk, read_more, take_lines, ParsedChunk, Pool, Strings, MAX_LINE};
use super::import_spill::{Pending, Spiller};
use super::version::SegmentSlot;
use super::writer::Writer;
use super::Inner;
use crate::codec::docz::{Dict, Packer};
use crate::codec::frame::{FrameKind, FLAG_TXN};
use crate::codec::record::{self, SpiderEntry};
use crate::error::{Error, Result};
use crate::fs;
use crate::hash::FastMap;
use crate::in_order::InOrder;
use crate::index::spill::Repeats;
use crate::index::{build, spill_build, DocEntry, IndexSegment, SegmentMeta};
use crate::log::LogPos;
use crate::model::JobKey;

/// Jobs per frame during an import.
const FRAME_JOBS: usize = 4096;
/// Index entries per sorted run, at most (fewer when `bulk_entries` is smaller).
const RUN_DOCS: usize = 1 << 18;
/// Index entries handed to the spilling thread at once, at most.
const BATCH_DOCS: usize = 1 << 14;

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Jobs imported: distinct keys (a key on several lines counts once).
    pub jobs: u64,
    /// Job lines: every version (the last of a key's lines is the job's state).
    pub versions: u64,
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
    last_frame_end: Option<LogPos>,
    end: LogPos,
}

/// Index entries of the imported jobs, as they wait for the spilling thread.
struct Bulk {
    docs: Vec<DocEntry>,
    /// Entries a run holds: held here until they make the first (an import of
    /// fewer is indexed in memory, with no run file) ...
    run: usize,
    /// ... and handed to the spilling thread this many at once after that.
    batch: usize,
    spiller: Spiller,
    /// Runs were handed to the spiller (a run file was made).
    spilled: bool,
    uniques: Uniques,
    /// Tokens of imported running versions (store/tokens.rs), with their `order_seq`.
    tokens: Vec<(JobKey, u64, Arc<str>)>,
    /// A catalog line gave a spider a next job id higher than the store knew: a
    /// catalog frame follows the commit (it cannot be part of the transaction).
    reserves: bool,
    /// Spiders checked against the catalog, with the name a record gave: each
    /// spider of an import is looked up once (the catalog only grows meanwhile).
    checked: FastMap<(u32, u32), Arc<str>>,
}

impl Bulk {
    /// Hand the entries collected so far to the spilling thread once they make
    /// a batch (`force`: whatever there is).
    fn spill(&mut self, force: bool) -> Result<()> {
        let due = if self.spilled { self.batch } else { self.run };
        if self.docs.is_empty() || (self.docs.len() < due && !force) {
            return Ok(());
        }
        let docs = std::mem::replace(&mut self.docs, Vec::with_capacity(self.batch));
        self.spilled = true;
        self.spiller.send(docs)
    }
}

fn restore(w: &mut Writer, s: SavePoint) -> Result<()> {
    w.log.as_mut().ok_or(Error::ReadOnly)?.truncate_to(s.end, s.next_seq)?;
    w.reader.forget_from(s.end.segment);
    w.catalog = s.catalog;
    w.job_ids = s.job_ids;
    w.next_seq = s.next_seq;
    w.last_frame = s.last_frame;
    w.last_frame_end = s.last_frame_end;
    Ok(())
}

/// Check a spider against the catalog; register it (a transaction frame, written
/// now, before the jobs frame that needs it) when new.
fn spider_for(w: &mut Writer, project: u32, id: u32, name: &str, durable_seq: u64) -> Result<()> {
    match (w.catalog.id(project, name), w.catalog.name(project, id)) {
        (Some(known), _) if known == id => Ok(()),
        (Some(known), _) => {
            Err(Error::field("spider", format!("{name:?} is spider {known} of project {project}, not {id}")))
        }
        (None, Some(other)) => {
            Err(Error::field("key", format!("spider {id} of project {project} is {other:?}, not {name:?}")))
        }
        (None, None) => {
            let mut payload = Vec::new();
            record::encode_spider(project, id, name, &mut payload);
            w.append(FrameKind::Spider, FLAG_TXN, 1, durable_seq, &payload)?;
            w.register_spider(project, id, name);
            Ok(())
        }
    }
}

/// Register the spider of a catalog line, and the job ids it reserves.
fn catalog_line(
    w: &mut Writer,
    (line, e): &(u64, SpiderEntry),
    line_base: u64,
    bulk: &mut Bulk,
    durable_seq: u64,
) -> Result<()> {
    spider_for(w, e.project, e.spider, &e.name, durable_seq).map_err(|err| err.at_line(line_base + line))?;
    if e.next_job > w.job_ids.next(e.project, e.spider) {
        w.job_ids.note(e.project, e.spider, e.next_job - 1);
        bulk.reserves = true;
    }
    Ok(())
}

/// Write a parsed chunk, in frames of at most `frame_jobs` records, and collect
/// the index entries. Line numbers in errors count from `line_base`.
///
/// Lines are checked in input order (catalog lines among the jobs), and the
/// chunk's bad line, if any, last: the first bad line of the input is the one
/// reported.
fn apply_chunk(w: &mut Writer, c: &mut ParsedChunk, line_base: u64, bulk: &mut Bulk, durable_seq: u64) -> Result<u64> {
    let error = c.error.take();
    let mut catalog = 0;
    let frame_jobs = FRAME_JOBS.min(w.bulk_entries).max(1);
    let empty: Arc<[Arc<str>]> = Arc::from(Vec::new());
    let n = c.recs.len();
    let mut start = 0;
    while start < n {
        let end = (start + frame_jobs).min(n);
        let mut prevs = Vec::with_capacity(end - start);
        for rec in &c.recs[start..end] {
            while let Some(cat) = c.spiders.get(catalog).filter(|(line, _)| *line < rec.line) {
                catalog_line(w, cat, line_base, bulk, durable_seq)?;
                catalog += 1;
            }
            let (project, id) = (rec.entry.project, (rec.entry.local >> 32) as u32);
            if !bulk.checked.get(&(project, id)).is_some_and(|s| Arc::ptr_eq(s, &rec.spider) || *s == rec.spider) {
                spider_for(w, project, id, &rec.spider, durable_seq).map_err(|e| e.at_line(line_base + rec.line))?;
                bulk.checked.insert((project, id), rec.spider.clone());
            }
            bulk.uniques
                .previous(w, &rec.entry)
                .and_then(|prev| {
                    prevs.push(prev);
                    bulk.uniques.admit(w, &rec.entry)
                })
                .map_err(|e| e.at_line(line_base + rec.line))?;
        }
        let first = w.next_seq;
        for (i, (rec, prev)) in c.recs[start..end].iter_mut().zip(prevs).enumerate() {
            rec.entry.order_seq = first + i as u64;
            c.payload[rec.seq_at..rec.seq_at + 8].copy_from_slice(&rec.entry.order_seq.to_le_bytes());
            c.payload[rec.at + record::PREV_AT] = prev.code();
            record::seal(&mut c.payload, rec.at);
        }
        let (from, to) = (c.recs[start].at, if end < n { c.recs[end].at } else { c.payload.len() });
        let a = w.append(FrameKind::Jobs, FLAG_TXN, (end - start) as u32, durable_seq, &c.payload[from..to])?;
        let base = a.pos.offset + crate::codec::frame::HEADER_LEN as u64;
        for rec in &mut c.recs[start..end] {
            // Taken, not cloned: no reference count of strings the workers share
            // is touched here.
            let hollow = DocEntry { tags: empty.clone(), unique: None, close_reason: None, token: None, ..rec.entry };
            let mut e = std::mem::replace(&mut rec.entry, hollow);
            e.loc = LogPos { segment: a.pos.segment, offset: base + (rec.at - from) as u64 }.pack();
            w.job_ids.note(e.project, (e.local >> 32) as u32, e.local as u32);
            if let Some(r) = bulk.uniques.repeats.get_mut(&(e.project, e.local)) {
                r.0 = e.order_seq;
            }
            if let Some(t) = rec.token.take() {
                bulk.tokens.push((JobKey::from_local(e.project, e.local), e.order_seq, t));
            }
            bulk.docs.push(e);
        }
        bulk.spill(false)?;
        start = end;
    }
    for cat in &c.spiders[catalog..] {
        catalog_line(w, cat, line_base, bulk, durable_seq)?;
    }
    if let Some((line, e)) = error {
        return Err(e.at_line(line_base + line));
    }
    Ok(n as u64)
}

/// Input read per chunk: whole lines, about this many bytes.
const READ_CHUNK: usize = 4 << 20;

/// Disk an imported job takes after its frames, at most: its sorted run record
/// (64 bytes and its tags) and its share of the index file, which is written
/// while the runs are still there.
const INDEX_BYTES_PER_JOB: u64 = 160;

/// Where parsed chunks go, in input order.
struct Sink<'a> {
    space: &'a super::space::SpaceGuard,
    fs: &'a dyn fs::FileSystem,
    w: &'a mut Writer,
    progress: &'a mut dyn FnMut(u64),
    report: &'a mut ImportReport,
    bulk: &'a mut Bulk,
    durable_seq: u64,
}

impl Sink<'_> {
    fn write(&mut self, mut c: ParsedChunk, pool: &Pool) -> Result<()> {
        let (lines, bytes) = (c.lines, c.bytes);
        // Room for this chunk's frames and the index of every job so far: an
        // import short of space is undone (store/space.rs), never half written.
        let jobs = self.report.jobs + c.recs.len() as u64;
        self.space.check_now(self.fs, c.payload.len() as u64 + jobs * INDEX_BYTES_PER_JOB)?;
        let r = &mut *self.report;
        r.jobs += apply_chunk(self.w, &mut c, r.lines, self.bulk, self.durable_seq)?;
        pool.give(std::mem::take(&mut c.payload));
        r.lines += lines;
        r.bytes += bytes;
        (self.progress)(r.bytes);
        Ok(())
    }
}

/// Input read to train a dictionary on (its whole lines' documents): the first
/// 1 MiB (training takes about 40 ms on the compare data's, 80 ms on 2 MiB, and
/// packs as well), doubled up to 4 MiB while it holds fewer than 2,000 lines.
const SAMPLE_BYTES: usize = 1 << 20;
const SAMPLE_LINES: usize = 2000;
const MAX_SAMPLE_BYTES: usize = 4 << 20;

/// Read the input's first lines to train on (into `first`).
fn read_sample(input: &mut dyn BufRead, first: &mut Vec<u8>) -> Result<()> {
    let mut want = SAMPLE_BYTES;
    while !read_more(input, first, want)? && want < MAX_SAMPLE_BYTES {
        if memchr::memchr_iter(b'\n', first).count() >= SAMPLE_LINES {
            break;
        }
        want *= 2;
    }
    Ok(())
}

/// A dictionary's bytes trained on the documents of the whole lines of `bytes`
/// (None when too few or zstd cannot).
fn train_on(bytes: &[u8]) -> Option<Vec<u8>> {
    let end = bytes.iter().rposition(|b| *b == b'\n')?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut fields = Vec::new();
    let mut samples = Vec::new();
    for line in text.split('\n') {
        if let Ok(super::request::ImportItem::Job(l)) = super::request::parse_import_item(line, &mut fields) {
            let mut doc = Vec::new();
            super::request::write_import_doc(&l.doc, &mut doc);
            samples.push(doc);
        }
    }
    crate::codec::docz::Dict::train(1, &samples).map(|d| d.raw().to_vec())
}

/// Read chunks of lines, have workers parse them, write them in order.
fn run(sink: &mut Sink<'_>, input: &mut dyn BufRead, dict: Option<Arc<Dict>>) -> Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(workers);
    let chunk_rx = parking_lot::Mutex::new(chunk_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, ParsedChunk)>();
    // Chunks in flight: at most two per worker, each an input and a payload.
    let pool = Pool::new(4 * workers + 2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, tx, pool) = (&chunk_rx, done_tx.clone(), &pool);
            let dict = dict.clone();
            s.spawn(move || {
                let mut strings = Strings::default();
                // Documents are packed here, in parallel, not by the appending thread.
                let mut packer = dict.and_then(Packer::new);
                loop {
                    let next = rx.lock().recv();
                    let Ok((n, bytes)) = next else { return };
                    let c = parse_chunk(&bytes, &mut strings, packer.as_mut(), pool.take(0));
                    pool.give(bytes);
                    if tx.send((n, c)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        feed(sink, input, chunk_tx, &done_rx, workers, &pool)
    })
}

/// Send the input to the workers a chunk at a time (at most two per worker in
/// flight) and write what they give back in input order.
fn feed(
    sink: &mut Sink<'_>,
    input: &mut dyn BufRead,
    chunk_tx: mpsc::SyncSender<(u64, Vec<u8>)>,
    done_rx: &mpsc::Receiver<(u64, ParsedChunk)>,
    workers: usize,
    pool: &Pool,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK + (1 << 20));
    let (mut eof, mut sent) = (false, 0u64);
    let mut done = InOrder::default();
    let mut want = READ_CHUNK;
    loop {
        while !eof && sent - done.handed() < 2 * workers as u64 {
            eof = read_more(input, &mut buf, want)?;
            let lines = take_lines(&mut buf, eof, READ_CHUNK + (1 << 20), pool);
            if lines.is_empty() {
                if buf.len() > MAX_LINE {
                    // Its number counts the lines before it: those in flight are written first
                    // (one of them may be bad too, and comes first).
                    while done.handed() < sent {
                        write_done(sink, done_rx, &mut done, pool)?;
                    }
                    return Err(super::import_parse::too_long().at_line(sink.report.lines + 1));
                }
                // A line longer than the chunk: read more of it.
                want = (want * 2).min(MAX_LINE + 1);
                continue;
            }
            want = READ_CHUNK;
            chunk_tx.send((sent, lines)).map_err(|_| Error::input("an import worker stopped"))?;
            sent += 1;
        }
        if done.handed() == sent {
            return Ok(());
        }
        write_done(sink, done_rx, &mut done, pool)?;
    }
}

/// Wait for the next chunk a worker parsed, then write every chunk now due, in
/// input order.
fn write_done(
    sink: &mut Sink<'_>,
    done_rx: &mpsc::Receiver<(u64, ParsedChunk)>,
    done: &mut InOrder<ParsedChunk>,
    pool: &Pool,
) -> Result<()> {
    let (n, c) = done_rx.recv().map_err(|_| Error::input("an import worker stopped"))?;
    done.put(n, c);
    while let Some(c) = done.pop() {
        sink.write(c, pool)?;
    }
    Ok(())
}

/// Add the import's index file (persisted already) to the working version.
fn install(w: &mut Writer, seg: IndexSegment, tokens: Vec<(JobKey, u64, Arc<str>)>, repeats: &Repeats) -> Result<()> {
    w.segments.push(SegmentSlot::new(Arc::new(seg)));
    let newest = w.segments.len() - 1;
    kill_superseded_by(&mut w.segments, newest);
    w.frozen += 1;
    w.mem_lo_seq = w.next_seq;
    // Imported versions are current now: their jobs' tokens replace what was
    // known (taken from the parse: no record is read again).
    w.tokens.forget_segment(&w.segments[newest]);
    let newest_of = |k: &JobKey, seq: u64| repeats.get(&(k.project, k.local())).is_none_or(|(n, _)| *n == seq);
    w.tokens.learn(tokens.into_iter().filter(|(k, seq, _)| newest_of(k, *seq)));
    Ok(())
}

/// Write the import's index file (the log under it is durable) and open it:
/// spilled runs merged, or a small import's entries built in memory.
fn publish_index(
    inner: &Inner,
    w: &Writer,
    pending: Pending,
    repeats: &Repeats,
    meta: SegmentMeta,
) -> Result<IndexSegment> {
    let catalog = w.catalog.entries(&w.job_ids);
    let dicts = inner.reader.dicts.all();
    let fsys = &*inner.opts.fs;
    let path = match pending {
        Pending::Runs(runs) => spill_build::build_file(*runs, repeats, meta, &catalog, &dicts, &inner.gen_dir)?,
        Pending::Docs(mut docs) => {
            docs.retain(|d| repeats.get(&(d.project, d.local)).is_none_or(|(newest, _)| *newest == d.order_seq));
            let image = build::build(docs, meta, &catalog, &dicts);
            let name = meta.file_name();
            let path = inner.gen_dir.join(&name);
            fs::publish_file(fsys, &inner.gen_dir, &name, &image).map_err(|e| Error::io("publish index", &path, e))?;
            path
        }
    };
    let bytes = fsys.map(&path).map_err(|e| Error::io("map", &path, e))?;
    IndexSegment::open(bytes, &path, true)
}

/// Import JSON lines (the export format) as one transaction.
pub(crate) fn import(inner: &Inner, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<ImportReport> {
    let started = std::time::Instant::now();
    // A store without a dictionary gets one trained on the input's first lines,
    // outside the writer's lock.
    let mut first = Vec::new();
    let trained = match inner.reader.dicts.latest() {
        Some(_) => None,
        None => {
            read_sample(input, &mut first)?;
            train_on(&first)
        }
    };
    let mut input = std::io::Cursor::new(first).chain(input);
    let input: &mut dyn BufRead = &mut input;
    let mut w = super::rebuild::clean_writer(inner)?;
    inner.commit.check()?;
    inner.space.check(&*inner.opts.fs, 0)?;
    let runs_path = inner.gen_dir.join(format!("import-{:016x}.runs.tmp", w.next_seq));
    let run_len = w.bulk_entries.clamp(1, RUN_DOCS);
    let spiller = Spiller::start(inner.opts.fs.clone(), runs_path, run_len)?;
    // The import's index files follow the tail's; its frames start a segment.
    w.freeze()?;
    w.log.as_mut().ok_or(Error::ReadOnly)?.start_segment()?;
    let saved = SavePoint {
        catalog: w.catalog.clone(),
        job_ids: w.job_ids.clone(),
        next_seq: w.next_seq,
        last_frame: w.last_frame,
        last_frame_end: w.last_frame_end,
        end: w.log_end(),
    };
    // The import's index file covers its dictionary's frame too.
    let index_lo = w.next_seq;
    let (dict, new_dict) = match (inner.reader.dicts.latest(), trained) {
        (Some(d), _) => (Some(d), None),
        (None, Some(raw)) => {
            // After the save point: an import that fails takes it back (it holds
            // bits of the input). Durable with the import's frames (one fsync at
            // its end), before them in the log: no record that uses it survives a
            // crash without it.
            let d = crate::codec::docz::Dict::new(inner.reader.dicts.next_id(), &raw)
                .map_err(|e| Error::corrupt(&inner.gen_dir, 0, format!("a trained dictionary: {}", e.what)))?;
            let mut payload = Vec::new();
            crate::codec::docz::encode_dict(&d, &mut payload);
            w.append_dict(&payload, inner.commit.durable_seq())?;
            (inner.reader.dicts.latest(), Some(d.id))
        }
        (None, None) => (None, None),
    };
    let txn_first = w.next_seq;
    let mut bulk = Bulk {
        docs: Vec::with_capacity(run_len),
        run: run_len,
        batch: run_len.min(BATCH_DOCS),
        spiller,
        spilled: false,
        uniques: Uniques::default(),
        tokens: Vec::new(),
        reserves: false,
        checked: FastMap::default(),
    };
    let mut report = ImportReport::default();
    let durable_seq = inner.commit.durable_seq();
    let mut sink = Sink {
        space: &inner.space,
        fs: &*inner.opts.fs,
        w: &mut w,
        progress,
        report: &mut report,
        bulk: &mut bulk,
        durable_seq,
    };
    // Every run is spilled before the commit: a failed spill undoes the import.
    let pending = run(&mut sink, input, dict).and_then(|()| {
        if !bulk.spilled {
            bulk.spiller.finish()?;
            return Ok(Pending::Docs(std::mem::take(&mut bulk.docs)));
        }
        bulk.spill(true)?;
        let runs = bulk.spiller.finish()?;
        runs.map(|r| Pending::Runs(Box::new(r)))
            .ok_or_else(|| Error::corrupt(&inner.gen_dir, 0, "the import's runs vanished"))
    });
    let pending = match pending {
        Ok(p) => p,
        Err(e) => {
            // Undone, not poisoned: bad input, too little room (looked at, or met
            // by an append: nothing of the import is committed), a failed read.
            let undo = e.is_input() || e.is_refused_for_space();
            if undo || matches!(e, Error::Io { op: "read" | "spill", .. }) {
                let spilled = bulk.spilled;
                // Stops the spilling thread and removes the run file.
                drop(bulk);
                let undone = restore(&mut w, saved).and_then(|()| match spilled {
                    // The run file's entry is gone for good (as after any other write).
                    true => {
                        inner.opts.fs.sync_dir(&inner.gen_dir).map_err(|e| Error::io("fsync dir", &inner.gen_dir, e))
                    }
                    false => Ok(()),
                });
                if let Err(e2) = undone {
                    inner.commit.poison(&e2);
                    return Err(e2);
                }
                if let Some(id) = new_dict {
                    inner.reader.dicts.remove(id);
                }
                return Err(e);
            }
            inner.commit.poison(&e);
            return Err(e);
        }
    };
    let (repeats, tokens, reserves) =
        (std::mem::take(&mut bulk.uniques.repeats), std::mem::take(&mut bulk.tokens), bulk.reserves);
    report.versions = report.jobs;
    report.jobs -= repeats.values().map(|(_, versions)| u64::from(*versions) - 1).sum::<u64>();
    // The import's key table goes before the index is built: memory holds one at a time.
    drop(bulk);
    let done = (|| {
        let committed = w.next_seq > txn_first;
        if committed {
            let mut payload = Vec::new();
            record::encode_commit(txn_first, &mut payload);
            w.append(FrameKind::Commit, 0, 1, durable_seq, &payload)?;
        }
        if reserves {
            // The whole catalog: a reader may take the last catalog frame as complete.
            let mut payload = Vec::new();
            record::encode_catalog(&w.catalog.entries(&w.job_ids), &mut payload);
            w.append(FrameKind::Catalog, 0, 1, durable_seq, &payload)?;
        }
        // The import's index file covers every frame since `txn_first`, the
        // catalog frame included: the next file must start right after it, or
        // open would find a gap and set every later file aside.
        let last_frame = w.last_frame.filter(|_| committed);
        let index = last_frame.map(|last_frame| SegmentMeta {
            generation: w.generation,
            lo_seq: index_lo,
            hi_seq: w.next_seq - 1,
            log_end: w.indexed_end(),
            last_frame,
            docs: 0,
        });
        w.log.as_ref().ok_or(Error::ReadOnly)?.sync()?;
        match index {
            // IMPORTANT: the index file is written once the log under it is durable.
            Some(meta) => {
                let seg = publish_index(inner, &w, pending, &repeats, meta)?;
                install(&mut w, seg, tokens, &repeats)
            }
            None => {
                if let Pending::Runs(runs) = pending {
                    runs.discard();
                }
                // A catalog frame alone stays for the next index file to cover.
                Ok(())
            }
        }
    })();
    if let Err(e) = done {
        inner.commit.poison(&e);
        return Err(e);
    }
    w.frozen = 0;
    inner.commit.synced(w.version(), w.writes);
    drop(w);
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

impl super::Store {
    /// Import JSON lines (the export format) as one transaction: all of it, or on
    /// a bad line (reported with its number) nothing. `progress` gets bytes read.
    pub fn import(&self, input: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<ImportReport> {
        if self.inner().opts.read_only {
            return Err(Error::ReadOnly);
        }
        self.not_in_cluster("import")?;
        let r = import(&self.inner(), input, progress)?;
        self.after_freeze()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample is 1 MiB of input, doubled up to 4 MiB while it holds fewer
    /// than 2,000 lines (so never more, whatever the input), and all of a
    /// smaller input.
    #[test]
    fn the_training_sample_holds_enough_lines() {
        for (line, input_mib, want) in [(300, 8, 1 << 20), (1000, 8, 2 << 20), (4000, 8, 4 << 20), (300, 0, 0)] {
            let text: Vec<u8> =
                std::iter::repeat_n(b'x', line - 1).chain([b'\n']).cycle().take(input_mib << 20).collect();
            let mut first = Vec::new();
            read_sample(&mut &text[..], &mut first).unwrap();
            assert_eq!(first.len(), want.min(text.len()), "lines of {line} bytes");
        }
        // One line longer than the sample's limit: the sample stops at 4 MiB.
        let endless = vec![b'x'; 8 << 20];
        let mut first = Vec::new();
        read_sample(&mut &endless[..], &mut first).unwrap();
        assert_eq!(first.len(), 4 << 20, "a line without an end");
        let small = b"{}\n".repeat(10);
        let mut first = Vec::new();
        read_sample(&mut &small[..], &mut first).unwrap();
        assert_eq!(first, small);
    }
}
