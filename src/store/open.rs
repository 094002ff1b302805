//! Opening a store: the lock, the live generation, the index chain, recovery of the
//! log's tail, and replay of what the indexes do not cover.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::catalog::Catalog;
use super::chain::{choose_chain, kill_superseded, last_frame_in_txn};
use super::layout;
use super::leftovers;
use super::writer::Writer;
use super::Options;
use crate::codec::frame::FrameKind;
use crate::codec::record;
use crate::codec::DecodeError;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, LockGuard};
use crate::log::reach;
use crate::log::reader::RecordReader;
use crate::log::recovery::{self, Cut};
use crate::log::scan::FrameScanner;
use crate::log::segment::{self, SegmentHeader};
use crate::log::writer::LogWriter;
use crate::log::LogPos;

/// What opening found and did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub generation: u64,
    /// Index files used, oldest first.
    pub indexes: Vec<String>,
    /// Index files set aside (damaged, stale, superseded) with the reason.
    pub discarded: Vec<(String, String)>,
    /// The log's first segment as the open found it.
    pub log_start: u32,
    /// Where replay of the log started.
    pub replay_from: LogPos,
    /// Frames replayed into the tail index.
    pub replayed_frames: u64,
    /// What recovery cut from the log.
    pub cut: Option<Cut>,
    /// Where the valid log ended (after recovery's cuts), and the sequence number
    /// the next frame gets: the position a read-only open sees the store at.
    pub log_end: LogPos,
    pub next_seq: u64,
    /// A cluster node's store: where its applied entries end (the log after it
    /// holds entries appended, not yet known committed).
    pub applied_end: Option<LogPos>,
    pub created: bool,
    pub millis: u64,
}

pub(crate) struct Opened {
    pub lock: Option<LockGuard>,
    pub gen_dir: PathBuf,
    pub writer: Writer,
    pub report: OpenReport,
}

pub(crate) fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// Create an empty store's files in `dir` (which the caller has locked). A
/// generation directory left by a create that crashed before `CURRENT` holds at
/// most an empty log: it is removed. One that holds anything more is a store
/// whose `CURRENT` was lost: refused, never removed.
fn create(fs: &dyn FileSystem, dir: &Path, opts: &Options) -> Result<u64> {
    let gens = lost_current(fs, dir)?;
    for name in &gens {
        let p = dir.join(name);
        fs.remove_dir_all(&p).map_err(io("remove", &p))?;
    }
    let generation = 1;
    let gd = layout::gen_dir(dir, generation);
    fs.create_dir(&gd).map_err(io("create", &gd))?;
    // IMPORTANT: fsync folder, so the generation directory survives.
    fs.sync_dir(dir).map_err(io("fsync dir", dir))?;
    LogWriter::create(opts.fs.clone(), &gd, generation, 1, opts.segment_bytes)?;
    layout::write_current(fs, dir, generation, 1)?;
    Ok(generation)
}

/// A directory without `CURRENT`: its generation directories when none holds
/// more than a crashed create leaves; else `CURRENT` was lost (damage, at
/// offset 0 of `CURRENT`), whoever opens it.
pub(crate) fn lost_current(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    let names = fs.read_dir(dir).map_err(io("list", dir))?;
    // A generation directory named as a data directory (`--data STORE/gen-...`):
    // a store made there would live inside another, and go with its compaction.
    let generation_file = |n: &String| {
        segment::parse_name(n).is_some() || crate::index::format::parse_name(n).is_some() || *n == reach::REACH
    };
    if let Some(name) = names.iter().find(|n| generation_file(n)) {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: format!(
                "no CURRENT, but it holds {name}: a store's generation directory (gen-*), not a data directory; \
                 name the directory that holds it"
            ),
        });
    }
    let gens: Vec<String> = names.into_iter().filter(|n| layout::parse_gen_name(n).is_some()).collect();
    for name in &gens {
        if let Some(why) = holds_data(fs, &dir.join(name))? {
            return Err(Error::corrupt(
                dir.join(layout::CURRENT),
                0,
                format!(
                    "CURRENT is missing, but {name} holds {why}: a store whose CURRENT was lost, not a new one \
                     (nothing was changed; restore CURRENT from a backup, or write it as format-spec/durability.md \
                     says, naming the newest generation; a `jobq backup` cut off before its first run finished \
                     leaves this too: run it again)"
                ),
            ));
        }
    }
    Ok(gens)
}

