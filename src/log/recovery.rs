//! What survives a crash. Recovery validates every frame from the last position known
//! durable (the end of the newest index) to the end of the log, then:
//!
//! - a bad frame in the last segment after everything its durable mark claims is a
//!   torn tail: it and everything after it were never acknowledged, and are cut;
//! - a bad frame in a sealed segment, or before the last segment's durable mark,
//!   is corruption: refused with the file and offset, unless the policy salvages
//!   by cutting there;
//! - an import transaction without its commit frame at the end is cut.
//!
//! [`damage_was_durable`] is the one place that tells the two apart; open and
//! `jobq check` both get their verdict from [`validate`]. Cutting truncates and
//! fsyncs, so running recovery again finds nothing to do.

use std::path::Path;
use std::sync::Arc;

use super::mark::{self, Mark};
use super::scan::{FrameScanner, Step};
use super::segment::{self, SegmentHeader};
use super::tail::Tail;
use super::LogPos;
use crate::codec::frame::{self, FrameHeader, FrameKind};
use crate::codec::record;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, FsFile, OpenMode};

/// What recovery does with damage that is not a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryPolicy {
    /// Refuse to open, naming the file and offset.
    #[default]
    Strict,
    /// Keep everything before the damage and cut the rest (loses data; reported).
    TruncateAtCorruption,
}

/// A cut recovery made (or, read-only, would make).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub at: LogPos,
    pub reason: String,
    /// Bytes removed from the segment at `at`, plus whole segments after it.
    pub bytes: u64,
    /// True when the cut lost data that had been durable (salvage of corruption).
    pub lost_durable: bool,
}

/// The outcome of validation.
#[derive(Clone, Debug)]
pub struct Validated {
    /// End of the valid log.
    pub end: LogPos,
    /// The sequence number the next frame gets.
    pub next_seq: u64,
    pub cut: Option<Cut>,
    /// Frames validated.
    pub frames: u64,
}

fn open(fs: &dyn FileSystem, dir: &Path, n: u32) -> Result<(Arc<dyn FsFile>, std::path::PathBuf)> {
    let path = dir.join(segment::file_name(n));
    let mode = OpenMode::Read;
    let file = fs.open(&path, mode).map_err(|e| Error::io("open", &path, e))?;
    Ok((file, path))
}

/// Was the bad frame at `offset` (where sequence `expected` should start) durable
/// once? Then it is corruption, else a torn tail. Bytes of a sealed segment were
/// synced whole. In the last segment of version 2, its durable mark says how far
/// the log was synced; payload bytes are never consulted, so no record can pass
/// for evidence. A version-1 segment (written by older builds) has no mark: its
/// later frames' `durable_seq` is the evidence, looked for only at frame starts
/// that no decodable header's extent covers.
pub fn damage_was_durable(
    sc: &mut FrameScanner,
    header: &SegmentHeader,
    last: bool,
    mark: Option<&Mark>,
    offset: u64,
    expected: u64,
) -> Result<bool> {
    if !last {
        return Ok(true);
    }
    if header.has_marks() {
        return Ok(mark.is_some_and(|m| offset < m.durable_end));
    }
    legacy_evidence(sc, offset, expected)
}

/// Version 1: does a valid frame after the bad one claim that `seq` was durable?
fn legacy_evidence(sc: &mut FrameScanner, bad: u64, seq: u64) -> Result<bool> {
    let end = sc.file_len();
    let mut p = match sc.header_at(bad)? {
        Some(h) if h.first_seq == seq => bad + h.frame_len(),
        _ => bad + 1,
    };
    while p + frame::HEADER_LEN as u64 <= end {
        match sc.frame_at(p)? {
            Ok((h, _)) if h.first_seq >= seq && h.durable_seq >= seq => return Ok(true),
            Ok((h, _)) => p += h.frame_len(),
            Err(_) => p += 1,
        }
    }
    Ok(false)
}

/// Damage found: where, why, and whether those bytes had been durable.
struct Damage {
    at: LogPos,
    reason: String,
    durable: bool,
}

/// Where validation starts relative to import transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTxn {
    /// Outside any transaction.
    None,
    /// After an index chain that ends inside an import: it was committed before
    /// its index was built, so its commit must follow.
    Indexed,
    /// At the log's first frame, which carries the transaction flag: the import
    /// began there, or before (its first frames reclaimed by compaction).
    LogStart,
}

