//! Log segment files: `log-NNNNNNNNNN.jql`, each starting with a 64-byte header.
//!
//! ```text
//! 0  [u8; 8] magic "JOBQLOG\0"
//! 8  u32     format version (1)
//! 12 u32     segment number
//! 16 u64     generation of the store
//! 24 u64     sequence number of the first frame written to it
//! 32 [u8;28] zero
//! 60 u32     masked CRC-32 of bytes 0..60
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};

pub const MAGIC: &[u8; 8] = b"JOBQLOG\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 64;
/// Segments never grow past this offset, so that offsets fit in 32 bits in indexes.
pub const MAX_SEGMENT_BYTES: u64 = 3 << 30;

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub number: u32,
    pub generation: u64,
    pub first_seq: u64,
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
    LE::write_u32(&mut b[8..12], VERSION);
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
    if version != VERSION {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!("log format version {version}; this build reads version {VERSION}"),
        });
    }
    Ok(SegmentHeader {
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
    decode_header(path, &b)
}

/// Create a segment durably: temp file, header, fsync, rename, fsync directory.
pub fn create(fsys: &dyn FileSystem, dir: &Path, h: &SegmentHeader) -> Result<(PathBuf, Arc<dyn FsFile>)> {
    let name = file_name(h.number);
    let path = dir.join(&name);
    fs::publish_file(fsys, dir, &name, &encode_header(h)).map_err(|e| Error::io("create segment", &path, e))?;
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
