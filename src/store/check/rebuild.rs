//! What the log says, read frame by frame from its first segment: each job's
//! current version, the active `unique` values, the spider names. The rules are
//! open's: frames of an import count only once its commit follows; damage inside
//! the range the index chain covers is reported and skipped up to the next chain
//! boundary (open serves those jobs from the index); the scan stops where open's
//! validation stops (a torn tail, or the damage that makes open refuse).

use std::path::{Path, PathBuf};

use super::{close_reason_print, tags_print, token_print, unique_print, CheckReport, Current};
use crate::codec::frame::{FrameHeader, FrameKind};
use crate::codec::record;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::hash::FastMap;
use crate::log::recovery::{self, check_frame, OpenTxn};
use crate::log::scan::{FrameScanner, Step};
use crate::log::{mark, segment, LogPos};

/// One index file of the chain open uses: its range and where it ends in the log.
#[derive(Clone, Debug)]
pub(super) struct ChainFile {
    pub path: PathBuf,
    pub hi_seq: u64,
    pub log_end: LogPos,
    /// The frame at `last_frame` carries the transaction flag.
    pub ends_in_txn: bool,
}

/// What the log says of a job's current version, in 32 bytes (a check holds one
/// per job): where its record is, the frame's sequence number, and a fingerprint
/// of every other field the indexes hold. A mismatch reads the record again to
/// say which fields differ.
#[derive(Clone, Copy, Debug)]
pub(super) struct Logged {
    pub loc: u64,
    pub seq: u64,
    pub print: u64,
    /// Which index serves the job, as the comparison finds it ([`UNSERVED`] before).
    pub served_by: u32,
}

/// [`Logged::served_by`] of a job no index serves (yet).
pub(super) const UNSERVED: u32 = u32::MAX;

/// Everything the log says: per job its current version and that record's sequence
/// number, and the active `unique` values.
#[derive(Default)]
pub(super) struct Rebuild {
    pub jobs: FastMap<(u32, u64), Logged>,
    pub uniques: FastMap<(u32, u64), String>,
    pub names: FastMap<(u32, u32), String>,
    pub ids: FastMap<(u32, String), u32>,
    /// Log ranges skipped after damage inside the indexed range.
    pub skipped: Vec<(LogPos, LogPos)>,
    /// Spider registrations of the open import transaction, applied at its commit.
    txn: Vec<Change>,
    /// The open transaction's job changes are applied at once (an import may be
    /// as large as the log: buffered, they took 64 bytes a job); what undoes
    /// them if it never commits.
    undo: Undo,
    /// The dictionary frames met so far: a packed document must name one.
    pub dicts: crate::codec::docz::Dicts,
}

/// What the open transaction changed, in order: keys it added, versions and
/// `unique` values it replaced.
#[derive(Default)]
struct Undo {
    added: Vec<(u32, u64)>,
    replaced: Vec<((u32, u64), Logged)>,
    uniques: Vec<((u32, u64), Option<String>)>,
}

enum Change {
    /// A job's version: its key, where it is, its sequence number, its fields'
    /// fingerprint, and an active job's `unique`.
    Job((u32, u64), u64, u64, u64, Option<Box<str>>),
    Name(u32, u32, String),
}

impl Rebuild {
    /// Is the record at packed position `loc` in a skipped range?
    pub fn skipped_loc(&self, loc: u64) -> bool {
        let p = LogPos::unpack(loc);
        self.skipped.iter().any(|(a, b)| *a <= p && p < *b)
    }

    fn change(&mut self, c: Change, in_txn: bool, path: &Path, offset: u64, r: &mut CheckReport) {
        match c {
            Change::Job(key, loc, seq, print, unique) => {
                let before = self.jobs.insert(key, Logged { loc, seq, print, served_by: UNSERVED });
                let had_unique = unique.is_some();
                let unique_before = match unique {
                    Some(u) => self.uniques.insert(key, u.into()),
                    None => self.uniques.remove(&key),
                };
                if in_txn {
                    match before {
                        Some(b) => self.undo.replaced.push((key, b)),
                        None => self.undo.added.push(key),
                    }
                    if had_unique || unique_before.is_some() {
                        self.undo.uniques.push((key, unique_before));
                    }
                }
            }
            c @ Change::Name(..) if in_txn => self.txn.push(c),
            Change::Name(project, id, name) => {
                let by_id = self.names.entry((project, id)).or_insert_with(|| name.clone()).clone();
                let by_name = *self.ids.entry((project, name.clone())).or_insert(id);
                if by_id != name || by_name != id {
                    let what =
                        format!("spider {id} / {name:?} of project {project} conflicts with an earlier registration");
                    r.found(path, Some(offset), what);
                }
            }
        }
    }