/// Is there a whole frame at `pos` that is part of an import transaction?
pub fn txn_at(fs: &dyn FileSystem, dir: &Path, pos: LogPos) -> Result<bool> {
    Ok(frame_kind_at(fs, dir, pos)?.is_some_and(|(txn, _)| txn))
}

/// Does the log that starts at `start` begin inside an import transaction? Its
/// first frame is part of one, or is its commit: a log whose first segments
/// online compaction removed may begin with the commit of an import whose
/// frames all went (log.md, "Import transactions").
pub fn begins_in_txn(fs: &dyn FileSystem, dir: &Path, start: LogPos) -> Result<bool> {
    Ok(frame_kind_at(fs, dir, start)?.is_some_and(|(txn, kind)| txn || kind == FrameKind::Commit))
}

/// Whether the whole frame at `pos` carries the transaction flag, and its kind.
fn frame_kind_at(fs: &dyn FileSystem, dir: &Path, pos: LogPos) -> Result<Option<(bool, FrameKind)>> {
    let (file, path) = open(fs, dir, pos.segment)?;
    let data_start = segment::read_header(&*file, &path)?.data_start();
    let mut sc = FrameScanner::new(file, &path, pos.offset.max(data_start))?;
    Ok(sc.frame_at(pos.offset.max(data_start))?.ok().map(|(h, _)| (h.is_txn(), h.kind)))
}

/// An import transaction open during a validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenTxn {
    /// Its first frame in the part validated.
    pub at: LogPos,
    /// The sequence number its commit names when it began at `at`.
    pub first: u64,
    /// It may have begun before `at`: a commit naming an earlier sequence closes it.
    pub began_before: bool,
    /// Its commit must follow (the chain ends inside it).
    pub indexed: bool,
}

