//! Log segment files: `log-NNNNNNNNNN.jql`, each starting with a 64-byte header.
//!
//! ```text
//! 0  [u8; 8] magic "JOBQLOG\0"
//! 8  u32     format version (1 to 7)
//! 12 u32     segment number
//! 16 u64     generation of the store
//! 24 u64     sequence number of the first frame written to it
//! 32 [u8;28] zero
//! 60 u32     masked CRC-32 of bytes 0..60
//! ```
//!
//! Version 7 (written since format 8) is laid out as version 6; its frames may
//! be Raft entries (kind 6, codec/entry.rs), which only cluster nodes write and
//! older builds would refuse as damage.
//! Version 6 (written in format 7) is laid out as version 5; its frames may
//! be dictionaries and its compact records may hold packed documents
//! (codec/docz.rs), which older builds would refuse as damage.
//! Version 5 (written in format 6) is laid out as version 4; its job records
//! may be compact (codec/compact.rs), which older builds would refuse as damage.
//! Version 4 (written in format 5) is laid out as version 3, and the last
//! segment may end in preallocated zeros after its last frame (see
//! [`ZERO_TAIL_VERSION`]). Version 3 (format 3) is laid out as version 2; its job records
//! may be tombstones (state 4, purged) and may name the job's previous state (a
//! byte versions 1 and 2 kept zero); older builds would refuse both as damage.
//! Version 2 (format 2) keeps two durable-mark slots on the pages at 4096 and
//! 8192 ([`super::mark`]); its frames start at 12288. Version 1 has no marks; its
//! frames start right after the header, at 64.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};

pub const MAGIC: &[u8; 8] = b"JOBQLOG\0";
/// The version new segments are written in; [`decode_header`] reads 1 to 7.
pub const VERSION: u32 = 7;
/// From this version on, the last segment may end in zero bytes after its last
/// frame: space the writer preallocated (zeroed, so that a later fdatasync of
/// frames written over it commits no size change). Zeros never form a frame, so
/// a scan that finds only zeros from a frame boundary to the end of the file has
/// reached the end of the log, not damage (format-spec/log.md, "Version 4").
pub const ZERO_TAIL_VERSION: u32 = 4;
/// The writer extends the last segment by zeroed chunks of this size (and never
/// for a frame this large or larger: a big import frame is simply appended).
pub const PREALLOC_BYTES: u64 = 1 << 20;
pub const HEADER_LEN: u64 = 64;
/// Where the frames of a version-2 segment start: after the header page and the
/// two pages of durable-mark slots.
pub const DATA_START_V2: u64 = 12288;
/// Segments never grow past this offset, so that offsets fit in 32 bits in indexes.
pub const MAX_SEGMENT_BYTES: u64 = 3 << 30;

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the file: 1 (no durable marks), 2, 3, 4 or 5.
    pub version: u32,
    pub number: u32,
    pub generation: u64,
    pub first_seq: u64,
}

impl SegmentHeader {
    /// A header for a new segment, in the current version.
    pub fn new(number: u32, generation: u64, first_seq: u64) -> SegmentHeader {
        SegmentHeader { version: VERSION, number, generation, first_seq }
    }

    /// Offset of the segment's first frame.
    pub fn data_start(&self) -> u64 {
        if self.version >= 2 {
            DATA_START_V2
        } else {
            HEADER_LEN
        }
    }

    /// Does the segment keep durable marks?
    pub fn has_marks(&self) -> bool {
        self.version >= 2
    }

    /// May the segment, when it is the last, end in preallocated zeros?
    pub fn may_end_in_zeros(&self) -> bool {
        self.version >= ZERO_TAIL_VERSION
    }
}

pub fn file_name(number: u32) -> String {
    format!("log-{number:010}.jql")
}

/// The segment number of a log file name, if it is one.
pub fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("log-")?.strip_suffix(".jql")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

pub fn encode_header(h: &SegmentHeader) -> [u8; HEADER_LEN as usize] {
    let mut b = [0u8; HEADER_LEN as usize];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], h.version);
    LE::write_u32(&mut b[12..16], h.number);
    LE::write_u64(&mut b[16..24], h.generation);
    LE::write_u64(&mut b[24..32], h.first_seq);
    let crc = checksum(&[&b[0..60]]);
    LE::write_u32(&mut b[60..64], crc);
    b
}

pub fn decode_header(path: &Path, b: &[u8]) -> Result<SegmentHeader> {
    if b.len() < HEADER_LEN as usize {
        return Err(Error::corrupt(path, 0, format!("segment header is {} bytes, expected 64", b.len())));
    }
    if checksum(&[&b[0..60]]) != LE::read_u32(&b[60..64]) {
        return Err(Error::corrupt(path, 60, "segment header checksum mismatch"));
    }
    if &b[0..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "not a jobq log segment (bad magic)"));
    }
    let version = LE::read_u32(&b[8..12]);
    if !(1..=VERSION).contains(&version) {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "log segment format version {version}, written by a newer jobq; this build reads versions 1 to {VERSION}"
            ),
        });
    }
    if b[32..60].iter().any(|&x| x != 0) {
        return Err(Error::corrupt(path, 32, "reserved segment header bytes are not zero"));
    }
    Ok(SegmentHeader {
        version,
        number: LE::read_u32(&b[12..16]),
        generation: LE::read_u64(&b[16..24]),
        first_seq: LE::read_u64(&b[24..32]),
    })
}

/// Read and check the header of an open segment file.
pub fn read_header(file: &dyn FsFile, path: &Path) -> Result<SegmentHeader> {
    let mut b = [0u8; HEADER_LEN as usize];
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len < HEADER_LEN {
        return Err(Error::corrupt(path, 0, format!("segment is {len} bytes, shorter than its header")));
    }
    fs::read_exact_at(file, &mut b, 0).map_err(|e| Error::io("read", path, e))?;
    let h = decode_header(path, &b)?;
    if len < h.data_start() {
        return Err(Error::corrupt(path, len, format!("segment is {len} bytes, shorter than its header pages")));
    }
    Ok(h)
}

/// Create a segment durably: temp file, header (and the zeroed mark pages of a
/// version-2 segment), fsync, rename, fsync directory.
pub fn create(fsys: &dyn FileSystem, dir: &Path, h: &SegmentHeader) -> Result<(PathBuf, Arc<dyn FsFile>)> {
    let name = file_name(h.number);
    let path = dir.join(&name);
    let mut bytes = encode_header(h).to_vec();
    bytes.resize(h.data_start() as usize, 0);
    fs::publish_file(fsys, dir, &name, &bytes).map_err(|e| Error::io("create segment", &path, e))?;
    let file = fsys.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("open", &path, e))?;
    Ok((path, file))
}

/// The segment numbers in a directory, ascending.
pub fn list(fsys: &dyn FileSystem, dir: &Path) -> Result<Vec<u32>> {
    let names = fsys.read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut out: Vec<u32> = names.iter().filter_map(|n| parse_name(n)).collect();
    out.sort_unstable();
    Ok(out)
}