/// What a generation directory holds beyond the empty log a crashed create
/// leaves: None when nothing.
fn holds_data(fs: &dyn FileSystem, gen_dir: &Path) -> Result<Option<String>> {
    let names = fs.read_dir(gen_dir).map_err(io("list", gen_dir))?;
    let segments = segment::list(fs, gen_dir)?;
    // Temp files are what a crash left of the new-file protocol, `REACH` what
    // the log's creation wrote (it holds no job).
    let is_segment = |n: &String| segments.iter().any(|s| segment::file_name(*s) == *n);
    if let Some(other) = names.iter().find(|n| !is_segment(n) && !n.ends_with(".tmp") && *n != reach::REACH) {
        return Ok(Some(other.clone()));
    }
    if segments.len() > 1 {
        return Ok(Some(format!("{} log segments", segments.len())));
    }
    let Some(&n) = segments.first() else { return Ok(None) };
    // A segment whose header does not even read is not a crashed create's either.
    let (_, mut sc) = match FrameScanner::segment(fs, gen_dir, n) {
        Ok(s) => s,
        Err(e) => return Ok(Some(format!("a log segment that does not open ({e})"))),
    };
    Ok(match sc.next_step()? {
        crate::log::scan::Step::End => None,
        _ => Some("a log with frames".to_string()),
    })
}

