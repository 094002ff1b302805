//! Reading single records by position, for answers that need a job's fields.
//! Segments are read through memory maps, made at a segment's first read: the
//! bytes of a segment below the writer's end never change while the store is
//! open (format-spec/log.md), so a map never goes stale, it only falls behind the
//! segment the writer appends to. A record past a map's end is read positionally;
//! one [`REMAP_STEP`] or more past it maps the segment again (the newest records
//! of a busy segment are read positionally, the rest through the map). A record
//! a map does not hold whole is read positionally too, and judged there.
//!
//! A record read through a map is checked whole (checksum, every field, UTF-8:
//! [`record::decode_job`]) at its first read, and a bit per record remembers it:
//! the mapped bytes are those of an immutable file, so a record once checked
//! stays as checked, and later reads of it skip the checksum
//! ([`RecordReader::with_checked_record`]).
//!
//! Online compaction removes segments while snapshots taken before may still read
//! them: a removed segment's open handle is kept by a [`LogEpoch`], which every
//! such snapshot holds; the reader finds it there through a weak reference, so
//! the handle closes when the last of those snapshots is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use byteorder::{ByteOrder, LittleEndian as LE};
use parking_lot::{Mutex, RwLock};

use super::{segment, LogPos};
use crate::codec::record;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, MappedBytes, OpenMode};
use crate::hash::FastMap;
use crate::model::Job;

const FIRST_READ: usize = 1024;
/// Segment handles the reader keeps open at most, beyond those a read-only
/// opener pins ([`RecordReader::open_all`]) and those old versions hold for
/// removed segments: a log of any size costs a bounded number of descriptors.
/// Reads through a segment's map need no handle; others open it again.
pub const MAX_OPEN_SEGMENTS: usize = 32;
/// How far past the end of a segment's map a record must lie for the segment to
/// be mapped again.
pub const REMAP_STEP: u64 = 4 << 20;

/// The handles of segments removed while versions made before still live. Each
/// version holds the epoch current when it was made; an epoch, once ended, holds
/// the handles of the segments removed at its end and the next epoch, so an old
/// version keeps every segment removed since it was made readable.
#[derive(Debug, Default)]
pub struct LogEpoch {
    removed: Mutex<Vec<Arc<dyn FsFile>>>,
    next: Mutex<Option<Arc<LogEpoch>>>,
}

impl LogEpoch {
    /// End this epoch: `handles` belong to segments removed now. Returns the next.
    pub fn end(&self, handles: Vec<Arc<dyn FsFile>>) -> Arc<LogEpoch> {
        let next = Arc::new(LogEpoch::default());
        *self.removed.lock() = handles;
        *self.next.lock() = Some(next.clone());
        next
    }
}

/// Reads records at packed log positions.
#[derive(Debug)]
pub struct RecordReader {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    files: RwLock<HashMap<u32, Arc<dyn FsFile>>>,
    /// [`Self::open_all`] pinned every segment: no handle is let go.
    pinned: std::sync::atomic::AtomicBool,
    /// Segments removed by compaction, readable while an old version holds them.
    removed: RwLock<HashMap<u32, Weak<dyn FsFile>>>,
    /// Maps of segments, each used up to its last non-zero byte when mapped
    /// (preallocated zeros after a segment's last frame are no records, and a
    /// simulated map is a copy that frames written over them later would not reach).
    maps: RwLock<FastMap<u32, Arc<SegmentMap>>>,
    /// Segments after this number are never mapped, and this one only below
    /// [`Self::map_limit_end`] (see [`Self::map_below`]).
    map_limit: std::sync::atomic::AtomicU32,
    map_limit_end: std::sync::atomic::AtomicU64,
    /// The store's dictionaries: packed documents are read through them.
    pub dicts: Arc<crate::codec::docz::Dicts>,
}

impl RecordReader {
    pub fn new(fs: Arc<dyn FileSystem>, dir: &Path) -> RecordReader {
        RecordReader {
            fs,
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
            pinned: std::sync::atomic::AtomicBool::new(false),
            removed: RwLock::default(),
            maps: RwLock::default(),
            map_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
            map_limit_end: std::sync::atomic::AtomicU64::new(u64::MAX),
            dicts: Arc::default(),
        }
    }

