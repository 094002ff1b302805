//! The data directory: `LOCK`, `CURRENT` (which generation is live), and one
//! `gen-<16 hex>` directory per generation holding its log segments and index files.
//! Compaction writes a new generation and switches `CURRENT` atomically.
//!
//! `CURRENT` (32 bytes): magic "JOBQCUR\0", u32 version 2, u32 0, u64 generation,
//! u32 log start (the generation's first log segment; version 1: 0, no claim),
//! u32 masked CRC-32 of bytes 0..28.

use std::path::{Path, PathBuf};

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem};

pub const LOCK: &str = "LOCK";
pub const CURRENT: &str = "CURRENT";
/// At a backup's destination: the path of the store it is a backup of.
pub const BACKUP_OF: &str = "BACKUP-OF";
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

/// What `CURRENT` says: the live generation, and the segment its log starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    pub generation: u64,
    /// Every log segment from this one on is the log's (version 2); `None`: a
    /// version-1 file, which makes no claim.
    pub log_start: Option<u32>,
}

pub fn encode_current(generation: u64, log_start: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], 2);
    LE::write_u64(&mut b[16..24], generation);
    LE::write_u32(&mut b[24..28], log_start);
    let crc = checksum(&[&b[0..28]]);
    LE::write_u32(&mut b[28..32], crc);
    b
}

/// The live generation, or `None` for a directory without a store.
pub fn read_current(fsys: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    Ok(read_current_file(fsys, dir)?.map(|c| c.generation))
}

/// The whole of `CURRENT`, or `None` for a directory without a store.
pub fn read_current_file(fsys: &dyn FileSystem, dir: &Path) -> Result<Option<Current>> {
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
    if !(1..=2).contains(&version) {
        let what = format!("CURRENT format version {version}: written by a newer jobq (this one reads 1 and 2)");
        return Err(Error::Unsupported { path, what });
    }
    if LE::read_u32(&b[12..16]) != 0 || (version == 1 && LE::read_u32(&b[24..28]) != 0) {
        let at = if LE::read_u32(&b[12..16]) != 0 { 12 } else { 24 };
        return Err(Error::corrupt(&path, at, "a reserved field of CURRENT is not 0"));
    }
    let log_start = LE::read_u32(&b[24..28]);
    if version == 2 && log_start == 0 {
        return Err(Error::corrupt(
            &path,
            24,
            "CURRENT names log segment 0 as the log's start (segments count from 1)",
        ));
    }
    let generation = LE::read_u64(&b[16..24]);
    Ok(Some(Current { generation, log_start: (version == 2).then_some(log_start) }))
}

/// Writers of `CURRENT` in this process take turns: online compaction moves the
/// log start of the generation it read, never of one that a snapshot install
/// (which switches the generation while the old store still runs) put there since.
static CURRENT_WRITES: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// Point `CURRENT` at `generation`, whose log starts at segment `log_start`,
/// atomically and durably.
pub fn write_current(fsys: &dyn FileSystem, dir: &Path, generation: u64, log_start: u32) -> Result<()> {
    let _turn = CURRENT_WRITES.lock();
    publish_current(fsys, dir, generation, log_start)
}

fn publish_current(fsys: &dyn FileSystem, dir: &Path, generation: u64, log_start: u32) -> Result<()> {
    fs::publish_file(fsys, dir, CURRENT, &encode_current(generation, log_start))
        .map_err(|e| Error::io("publish", dir.join(CURRENT), e))
}

/// Move the log start of `generation` forward to `start`, durably, while
/// `CURRENT` still names `generation`; false when it names another one.
pub fn advance_log_start(fsys: &dyn FileSystem, dir: &Path, generation: u64, start: u32) -> Result<bool> {
    let _turn = CURRENT_WRITES.lock();
    match read_current_file(fsys, dir)? {
        Some(c) if c.generation == generation => {
            if c.log_start.is_none_or(|s| s < start) {
                publish_current(fsys, dir, generation, start)?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A log that starts later than `CURRENT` says lost its first segments (online
/// compaction moves the start in `CURRENT` before it removes any): damage.
pub(crate) fn log_start_kept(
    fs: &dyn FileSystem,
    dir: &Path,
    gen_dir: &Path,
    current: Current,
    first: u32,
) -> Result<()> {
    let Some(start) = current.log_start.filter(|s| first > *s) else { return Ok(()) };
    // A read-only opener beside a serving store: its compaction may have moved
    // the start since (`CURRENT` first, then the removals this listing saw).
    let again = read_current_file(fs, dir)?;
    if again.is_some_and(|c| c.generation != current.generation || c.log_start.is_some_and(|s| s >= first)) {
        return Ok(());
    }
    Err(Error::corrupt(
        gen_dir.join(crate::log::segment::file_name(start)),
        0,
        format!(
            "log segment {start} is missing: CURRENT says the log starts there, but its first segment is {first} \
             (the jobs written in {} are lost; `jobq repair` accepts the loss and keeps every job id given)",
            segments_named(start, first)
        ),
    ))
}

/// "segment 3", "segments 3 to 5": the segments from `from` up to `to`, not included.
pub fn segments_named(from: u32, to: u32) -> String {
    match to.saturating_sub(from) {
        0 | 1 => format!("segment {from}"),
        _ => format!("segments {from} to {}", to - 1),
    }
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
        assert_eq!(with(&sim, encode_current(7, 3)).unwrap(), Some(7));
        let whole = read_current_file(&sim, Path::new("/d")).unwrap();
        assert_eq!(whole, Some(Current { generation: 7, log_start: Some(3) }));
        // Version 1: byte 24 reserved, no claim on the log's start.
        let mut v1 = encode_current(7, 3);
        v1[8] = 1;
        v1[24] = 0;
        assert_eq!(with(&sim, resealed(v1)).unwrap(), Some(7));
        assert_eq!(read_current_file(&sim, Path::new("/d")).unwrap().unwrap().log_start, None);
        for (version, at) in [(1, 12usize), (1, 24), (2, 12)] {
            let mut b = encode_current(7, 3);
            b[8] = version;
            if version == 1 {
                b[24] = 0;
            }
            b[at] = 1;
            let e = with(&sim, resealed(b)).unwrap_err();
            assert!(matches!(e, Error::Corrupt { offset, .. } if offset == at as u64), "{e}");
        }
        let e = with(&sim, encode_current(7, 0)).unwrap_err();
        assert!(matches!(e, Error::Corrupt { offset: 24, .. }), "{e}");
        let mut b = encode_current(7, 1);
        b[8] = 3;
        let e = with(&sim, resealed(b)).unwrap_err().to_string();
        assert!(e.contains("version 3") && e.contains("newer jobq"), "{e}");
    }
}
