//! Reading the log by sequence number: the frame holding a given sequence number,
//! then the frames after it, up to a limit (what a change feed reads).
//!
//! A segment is found by its header's first sequence number (binary search over
//! the segment files, headers cached); inside it, a frame by scanning forward from
//! the nearest place learnt before: cursors note a (sequence number, offset)
//! sample about every [`STRIDE`] bytes of frames they pass, so each segment is
//! scanned from its start at most once per process. Where a read ended is kept
//! too (the last [`RECENT`] places): a client that asks again from where its last
//! answer ended starts there, without a scan.
//!
//! Only frames at or below the limit (durable ones) are read or noted: their bytes
//! never change while the store is open, whereas bytes after them may (an import
//! undone cuts them, and the same sequence numbers are written again).
//!
//! Segment files are opened once and their handles shared by every cursor (a
//! thousand waiting feeds hold no descriptor of their own). Online compaction
//! removes the oldest segments while cursors read: it hands their numbers to
//! [`SeqIndex::retire`] first, which lets go of the handles (a cursor reading one
//! keeps its own reference until it moves on). A segment removed before it could
//! be opened makes [`SeqIndex::seek`] look again (the position is then usually
//! gone) and [`LogCursor::next_frame`] answer [`Next::Vanished`].

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::segment;
use super::LogPos;
use crate::codec::frame::{self, FrameHeader, FrameKind, HEADER_LEN};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, FsFile, OpenMode};

/// Bytes of frames between two position samples of a segment.
pub const STRIDE: u64 = 256 << 10;
/// Bytes read at once.
const WINDOW: usize = 256 << 10;
/// Places where reads ended, kept for the next read to start at.
pub const RECENT: usize = 32;
/// Committed import transactions remembered.
const COMMITTED: usize = 16;

/// The start of a frame: where it is, and the sequence number it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAt {
    pub segment: u32,
    pub offset: u64,
    pub seq: u64,
}

/// What is known of a segment: where its sequence numbers start, and samples of
/// frame positions, ascending. No handle is kept: a feed that reads the whole log
/// must not hold a descriptor per segment (the next segment's creation would fail
/// at the open-file limit); a segment is opened again each time a cursor enters it.
#[derive(Debug)]
struct Known {
    first_seq: u64,
    data_start: u64,
    /// `(first sequence number of a frame, its offset)`.
    samples: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Segments {
    known: BTreeMap<u32, Known>,
    /// Segments below this number were retired: never cached again.
    retired_below: u32,
    /// Where recent reads ended.
    recent: VecDeque<FrameAt>,
}

/// Positions learnt in a log, shared by every cursor of one store.
#[derive(Debug, Default)]
pub struct SeqIndex {
    segments: Mutex<Segments>,
    /// Import transactions seen committed: `(a sequence number of the
    /// transaction, its commit's)`. Only the latest few are kept.
    committed: Mutex<VecDeque<(u64, u64)>>,
}

/// Where a seek landed.
pub enum Seek<'a> {
    /// A cursor whose next frame holds the sequence number asked for.
    At(LogCursor<'a>),
    /// The sequence number lies before the log's first segment, which starts at
    /// `first_seq` (compaction removed what was before).
    Gone { first_seq: u64 },
}

/// One step of a cursor.
pub enum Next {
    Frame(Frame),
    /// Nothing more at or below the limit.
    End,
    /// The next segment was removed (by compaction) before it could be opened.
    Vanished,
}

/// A whole frame whose checksum matches; [`LogCursor::payload`] has its payload
/// until the cursor moves on.
pub struct Frame {
    pub header: FrameHeader,
    /// Where its header is.
    pub pos: LogPos,
    /// Where its payload is in the cursor's buffer.
    start: usize,
}

/// A segment's file and header facts, as a cursor needs them.
struct Opened {
    number: u32,
    file: Arc<dyn FsFile>,
    first_seq: u64,
    data_start: u64,
}

fn path_of(dir: &Path, n: u32) -> std::path::PathBuf {
    dir.join(segment::file_name(n))
}

impl SeqIndex {
    /// Segment `n`, opened and its header read once; `None` when it is gone.
    /// Only a segment holding a frame at or below `limit` is kept: a later one may
    /// still be removed and made again under its number (an import undone).
    fn open(&self, fs: &dyn FileSystem, dir: &Path, n: u32, limit: u64) -> Result<Option<Opened>> {
        let path = path_of(dir, n);
        let file = match fs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        if let Some(k) = self.segments.lock().known.get(&n) {
            return Ok(Some(Opened { number: n, file, first_seq: k.first_seq, data_start: k.data_start }));
        }
        let h = segment::read_header(&*file, &path)?;
        let mut s = self.segments.lock();
        // A segment retired meanwhile is read through this handle only.
        if n >= s.retired_below && h.first_seq <= limit {
            let k = Known { first_seq: h.first_seq, data_start: h.data_start(), samples: Vec::new() };
            s.known.entry(n).or_insert(k);
        }
        Ok(Some(Opened { number: n, file, first_seq: h.first_seq, data_start: h.data_start() }))
    }