    /// Map segments below `n` whole, segment `n` only below `end` (0: not at all),
    /// and read the rest positionally. A read-only opener beside a server gives
    /// its last segment and that segment's durable end: the server may still cut
    /// the unsynced tail after a failed write, and this opener may have replayed
    /// records there (a read past a mapped file's end would fault); what an fsync
    /// made durable is never cut under a record this opener was given.
    pub fn map_below(&self, n: u32, end: u64) {
        self.map_limit_end.store(end, std::sync::atomic::Ordering::Relaxed);
        self.map_limit.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The map of segment `n` for a read at `offset`: made at the segment's first
    /// read, made again when `offset` lies `REMAP_STEP` or more past its end.
    /// `None` (read positionally): a segment compaction removed, one that cannot
    /// be mapped (an exhausted address space, a simulated power cut).
    fn mapped(&self, n: u32, offset: u64) -> Option<Arc<SegmentMap>> {
        let limit = self.map_limit.load(std::sync::atomic::Ordering::Relaxed);
        // The last segment a read-only opener maps ends at a fixed point: no remap.
        let cap = (n == limit).then(|| self.map_limit_end.load(std::sync::atomic::Ordering::Relaxed));
        if n > limit || cap == Some(0) {
            return None;
        }
        if let Some(m) = self.maps.read_recursive().get(&n) {
            if offset < m.len as u64 + REMAP_STEP || cap.is_some() {
                return Some(m.clone());
            }
        }
        if !self.files.read().contains_key(&n) {
            return None;
        }
        let file = self.files.read().get(&n)?.clone();
        let bytes = self.fs.map(&self.dir.join(segment::file_name(n))).ok()?;
        // The used length is found by positional reads, never through the map:
        // the writer may cut a segment's zeros (rotation, close) while this runs,
        // and touching a mapped page past a file's end faults.
        let len = used_len(&*file, bytes.len() as u64).ok()?;
        let len = cap.map_or(len, |c| len.min(usize::try_from(c).unwrap_or(usize::MAX)));
        let m = Arc::new(SegmentMap::new(bytes, len));
        self.maps.write().insert(n, m.clone());
        Some(m)
    }

    fn file(&self, n: u32) -> Result<Arc<dyn FsFile>> {
        if let Some(f) = self.files.read().get(&n) {
            return Ok(f.clone());
        }
        if let Some(f) = self.removed.read().get(&n).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let path = self.dir.join(segment::file_name(n));
        let f = match self.fs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            // Compaction may have removed it since: then an old version holds it.
            Err(e) => match self.removed.read().get(&n).and_then(Weak::upgrade) {
                Some(f) => return Ok(f),
                None => return Err(Error::io("open", &path, e)),
            },
        };
        let mut files = self.files.write();
        if files.len() >= MAX_OPEN_SEGMENTS && !self.pinned.load(Ordering::Relaxed) {
            // A mapped segment's handle first (its reads need none), else the oldest.
            let maps = self.maps.read_recursive();
            let mapped = files.keys().copied().filter(|k| maps.contains_key(k)).min();
            if let Some(k) = mapped.or_else(|| files.keys().copied().min()) {
                files.remove(&k);
            }
        }
        files.insert(n, f.clone());
        Ok(f)
    }

    /// Open the segments `numbers` now, and keep them from then on, so that a
    /// later removal by another process (a server's compaction beside a
    /// read-only opener) does not stop reads. Past [`MAX_OPEN_SEGMENTS`]
    /// handles, a segment below the last is kept by its map instead (a map
    /// keeps a removed file readable and holds no descriptor): a log of
    /// thousands of segments opens under a small `ulimit -n`.
    pub fn open_all(&self, numbers: &[u32]) -> Result<()> {
        self.pinned.store(true, Ordering::Relaxed);
        let last = numbers.iter().copied().max();
        for &n in numbers {
            let file = self.file(n)?;
            if Some(n) != last && self.files.read().len() > MAX_OPEN_SEGMENTS && self.pin_by_map(n, &*file) {
                self.files.write().remove(&n);
            }
        }
        Ok(())
    }

