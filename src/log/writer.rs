//! Appending frames to the log. The writer owns the tail segment, assigns sequence
//! numbers, and starts a new segment when the current one is full. It never syncs
//! on its own except when sealing a segment: the store's group commit decides when.
//!
//! Preallocation (version-4 segments): before a small frame of an ordinary write
//! (not an import's, not compaction's copies) would pass the end of the file, the writer appends a chunk of zeros ([`segment::PREALLOC_BYTES`])
//! and writes the frame over it. The group commit's fdatasync then commits the
//! size change once per chunk, and the fdatasyncs after it only overwrite (on
//! ext4 an appending fdatasync also commits the journal: ~1.3-1.5x slower).
//! Invariant: every byte from `end` to `allocated` (the file's length) is zero,
//! so a crash leaves a clean end there; a sealed segment and a cleanly closed
//! one are cut back to their last frame, so only a crash leaves the zeros.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::reach;
use super::segment::{self, SegmentHeader};
use super::tail::Tail;
use super::LogPos;
use crate::codec::frame::{self, FrameKind};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};

/// Where a frame landed.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub first_seq: u64,
    /// Position of the frame's header.
    pub pos: LogPos,
}

/// How much log there is: segment files and their bytes (the sealed ones'
/// sizes plus the tail's end), kept current by the writer so that readers
/// (metrics) learn it without a file-system call or the writer's lock.
#[derive(Debug, Default)]
pub struct LogFootprint {
    segments: AtomicU64,
    bytes: AtomicU64,
}