/// Open the store in `dir`; `held`: its lock, taken by the caller (`jobq
/// repair` holds it from before its cut through this open).
pub(crate) fn open(dir: &Path, opts: &Options, held: Option<LockGuard>) -> Result<Opened> {
    let started = Instant::now();
    let fs = &*opts.fs;
    let mut report = OpenReport::default();
    if !fs.exists(dir).map_err(io("stat", dir))? {
        if !opts.create || opts.read_only {
            return Err(Error::io("open", dir, std::io::ErrorKind::NotFound.into()));
        }
        create_dirs(fs, dir)?;
    }
    let lock = if opts.read_only {
        None
    } else if held.is_some() {
        held
    } else {
        match fs.lock(&dir.join(layout::LOCK)) {
            Ok(g) => Some(g),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked { path: dir.to_path_buf() })
            }
            Err(e) => return Err(Error::io("lock", dir.join(layout::LOCK), e)),
        }
    };
    let current = match layout::read_current_file(fs, dir)? {
        Some(c) => c,
        None if opts.read_only || !opts.create => {
            lost_current(fs, dir)?;
            return Err(Error::Unsupported {
                path: dir.to_path_buf(),
                what: "no jobq store here (no CURRENT file)".into(),
            });
        }
        None => {
            report.created = true;
            layout::Current { generation: create(fs, dir, opts)?, log_start: Some(1) }
        }
    };
    let generation = current.generation;
    report.generation = generation;
    // A cluster node's directory: only its node writes it; a read-only opener
    // sees what the node applied.
    let raft_log = opts.raft_log || fs.exists(&dir.join(layout::RAFT)).map_err(io("stat", dir))?;
    if raft_log && !opts.raft_log && !opts.read_only {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: "this is a cluster node's data directory (it has a RAFT file): only `jobq serve --node-id` writes it"
                .into(),
        });
    }
    let gen_dir = layout::gen_dir(dir, generation);
    if !fs.exists(&gen_dir).map_err(io("stat", &gen_dir))? {
        // Nothing is removed: the store may well be in another generation.
        return Err(Error::corrupt(
            dir.join(layout::CURRENT),
            16,
            format!(
                "CURRENT names generation {generation}, but {} does not exist (nothing was changed; restore CURRENT \
                 from a backup, or write it as format-spec/durability.md says, naming the newest generation)",
                layout::gen_name(generation)
            ),
        ));
    }
    let tmp_dirs = if opts.read_only { Vec::new() } else { leftovers::remove_temp_files(fs, &gen_dir)? };
    // Read before the segments are listed: a writer raises it only once the
    // segment it names exists (repair writes it before it opens the store).
    let reached = reach::read(fs, &gen_dir)?;
    let first = first_segment(fs, &gen_dir, generation)?;
    report.log_start = first.number;
    if !opts.accept_lost_start {
        layout::log_start_kept(fs, dir, &gen_dir, current, first.number)?;
    }
    let last = *segment::list(fs, &gen_dir)?.last().unwrap_or(&first.number);
    reach::kept(fs, &gen_dir, reached, last)?;
    let log_first_seq = first.first_seq;
    let mut slots = choose_chain(fs, &gen_dir, generation, log_first_seq, &mut report)?;
    kill_superseded(&mut slots);
    let (start, start_seq, catalog) = match slots.last() {
        Some(s) => (s.seg.meta().log_end, s.seg.meta().hi_seq + 1, Catalog::from_entries(&s.seg.catalog())),
        None => (LogPos { segment: first.number, offset: first.data_start() }, log_first_seq, Default::default()),
    };
    report.replay_from = start;
    indexed_segments_whole(fs, &gen_dir, generation, first.number, start.segment)?;
    let last_frame = slots.last().map(|s| s.seg.meta().last_frame);
    let last_frame_end = slots.last().map(|s| s.seg.meta().log_end);
    // A chain may end inside a committed import; a log whose first frames compaction
    // reclaimed may begin inside one (its commit names a sequence before the log).
    let in_txn = match slots.last() {
        Some(s) if last_frame_in_txn(fs, &gen_dir, s.seg.meta())? => recovery::StartTxn::Indexed,
        None if recovery::begins_in_txn(fs, &gen_dir, start)? => recovery::StartTxn::LogStart,
        _ => recovery::StartTxn::None,
    };
    let v = recovery::validate(fs, &gen_dir, generation, start, start_seq, in_txn, opts.recovery, opts.read_only)?;
    report.cut = v.cut.clone();
    report.log_end = v.end;
    report.next_seq = v.next_seq;
    if !opts.read_only {
        // Only once the open succeeded: a refused open removes nothing.
        leftovers::remove_other_generations(fs, dir, generation)?;
        if current.log_start.is_none() {
            // A version-1 `CURRENT` claims no start: from now on, the log's.
            layout::advance_log_start(fs, dir, generation, first.number)?;
        }
        let names: Vec<String> = report.discarded.iter().map(|(n, _)| n.clone()).collect();
        leftovers::clear(fs, &gen_dir, &names, &tmp_dirs, opts.clock.now_ms())?;
    }
    let reader = Arc::new(RecordReader::new(opts.fs.clone(), &gen_dir));
    // The dictionaries known at the chain's end (copies in its last file's
    // catalog); those written after it are met by the replay.
    if let Some(s) = slots.last() {
        for d in s.seg.dicts()? {
            reader.dicts.add(d);
        }
    }
    if opts.read_only {
        // Every segment open now, and kept: a server's compaction may remove old
        // ones while this store, read-only beside it, still reads them. (A
        // writable store's own compaction hands their handles to old versions.)
        let numbers: Vec<u32> = segment::list(fs, &gen_dir)?.into_iter().filter(|n| *n <= v.end.segment).collect();
        reader.open_all(&numbers)?;
        reader.map_below(v.end.segment, durable_end(fs, &gen_dir, generation, v.end)?);
    }
    let mut w =
        Writer::new(start_seq, generation, gen_dir.clone(), slots, start_seq, catalog, reader, opts.bulk_entries);
    w.last_frame = last_frame;
    w.last_frame_end = last_frame_end;
    w.replay_end = v.end;
    // The replayed range's dictionaries first: online compaction may have written
    // one again after records that use it (format-spec/log.md, "Dictionary").
    recovery::replay(fs, &gen_dir, start, v.end, &mut |f| {
        if f.header.kind == FrameKind::Dict {
            let d = crate::codec::docz::decode_dict(f.payload).map_err(|e| {
                Error::corrupt(
                    gen_dir.join(segment::file_name(f.pos.segment)),
                    f.pos.offset + 32 + e.offset as u64,
                    e.what,
                )
            })?;
            w.reader.dicts.add(Arc::new(d));
        }
        Ok(())
    })?;
    // A cluster node's log may end in entries not known committed: they are
    // appended, not applied (format-spec/log.md, "Raft entry").
    #[cfg(feature = "cluster")]
    let (applied, applied_seq) = match raft_log {
        true => {
            let purged = match fs.exists(&dir.join(layout::RAFT)).map_err(io("stat", dir))? {
                true => crate::cluster::raft_file::read(fs, dir)?.purged.map(|p| p.index),
                false => None,
            };
            super::raft::applied_end(fs, &gen_dir, (start, start_seq), v.end, purged)?
        }
        false => (v.end, v.next_seq),
    };
    #[cfg(not(feature = "cluster"))]
    let (applied, applied_seq) = match raft_log {
        true => {
            return Err(Error::Unsupported {
                path: dir.to_path_buf(),
                what: "a cluster node's data directory: this build has no `cluster` feature".into(),
            })
        }
        false => (v.end, v.next_seq),
    };
    let mut frames = 0;
    recovery::replay(fs, &gen_dir, start, applied, &mut |f| {
        frames += 1;
        replay_frame(&mut w, f.pos, &f.header, f.payload, !raft_log)
    })?;
    report.replayed_frames = frames;
    debug_assert_eq!(w.next_seq, applied_seq);
    w.next_seq = applied_seq;
    w.replay_end = applied;
    report.applied_end = raft_log.then_some(applied);
    if raft_log && !opts.read_only && w.should_freeze() {
        w.freeze()?;
    }
    if !opts.read_only {
        // Resuming syncs what a crashed process may have left in the page cache
        // only, before anything (an index above all) is built on it.
        let log = LogWriter::resume(opts.fs.clone(), &gen_dir, generation, v.end, v.next_seq, opts.segment_bytes)?;
        // A store of an older format has no `REACH`; a cut may have left it higher.
        let tail = log.tail().header.number;
        if reach::read(fs, &gen_dir)? != Some(tail) {
            reach::write(fs, &gen_dir, tail)?;
        }
        w.log = Some(log);
    }
    w.freeze_at = opts.memtable_entries;
    w.bulk_entries = opts.bulk_entries;
    report.indexes = w.segments.iter().map(|s| s.seg.meta().file_name()).collect();
    report.millis = started.elapsed().as_millis() as u64;
    Ok(Opened { lock, gen_dir, writer: w, report })
}

