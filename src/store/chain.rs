//! The index chain: which index files cover the log from its start (the fewest,
//! largest files that match the log), and which of their docs newer files
//! supersede (format-spec/index.md, "Matching index files to the log").

use std::path::Path;
use std::sync::Arc;

use super::open::{io, OpenReport};
use super::version::SegmentSlot;
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::index::{format, IndexSegment, Section};
use crate::log::recovery;
use crate::log::scan::FrameScanner;
use crate::log::segment;
use crate::log::LogPos;

fn last_segment(fs: &dyn FileSystem, gen_dir: &Path) -> Result<u32> {
    Ok(segment::list(fs, gen_dir)?.last().copied().unwrap_or(0))
}

/// Remove the index files that cover the log past its last segment (`jobq
/// repair`, before it opens the store: open refuses a store with such files);
/// their names and the segment each reached.
pub(crate) fn remove_indexes_beyond_log(fs: &dyn FileSystem, gen_dir: &Path) -> Result<Vec<(String, u32)>> {
    let last = last_segment(fs, gen_dir)?;
    let mut removed = Vec::new();
    for name in fs.read_dir(gen_dir).map_err(io("list", gen_dir))? {
        if format::parse_name(&name).is_none() {
            continue;
        }
        let path = gen_dir.join(&name);
        // One that does not open is set aside by the open itself.
        let Ok(bytes) = fs.map(&path) else { continue };
        let Ok(seg) = IndexSegment::open(bytes, &path, true) else { continue };
        let reached = seg.meta().last_frame.segment;
        drop(seg);
        if reached > last {
            fs.remove_file(&path).map_err(io("remove", &path))?;
            removed.push((name, reached));
        }
    }
    if !removed.is_empty() {
        // IMPORTANT: fsync folder, so the removals hold before the store opens.
        fs.sync_dir(gen_dir).map_err(io("fsync dir", gen_dir))?;
    }
    Ok(removed)
}

/// Does the log hold, at the index's `last_frame`, the frame ending at `hi_seq`?
fn matches_log(fs: &dyn FileSystem, gen_dir: &Path, m: &format::SegmentMeta) -> Result<bool> {
    let path = gen_dir.join(segment::file_name(m.last_frame.segment));
    let Ok(f) = fs.open(&path, crate::fs::OpenMode::Read) else {
        return Ok(false);
    };
    let mut sc = FrameScanner::new(f, &path, m.last_frame.offset)?;
    Ok(match sc.frame_at(m.last_frame.offset)? {
        Ok((h, _)) => {
            h.last_seq() == m.hi_seq
                && m.log_end == LogPos { segment: m.last_frame.segment, offset: m.last_frame.offset + h.frame_len() }
        }
        Err(_) => false,
    })
}

/// Is the last frame an index covers part of an import transaction?
pub(crate) fn last_frame_in_txn(fs: &dyn FileSystem, gen_dir: &Path, m: &format::SegmentMeta) -> Result<bool> {
    recovery::txn_at(fs, gen_dir, m.last_frame)
}