/// Validate the log from `start` (with `start_seq` the sequence expected there) to
/// its end, and apply the cuts the rules call for unless `read_only`.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    fs: &dyn FileSystem,
    dir: &Path,
    generation: u64,
    start: LogPos,
    start_seq: u64,
    in_txn: StartTxn,
    policy: RecoveryPolicy,
    read_only: bool,
) -> Result<Validated> {
    let segments: Vec<u32> = segment::list(fs, dir)?.into_iter().filter(|n| *n >= start.segment).collect();
    let last = *segments.last().ok_or_else(|| Error::corrupt(dir, 0, "the log has no segment"))?;
    if segments.first() != Some(&start.segment) {
        return Err(Error::corrupt(dir.join(segment::file_name(start.segment)), 0, "log segment missing"));
    }
    let mut expected = start_seq;
    let mut end = start;
    let mut frames = 0;
    let mut txn: Option<OpenTxn> = match in_txn {
        StartTxn::Indexed => Some(OpenTxn { at: start, first: start_seq, began_before: true, indexed: true }),
        StartTxn::LogStart => Some(OpenTxn { at: start, first: start_seq, began_before: true, indexed: false }),
        StartTxn::None => None,
    };
    let mut damage: Option<Damage> = None;
    let mut entries = super::entries::EntryTrack::default();
    // Segment versions never decrease along the log.
    let mut version = 1;
    'segments: for (i, &n) in segments.iter().enumerate() {
        let at0 = LogPos { segment: n, offset: 0 };
        if i > 0 && n != segments[i - 1] + 1 {
            let at = LogPos { segment: segments[i - 1] + 1, offset: 0 };
            damage = Some(Damage { at, reason: "a log segment is missing".into(), durable: true });
            break;
        }
        let (file, path) = open(fs, dir, n)?;
        let header = match segment::read_header(&*file, &path) {
            Ok(h) => h,
            Err(e @ Error::Unsupported { .. }) => return Err(e),
            Err(e) => {
                damage = Some(Damage { at: at0, reason: e.to_string(), durable: true });
                break;
            }
        };
        if header.generation != generation || header.number != n {
            let reason = format!("segment header says generation {} number {}", header.generation, header.number);
            damage = Some(Damage { at: at0, reason, durable: true });
            break;
        }
        let data_start = header.data_start();
        let from = if n == start.segment { start.offset.max(data_start) } else { data_start };
        if from == data_start && header.first_seq != expected {
            let reason = format!("segment starts at sequence {}, expected {expected}", header.first_seq);
            damage = Some(Damage { at: at0, reason, durable: true });
            break;
        }
        if header.version < version {
            let reason = format!("a version-{} segment after a version-{version} one", header.version);
            damage = Some(Damage { at: at0, reason, durable: true });
            break;
        }
        version = header.version;
        let is_last = n == last;
        let mark = if is_last && header.has_marks() { mark::read(&*file, &path, n, generation)? } else { None };
        end = LogPos { segment: n, offset: from };
        // Zeros after the last frame of the last version-4 segment are its
        // preallocated space: the end of the log (before the mark they are damage,
        // found below as a log that ends before its mark).
        let mut sc = FrameScanner::new(file, &path, from)?.accept_zero_tail(is_last && header.may_end_in_zeros());
        loop {
            if let Some(m) = mark.filter(|m| end.offset == m.durable_end && expected != m.next_seq) {
                let why =
                    format!("the log reaches its durable mark at sequence {expected}, the mark says {}", m.next_seq);
                damage = Some(Damage { at: end, reason: why, durable: true });
                break 'segments;
            }
            let (offset, reason, whole) = match sc.next_step()? {
                Step::End => match mark.filter(|m| end.offset < m.durable_end) {
                    Some(m) => (end.offset, format!("the log ends before its durable mark at {}", m.durable_end), true),
                    None => continue 'segments,
                },
                Step::Frame { offset, header: fh, payload } => {
                    let judged =
                        judge_frame(&fh, payload, offset, expected, &mut txn, n, mark.as_ref()).and_then(|()| {
                            entries.frame(LogPos { segment: n, offset }, &fh, payload).map_err(|w| (w, true))
                        });
                    match judged {
                        Ok(()) => {
                            expected = fh.last_seq() + 1;
                            end.offset = offset + fh.frame_len();
                            frames += 1;
                            continue;
                        }
                        Err((why, whole)) => (offset, why, whole),
                    }
                }
                Step::Bad { offset, reason } => (offset, reason, false),
            };
            let at = LogPos { segment: n, offset };
            let durable = whole || damage_was_durable(&mut sc, &header, is_last, mark.as_ref(), offset, expected)?;
            damage = Some(Damage { at, reason, durable });
            break 'segments;
        }
    }
    let mut cut = None;
    if let Some(Damage { at, reason, durable }) = damage {
        if durable && policy == RecoveryPolicy::Strict {
            let path = dir.join(segment::file_name(at.segment));
            return Err(Error::corrupt(
                path,
                at.offset,
                format!(
                    "{reason}; the log is damaged before its unsynced tail (`jobq repair` salvages what precedes it)"
                ),
            ));
        }
        let what = if durable { "corruption" } else { "torn tail" };
        cut = Some(Cut { at, reason: format!("{what}: {reason}"), bytes: 0, lost_durable: durable });
    }
    if let Some(open) = entries.open.filter(|o| cut.as_ref().is_none_or(|c| o.at < c.at)) {
        // A Raft entry whose data did not all reach the disk: never flushed.
        let reason = "a Raft entry without all its data frames (torn tail)".to_string();
        cut = Some(Cut { at: open.at, reason, bytes: 0, lost_durable: false });
        expected = open.seq;
    }
    match txn {
        Some(t) if t.indexed => {
            // An import whose start is indexed lost its commit: it was durable once.
            let path = dir.join(segment::file_name(t.at.segment));
            if policy == RecoveryPolicy::Strict && cut.is_none() {
                return Err(Error::corrupt(path, end.offset, "an indexed import transaction has no commit frame"));
            }
        }
        Some(t) if cut.as_ref().is_none_or(|c| t.at < c.at) => {
            // An import that never committed: its frames never counted. Damage
            // inside one takes it whole, and says what the damage was.
            let (reason, lost_durable) = match &cut {
                Some(c) => (
                    format!(
                        "{}; the import transaction it falls in, from segment {} offset {}, goes whole",
                        c.reason, t.at.segment, t.at.offset
                    ),
                    c.lost_durable,
                ),
                None => ("an import transaction without its commit".to_string(), false),
            };
            cut = Some(Cut { at: t.at, reason, bytes: 0, lost_durable });
            expected = t.first;
        }
        _ => {}
    }
    if let Some(c) = &mut cut {
        end = c.at;
        if end.segment > start.segment && end.offset == 0 {
            // A segment with a damaged header keeps nothing: cut back to the previous one.
            let prev = end.segment - 1;
            let (file, path) = open(fs, dir, prev)?;
            end = LogPos { segment: prev, offset: file.len().map_err(|e| Error::io("stat", &path, e))? };
        } else if end.offset == 0 {
            end = start;
        }
        c.at = end;
        c.bytes = apply_cut(fs, dir, end, expected, last, read_only)?;
    }
    Ok(Validated { end, next_seq: expected, cut, frames })
}