    /// Map all of segment `n` (a sealed segment: it never grows), so that reads
    /// need no handle; false when it cannot be mapped (the handle is kept).
    fn pin_by_map(&self, n: u32, file: &dyn FsFile) -> bool {
        let Ok(bytes) = self.fs.map(&self.dir.join(segment::file_name(n))) else { return false };
        let Ok(len) = used_len(file, bytes.len() as u64) else { return false };
        self.maps.write().insert(n, Arc::new(SegmentMap::new(bytes, len)));
        true
    }

    /// Segments `numbers` are about to be removed: their handles move from the
    /// reader to the caller (who gives them to the ending [`LogEpoch`]); the reader
    /// keeps weak references for the versions that may still read them.
    pub fn retire(&self, numbers: &[u32]) -> Result<Vec<Arc<dyn FsFile>>> {
        let mut out = Vec::with_capacity(numbers.len());
        for &n in numbers {
            out.push(self.file(n)?);
        }
        let mut removed = self.removed.write();
        removed.retain(|_, w| w.strong_count() > 0);
        let mut files = self.files.write();
        let mut maps = self.maps.write();
        for (&n, f) in numbers.iter().zip(&out) {
            files.remove(&n);
            maps.remove(&n);
            removed.insert(n, Arc::downgrade(f));
        }
        Ok(out)
    }

    /// Removed segments old versions still hold open (each a descriptor and its
    /// disk space).
    pub fn removed_held(&self) -> usize {
        self.removed.read().values().filter(|w| w.strong_count() > 0).count()
    }

    /// Forget the handles and maps of segments `from` and above (an undone import
    /// removed them and may have created an empty segment under the first number).
    pub fn forget_from(&self, from: u32) {
        self.files.write().retain(|n, _| *n < from);
        self.maps.write().retain(|n, _| *n < from);
    }

    /// Read the record at `loc` into the front of `buf` (grown as needed, never
    /// shrunk, so a reused buffer is not zeroed again); returns its length.
    pub fn read_raw(&self, loc: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let pos = LogPos::unpack(loc);
        if let Some(total) = self.mapped(pos.segment, pos.offset).and_then(|m| copy_record(m.used(), pos.offset, buf)) {
            return Ok(total);
        }
        let file = self.file(pos.segment)?;
        let path = || self.dir.join(segment::file_name(pos.segment));
        if buf.len() < FIRST_READ {
            buf.resize(FIRST_READ, 0);
        }
        let n = file.read_at(&mut buf[..FIRST_READ], pos.offset).map_err(|e| Error::io("read", path(), e))?;
        if n < record::RECORD_PREFIX {
            return Err(Error::corrupt(path(), pos.offset, "record position past the end of the log"));
        }
        let total = record::record_len(LE::read_u32(&buf[0..4]));
        if total > n {
            // A damaged length must not make us allocate or read past the file.
            let len = file.len().map_err(|e| Error::io("stat", path(), e))?;
            if pos.offset + total as u64 > len {
                return Err(Error::corrupt(path(), pos.offset, "record length runs past the end of the segment"));
            }
            if buf.len() < total {
                buf.resize(total, 0);
            }
            fs::read_exact_at(&*file, &mut buf[n..total], pos.offset + n as u64)
                .map_err(|e| Error::io("read", path(), e))?;
        }
        Ok(total)
    }

    /// The error for a record at `loc` that does not decode: it names the offset
    /// of the record's `body_len` field, where the index points (and, when the
    /// fault lies further in, how far).
    pub fn corrupt(&self, loc: u64, e: crate::codec::DecodeError) -> Error {
        let pos = LogPos::unpack(loc);
        let what = match e.offset {
            0 => e.what,
            n => format!("{} ({n} bytes into the record)", e.what),
        };
        Error::corrupt(self.dir.join(segment::file_name(pos.segment)), pos.offset, what)
    }