/// Open the index files and pick the chain that covers the log from its start with
/// the fewest, largest files; set aside the rest.
pub(crate) fn choose_chain(
    fs: &dyn FileSystem,
    gen_dir: &Path,
    generation: u64,
    first: u64,
    report: &mut OpenReport,
) -> Result<Vec<SegmentSlot>> {
    let mut valid: Vec<IndexSegment> = Vec::new();
    // Files set aside are removed only once the open succeeded (a refused open changes nothing).
    let discard = |name: &str, why: String, report: &mut OpenReport| -> Result<()> {
        report.discarded.push((name.to_string(), why));
        Ok(())
    };
    for name in fs.read_dir(gen_dir).map_err(io("list", gen_dir))? {
        let Some((lo, hi)) = format::parse_name(&name) else {
            continue;
        };
        let path = gen_dir.join(&name);
        let bytes = match fs.map(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // An index file is a cache: one that does not map (a directory in
            // its place, say) is set aside like a damaged one.
            Err(e) => {
                discard(&name, format!("it does not map: {e}"), report)?;
                continue;
            }
        };
        match IndexSegment::open(bytes, &path, true) {
            Ok(seg) if seg.meta().generation == generation && (seg.meta().lo_seq, seg.meta().hi_seq) == (lo, hi) => {
                valid.push(seg)
            }
            Ok(_) => discard(&name, "its header does not match its name or generation".into(), report)?,
            Err(e) => discard(&name, e.to_string(), report)?,
        }
    }
    valid.sort_by_key(|s| (s.meta().lo_seq, std::cmp::Reverse(s.meta().hi_seq)));
    let mut chain: Vec<IndexSegment> = Vec::new();
    let mut next = first;
    let mut rest = Vec::new();
    // The first file may begin before the log does: online compaction removed the
    // segments under its start (every doc there superseded by a relocated copy).
    // Of two that end alike, the one starting later: a compaction that dropped
    // deleted jobs there rewrote the file from the new start without them, and
    // a crash before the old file's removal leaves both (the old one's dropped
    // jobs point into removed segments).
    let mut best: Option<usize> = None;
    for (i, seg) in valid.iter().enumerate() {
        let m = seg.meta();
        let better = best.is_none_or(|b| (m.hi_seq, m.lo_seq) > (valid[b].meta().hi_seq, valid[b].meta().lo_seq));
        if m.lo_seq <= next && next <= m.hi_seq && better && matches_log(fs, gen_dir, m)? {
            best = Some(i);
        }
    }
    if let Some(i) = best {
        let seg = valid.remove(i);
        next = seg.meta().hi_seq + 1;
        chain.push(seg);
    }
    for seg in valid {
        if seg.meta().lo_seq == next && matches_log(fs, gen_dir, seg.meta())? {
            next = seg.meta().hi_seq + 1;
            chain.push(seg);
        } else {
            rest.push(seg);
        }
    }
    // Listed after the index files: a file is published only once the log under
    // it is durable, so one reaching past the last segment proves segments lost.
    let last = last_segment(fs, gen_dir)?;
    if let Some(seg) = rest.iter().find(|s| s.meta().last_frame.segment > last) {
        let missing = last + 1;
        return Err(Error::corrupt(
            gen_dir.join(segment::file_name(missing)),
            0,
            format!(
                "log segment {missing} is missing: index file {} covers the log up to segment {} (the log ends in \
                 segment {last}); the jobs written there are lost. `jobq repair` sets that file aside and keeps the \
                 log as it is",
                seg.meta().file_name(),
                seg.meta().last_frame.segment
            ),
        ));
    }
    for seg in rest {
        let name = seg.meta().file_name();
        let why = if seg.meta().lo_seq < next {
            "covered by a larger index"
        } else if matches_log(fs, gen_dir, seg.meta())? {
            // A file before it is missing or was set aside: no chain reaches it.
            "the chain of index files has a gap before it (a missing or damaged index file); its range is replayed \
             from the log"
        } else {
            "does not match the log"
        };
        drop(seg);
        discard(&name, why.into(), report)?;
    }
    Ok(chain.into_iter().map(|s| SegmentSlot::new(Arc::new(s))).collect())
}

/// Mark, in each index file, the docs a newer index file holds a version of.
pub(crate) fn kill_superseded(slots: &mut [SegmentSlot]) {
    for newer in 1..slots.len() {
        kill_superseded_by(slots, newer);
    }
}

/// Mark, in the files before `newer`, the docs whose keys file `newer` holds.
pub(crate) fn kill_superseded_by(slots: &mut [SegmentSlot], newer: usize) {
    let projects: Vec<u32> = slots[newer].seg.projects().collect();
    for project in projects {
        for old in 0..newer {
            let mut dead = Vec::new();
            if let (Some(o), Some(n)) = (slots[old].seg.section(project), slots[newer].seg.section(project)) {
                common_keys(&o, &n, &mut |doc| dead.push(doc));
            }
            for doc in dead {
                slots[old].kill(project, doc);
            }
        }
    }
}

/// Call `f` with each doc of `a` whose key `b` also holds (galloping from the smaller).
/// `f` gets `a`'s doc.
fn common_keys(a: &Section<'_>, b: &Section<'_>, f: &mut dyn FnMut(u32)) {
    let (small, big, small_is_a) = if a.len() <= b.len() { (a, b, true) } else { (b, a, false) };
    let n = big.len();
    let mut lo = 0u32;
    for i in 0..small.len() {
        let k = small.sorted_key(i);
        let (mut hi, mut step) = (lo, 1u32);
        while hi < n && big.sorted_key(hi) < k {
            lo = hi + 1;
            hi = hi.saturating_add(step);
            step = step.saturating_mul(2);
        }
        let (mut l, mut h) = (lo, hi.min(n));
        while l < h {
            let m = l + (h - l) / 2;
            if big.sorted_key(m) < k {
                l = m + 1;
            } else {
                h = m;
            }
        }
        lo = l;
        if l < n && big.sorted_key(l) == k {
            f(if small_is_a { small.by_key(i) } else { big.by_key(l) });
        }
    }
}