    /// Segments `numbers` are about to be removed: forget them and their handles.
    pub fn retire(&self, numbers: &[u32]) {
        let mut s = self.segments.lock();
        for n in numbers {
            s.known.remove(n);
        }
        if let Some(&top) = numbers.iter().max() {
            s.retired_below = s.retired_below.max(top + 1);
        }
        let below = s.retired_below;
        s.recent.retain(|a| a.segment >= below);
    }

    /// Note that the frame starting `seq` is at `offset` of segment `n`, when it
    /// is [`STRIDE`] past the last sample.
    fn note(&self, n: u32, seq: u64, offset: u64) {
        if let Some(k) = self.segments.lock().known.get_mut(&n) {
            if k.samples.last().is_none_or(|&(s, o)| seq > s && offset >= o + STRIDE) {
                k.samples.push((seq, offset));
            }
        }
    }

    /// Note where a read ended (a frame at or below the limit starts there, or
    /// the next durable one will): the next read from there starts without a scan.
    pub fn note_end(&self, at: FrameAt) {
        let mut s = self.segments.lock();
        if at.segment < s.retired_below || s.recent.contains(&at) {
            return;
        }
        if s.recent.len() >= RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(at);
    }

    /// A cursor at the frame holding `seq`, reading frames up to `limit` (the
    /// caller's durable position, `seq <= limit + 1`), or where the log now starts
    /// when `seq` lies before it.
    pub fn seek<'a>(&'a self, fs: &'a dyn FileSystem, dir: &'a Path, seq: u64, limit: u64) -> Result<Seek<'a>> {
        let recent = self.segments.lock().recent.iter().rev().find(|a| a.seq == seq).copied();
        if let Some(at) = recent {
            if let Some(c) = self.resume(fs, dir, at, limit)? {
                return Ok(Seek::At(c));
            }
        }
        // Each retry follows a removal by compaction, which ends.
        loop {
            let numbers = segment::list(fs, dir)?;
            let Some(&first) = numbers.first() else {
                return Err(Error::corrupt(dir, 0, "the log has no segment"));
            };
            self.segments.lock().known.retain(|n, _| *n >= first);
            let Some(head) = self.open(fs, dir, first, limit)? else { continue };
            if seq < head.first_seq {
                return Ok(Seek::Gone { first_seq: head.first_seq });
            }
            // The last segment starting at or before `seq`.
            let (mut lo, mut hi) = (0, numbers.len());
            let mut vanished = false;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                match self.open(fs, dir, numbers[mid], limit)? {
                    Some(o) if o.first_seq <= seq => lo = mid,
                    Some(_) => hi = mid,
                    None => {
                        vanished = true;
                        break;
                    }
                }
            }
            if vanished {
                continue;
            }
            let Some(o) = self.open(fs, dir, numbers[lo], limit)? else { continue };
            let (start_seq, start) = {
                let s = self.segments.lock();
                let samples = s.known.get(&o.number).map_or(&[][..], |k| &k.samples[..]);
                match samples.partition_point(|&(s, _)| s <= seq) {
                    0 => (o.first_seq, o.data_start),
                    i => samples[i - 1],
                }
            };
            let at = FrameAt { segment: o.number, offset: start, seq: start_seq };
            let mut c = LogCursor::new(self, fs, dir, limit, o, at)?;
            c.skip_before(seq)?;
            return Ok(Seek::At(c));
        }
    }

    /// A cursor at `at` (a frame start a cursor reported), reading frames up to
    /// `limit`; `None` when its segment is gone.
    pub fn resume<'a>(
        &'a self,
        fs: &'a dyn FileSystem,
        dir: &'a Path,
        at: FrameAt,
        limit: u64,
    ) -> Result<Option<LogCursor<'a>>> {
        match self.open(fs, dir, at.segment, limit)? {
            Some(o) if at.offset >= o.data_start && at.seq >= o.first_seq => {
                Ok(Some(LogCursor::new(self, fs, dir, limit, o, at)?))
            }
            Some(_) => {
                Err(Error::corrupt(path_of(dir, at.segment), at.offset, "a resumed log position is not a frame"))
            }
            None => Ok(None),
        }
    }

    fn committed_through(&self, seq: u64) -> Option<u64> {
        self.committed.lock().iter().find(|&&(a, c)| a <= seq && seq < c).map(|&(_, c)| c)
    }

    fn note_committed(&self, seq: u64, commit: u64) {
        let mut c = self.committed.lock();
        if c.len() >= COMMITTED {
            c.pop_front();
        }
        c.push_back((seq, commit));
    }
}

