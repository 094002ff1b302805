//! Appending frames to the log. The writer owns the tail segment, assigns sequence
//! numbers, and starts a new segment when the current one is full. It never syncs
//! on its own except when sealing a segment: the store's group commit decides when.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::segment::{self, SegmentHeader, HEADER_LEN};
use super::LogPos;
use crate::codec::frame::{self, FrameKind};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};

/// Where a frame landed.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub first_seq: u64,
    /// Position of the frame's header.
    pub pos: LogPos,
}

/// The tail of the log.
pub struct LogWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    generation: u64,
    segment: u32,
    path: PathBuf,
    file: Arc<dyn FsFile>,
    end: u64,
    segment_limit: u64,
    next_seq: u64,
    buf: Vec<u8>,
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
        let h = SegmentHeader { number: 1, generation, first_seq };
        let (path, file) = segment::create(&*fs, dir, &h)?;
        Ok(LogWriter {
            fs,
            dir: dir.to_path_buf(),
            generation,
            segment: 1,
            path,
            file,
            end: HEADER_LEN,
            segment_limit: segment_limit.min(segment::MAX_SEGMENT_BYTES),
            next_seq: first_seq,
            buf: Vec::new(),
        })
    }

    /// Continue writing the last segment at `end` (what recovery kept).
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
        Ok(LogWriter {
            fs,
            dir: dir.to_path_buf(),
            generation,
            segment: end.segment,
            path,
            file,
            end: end.offset,
            segment_limit: segment_limit.min(segment::MAX_SEGMENT_BYTES),
            next_seq,
            buf: Vec::new(),
        })
    }

    /// The sequence number the next frame will start at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The position after the last frame written.
    pub fn end(&self) -> LogPos {
        LogPos { segment: self.segment, offset: self.end }
    }

    /// The segment being written and its path.
    pub fn file(&self) -> (Arc<dyn FsFile>, &Path) {
        (self.file.clone(), &self.path)
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
        let frame_len = (frame::HEADER_LEN + payload.len()) as u64;
        if self.end > HEADER_LEN && self.end + frame_len > self.segment_limit {
            self.rotate()?;
        }
        let first_seq = self.next_seq;
        self.buf.clear();
        frame::encode(&mut self.buf, kind, flags, first_seq, count, durable_seq, payload);
        fs::write_all_at(&*self.file, &self.buf, self.end).map_err(|e| Error::io("append to", &self.path, e))?;
        let pos = LogPos { segment: self.segment, offset: self.end };
        self.end += frame_len;
        self.next_seq += u64::from(count);
        Ok(Appended { first_seq, pos })
    }

    /// fdatasync the tail segment.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    /// Seal the tail segment (fsync it) and start the next one.
    pub fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let h = SegmentHeader { number: self.segment + 1, generation: self.generation, first_seq: self.next_seq };
        let (path, file) = segment::create(&*self.fs, &self.dir, &h)?;
        self.segment = h.number;
        self.path = path;
        self.file = file;
        self.end = HEADER_LEN;
        Ok(())
    }

    /// Cut the log back to `pos` (undoing an import that failed) and make it durable.
    /// Segments after `pos.segment` are removed.
    pub fn truncate_to(&mut self, pos: LogPos, next_seq: u64) -> Result<()> {
        if pos.segment != self.segment {
            for n in pos.segment + 1..=self.segment {
                let p = self.dir.join(segment::file_name(n));
                self.fs.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
            // IMPORTANT: fsync folder, so removed segments stay removed.
            self.fs.sync_dir(&self.dir).map_err(|e| Error::io("fsync dir", &self.dir, e))?;
            self.segment = pos.segment;
            self.path = self.dir.join(segment::file_name(pos.segment));
            self.file = self.fs.open(&self.path, OpenMode::ReadWrite).map_err(|e| Error::io("open", &self.path, e))?;
        }
        self.file.set_len(pos.offset).map_err(|e| Error::io("truncate", &self.path, e))?;
        self.sync()?;
        self.end = pos.offset;
        self.next_seq = next_seq;
        Ok(())
    }
}