/// Can the checksum-valid frame at `offset` be kept? If not: why, and whether that
/// alone proves damage to durable bytes (no torn write makes a whole frame wrong).
#[allow(clippy::too_many_arguments)]
fn judge_frame(
    h: &FrameHeader,
    payload: &[u8],
    offset: u64,
    expected: u64,
    txn: &mut Option<OpenTxn>,
    segment: u32,
    mark: Option<&Mark>,
) -> std::result::Result<(), (String, bool)> {
    if let Some(m) = mark.filter(|m| offset < m.durable_end && offset + h.frame_len() > m.durable_end) {
        return Err((format!("a frame runs across the durable mark at {}", m.durable_end), true));
    }
    check_frame(h, payload, expected, txn, segment, offset).map_err(|why| (why, false))?;
    payload_decodes(h, payload).map_err(|why| (why, true))
}

/// A frame's payload decodes as its kind says (a frame's checksum can match while
/// its records cannot be read: a bug or a forgery, never a torn write).
fn payload_decodes(h: &FrameHeader, payload: &[u8]) -> std::result::Result<(), String> {
    let r = match h.kind {
        FrameKind::Jobs => record::decode_jobs(payload, h.count).map(drop),
        FrameKind::Spider => record::decode_spider(payload).map(drop),
        FrameKind::Catalog => record::decode_catalog(payload).map(drop),
        FrameKind::Commit => Ok(()),
        FrameKind::Dict => crate::codec::docz::decode_dict(payload).map(drop),
        FrameKind::Entry => crate::codec::entry::decode(payload).map(drop),
    };
    r.map_err(|e| {
        format!("the frame's checksum matches but its payload does not decode at byte {}: {}", e.offset, e.what)
    })
}

pub(crate) fn check_frame(
    h: &FrameHeader,
    payload: &[u8],
    expected: u64,
    txn: &mut Option<OpenTxn>,
    segment: u32,
    offset: u64,
) -> std::result::Result<(), String> {
    if h.first_seq != expected {
        return Err(format!("frame starts at sequence {}, expected {expected}", h.first_seq));
    }
    if h.is_relocation() && (h.kind != FrameKind::Jobs || h.is_txn()) {
        return Err("only a jobs frame outside a transaction may carry the relocation flag".into());
    }
    match h.kind {
        FrameKind::Commit => {
            if h.is_txn() {
                return Err("a commit frame carries the transaction flag".into());
            }
            let seq = record::decode_commit(payload).map_err(|e| e.what)?;
            match txn.take() {
                Some(t) if seq == t.first || (t.began_before && seq < t.first) => {}
                _ => return Err("a commit frame that closes no open transaction".into()),
            }
        }
        FrameKind::Catalog if h.is_txn() => return Err("a catalog frame carries the transaction flag".into()),
        FrameKind::Entry if h.flags != 0 || txn.is_some() => {
            return Err("a Raft entry frame with flags or inside an import transaction".into())
        }
        FrameKind::Dict if h.is_txn() || txn.is_some() => {
            return Err("a dictionary frame inside an import transaction".into())
        }
        _ if h.is_txn() && txn.is_none() => {
            let at = LogPos { segment, offset };
            *txn = Some(OpenTxn { at, first: h.first_seq, began_before: false, indexed: false });
        }
        _ if h.is_txn() => {}
        _ if txn.is_some() => return Err("a frame inside an import transaction lacks its flag".into()),
        _ => {}
    }
    Ok(())
}

