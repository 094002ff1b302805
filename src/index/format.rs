//! The layout of an index file (format-spec/index.md is the contract).
//!
//! ```text
//! header     64 bytes: magic, version, generation, lo_seq, hi_seq, log_end, last_frame, docs
//! sections   one per project, 8-byte aligned, each with its own CRC in the directory
//! catalog    every spider known at hi_seq, with its next job id; then (version 4)
//!            u32 d, d × (u32 id, u32 len, the dictionary's bytes)
//! directory  u32 n, u32 0, n × (u32 project, u32 docs, u64 offset, u64 len, u32 crc, u32 0)
//! footer     48 bytes: u64 dir offset, u64 dir len, u64 catalog offset, u64 catalog len,
//!            u32 version, u32 CRC (header + directory + catalog + footer[0..36]), magic
//! ```

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::log::LogPos;

pub const MAGIC: &[u8; 8] = b"JOBQIDX\0";
/// Version 2 added the close_reason postings (field 6); version 3 packs the
/// columns, drops the sorted key column, makes short lists flat and cuts bitmaps
/// after their last word; version 4 (format 7) adds the store's dictionaries to
/// the catalog. Version 3 is read as version 4 without dictionaries; files of
/// other versions are set aside and rebuilt from the log (index files are caches).
pub const VERSION: u32 = 4;
/// The oldest version read as this one.
pub const READ_FROM: u32 = 3;
/// The oldest version whose header and footer are laid out as this one's: a file
/// of it is checked up to its footer CRC, then set aside as another version.
pub const OLDEST_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const FOOTER_LEN: usize = 48;
pub const DIR_ENTRY: usize = 32;
pub const SECTION_HEADER: usize = 72;
pub const TERM_ENTRY: usize = 12;

/// Term fields: what a posting list is keyed by.
pub mod field {
    /// Term: the state code (1 byte).
    pub const STATE: u8 = 1;
    /// Term: the spider id (u32).
    pub const SPIDER: u8 = 2;
    /// Term: the tag (UTF-8).
    pub const TAG: u8 = 3;
    /// Term: the priority (i64).
    pub const PRIORITY: u8 = 4;
    /// Term: the `unique` value (UTF-8); only pending and running jobs are posted.
    pub const UNIQUE: u8 = 5;
    /// Term: the `close_reason` term (UTF-8, [`crate::model::close_reason_term`]).
    pub const CLOSE_REASON: u8 = 6;
    /// Term: a running job's auth token (UTF-8); only running jobs are posted.
    pub const TOKEN: u8 = 7;
    /// The highest field code.
    pub const LAST: u8 = TOKEN;
}

/// What an index file covers, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    pub generation: u64,
    /// First and last log sequence numbers covered.
    pub lo_seq: u64,
    pub hi_seq: u64,
    /// The log position just after the frame holding `hi_seq`.
    pub log_end: LogPos,
    /// The position of that frame (checked against the log at open).
    pub last_frame: LogPos,
    pub docs: u64,
}

impl SegmentMeta {
    /// The file name: `idx-<lo>-<hi>.jqi`, hexadecimal, so names sort by coverage.
    pub fn file_name(&self) -> String {
        file_name(self.lo_seq, self.hi_seq)
    }
}

pub fn file_name(lo: u64, hi: u64) -> String {
    format!("idx-{lo:016x}-{hi:016x}.jqi")
}

/// `(lo_seq, hi_seq)` of an index file name.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let body = name.strip_prefix("idx-")?.strip_suffix(".jqi")?;
    let (lo, hi) = body.split_once('-')?;
    if lo.len() != 16 || hi.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?))
}

pub fn encode_header(m: &SegmentMeta) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], VERSION);
    LE::write_u64(&mut b[16..24], m.generation);
    LE::write_u64(&mut b[24..32], m.lo_seq);
    LE::write_u64(&mut b[32..40], m.hi_seq);
    LE::write_u64(&mut b[40..48], m.log_end.pack());
    LE::write_u64(&mut b[48..56], m.last_frame.pack());
    LE::write_u64(&mut b[56..64], m.docs);
    b
}