/// How much of the log's last segment an fsync made durable, up to `end` (its
/// durable mark; 0 for a segment without marks): what a server beside a
/// read-only opener never cuts.
fn durable_end(fs: &dyn FileSystem, gen_dir: &Path, generation: u64, end: LogPos) -> Result<u64> {
    let path = gen_dir.join(segment::file_name(end.segment));
    let file = fs.open(&path, crate::fs::OpenMode::Read).map_err(io("open", &path))?;
    if !segment::read_header(&*file, &path)?.has_marks() {
        return Ok(0);
    }
    let mark = crate::log::mark::read(&*file, &path, end.segment, generation)?;
    Ok(mark.map_or(0, |m| m.durable_end.min(end.offset)))
}

/// Create `dir` and its missing ancestors, each made durable in its parent.
pub(crate) fn create_dirs(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    for a in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if fs.exists(a).map_err(io("stat", a))? {
            break;
        }
        missing.push(a);
    }
    for d in missing.into_iter().rev() {
        fs.create_dir(d).map_err(io("create", d))?;
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // IMPORTANT: fsync folder, so the new directory survives.
        fs.sync_dir(parent).map_err(io("fsync dir", parent))?;
    }
    Ok(())
}

/// The header of the log's first segment.
pub(crate) fn first_segment(fs: &dyn FileSystem, gen_dir: &Path, generation: u64) -> Result<SegmentHeader> {
    let segs = segment::list(fs, gen_dir)?;
    let first = *segs.first().ok_or_else(|| Error::corrupt(gen_dir, 0, "the log has no segment"))?;
    let path = gen_dir.join(segment::file_name(first));
    let f = fs.open(&path, crate::fs::OpenMode::Read).map_err(io("open", &path))?;
    let h = segment::read_header(&*f, &path)?;
    if h.generation != generation {
        return Err(Error::corrupt(
            &path,
            16,
            format!("segment of generation {}, expected {generation}", h.generation),
        ));
    }
    Ok(h)
}

