//! The data directory: `LOCK`, `CURRENT` (which generation is live), and one
//! `gen-<16 hex>` directory per generation holding its log segments and index files.
//! Compaction writes a new generation and switches `CURRENT` atomically.
//!
//! `CURRENT` (32 bytes): magic "JOBQCUR\0", u32 version 1, u32 0, u64 generation,
//! u32 0, u32 masked CRC-32 of bytes 0..28.

use std::path::{Path, PathBuf};

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem};

pub const LOCK: &str = "LOCK";
pub const CURRENT: &str = "CURRENT";
/// A cluster node's vote and purge point (format-spec/layout.md, "RAFT").
pub const RAFT: &str = "RAFT";
const MAGIC: &[u8; 8] = b"JOBQCUR\0";

pub fn gen_name(generation: u64) -> String {
    format!("gen-{generation:016x}")
}

pub fn parse_gen_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("gen-")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

pub fn gen_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(gen_name(generation))
}

pub fn encode_current(generation: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], 1);
    LE::write_u64(&mut b[16..24], generation);
    let crc = checksum(&[&b[0..28]]);
    LE::write_u32(&mut b[28..32], crc);
    b
}

/// The live generation, or `None` for a directory without a store.
pub fn read_current(fsys: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(CURRENT);
    if !fsys.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        return Ok(None);
    }
    let b = fs::read_all(fsys, &path).map_err(|e| Error::io("read", &path, e))?;
    if b.len() != 32 || &b[0..8] != MAGIC {
        return Err(Error::corrupt(&path, 0, "not a jobq CURRENT file"));
    }
    if checksum(&[&b[0..28]]) != LE::read_u32(&b[28..32]) {
        return Err(Error::corrupt(&path, 28, "CURRENT checksum mismatch"));
    }
    let version = LE::read_u32(&b[8..12]);
    if version != 1 {
        let what = format!("CURRENT format version {version}: written by a newer jobq (this one reads version 1)");
        return Err(Error::Unsupported { path, what });
    }
    for at in [12, 24] {
        if LE::read_u32(&b[at..at + 4]) != 0 {
            return Err(Error::corrupt(&path, at as u64, "a reserved field of CURRENT is not 0"));
        }
    }
    Ok(Some(LE::read_u64(&b[16..24])))
}

/// Point `CURRENT` at `generation`, atomically and durably.
pub fn write_current(fsys: &dyn FileSystem, dir: &Path, generation: u64) -> Result<()> {
    fs::publish_file(fsys, dir, CURRENT, &encode_current(generation))
        .map_err(|e| Error::io("publish", dir.join(CURRENT), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    fn with(sim: &SimFs, bytes: [u8; 32]) -> Result<Option<u64>> {
        fs::publish_file(sim, Path::new("/d"), CURRENT, &bytes).unwrap();
        read_current(sim, Path::new("/d"))
    }

    fn resealed(mut b: [u8; 32]) -> [u8; 32] {
        let crc = checksum(&[&b[0..28]]);
        LE::write_u32(&mut b[28..32], crc);
        b
    }

    #[test]
    fn current_fields_are_checked() {
        let sim = SimFs::new();
        crate::fs::FileSystem::create_dir(&sim, Path::new("/d")).unwrap();
        assert_eq!(with(&sim, encode_current(7)).unwrap(), Some(7));
        for at in [12usize, 24] {
            let mut b = encode_current(7);
            b[at] = 1;
            let e = with(&sim, resealed(b)).unwrap_err();
            assert!(matches!(e, Error::Corrupt { offset, .. } if offset == at as u64), "{e}");
        }
        let mut b = encode_current(7);
        b[8] = 2;
        let e = with(&sim, resealed(b)).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("newer jobq"), "{e}");
    }
}
