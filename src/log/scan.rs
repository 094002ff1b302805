//! Reading frames from one segment file, in order, through a read-ahead window.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::frame::{self, FrameHeader, HEADER_LEN};
use crate::error::{Error, Result};
use crate::fs::FsFile;

const WINDOW: usize = 4 << 20;

/// One step of a scan.
#[derive(Debug)]
pub enum Step<'a> {
    /// A whole frame whose checksum matches.
    Frame { offset: u64, header: FrameHeader, payload: &'a [u8] },
    /// The end of the file, exactly at a frame boundary; or, when the scan
    /// accepts a zero tail, a frame boundary followed by nothing but zeros.
    End,
    /// The bytes at `offset` are not a whole valid frame.
    Bad { offset: u64, reason: String },
}

/// Scans the frames of one segment from a starting offset.
pub struct FrameScanner {
    file: Arc<dyn FsFile>,
    path: PathBuf,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
    /// Zeros from a frame boundary to the end of the file end the scan (the
    /// preallocated space of a version-4 segment).
    zero_tail: bool,
    /// Reads ahead stop here (a scan of a known range).
    read_end: u64,
}

impl FrameScanner {
    pub fn new(file: Arc<dyn FsFile>, path: &Path, start: u64) -> Result<FrameScanner> {
        let len = file.len().map_err(|e| Error::io("stat", path, e))?;
        Ok(FrameScanner {
            file,
            path: path.to_path_buf(),
            pos: start,
            len,
            buf: Vec::new(),
            buf_start: 0,
            zero_tail: false,
            read_end: u64::MAX,
        })
    }

    /// Read no further ahead than `end` (the scan stops there): a replay of one
    /// entry reads its bytes, not a window of a preallocated segment's zeros.
    pub fn read_ahead_to(mut self, end: u64) -> FrameScanner {
        self.read_end = end;
        self
    }

    /// Accept (or not) zeros after the last frame as the end of the segment.
    pub fn accept_zero_tail(mut self, yes: bool) -> FrameScanner {
        self.zero_tail = yes;
        self
    }

    /// Are the bytes from `from` to the end of the file all zero?
    pub fn zeros_from(&mut self, from: u64) -> Result<bool> {
        let mut p = from;
        while p < self.len {
            let n = (self.len - p).min(WINDOW as u64) as usize;
            if self.window(p, n)?.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            p += n as u64;
        }
        Ok(true)
    }

    /// A scan of segment `n` of `dir` from its first frame, with its header.
    pub fn segment(
        fs: &dyn crate::fs::FileSystem,
        dir: &Path,
        n: u32,
    ) -> Result<(crate::log::segment::SegmentHeader, FrameScanner)> {
        let path = dir.join(crate::log::segment::file_name(n));
        let file = fs.open(&path, crate::fs::OpenMode::Read).map_err(|e| Error::io("open", &path, e))?;
        let header = crate::log::segment::read_header(&*file, &path)?;
        let sc = FrameScanner::new(file, &path, header.data_start())?.accept_zero_tail(header.may_end_in_zeros());
        Ok((header, sc))
    }

    /// The file scanned.
    pub fn file(&self) -> Arc<dyn FsFile> {
        self.file.clone()
    }

    /// Offset of the next frame to read.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Size of the file when the scan began.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes `[offset, offset + n)`, which must lie within the file.
    fn window(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let have = offset >= self.buf_start && offset + n as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            let ahead = self.read_end.saturating_sub(offset).max(n as u64);
            let want = (n.max(WINDOW) as u64).min(self.len - offset).min(ahead) as usize;
            self.buf.resize(want, 0);
            crate::fs::read_exact_at(&*self.file, &mut self.buf, offset)
                .map_err(|e| Error::io("read", &self.path, e))?;
            self.buf_start = offset;
        }
        let at = (offset - self.buf_start) as usize;
        Ok(&self.buf[at..at + n])
    }

    /// The header at `offset` when its fields decode (its checksum unchecked).
    pub fn header_at(&mut self, offset: u64) -> Result<Option<FrameHeader>> {
        if offset + HEADER_LEN as u64 > self.len {
            return Ok(None);
        }
        let h: [u8; HEADER_LEN] = self.window(offset, HEADER_LEN)?.try_into().expect("window has the asked length");
        Ok(frame::decode_header(&h).ok())
    }

    /// The valid frame at exactly `offset`, if there is one.
    pub fn frame_at(&mut self, offset: u64) -> Result<std::result::Result<(FrameHeader, &[u8]), String>> {
        if offset + HEADER_LEN as u64 > self.len {
            return Ok(Err(format!("{} bytes left, less than a frame header", self.len.saturating_sub(offset))));
        }
        let h: [u8; HEADER_LEN] = self.window(offset, HEADER_LEN)?.try_into().expect("window has the asked length");
        let header = match frame::decode_header(&h) {
            Ok(hd) => hd,
            Err(why) => return Ok(Err(why.to_string())),
        };
        if offset + header.frame_len() > self.len {
            return Ok(Err(format!("frame of {} bytes runs past the end of the file", header.frame_len())));
        }
        let whole = self.window(offset, header.frame_len() as usize)?;
        let payload = &whole[HEADER_LEN..];
        if !frame::verify(&h, &header, payload) {
            return Ok(Err("frame checksum mismatch".to_string()));
        }
        Ok(Ok((header, payload)))
    }

    /// Read the next frame.
    pub fn next_step(&mut self) -> Result<Step<'_>> {
        if self.pos >= self.len {
            return Ok(Step::End);
        }
        let offset = self.pos;
        let header = match self.frame_at(offset)? {
            Ok((header, _)) => header,
            Err(reason) => {
                if self.zero_tail && self.zeros_from(offset)? {
                    self.pos = self.len;
                    return Ok(Step::End);
                }
                return Ok(Step::Bad { offset, reason });
            }
        };
        self.pos = offset + header.frame_len();
        let at = (offset - self.buf_start) as usize + HEADER_LEN;
        Ok(Step::Frame { offset, header, payload: &self.buf[at..at + header.len as usize] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::{self, FrameKind};
    use crate::fs::{FileSystem, OpenMode, RealFs};

    /// A scan told where its range ends reads that range, not a window of the
    /// (preallocated, zero) bytes after it; the frames are the same.
    #[test]
    fn a_bounded_scan_reads_only_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = RealFs.open(&path, OpenMode::CreateNew).unwrap();
        let mut bytes = Vec::new();
        for seq in 1..=3 {
            frame::encode(&mut bytes, FrameKind::Jobs, 0, seq, 1, 0, &[seq as u8; 100]);
        }
        crate::fs::write_all_at(&*file, &bytes, 0).unwrap();
        file.set_len(8 << 20).unwrap();
        let end = bytes.len() as u64;
        for bounded in [false, true] {
            let mut sc = FrameScanner::new(file.clone(), &path, 0).unwrap();
            if bounded {
                sc = sc.read_ahead_to(end);
            }
            let mut seqs = Vec::new();
            while sc.pos() < end {
                match sc.next_step().unwrap() {
                    Step::Frame { header, .. } => seqs.push(header.first_seq),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(seqs, [1, 2, 3]);
            match bounded {
                true => assert_eq!(sc.buf.len() as u64, end),
                false => assert_eq!(sc.buf.len(), WINDOW),
            }
        }
    }
}