    /// Call `f` with the bytes of the record at `loc`, checked whole (as
    /// [`record::decode_job`] checks: an error if they do not decode), and whether
    /// they were checked before this call (`f` may then rely on the checksum and
    /// UTF-8 having been verified). In place in the segment's map when it holds the
    /// record whole, and remembered there as checked; else read into `buf` first
    /// and checked every time. `f` may run under the lock of the maps (a recursive
    /// read lock: no clone of the map's handle a record), so it must not make a map.
    pub fn with_checked_record<R>(&self, loc: u64, buf: &mut Vec<u8>, f: impl FnOnce(&[u8], bool) -> R) -> Result<R> {
        let pos = LogPos::unpack(loc);
        let limit = self.map_limit.load(std::sync::atomic::Ordering::Relaxed);
        let maps = self.maps.read_recursive();
        if let Some(m) = maps.get(&pos.segment).filter(|m| pos.segment <= limit && pos.offset < m.len as u64) {
            if let Some(checked) = m.checked_record(pos.offset) {
                let (bytes, before) = checked.map_err(|e| self.corrupt(loc, e))?;
                return Ok(f(bytes, before));
            }
        }
        drop(maps);
        if let Some(m) = self.mapped(pos.segment, pos.offset) {
            if let Some(checked) = m.checked_record(pos.offset) {
                let (bytes, before) = checked.map_err(|e| self.corrupt(loc, e))?;
                return Ok(f(bytes, before));
            }
        }
        let n = self.read_raw(loc, buf)?;
        record::decode_job(&buf[..n]).map_err(|e| self.corrupt(loc, e))?;
        Ok(f(&buf[..n], false))
    }

    /// [`RecordReader::with_checked_record`] for a run of records under one lock
    /// of the maps: `f` gets each record of `locs` in turn while it lies whole in
    /// a map made before; stops at the first that does not (the caller reads it
    /// the general way) or at the first error. Answers how many `f` got.
    pub fn each_mapped(
        &self,
        locs: impl Iterator<Item = u64>,
        mut f: impl FnMut(&[u8]) -> std::result::Result<(), crate::codec::DecodeError>,
    ) -> Result<usize> {
        let limit = self.map_limit.load(std::sync::atomic::Ordering::Relaxed);
        let maps = self.maps.read_recursive();
        let mut last: Option<(u32, &SegmentMap)> = None;
        let mut done = 0;
        for loc in locs {
            let pos = LogPos::unpack(loc);
            let m = match last {
                Some((n, m)) if n == pos.segment => m,
                _ => match maps.get(&pos.segment).filter(|_| pos.segment <= limit) {
                    Some(m) => {
                        last = Some((pos.segment, m));
                        m
                    }
                    None => break,
                },
            };
            let checked = (pos.offset < m.len as u64).then(|| m.checked_record(pos.offset)).flatten();
            let Some(checked) = checked else { break };
            let (bytes, _) = checked.map_err(|e| self.corrupt(loc, e))?;
            f(bytes).map_err(|e| self.corrupt(loc, e))?;
            done += 1;
        }
        Ok(done)
    }

    /// Load the first bytes of the records at `locs` that lie in maps: a listing
    /// calls this before it renders its rows one by one, so that the cache misses
    /// of all its records overlap instead of coming one after another.
    pub fn prefetch(&self, locs: impl Iterator<Item = u64>) {
        let maps = self.maps.read_recursive();
        let mut last: Option<(u32, &SegmentMap)> = None;
        let mut acc = 0u8;
        for loc in locs {
            let pos = LogPos::unpack(loc);
            let m = match last {
                Some((n, m)) if n == pos.segment => m,
                _ => match maps.get(&pos.segment) {
                    Some(m) => {
                        last = Some((pos.segment, m));
                        m
                    }
                    None => continue,
                },
            };
            let at = usize::try_from(pos.offset).unwrap_or(usize::MAX);
            // The length field, the fixed part and the tags: up to three lines.
            for d in [0, 64, 120] {
                acc ^= m.used().get(at.saturating_add(d)).copied().unwrap_or(0);
            }
        }
        std::hint::black_box(acc);
    }

    /// How many bytes of segment `n` its map covers, when it is mapped (for tests).
    pub fn mapped_len(&self, n: u32) -> Option<usize> {
        self.maps.read().get(&n).map(|m| m.len)
    }