    fn commit(&mut self, path: &Path, offset: u64, r: &mut CheckReport) {
        self.undo = Undo::default();
        for c in std::mem::take(&mut self.txn) {
            self.change(c, false, path, offset, r);
        }
    }

    /// Undo the job changes of a transaction that never committed (open drops it).
    fn roll_back(&mut self) {
        let undo = std::mem::take(&mut self.undo);
        for (key, unique) in undo.uniques.into_iter().rev() {
            match unique {
                Some(u) => self.uniques.insert(key, u),
                None => self.uniques.remove(&key),
            };
        }
        for (key, logged) in undo.replaced.into_iter().rev() {
            self.jobs.insert(key, logged);
        }
        for key in undo.added {
            self.jobs.remove(&key);
        }
        self.txn.clear();
    }
}

/// Read the log of `gen_dir` up to `stop` (the end open keeps; `None`: all of it).
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    fsys: &dyn FileSystem,
    gen_dir: &Path,
    generation: u64,
    chain: &[ChainFile],
    stop: Option<LogPos>,
    live: Option<u32>,
    jobs_hint: usize,
    r: &mut CheckReport,
) -> Result<Rebuild> {
    let mut b = Rebuild::default();
    // Room for the jobs the indexes hold, at once: growing the table would hold
    // its old and new tables together.
    b.jobs.reserve(jobs_hint);
    let indexed_end = chain.last().map(|c| c.log_end);
    let segments = segment::list(fsys, gen_dir)?;
    // Beside a server (`live`: the first segment the open found), online
    // compaction may have removed the log's first segments since the open:
    // their jobs' copies lie past `stop`. The check runs again.
    if let Some(start) = live.filter(|s| segments.first() != Some(s)) {
        let why = format!("the log's first segment {start} went since the store was opened");
        return Err(Error::io("list", gen_dir, std::io::Error::new(std::io::ErrorKind::NotFound, why)));
    }
    dicts_of_log(fsys, gen_dir, &segments, &b.dicts)?;
    let mut expected = 0;
    let mut txn: Option<OpenTxn> = None;
    let mut resume: Option<LogPos> = None;
    'segments: for (i, &n) in segments.iter().enumerate() {
        r.segments += 1;
        let path = gen_dir.join(segment::file_name(n));
        let (header, mut sc) = match FrameScanner::segment(fsys, gen_dir, n) {
            Ok(x) => x,
            // Removed by online compaction beside us: the check runs again.
            Err(e) if live.is_some() && super::super::moved_on(&e) => return Err(e),
            Err(e) => {
                r.found(&path, Some(0), e.to_string());
                continue;
            }
        };
        // Zeros after the last frame are a clean end only in the last segment.
        let zero_tail = header.may_end_in_zeros() && i + 1 == segments.len();
        sc = sc.accept_zero_tail(zero_tail);
        if header.generation != generation || header.number != n || (i > 0 && n != segments[i - 1] + 1) {
            r.found(&path, Some(0), "segment header, name or numbering is wrong");
        }
        if i == 0 {
            expected = header.first_seq;
            // A log whose first frames compaction reclaimed may begin inside an import.
            let start = LogPos { segment: n, offset: header.data_start() };
            if recovery::begins_in_txn(fsys, gen_dir, start)? {
                txn = Some(OpenTxn { at: start, first: expected, began_before: true, indexed: false });
            }
        }
        if header.has_marks() {
            padding(&*sc.file(), &path, r)?;
        }
        match resume {
            Some(p) if p.segment > n => continue,
            Some(p) if p.segment == n => {
                sc = FrameScanner::new(sc.file(), &path, p.offset)?.accept_zero_tail(zero_tail);
                resume = None;
            }
            _ => {}
        }
        loop {
            let here = LogPos { segment: n, offset: sc.pos() };
            if stop.is_some_and(|s| here >= s) {
                break 'segments;
            }
            let (offset, reason) = match sc.next_step()? {
                Step::End => continue 'segments,
                Step::Bad { offset, reason } => (offset, reason),
                Step::Frame { offset, header: h, payload } => {
                    match check_frame(&h, payload, expected, &mut txn, n, offset) {
                        Ok(()) => {
                            r.frames += 1;
                            expected = h.last_seq() + 1;
                            apply(&mut b, &path, offset, n, &h, payload, r);
                            continue;
                        }
                        Err(why) => (offset, why),
                    }
                }
            };
            let at = LogPos { segment: n, offset };
            let boundary = chain.iter().find(|c| c.log_end > at).filter(|_| indexed_end.is_some_and(|e| at < e));
            let Some(c) = boundary else {
                // Open's validation stops before such damage; it is reported from its verdict.
                break 'segments;
            };
            let what = format!(
                "damage inside the range that {} serves ({reason}): the store opens and serves the \
                 indexed versions, but reading a record of this frame fails; `jobq repair` cuts the log here",
                c.path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            );
            r.found(&path, Some(offset), what);
            b.skipped.push((at, c.log_end));
            // Every import that began before a chain boundary was committed.
            b.commit(&path, offset, r);
            expected = c.hi_seq + 1;
            let (first, at) = (c.hi_seq + 1, c.log_end);
            txn = c.ends_in_txn.then_some(OpenTxn { at, first, began_before: true, indexed: true });
            if c.log_end.segment == n {
                sc = FrameScanner::new(sc.file(), &path, c.log_end.offset)?.accept_zero_tail(zero_tail);
            } else {
                resume = Some(c.log_end);
                continue 'segments;
            }
        }
    }
    // A transaction still open at the end never committed: open drops it.
    b.roll_back();
    Ok(b)
}

