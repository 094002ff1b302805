//! What survives a crash. Recovery validates every frame from the last position known
//! durable (the end of the newest index) to the end of the log, then:
//!
//! - a bad frame in the last segment with no sign of durability after it is a torn
//!   tail: it and everything after it were never acknowledged, and are cut;
//! - a bad frame in a sealed segment, or one followed by a valid frame whose
//!   `durable_seq` says the bad bytes were once synced, is corruption: refused with
//!   the file and offset, unless the policy salvages by cutting there;
//! - an import transaction without its commit frame at the end is cut.
//!
//! Cutting truncates and fsyncs, so running recovery again finds nothing to do.

use std::path::Path;
use std::sync::Arc;

use super::scan::{FrameScanner, Step};
use super::segment::{self, HEADER_LEN};
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

/// Does a valid frame after `from` claim that sequence `seq` was durable?
fn durable_evidence(sc: &mut FrameScanner, from: u64, seq: u64) -> Result<Option<u64>> {
    let end = sc.file_len();
    let mut p = from;
    while p + frame::HEADER_LEN as u64 <= end {
        if let Ok((h, _)) = sc.frame_at(p)? {
            if h.first_seq >= seq && h.durable_seq >= seq {
                return Ok(Some(p));
            }
        }
        p += 1;
    }
    Ok(None)
}

/// Validate the log from `start` (with `start_seq` the sequence expected there) to
/// its end, and apply the cuts the rules call for unless `read_only`. `in_txn`: the
/// frame before `start` belongs to an import transaction (an index chain may end
/// inside an import, which was committed before its index was built).
#[allow(clippy::too_many_arguments)]
pub fn validate(
    fs: &dyn FileSystem,
    dir: &Path,
    generation: u64,
    start: LogPos,
    start_seq: u64,
    in_txn: bool,
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
    // An open transaction: where its first frame is and its sequence number (0 when
    // it began before `start`).
    let mut txn: Option<(LogPos, u64)> = in_txn.then_some((start, 0));
    let mut damage: Option<(LogPos, String, bool)> = None;
    'segments: for (i, &n) in segments.iter().enumerate() {
        if i > 0 && n != segments[i - 1] + 1 {
            let at = LogPos { segment: segments[i - 1] + 1, offset: 0 };
            damage = Some((at, "a log segment is missing".into(), true));
            break;
        }
        let (file, path) = open(fs, dir, n)?;
        let header = match segment::read_header(&*file, &path) {
            Ok(h) => h,
            Err(e) => {
                damage = Some((LogPos { segment: n, offset: 0 }, e.to_string(), true));
                break;
            }
        };
        if header.generation != generation || header.number != n {
            let why = format!("segment header says generation {} number {}", header.generation, header.number);
            damage = Some((LogPos { segment: n, offset: 0 }, why, true));
            break;
        }
        let from = if n == start.segment { start.offset.max(HEADER_LEN) } else { HEADER_LEN };
        if from == HEADER_LEN && header.first_seq != expected {
            let why = format!("segment starts at sequence {}, expected {expected}", header.first_seq);
            damage = Some((LogPos { segment: n, offset: 0 }, why, true));
            break;
        }
        end = LogPos { segment: n, offset: from };
        let mut sc = FrameScanner::new(file, &path, from)?;
        loop {
            let bad = match sc.next_step()? {
                Step::End => continue 'segments,
                Step::Frame { offset, header, payload } => {
                    match check_frame(&header, payload, expected, &mut txn, n, offset) {
                        Ok(()) => {
                            expected = header.last_seq() + 1;
                            end.offset = offset + header.frame_len();
                            frames += 1;
                            continue;
                        }
                        Err(why) => (offset, why),
                    }
                }
                Step::Bad { offset, reason } => (offset, reason),
            };
            let (offset, reason) = bad;
            let at = LogPos { segment: n, offset };
            let durable = if n != last { true } else { durable_evidence(&mut sc, offset + 1, expected)?.is_some() };
            damage = Some((at, reason, durable));
            break 'segments;
        }
    }
    let mut cut = None;
    if let Some((at, reason, durable)) = damage {
        if durable && policy == RecoveryPolicy::Strict {
            let path = dir.join(segment::file_name(at.segment));
            return Err(Error::corrupt(
                path,
                at.offset,
                format!(
                    "{reason}; the log is damaged before its unsynced tail (open with the salvage policy to cut it)"
                ),
            ));
        }
        let what = if durable { "corruption" } else { "torn tail" };
        cut = Some(Cut { at, reason: format!("{what}: {reason}"), bytes: 0, lost_durable: durable });
    }
    if let Some((at, 0)) = txn {
        // An import whose start is indexed lost its commit: it was durable once.
        let path = dir.join(segment::file_name(at.segment));
        if policy == RecoveryPolicy::Strict && cut.is_none() {
            return Err(Error::corrupt(path, end.offset, "an indexed import transaction has no commit frame"));
        }
    } else if let Some((at, seq)) = txn {
        // An import that never committed: its frames never counted.
        if cut.as_ref().is_none_or(|c| at < c.at) {
            let reason = "an import transaction without its commit".to_string();
            cut = Some(Cut { at, reason, bytes: 0, lost_durable: false });
            expected = seq;
        }
    }
    if let Some(c) = &mut cut {
        end = c.at;
        if end.offset < HEADER_LEN {
            // A segment with a damaged header keeps nothing: cut back to the previous one.
            let prev = end.segment - 1;
            let (file, path) = open(fs, dir, prev)?;
            end = LogPos { segment: prev, offset: file.len().map_err(|e| Error::io("stat", &path, e))? };
        }
        c.at = end;
        c.bytes = apply_cut(fs, dir, end, last, read_only)?;
    }
    Ok(Validated { end, next_seq: expected, cut, frames })
}

