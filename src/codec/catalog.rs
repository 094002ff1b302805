//! The payloads of spider, catalog and commit frames (format-spec/log.md, kinds
//! 2, 3 and 4).

use byteorder::{LittleEndian as LE, WriteBytesExt};

use super::record::put_str16;
use super::{ByteReader, DecodeError};

/// A spider name registered with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiderEntry {
    pub project: u32,
    pub spider: u32,
    /// The next job id to allocate for this spider (catalog frames only; 0 in spider frames).
    pub next_job: u32,
    pub name: String,
}

/// Spider payload: u32 project, u32 spider, u16 name length, name.
pub fn encode_spider(project: u32, spider: u32, name: &str, out: &mut Vec<u8>) {
    out.write_u32::<LE>(project).unwrap();
    out.write_u32::<LE>(spider).unwrap();
    put_str16(out, name);
}

pub fn decode_spider(payload: &[u8]) -> Result<SpiderEntry, DecodeError> {
    let mut r = ByteReader::new(payload);
    let project = r.u32("project")?;
    let spider = r.u32("spider")?;
    let name = r.str16("spider name")?.to_string();
    if r.remaining() != 0 {
        return Err(DecodeError::new(r.pos(), "bytes left over after the spider"));
    }
    if project == 0 || spider == 0 || name.is_empty() {
        return Err(DecodeError::new(0, "zero id or empty spider name"));
    }
    Ok(SpiderEntry { project, spider, next_job: 0, name })
}

/// Catalog payload: u32 n, then n × (u32 project, u32 spider, u32 next_job, u16 len, name).
pub fn encode_catalog(entries: &[SpiderEntry], out: &mut Vec<u8>) {
    out.write_u32::<LE>(entries.len() as u32).unwrap();
    for e in entries {
        out.write_u32::<LE>(e.project).unwrap();
        out.write_u32::<LE>(e.spider).unwrap();
        out.write_u32::<LE>(e.next_job).unwrap();
        put_str16(out, &e.name);
    }
}

/// Bytes of the catalog at the start of `b` (an index catalog may continue).
pub fn catalog_len(b: &[u8]) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(b);
    let n = r.u32("catalog size")?;
    for _ in 0..n {
        r.bytes(12, "catalog entry")?;
        r.str16("spider name")?;
    }
    Ok(r.pos())
}

pub fn decode_catalog(payload: &[u8]) -> Result<Vec<SpiderEntry>, DecodeError> {
    let mut r = ByteReader::new(payload);
    let n = r.u32("catalog size")?;
    let mut out = Vec::with_capacity((n as usize).min(payload.len() / 14));
    for _ in 0..n {
        let at = r.pos();
        let project = r.u32("project")?;
        let spider = r.u32("spider")?;
        let next_job = r.u32("next job id")?;
        let name = r.str16("spider name")?.to_string();
        if project == 0 || spider == 0 || next_job == 0 || name.is_empty() {
            return Err(DecodeError::new(at, "zero id or empty spider name"));
        }
        out.push(SpiderEntry { project, spider, next_job, name });
    }
    if r.remaining() != 0 {
        return Err(DecodeError::new(r.pos(), "bytes left over after the catalog"));
    }
    Ok(out)
}

/// Commit payload: u64 first sequence number of the transaction it closes.
pub fn encode_commit(txn_first_seq: u64, out: &mut Vec<u8>) {
    out.write_u64::<LE>(txn_first_seq).unwrap();
}

pub fn decode_commit(payload: &[u8]) -> Result<u64, DecodeError> {
    let mut r = ByteReader::new(payload);
    let seq = r.u64("transaction start")?;
    if r.remaining() != 0 {
        return Err(DecodeError::new(r.pos(), "bytes left over after the commit"));
    }
    Ok(seq)
}