/// The zero padding of a version-2 segment's header pages: only noted. No
/// checksum covers it and nothing reads it, so open and repair ignore it
/// (format-spec/log.md); after a mark slot a torn slot write may leave bytes.
fn padding(file: &dyn crate::fs::FsFile, path: &Path, r: &mut CheckReport) -> Result<()> {
    let mut pages = vec![0u8; segment::DATA_START_V2 as usize];
    crate::fs::read_exact_at(file, &mut pages, 0).map_err(|e| crate::error::Error::io("read", path, e))?;
    if let Some(i) = pages[segment::HEADER_LEN as usize..4096].iter().position(|&b| b != 0) {
        r.notes.push(format!(
            "{} at offset {}: the padding after the segment header is not zero (ignored: nothing reads it; \
             the medium changed a byte jobq wrote as zero)",
            path.display(),
            segment::HEADER_LEN as usize + i
        ));
    }
    for slot in mark::SLOT_OFFSETS {
        let from = slot as usize + mark::SLOT_LEN;
        if let Some(i) = pages[from..slot as usize + 4096].iter().position(|&b| b != 0) {
            r.notes.push(format!(
                "{} at offset {}: bytes after a durable-mark slot are not zero",
                path.display(),
                from + i
            ));
        }
    }
    Ok(())
}

/// The fields of the record `v` at `loc` that the indexes hold.
pub(super) fn current_of_view(v: &record::JobView<'_>, loc: u64) -> Current {
    Current {
        loc,
        ts: v.ts(),
        order_seq: v.order_seq,
        state: v.state,
        priority: v.priority,
        tags: tags_print(v.tags.iter().copied()),
        unique: unique_print(v.unique, v.state),
        close_reason: close_reason_print(v.close_reason().as_deref()),
        token: token_print(crate::store::tokens::token_in(v.doc()).as_deref(), v.state),
    }
}