/// The segments before the one recovery starts in (their frames come from the
/// index files, not from a scan) must all be there, each with its own header:
/// a gap or a damaged header anywhere in the log is damage (durability.md). A
/// read-only opener beside a serving store may see the oldest ones go (online
/// compaction removes a prefix): a prefix gone meanwhile is no gap.
fn indexed_segments_whole(fs: &dyn FileSystem, gen_dir: &Path, generation: u64, first: u32, start: u32) -> Result<()> {
    let present = segment::list(fs, gen_dir)?;
    let first = present.first().map_or(first, |p| first.max(*p));
    for n in first..start {
        let path = gen_dir.join(segment::file_name(n));
        if present.binary_search(&n).is_err() {
            return Err(Error::corrupt(
                &path,
                0,
                format!("log segment {n} is missing (the log runs from segment {first} on without a gap)"),
            ));
        }
        let f = match fs.open(&path, crate::fs::OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let h = segment::read_header(&*f, &path)?;
        if h.generation != generation || h.number != n {
            let what = format!("segment header says generation {} number {}", h.generation, h.number);
            return Err(Error::corrupt(&path, 0, what));
        }
    }
    Ok(())
}

/// The number of the log's last segment (0: none). An index file reaching a
/// later one proves segments lost (it is written only once its log is durable).
/// Replay one frame into the writer; `may_freeze`: the tail may become an index
/// image after it (a cluster node's only at the end of an entry).
pub(crate) fn replay_frame(
    w: &mut Writer,
    pos: LogPos,
    h: &crate::codec::frame::FrameHeader,
    payload: &[u8],
    may_freeze: bool,
) -> Result<()> {
    let file = w.gen_dir.join(segment::file_name(pos.segment));
    let bad = |e: crate::codec::DecodeError| Error::corrupt(&file, pos.offset + 32 + e.offset as u64, e.what);
    match h.kind {
        FrameKind::Jobs => {
            let base = pos.offset + crate::codec::frame::HEADER_LEN as u64;
            for (off, mut view) in record::decode_jobs(payload, h.count).map_err(bad)? {
                view.unpack(&w.reader.dicts).map_err(|e| bad(DecodeError::new(off + e.offset, e.what)))?;
                let job = view.to_job();
                let loc = LogPos { segment: pos.segment, offset: base + off as u64 }.pack();
                w.apply(&job, loc);
            }
        }
        FrameKind::Spider => {
            let s = record::decode_spider(payload).map_err(bad)?;
            w.register_spider(s.project, s.spider, &s.name);
        }
        FrameKind::Catalog => {
            for s in record::decode_catalog(payload).map_err(bad)? {
                w.register_spider(s.project, s.spider, &s.name);
                w.job_ids.note(s.project, s.spider, s.next_job - 1);
            }
        }
        FrameKind::Commit | FrameKind::Entry => {}
        FrameKind::Dict => {
            w.reader.dicts.add(std::sync::Arc::new(crate::codec::docz::decode_dict(payload).map_err(bad)?))
        }
    }
    w.next_seq = h.last_seq() + 1;
    w.last_frame = Some(pos);
    w.replay_end = LogPos { segment: pos.segment, offset: pos.offset + h.frame_len() };
    w.last_frame_end = Some(w.replay_end);
    if may_freeze && w.should_freeze() {
        w.freeze()?;
    }
    Ok(())
}