impl LogFootprint {
    /// `(segment files, bytes in them)`.
    pub fn get(&self) -> (u64, u64) {
        (self.segments.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// The tail of the log.
pub struct LogWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    generation: u64,
    tail: Arc<Tail>,
    end: u64,
    segment_limit: u64,
    next_seq: u64,
    buf: Vec<u8>,
    /// The segments before the tail and their sizes, ascending.
    sealed: Vec<(u32, u64)>,
    footprint: Arc<LogFootprint>,
    /// How far the tail segment's file is known to hold zeros after `end`.
    allocated: u64,
    /// A write of zeros failed in this segment (a full disk, a file size limit):
    /// frames are appended without preallocation until the next segment.
    no_prealloc: bool,
    /// Preallocate at all (`Options::preallocate`).
    prealloc_on: bool,
    /// While set, frames collect in `pending` and are written by [`LogWriter::flush`]
    /// (a write-queue batch: one write for all its frames).
    defer: bool,
    /// Frames appended and not yet written: they end at `end`. In a cell: a
    /// read under the writer lock flushes them through `&self`.
    pending: RefCell<Vec<u8>>,
    /// No rotation while set: a cluster leader's batch stays in one segment
    /// until its Raft entry is written (a segment may pass its limit by a batch).
    hold_rotation: bool,
}

impl LogWriter {
    /// Start a new log in `dir` with its first segment.
    pub fn create(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        generation: u64,
        first_seq: u64,
        segment_limit: u64,
    ) -> Result<LogWriter> {
        let h = SegmentHeader::new(1, generation, first_seq);
        let (path, file) = segment::create(&*fs, dir, &h)?;
        reach::write(&*fs, dir, 1)?;
        Ok(LogWriter {
            fs,
            dir: dir.to_path_buf(),
            generation,
            tail: Arc::new(Tail::new(file, path, h, None)),
            end: h.data_start(),
            segment_limit: segment_limit.min(segment::MAX_SEGMENT_BYTES),
            next_seq: first_seq,
            buf: Vec::new(),
            sealed: Vec::new(),
            footprint: Arc::default(),
            allocated: h.data_start(),
            no_prealloc: false,
            prealloc_on: true,
            defer: false,
            pending: RefCell::default(),
            hold_rotation: false,
        })
    }

    /// Continue writing the last segment at `end` (what recovery kept). Its bytes
    /// up to `end` are synced first: a crashed process may have left them in the
    /// page cache only. A segment of an older version is sealed and a new one
    /// started, so that every write lands in the current format.
    pub fn resume(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        generation: u64,
        end: LogPos,
        next_seq: u64,
        segment_limit: u64,
    ) -> Result<LogWriter> {
        let path = dir.join(segment::file_name(end.segment));
        let file = fs.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("open", &path, e))?;
        let header = segment::read_header(&*file, &path)?;
        let allocated = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let tail = Tail::open(file, &path, header)?;
        let mut sealed = Vec::new();
        for n in segment::list(&*fs, dir)?.into_iter().filter(|n| *n < end.segment) {
            let p = dir.join(segment::file_name(n));
            let f = fs.open(&p, OpenMode::Read).map_err(|e| Error::io("open", &p, e))?;
            sealed.push((n, f.len().map_err(|e| Error::io("stat", &p, e))?));
        }
        let mut w = LogWriter {
            fs,
            dir: dir.to_path_buf(),
            generation,
            tail: Arc::new(tail),
            end: end.offset,
            segment_limit: segment_limit.min(segment::MAX_SEGMENT_BYTES),
            next_seq,
            buf: Vec::new(),
            sealed,
            footprint: Arc::default(),
            // Recovery left only zeros after `end` (or cut the file there).
            allocated: allocated.max(end.offset),
            no_prealloc: false,
            prealloc_on: true,
            defer: false,
            pending: RefCell::default(),
            hold_rotation: false,
        };
        w.note_footprint();
        w.sync()?;
        if header.version < segment::VERSION {
            w.rotate()?;
        }
        Ok(w)
    }

    /// The sequence number the next frame will start at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The position after the last frame written.
    pub fn end(&self) -> LogPos {
        LogPos { segment: self.tail.header.number, offset: self.end }
    }

    /// The segment being written.
    pub fn tail(&self) -> &Arc<Tail> {
        &self.tail
    }

    /// Keep `footprint` current from now on (the store keeps one for its life,
    /// whatever writer it has).
    /// Online compaction removed these (oldest) segments.
    pub fn forget_segments(&mut self, numbers: &[u32]) {
        self.sealed.retain(|(n, _)| !numbers.contains(n));
        self.note_footprint();
    }

    /// Preallocate the tail segment (the default), or only append.
    pub fn set_preallocate(&mut self, on: bool) {
        self.prealloc_on = on;
    }

    pub fn share_footprint(&mut self, footprint: Arc<LogFootprint>) {
        self.footprint = footprint;
        self.note_footprint();
    }

    fn note_footprint(&self) {
        let sealed: u64 = self.sealed.iter().map(|(_, len)| len).sum();
        self.footprint.segments.store(self.sealed.len() as u64 + 1, Ordering::Relaxed);
        self.footprint.bytes.store(sealed + self.end, Ordering::Relaxed);
    }

    /// Append one frame using `count` sequence numbers. On error the tail may hold
    /// a partial frame: the caller must stop writing (poison) and let recovery cut it.
    pub fn append(
        &mut self,
        kind: FrameKind,
        flags: u8,
        count: u32,
        durable_seq: u64,
        payload: &[u8],
    ) -> Result<Appended> {
        // Refused before anything is written (no partial frame to cut).
        if payload.len() as u64 > u64::from(frame::MAX_PAYLOAD) {
            return Err(Error::input(format!(
                "a write of {} bytes is over a log frame's limit of {} bytes: write it in smaller batches",
                payload.len(),
                frame::MAX_PAYLOAD
            )));
        }
        let frame_len = (frame::HEADER_LEN + payload.len()) as u64;
        let used = self.end - self.tail.header.data_start();
        if used > 0 && used + frame_len > self.segment_limit && !self.hold_rotation {
            self.rotate()?;
        }
        if self.end + frame_len > segment::MAX_SEGMENT_BYTES {
            let why = std::io::Error::other("a batch would pass the largest segment size");
            return Err(Error::io("append to", &self.tail.path, why));
        }
        let first_seq = self.next_seq;
        // Bulk writers (an import's transaction, compaction's copies) write large
        // frames back to back and sync once: zeros first would only double them.
        if flags & (frame::FLAG_TXN | frame::FLAG_RELOCATED) == 0 {
            self.preallocate(frame_len);
        }
        if self.defer {
            frame::encode(self.pending.get_mut(), kind, flags, first_seq, count, durable_seq, payload);
        } else {
            self.buf.clear();
            frame::encode(&mut self.buf, kind, flags, first_seq, count, durable_seq, payload);
            let t = &self.tail;
            let written = fs::write_all_at(&*t.file, &self.buf, self.end);
            release_scratch(&mut self.buf);
            written.map_err(|e| Error::io("append to", &t.path, e))?;
        }
        let pos = self.end();
        self.end += frame_len;
        self.allocated = self.allocated.max(self.end);
        self.next_seq += u64::from(count);
        self.footprint.bytes.fetch_add(frame_len, Ordering::Relaxed);
        Ok(Appended { first_seq, pos })
    }

    /// Collect the frames appended from now on, unwritten, until
    /// [`LogWriter::stop_deferring`] (the write queue: one write a batch). Nothing
    /// reads them before: every other change of the file, and a read of the log
    /// under the writer lock ([`LogWriter::flush`]), writes them first.
    pub fn defer_writes(&mut self) {
        self.defer = true;
    }

    /// A cluster leader's batch: hold rotation, rotate first when the segment is
    /// near its limit, and reserve `len` zero bytes and one sequence number for
    /// the entry frame written over them once the batch is a Raft entry. Zeros
    /// never decode as a frame: until then, a crash leaves a torn tail.
    pub fn begin_reserved(&mut self, len: u64) -> Result<LogPos> {
        let used = self.end - self.tail.header.data_start();
        if used > 0 && used + (self.segment_limit / 4).min(1 << 20) > self.segment_limit {
            self.rotate()?;
        }
        self.hold_rotation = true;
        self.defer = true;
        let at = self.end();
        let pending = self.pending.get_mut();
        pending.resize(pending.len() + len as usize, 0);
        self.end += len;
        self.allocated = self.allocated.max(self.end);
        self.next_seq += 1;
        Ok(at)
    }

    /// Undo [`LogWriter::begin_reserved`] when the batch wrote nothing: nothing
    /// of it may have reached the file but zeros past the end.
    pub fn cancel_reserved(&mut self, at: LogPos, next_seq: u64) {
        self.pending.get_mut().clear();
        self.defer = false;
        self.hold_rotation = false;
        self.end = at.offset;
        self.next_seq = next_seq;
    }

    /// Write the batch out (past the durable mark: unsynced) and return its bytes
    /// from `from` to the end; rotation stays held until [`LogWriter::end_reserved`].
    pub fn written_since(&mut self, from: u64) -> Result<Vec<u8>> {
        self.defer = false;
        self.flush()?;
        let mut out = vec![0u8; (self.end - from) as usize];
        let t = &self.tail;
        fs::read_exact_at(&*t.file, &mut out, from).map_err(|e| Error::io("read", &t.path, e))?;
        Ok(out)
    }

    /// Write `bytes` over the reserved zeros at `at` (the entry frame) and let
    /// the segment rotate again.
    pub fn end_reserved(&mut self, at: LogPos, bytes: &[u8]) -> Result<()> {
        self.hold_rotation = false;
        debug_assert_eq!(at.segment, self.tail.header.number);
        let t = &self.tail;
        fs::write_all_at(&*t.file, bytes, at.offset).map_err(|e| Error::io("append to", &t.path, e))
    }

    /// Let the segment rotate again (the reserved batch was cut off).
    pub fn release_rotation(&mut self) {
        self.hold_rotation = false;
    }

    /// Write the collected frames, and each frame as it comes again.
    pub fn stop_deferring(&mut self) -> Result<()> {
        self.defer = false;
        let r = self.flush();
        release_scratch(self.pending.get_mut());
        r
    }

    /// Write the frames collected so far, in one write. On failure they are
    /// dropped: the caller poisons the store (nothing after them may be written).
    pub fn flush(&self) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            return Ok(());
        }
        let at = self.end - pending.len() as u64;
        let t = &self.tail;
        let r = fs::write_all_at(&*t.file, &pending, at).map_err(|e| Error::io("append to", &t.path, e));
        pending.clear();
        r
    }

    /// Before a frame of `frame_len` bytes passes the end of the file, extend the
    /// file with zeros to the next chunk boundary. Not synced here: the group
    /// commit's next fdatasync covers it (frames written into unsynced zeros are
    /// not durable either; recovery cuts them as a torn tail). Preallocation only
    /// saves time: when the zeros cannot be written (ENOSPC, EFBIG, EIO), the frame
    /// is appended as without it (and fails on its own if it cannot be written);
    /// whatever part of the zeros landed is zeros after the log's end.
    fn preallocate(&mut self, frame_len: u64) {
        let need = self.end + frame_len;
        if need <= self.allocated
            || self.no_prealloc
            || !self.prealloc_on
            || !self.tail.header.may_end_in_zeros()
            || frame_len >= segment::PREALLOC_BYTES / 4
        {
            return;
        }
        let chunk = segment::PREALLOC_BYTES;
        let to = need.div_ceil(chunk).saturating_mul(chunk).min(segment::MAX_SEGMENT_BYTES).max(need);
        let from = self.allocated.max(self.end);
        let zeros = vec![0u8; (to - from) as usize];
        crate::crashpoint::hit("before_preallocate");
        match fs::write_all_at(&*self.tail.file, &zeros, from) {
            Ok(()) => self.allocated = to,
            Err(_) => self.no_prealloc = true,
        }
        crate::crashpoint::hit("after_preallocate");
    }

    /// Cut the preallocated zeros off the tail segment (not synced: the caller
    /// syncs next). A sealed segment ends at its last frame. The file is asked
    /// its length: a failed write of zeros may have left some past `allocated`.
    fn trim(&mut self) -> Result<()> {
        self.flush()?;
        let t = &self.tail;
        let len = t.file.len().map_err(|e| Error::io("stat", &t.path, e))?;
        if len > self.end {
            t.file.set_len(self.end).map_err(|e| Error::io("truncate", &t.path, e))?;
        }
        self.allocated = self.end;
        Ok(())
    }

    /// fdatasync the tail segment (writing the durable mark of the previous sync).
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.tail.sync(self.end, self.next_seq)
    }

    /// Cut the preallocated zeros, sync, then make the durable mark name the end
    /// of the log (a clean close).
    pub fn seal(&mut self) -> Result<()> {
        self.trim()?;
        self.sync()?;
        self.tail.seal_mark()
    }

    /// After a failed append: cut what was written since the last sync (never
    /// acknowledged: its writers got errors) and make the cut durable. Not for
    /// after a failed fsync, whose outcome is unknown.
    pub fn cut_unsynced(&mut self) -> Result<()> {
        self.flush()?;
        let (end, next_seq) = self.tail.synced();
        let at = LogPos { segment: self.tail.header.number, offset: end };
        self.truncate_to(at, next_seq)?;
        self.tail.seal_mark()
    }

    /// Seal the tail segment (fsync it) and start the next one.
    pub fn rotate(&mut self) -> Result<()> {
        self.trim()?;
        self.sync()?;
        // The next segment is made by its path: only in the directory of this one.
        self.tail.at_home()?;
        let h = SegmentHeader::new(self.tail.header.number + 1, self.generation, self.next_seq);
        let (path, file) = segment::create(&*self.fs, &self.dir, &h)?;
        // Only once the segment is durable: the log never claims one it lacks.
        reach::write(&*self.fs, &self.dir, h.number)?;
        self.sealed.push((self.tail.header.number, self.end));
        self.tail = Arc::new(Tail::new(file, path, h, None));
        self.end = h.data_start();
        self.allocated = self.end;
        self.no_prealloc = false;
        self.note_footprint();
        Ok(())
    }

    /// Start a new segment unless the current one holds no frame yet (an import
    /// starts in a segment of its own, so that undoing it removes whole segments).
    pub fn start_segment(&mut self) -> Result<()> {
        if self.end > self.tail.header.data_start() {
            self.rotate()?;
        }
        Ok(())
    }

    /// Cut the log back to `pos` (undoing an import that failed) and make it durable.
    /// A segment the writer moved past is never written again (copies may share its
    /// file): when `pos` is the start of such a segment, every later one is removed
    /// and an empty segment of that number replaces it (a rename over it: the log
    /// never lacks the segment, which may be its first).
    pub fn truncate_to(&mut self, pos: LogPos, next_seq: u64) -> Result<()> {
        self.flush()?;
        let current = self.tail.header.number;
        if pos.segment != current {
            let sealed_start = self.dir.join(segment::file_name(pos.segment));
            let file =
                self.fs.open(&sealed_start, OpenMode::ReadWrite).map_err(|e| Error::io("open", &sealed_start, e))?;
            let header = segment::read_header(&*file, &sealed_start)?;
            let whole = pos.offset == header.data_start();
            // IMPORTANT: the claim comes down before any segment goes.
            reach::write(&*self.fs, &self.dir, pos.segment)?;
            for n in ((pos.segment + 1)..=current).rev() {
                let p = self.dir.join(segment::file_name(n));
                self.fs.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
            // From here the tail is segment `pos.segment`, in any case.
            self.sealed.retain(|(n, _)| *n < pos.segment);
            // IMPORTANT: fsync folder, so removed segments stay removed.
            self.fs.sync_dir(&self.dir).map_err(|e| Error::io("fsync dir", &self.dir, e))?;
            if whole {
                let h = SegmentHeader::new(pos.segment, self.generation, next_seq);
                let (path, file) = segment::create(&*self.fs, &self.dir, &h)?;
                self.tail = Arc::new(Tail::new(file, path, h, None));
                self.end = h.data_start();
                self.allocated = self.end;
                self.next_seq = next_seq;
                self.note_footprint();
                return Ok(());
            }
            self.tail = Arc::new(Tail::open(file, &sealed_start, header)?);
        }
        self.allocated = pos.offset;
        let t = &self.tail;
        t.lower_marks(pos.offset, next_seq)?;
        t.file.set_len(pos.offset).map_err(|e| Error::io("truncate", &t.path, e))?;
        self.end = pos.offset;
        self.next_seq = next_seq;
        self.note_footprint();
        self.sync()
    }
}

/// Capacity a scratch buffer keeps between writes.
const SCRATCH_KEEP: usize = 1 << 20;

/// Empty a scratch buffer, and free it when one large write grew it past
/// [`SCRATCH_KEEP`]: a server must not hold its largest write's size for good
/// (a 5,000-job update of 20 KiB tags left ~250 MB held by two such buffers).
pub(crate) fn release_scratch(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > SCRATCH_KEEP {
        *buf = Vec::new();
    }
}