fn apply(
    b: &mut Rebuild,
    path: &Path,
    offset: u64,
    segment: u32,
    h: &FrameHeader,
    payload: &[u8],
    r: &mut CheckReport,
) {
    let at = |e: crate::codec::DecodeError| (Some(offset + 32 + e.offset as u64), e.what);
    let in_txn = h.is_txn();
    match h.kind {
        FrameKind::Jobs => match record::decode_jobs(payload, h.count) {
            Ok(recs) => {
                for (i, (off, mut v)) in recs.into_iter().enumerate() {
                    r.records += 1;
                    if let Err(e) = v.unpack(&b.dicts) {
                        r.found(path, Some(offset + 32 + (off + e.offset) as u64), e.what);
                        continue;
                    }
                    let seq = h.first_seq + i as u64;
                    if v.order_seq > seq {
                        r.found(path, Some(offset + 32 + off as u64), "order_seq is later than the record");
                    }
                    let loc = LogPos { segment, offset: offset + 32 + off as u64 }.pack();
                    let print = current_of_view(&v, loc).print();
                    let unique = v.unique.filter(|_| v.state.is_active()).map(Box::from);
                    let key = (v.key.project, v.key.local());
                    b.change(Change::Job(key, loc, seq, print, unique), in_txn, path, offset, r);
                }
            }
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Spider => match record::decode_spider(payload) {
            Ok(s) => b.change(Change::Name(s.project, s.spider, s.name.to_string()), in_txn, path, offset, r),
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Catalog => match record::decode_catalog(payload) {
            Ok(all) => {
                for s in all {
                    b.change(Change::Name(s.project, s.spider, s.name.to_string()), false, path, offset, r);
                }
            }
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Commit => b.commit(path, offset, r),
        FrameKind::Dict => match crate::codec::docz::decode_dict(payload) {
            Ok(d) => b.dicts.add(std::sync::Arc::new(d)),
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Entry => {
            if let Err(e) = crate::codec::entry::decode(payload) {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        }
    }
}

/// Every dictionary frame of the log, before any record is read: online
/// compaction may write one again after records that use it (log.md, "Dictionary").
/// Damage is left to the main walk.
fn dicts_of_log(
    fsys: &dyn FileSystem,
    gen_dir: &Path,
    segments: &[u32],
    dicts: &crate::codec::docz::Dicts,
) -> Result<()> {
    for &n in segments {
        let Ok((_, sc)) = FrameScanner::segment(fsys, gen_dir, n) else { continue };
        let mut sc = sc.accept_zero_tail(true);
        while let Step::Frame { header, payload, .. } = sc.next_step()? {
            if header.kind == FrameKind::Dict {
                if let Ok(d) = crate::codec::docz::decode_dict(payload) {
                    dicts.add(std::sync::Arc::new(d));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction's job changes are applied as they come; one that never
    /// commits leaves every job, and every `unique`, as before it.
    #[test]
    fn an_open_transaction_rolls_back_to_the_state_before_it() {
        let (path, mut r) = (Path::new("log"), CheckReport::default());
        let mut b = Rebuild::default();
        let job = |b: &mut Rebuild, local: u64, loc: u64, unique: Option<&str>, txn: bool, r: &mut CheckReport| {
            b.change(Change::Job((1, local), loc, loc, loc * 7, unique.map(Box::from)), txn, path, 0, r)
        };
        job(&mut b, 1, 10, Some("a"), false, &mut r);
        job(&mut b, 2, 11, None, false, &mut r);
        let state = |b: &Rebuild| {
            let mut jobs: Vec<_> = b.jobs.iter().map(|(k, l)| (*k, l.loc, l.seq, l.print)).collect();
            let mut uniques: Vec<_> = b.uniques.iter().map(|(k, u)| (*k, u.clone())).collect();
            jobs.sort_unstable();
            uniques.sort_unstable();
            (jobs, uniques)
        };
        let before = state(&b);
        job(&mut b, 1, 20, None, true, &mut r);
        job(&mut b, 3, 21, Some("c"), true, &mut r);
        job(&mut b, 3, 22, Some("d"), true, &mut r);
        job(&mut b, 2, 23, Some("b"), true, &mut r);
        job(&mut b, 1, 24, Some("e"), true, &mut r);
        b.change(Change::Name(1, 9, "x".into()), true, path, 0, &mut r);
        assert_ne!(state(&b), before);
        b.roll_back();
        assert_eq!(state(&b), before);
        assert!(b.names.is_empty() && b.txn.is_empty());
        // Committed, the same changes stay.
        job(&mut b, 3, 30, Some("c"), true, &mut r);
        b.commit(path, 0, &mut r);
        b.roll_back();
        assert_eq!(b.jobs[&(1, 3)].loc, 30);
        assert_eq!(b.uniques[&(1, 3)], "c");
        assert!(r.is_clean());
    }
}