pub(crate) fn check_frame(
    h: &FrameHeader,
    payload: &[u8],
    expected: u64,
    txn: &mut Option<(LogPos, u64)>,
    segment: u32,
    offset: u64,
) -> std::result::Result<(), String> {
    if h.first_seq != expected {
        return Err(format!("frame starts at sequence {}, expected {expected}", h.first_seq));
    }
    match h.kind {
        FrameKind::Commit => {
            if h.is_txn() {
                return Err("a commit frame carries the transaction flag".into());
            }
            let seq = record::decode_commit(payload).map_err(|e| e.what)?;
            match txn.take() {
                Some((_, start)) if start == seq || (start == 0 && seq < expected) => {}
                _ => return Err("a commit frame that closes no open transaction".into()),
            }
        }
        FrameKind::Catalog if h.is_txn() => return Err("a catalog frame carries the transaction flag".into()),
        _ if h.is_txn() && txn.is_none() => *txn = Some((LogPos { segment, offset }, h.first_seq)),
        _ if h.is_txn() => {}
        _ if txn.is_some() => return Err("a frame inside an import transaction lacks its flag".into()),
        _ => {}
    }
    Ok(())
}

/// Remove everything from `at` on; returns the bytes removed.
fn apply_cut(fs: &dyn FileSystem, dir: &Path, at: LogPos, last: u32, read_only: bool) -> Result<u64> {
    let mut bytes = 0;
    for n in (at.segment + 1)..=last {
        let path = dir.join(segment::file_name(n));
        if let Ok(f) = fs.open(&path, OpenMode::Read) {
            bytes += f.len().unwrap_or(0);
        }
        if !read_only {
            fs.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    let path = dir.join(segment::file_name(at.segment));
    let mode = if read_only { OpenMode::Read } else { OpenMode::ReadWrite };
    let file = fs.open(&path, mode).map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    bytes += len.saturating_sub(at.offset);
    if !read_only {
        if len > at.offset {
            file.set_len(at.offset).map_err(|e| Error::io("truncate", &path, e))?;
            file.sync_data().map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        if at.segment < last {
            // IMPORTANT: fsync folder, so removed segments stay removed.
            fs.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
        }
    }
    Ok(bytes)
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
        let start = if n == from.segment { from.offset.max(HEADER_LEN) } else { HEADER_LEN };
        let stop = if n == to.segment { to.offset } else { u64::MAX };
        let mut sc = FrameScanner::new(file, &path, start)?;
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