    /// Segments read through a map (for tests).
    pub fn mapped_segments(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.maps.read().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The record at `loc`.
    pub fn read(&self, loc: u64) -> Result<Job> {
        let mut buf = Vec::new();
        // Checked whole at its first read (here or before): no second checksum.
        let view = |bytes: &[u8], _| {
            let (mut v, _) = record::decode_checked_job(bytes)?;
            v.unpack(&self.dicts)?;
            Ok(v.to_job())
        };
        self.with_checked_record(loc, &mut buf, view)?.map_err(|e| self.corrupt(loc, e))
    }
}

/// A segment's map, and which of its records were checked whole (a bit per 16
/// bytes of offset: records are no shorter, so no two share a bit).
struct SegmentMap {
    bytes: MappedBytes,
    /// How much of `bytes` holds frames: reads never go past it.
    len: usize,
    checked: Box<[AtomicU64]>,
}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentMap({:?})", self.bytes)
    }
}

/// Bytes of offset per bit of [`SegmentMap::checked`].
const CHECK_GRAIN: u64 = 16;
const _: () = assert!(record::MIN_RECORD >= CHECK_GRAIN as usize);

impl SegmentMap {
    fn new(bytes: MappedBytes, len: usize) -> SegmentMap {
        let len = len.min(bytes.len());
        let bits = (len as u64).div_ceil(CHECK_GRAIN);
        let checked = (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        SegmentMap { bytes, len, checked }
    }

    /// The mapped bytes that hold frames.
    fn used(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The record at `offset`, checked whole once (then remembered as checked), and
    /// whether it was checked before; `None` when the map does not hold it whole.
    fn checked_record(&self, offset: u64) -> Option<std::result::Result<(&[u8], bool), crate::codec::DecodeError>> {
        let bytes = &self.bytes[record_range(self.used(), offset)?];
        let before = self.is_checked(offset);
        if !before {
            if let Err(e) = record::decode_job(bytes) {
                return Some(Err(e));
            }
            self.set_checked(offset);
        }
        Some(Ok((bytes, before)))
    }

    fn bit(&self, offset: u64) -> Option<(&AtomicU64, u64)> {
        let i = offset / CHECK_GRAIN;
        Some((self.checked.get(usize::try_from(i / 64).ok()?)?, 1 << (i % 64)))
    }

    /// Relaxed: the bit vouches for bytes that never change, not for other writes.
    fn is_checked(&self, offset: u64) -> bool {
        self.bit(offset).is_some_and(|(w, b)| w.load(Ordering::Relaxed) & b != 0)
    }

    fn set_checked(&self, offset: u64) {
        if let Some((w, b)) = self.bit(offset) {
            w.fetch_or(b, Ordering::Relaxed);
        }
    }
}

/// How much of a file of `size` bytes holds frames: up to its last non-zero byte
/// (a job record ends with its document's `}`, so none is cut short), found by
/// reading backwards from `size`; a file cut shorter meanwhile reads short.
fn used_len(file: &dyn FsFile, size: u64) -> std::io::Result<usize> {
    const STEP: u64 = 64 * 1024;
    let mut buf = vec![0u8; STEP as usize];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let want = (end - start) as usize;
        let got = file.read_at(&mut buf[..want], start)?;
        if let Some(i) = buf[..got].iter().rposition(|&b| b != 0) {
            return Ok((start as usize) + i + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Where the record at `offset` lies in a mapped segment; `None` when the map
/// does not hold it whole (read positionally, which judges it).
fn record_range(map: &[u8], offset: u64) -> Option<std::ops::Range<usize>> {
    let at = usize::try_from(offset).ok()?;
    let prefix = map.get(at..at.checked_add(record::RECORD_PREFIX)?)?;
    let end = at.checked_add(record::record_len(LE::read_u32(&prefix[0..4])))?;
    (end <= map.len()).then_some(at..end)
}

/// Copy the record at `offset` of a mapped segment into the front of `buf`.
fn copy_record(map: &[u8], offset: u64, buf: &mut Vec<u8>) -> Option<usize> {
    let range = record_range(map, offset)?;
    let total = range.len();
    if buf.len() < total {
        buf.resize(total, 0);
    }
    buf[..total].copy_from_slice(&map[range]);
    Some(total)
}