pub fn decode_header(b: &[u8]) -> Result<SegmentMeta, String> {
    if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
        return Err("not a jobq index file (bad magic)".into());
    }
    let version = LE::read_u32(&b[8..12]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) || LE::read_u32(&b[12..16]) != 0 {
        return Err(format!("index format version {version}; this build reads version {VERSION}"));
    }
    let m = SegmentMeta {
        generation: LE::read_u64(&b[16..24]),
        lo_seq: LE::read_u64(&b[24..32]),
        hi_seq: LE::read_u64(&b[32..40]),
        log_end: LogPos::unpack(LE::read_u64(&b[40..48])),
        last_frame: LogPos::unpack(LE::read_u64(&b[48..56])),
        docs: LE::read_u64(&b[56..64]),
    };
    if m.lo_seq == 0 || m.lo_seq > m.hi_seq || m.last_frame >= m.log_end {
        return Err("index header covers an impossible range".into());
    }
    Ok(m)
}

/// Footer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub dir_offset: u64,
    pub dir_len: u64,
    pub catalog_offset: u64,
    pub catalog_len: u64,
}

pub fn encode_footer(f: &Footer, crc_of: impl FnOnce(&[u8]) -> u32) -> [u8; FOOTER_LEN] {
    let mut b = [0u8; FOOTER_LEN];
    LE::write_u64(&mut b[0..8], f.dir_offset);
    LE::write_u64(&mut b[8..16], f.dir_len);
    LE::write_u64(&mut b[16..24], f.catalog_offset);
    LE::write_u64(&mut b[24..32], f.catalog_len);
    LE::write_u32(&mut b[32..36], VERSION);
    let crc = crc_of(&b[0..36]);
    LE::write_u32(&mut b[36..40], crc);
    b[40..48].copy_from_slice(MAGIC);
    b
}

/// One directory entry: where a project's section lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub project: u32,
    pub docs: u32,
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

/// Split an index catalog into its spiders' bytes (their length) and, from
/// version 4 on, its dictionaries: (id, start, end) of each within `b`.
#[allow(clippy::type_complexity)]
pub(crate) fn split_catalog(
    b: &[u8],
    version: u32,
) -> std::result::Result<(usize, Vec<(u32, usize, usize)>), crate::codec::DecodeError> {
    // Checked, not decoded: the store decodes one catalog, the chain's last.
    let spiders = crate::codec::record::check_catalog(b)?;
    if version < 4 {
        if spiders != b.len() {
            return Err(crate::codec::DecodeError::new(spiders, "bytes left over after the catalog"));
        }
        return Ok((spiders, Vec::new()));
    }
    let mut at = spiders;
    let word = |at: &mut usize, what: &str| {
        let v = b
            .get(*at..*at + 4)
            .ok_or_else(|| crate::codec::DecodeError::new(*at, format!("{what}: past the catalog")))?;
        *at += 4;
        Ok::<u32, crate::codec::DecodeError>(LE::read_u32(v))
    };
    let n = word(&mut at, "dictionary count")?;
    let mut out = Vec::new();
    for _ in 0..n {
        let from = at;
        let id = word(&mut at, "dictionary id")?;
        let len = word(&mut at, "dictionary length")? as usize;
        let end = at.checked_add(len).filter(|e| *e <= b.len());
        let end = end.ok_or_else(|| crate::codec::DecodeError::new(from, "a dictionary runs past the catalog"))?;
        if id == 0
            || out.last().is_some_and(|(last, _, _)| *last >= id)
            || len == 0
            || len > crate::codec::docz::MAX_DICT
        {
            return Err(crate::codec::DecodeError::new(from, "dictionary ids must ascend from 1, sizes 1 to 1 MiB"));
        }
        out.push((id, at, end));
        at = end;
    }
    if at != b.len() {
        return Err(crate::codec::DecodeError::new(at, "bytes left over after the dictionaries"));
    }
    Ok((spiders, out))
}