/// Remove everything from `at` on (`next_seq` the sequence number there); returns
/// the bytes removed. A durable mark past `at` is lowered first. A segment that is
/// not the last is never written in place (a backup may share its file): its kept
/// prefix is copied to a new file that replaces it.
fn apply_cut(fs: &dyn FileSystem, dir: &Path, at: LogPos, next_seq: u64, last: u32, read_only: bool) -> Result<u64> {
    let path = dir.join(segment::file_name(at.segment));
    let mode = if read_only || at.segment < last { OpenMode::Read } else { OpenMode::ReadWrite };
    let file = fs.open(&path, mode).map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let mut bytes = len.saturating_sub(at.offset);
    for n in (at.segment + 1)..=last {
        let p = dir.join(segment::file_name(n));
        if let Ok(f) = fs.open(&p, OpenMode::Read) {
            bytes += f.len().unwrap_or(0);
        }
    }
    if read_only {
        return Ok(bytes);
    }
    if at.segment < last {
        let copy = copy_prefix(fs, dir, &*file, &path, at, next_seq)?;
        // IMPORTANT: the claim comes down before any segment goes.
        super::reach::write(fs, dir, at.segment)?;
        for n in ((at.segment + 1)..=last).rev() {
            let p = dir.join(segment::file_name(n));
            match fs.remove_file(&p) {
                // A gap in the log (the damage this cut is for) has nothing to remove.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(|e| Error::io("remove", &p, e))?,
            }
        }
        fs.rename(&copy, &path).map_err(|e| Error::io("rename", &copy, e))?;
        // IMPORTANT: fsync folder, so removed segments stay removed and the copy in place.
        fs.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
    } else {
        // Also when the file already ends there (cut short, or a mark naming more
        // than the log holds): the marks must not claim more than the cut leaves.
        if let Ok(header) = segment::read_header(&*file, &path) {
            Tail::open(file.clone(), &path, header)?.lower_marks(at.offset, next_seq)?;
        }
        if len > at.offset {
            file.set_len(at.offset).map_err(|e| Error::io("truncate", &path, e))?;
            file.sync_data().map_err(|e| Error::io("fdatasync", &path, e))?;
        }
    }
    Ok(bytes)
}

/// Write the bytes of segment `at.segment` before `at` to a new synced temp file
/// (a version-2 segment's mark then names `at`); returns its path.
fn copy_prefix(
    fs: &dyn FileSystem,
    dir: &Path,
    file: &dyn FsFile,
    path: &Path,
    at: LogPos,
    next_seq: u64,
) -> Result<std::path::PathBuf> {
    let mut bytes = vec![0u8; at.offset as usize];
    crate::fs::read_exact_at(file, &mut bytes, 0).map_err(|e| Error::io("read", path, e))?;
    if let Some(h) = segment::decode_header(path, &bytes).ok().filter(|h| h.has_marks() && at.offset >= h.data_start())
    {
        for epoch in [1, 2] {
            let m = Mark { epoch, durable_end: at.offset, next_seq };
            let slot = mark::SLOT_OFFSETS[mark::slot_of(epoch)] as usize;
            bytes[slot..slot + mark::SLOT_LEN].copy_from_slice(&mark::encode(h.number, h.generation, &m));
        }
    }
    let tmp = dir.join(format!("{}.tmp", segment::file_name(at.segment)));
    if fs.exists(&tmp).map_err(|e| Error::io("stat", &tmp, e))? {
        fs.remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let f = fs.open(&tmp, OpenMode::CreateNew).map_err(|e| Error::io("create", &tmp, e))?;
    crate::fs::write_all_at(&*f, &bytes, 0).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
    Ok(tmp)
}

/// One frame handed to a replay callback.
pub struct FrameRef<'a> {
    pub pos: LogPos,
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

/// Call `f` for every frame in `[from, to)`, which validation has checked.
pub fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    from: LogPos,
    to: LogPos,
    f: &mut dyn FnMut(FrameRef<'_>) -> Result<()>,
) -> Result<()> {
    for n in from.segment..=to.segment {
        let (file, path) = open(fs, dir, n)?;
        let data_start = segment::read_header(&*file, &path)?.data_start();
        let start = if n == from.segment { from.offset.max(data_start) } else { data_start };
        let stop = if n == to.segment { to.offset } else { u64::MAX };
        let mut sc = FrameScanner::new(file, &path, start)?.read_ahead_to(stop);
        while sc.pos() < stop {
            match sc.next_step()? {
                Step::End => break,
                Step::Frame { offset, header, payload } => {
                    f(FrameRef { pos: LogPos { segment: n, offset }, header, payload })?
                }
                Step::Bad { offset, reason } => return Err(Error::corrupt(&path, offset, reason)),
            }
        }
    }
    Ok(())
}
