//! The payloads of spider, catalog and commit frames (format-spec/log.md, kinds
//! 2, 3 and 4).

use std::sync::Arc;

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
    /// Shared with the catalog it came from (no copy per index image).
    pub name: Arc<str>,
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
    let name: Arc<str> = r.str16("spider name")?.into();
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

/// Walk the catalog at the start of `b`, checking each entry and handing it to
/// `each`; returns the catalog's length (an index catalog may continue).
fn walk_catalog(b: &[u8], mut each: impl FnMut(u32, u32, u32, &str)) -> Result<usize, DecodeError> {
    let mut r = ByteReader::new(b);
    let n = r.u32("catalog size")?;
    for _ in 0..n {
        let at = r.pos();
        let project = r.u32("project")?;
        let spider = r.u32("spider")?;
        let next_job = r.u32("next job id")?;
        let name = r.str16("spider name")?;
        if project == 0 || spider == 0 || next_job == 0 || name.is_empty() {
            return Err(DecodeError::new(at, "zero id or empty spider name"));
        }
        each(project, spider, next_job, name);
    }
    Ok(r.pos())
}

/// Check the catalog at the start of `b` as [`decode_catalog`] does, without
/// building its entries; returns its length (an index catalog may continue).
pub fn check_catalog(b: &[u8]) -> Result<usize, DecodeError> {
    walk_catalog(b, |_, _, _, _| {})
}

pub fn decode_catalog(payload: &[u8]) -> Result<Vec<SpiderEntry>, DecodeError> {
    let mut out = Vec::new();
    let len = walk_catalog(payload, |project, spider, next_job, name| {
        out.push(SpiderEntry { project, spider, next_job, name: name.into() });
    })?;
    if len != payload.len() {
        return Err(DecodeError::new(len, "bytes left over after the catalog"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(project: u32, spider: u32, next_job: u32, name: &str) -> SpiderEntry {
        SpiderEntry { project, spider, next_job, name: name.into() }
    }

    /// `check_catalog` accepts what `decode_catalog` decodes and refuses, at the
    /// same offset, what it refuses: every cut, every zeroed id, a bad name.
    #[test]
    fn the_check_agrees_with_the_decoder() {
        let mut good = Vec::new();
        encode_catalog(&[entry(1, 1, 5, "a"), entry(1, 2, 1, "spider-é"), entry(7, 3, 9, "z")], &mut good);
        assert_eq!(check_catalog(&good), Ok(good.len()));
        let mut longer = good.clone();
        longer.extend_from_slice(&[0xff; 9]);
        assert_eq!(check_catalog(&longer), Ok(good.len()), "an index catalog continues after the spiders");
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for at in [4, 8, 12, 18, 22, 26] {
            let mut b = good.clone();
            b[at..at + 4].fill(0);
            damaged.push(b);
        }
        let mut bad_utf8 = good.clone();
        bad_utf8[18] = 0xff;
        damaged.push(bad_utf8);
        for b in damaged {
            let decoded = decode_catalog(&b);
            assert!(decoded.is_err(), "{b:?}");
            assert_eq!(check_catalog(&b).err(), decoded.err(), "{b:?}");
        }
    }
}