/// Reads the frames of a log in order, from a frame found by [`SeqIndex::seek`].
pub struct LogCursor<'a> {
    index: &'a SeqIndex,
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    limit: u64,
    segment: u32,
    file: Arc<dyn FsFile>,
    /// The file's size when last asked (the last segment grows).
    len: u64,
    /// Offset of the next frame, and the sequence number it starts.
    pos: u64,
    expected: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> LogCursor<'a> {
    fn new(
        index: &'a SeqIndex,
        fs: &'a dyn FileSystem,
        dir: &'a Path,
        limit: u64,
        o: Opened,
        at: FrameAt,
    ) -> Result<LogCursor<'a>> {
        let len = o.file.len().map_err(|e| Error::io("stat", path_of(dir, o.number), e))?;
        Ok(LogCursor {
            index,
            fs,
            dir,
            limit,
            segment: o.number,
            file: o.file,
            len,
            pos: at.offset,
            expected: at.seq,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// Where the next frame starts (or, past the limit, will start).
    pub fn at(&self) -> FrameAt {
        FrameAt { segment: self.segment, offset: self.pos, seq: self.expected }
    }

    fn path(&self) -> std::path::PathBuf {
        path_of(self.dir, self.segment)
    }

    /// Bytes `[offset, offset + n)` of the segment, which must hold them.
    fn window(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let have = offset >= self.buf_start && offset + n as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            self.fill(offset, n)?;
        }
        let at = (offset - self.buf_start) as usize;
        Ok(&self.buf[at..at + n])
    }

    /// Read `[offset, offset + n)` and what follows, up to [`WINDOW`] bytes. The
    /// tail segment is cut back to its last frame when sealed: a length learnt
    /// before may overstate it, so a short read asks the length again, once.
    fn fill(&mut self, offset: u64, n: usize) -> Result<()> {
        let mut asked = false;
        loop {
            let want = (n.max(WINDOW) as u64).min(self.len.saturating_sub(offset)).max(n as u64) as usize;
            self.buf.resize(want, 0);
            self.buf_start = offset;
            match crate::fs::read_exact_at(&*self.file, &mut self.buf, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !asked => {
                    asked = true;
                    self.buf.clear();
                    self.len = self.file.len().map_err(|e| Error::io("stat", self.path(), e))?;
                }
                Err(e) => {
                    self.buf.clear();
                    return Err(Error::io("read", self.path(), e));
                }
            }
        }
    }

    /// Are there `n` bytes at the cursor? (Asks the file again when not, once.)
    fn has(&mut self, n: u64) -> Result<bool> {
        if self.pos + n <= self.len {
            return Ok(true);
        }
        self.len = self.file.len().map_err(|e| Error::io("stat", self.path(), e))?;
        Ok(self.pos + n <= self.len)
    }

    /// Zeros at the cursor instead of a frame header: the preallocated space
    /// after a version-4 segment's last frame (zeros never form a frame). Only
    /// a frame at or below the limit is looked for, and every such frame was
    /// written before the cursor was made: so it is in the next segment, and
    /// this one was cut back to its last frame when sealed (asked again here, so
    /// that a stale length or read-ahead cannot pass for frames).
    fn zeros_here(&mut self) -> Result<bool> {
        let pos = self.pos;
        let h = HEADER_LEN as u64;
        if pos >= self.buf_start && pos + h <= self.buf_start + self.buf.len() as u64 {
            let at = (pos - self.buf_start) as usize;
            if self.buf[at..at + HEADER_LEN].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        self.buf.clear();
        self.buf_start = 0;
        self.len = self.file.len().map_err(|e| Error::io("stat", self.path(), e))?;
        if pos + HEADER_LEN as u64 > self.len {
            return Ok(true);
        }
        Ok(self.window(pos, HEADER_LEN)?.iter().all(|&b| b == 0))
    }

    /// The header of the next frame when the frame is at or below the limit (the
    /// next segment entered when this one has no more).
    fn peek(&mut self) -> Result<Step> {
        loop {
            if self.expected > self.limit {
                return Ok(Step::End);
            }
            if !self.has(HEADER_LEN as u64)? || self.zeros_here()? {
                // A durable frame lies beyond this segment's end: in the next one.
                match self.enter_next()? {
                    true => continue,
                    false => return Ok(Step::Vanished),
                }
            }
            let pos = self.pos;
            let raw: [u8; HEADER_LEN] = self.window(pos, HEADER_LEN)?.try_into().expect("window has the asked length");
            let h = frame::decode_header(&raw).map_err(|why| Error::corrupt(self.path(), pos, why))?;
            if h.first_seq != self.expected {
                let why = format!("frame starts sequence number {}, expected {}", h.first_seq, self.expected);
                return Err(Error::corrupt(self.path(), pos, why));
            }
            if h.last_seq() > self.limit {
                return Ok(Step::End);
            }
            return Ok(Step::Header(h));
        }
    }

    /// Move to the start of the next segment; false when it is gone.
    fn enter_next(&mut self) -> Result<bool> {
        let Some(o) = self.index.open(self.fs, self.dir, self.segment + 1, self.limit)? else { return Ok(false) };
        if o.first_seq != self.expected {
            let why = format!("segment starts sequence number {}, expected {}", o.first_seq, self.expected);
            return Err(Error::corrupt(path_of(self.dir, o.number), 24, why));
        }
        self.len = o.file.len().map_err(|e| Error::io("stat", path_of(self.dir, o.number), e))?;
        (self.segment, self.file) = (o.number, o.file);
        (self.pos, self.buf_start) = (o.data_start, 0);
        self.buf.clear();
        Ok(true)
    }

    /// Step over the frame whose header was peeked.
    fn pass(&mut self, h: &FrameHeader) {
        self.index.note(self.segment, h.first_seq, self.pos);
        self.pos += h.frame_len();
        self.expected = h.last_seq() + 1;
    }

    /// Skip the frames that end before `seq` (headers only).
    fn skip_before(&mut self, seq: u64) -> Result<()> {
        while let Step::Header(h) = self.peek()? {
            if h.last_seq() >= seq {
                break;
            }
            self.pass(&h);
        }
        Ok(())
    }

    /// The next frame at or below the limit, its checksum verified.
    pub fn next_frame(&mut self) -> Result<Next> {
        let h = match self.peek()? {
            Step::Header(h) => h,
            Step::End => return Ok(Next::End),
            Step::Vanished => return Ok(Next::Vanished),
        };
        let pos = self.pos;
        if !self.has(h.frame_len())? {
            return Err(Error::corrupt(self.path(), pos, "a durable frame runs past the end of its segment"));
        }
        let whole = self.window(pos, h.frame_len() as usize)?;
        let (raw, payload) = whole.split_at(HEADER_LEN);
        let raw: [u8; HEADER_LEN] = raw.try_into().expect("split at the header length");
        if !frame::verify(&raw, &h, payload) {
            return Err(Error::corrupt(self.path(), pos, "frame checksum mismatch"));
        }
        let at = LogPos { segment: self.segment, offset: pos };
        self.pass(&h);
        let start = (pos - self.buf_start) as usize + HEADER_LEN;
        Ok(Next::Frame(Frame { header: h, pos: at, start }))
    }

    /// The payload of `f`, the frame read last.
    pub fn payload(&self, f: &Frame) -> &[u8] {
        &self.buf[f.start..f.start + f.header.len as usize]
    }

    /// Is the import transaction of the frame just read (`h`, flagged) committed
    /// at or below the limit? Looks ahead (headers only) for its commit frame;
    /// what it finds is remembered for later cursors.
    pub fn txn_committed(&self, h: &FrameHeader) -> Result<bool> {
        if self.index.committed_through(h.first_seq).is_some() {
            return Ok(true);
        }
        let mut ahead = LogCursor { buf: Vec::new(), buf_start: 0, file: self.file.clone(), ..*self };
        loop {
            match ahead.peek()? {
                Step::Header(next) if next.is_txn() => ahead.pass(&next),
                Step::Header(next) if next.kind == FrameKind::Commit => {
                    self.index.note_committed(h.first_seq, next.first_seq);
                    return Ok(true);
                }
                // Recovery cuts what was never committed; the limit may not reach the commit yet.
                Step::Header(_) | Step::End | Step::Vanished => return Ok(false),
            }
        }
    }
}

/// What lies at a cursor.
enum Step {
    Header(FrameHeader),
    End,
    Vanished,
}

#[cfg(test)]
mod tests;
