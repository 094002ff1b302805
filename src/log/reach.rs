//! How far the log has reached (format 10, format-spec/layout.md, "REACH"): the
//! generation's `REACH` file names a segment the log has reached, so that a log
//! whose newest segments are gone (removed by hand) is told from one that simply
//! ends there. Raised when a segment is created (after it is durable), lowered
//! before segments are removed (an undone import, a Raft truncation, a recovery
//! cut), by the new-file protocol each time. A generation without the file
//! (written by an older jobq) makes no claim.
//!
//! 16 bytes: magic "JOBQRCH\0", u32 segment number, u32 masked CRC-32 of bytes 0..12.

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::segment;
use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};

pub const REACH: &str = "REACH";
const MAGIC: &[u8; 8] = b"JOBQRCH\0";

pub fn encode(segment: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], segment);
    let crc = checksum(&[&b[0..12]]);
    LE::write_u32(&mut b[12..16], crc);
    b
}

/// The segment `REACH` names in `gen_dir`, or `None` when there is no such file.
pub fn read(fsys: &dyn FileSystem, gen_dir: &Path) -> Result<Option<u32>> {
    let path = gen_dir.join(REACH);
    let file = match fsys.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    // Its size first: a file of any other size is no REACH file (read no more of it).
    if file.len().map_err(|e| Error::io("stat", &path, e))? != 16 {
        return Err(Error::corrupt(&path, 0, "not a jobq REACH file (it must be 16 bytes)"));
    }
    let mut b = [0u8; 16];
    fs::read_exact_at(&*file, &mut b, 0).map_err(|e| Error::io("read", &path, e))?;
    if &b[0..8] != MAGIC {
        return Err(Error::corrupt(&path, 0, "not a jobq REACH file"));
    }
    if checksum(&[&b[0..12]]) != LE::read_u32(&b[12..16]) {
        return Err(Error::corrupt(&path, 12, "REACH checksum mismatch"));
    }
    match LE::read_u32(&b[8..12]) {
        0 => Err(Error::corrupt(&path, 8, "REACH names segment 0 (segments count from 1)")),
        n => Ok(Some(n)),
    }
}

/// Say, durably, that the log has reached segment `n` (and no further).
pub fn write(fsys: &dyn FileSystem, gen_dir: &Path, n: u32) -> Result<()> {
    fs::publish_file(fsys, gen_dir, REACH, &encode(n)).map_err(|e| Error::io("publish", gen_dir.join(REACH), e))
}

/// A log whose last segment is `last` while `REACH` says it reached a later one
/// lost its newest segments: damage, at the first missing one. `claimed` is what
/// `REACH` said before the segments were listed; it is read again before the
/// verdict (a writer beside a read-only opener lowers it before it removes any).
pub fn kept(fsys: &dyn FileSystem, gen_dir: &Path, claimed: Option<u32>, last: u32) -> Result<()> {
    if claimed.is_none_or(|r| r <= last) || read(fsys, gen_dir)?.is_none_or(|r| r <= last) {
        return Ok(());
    }
    let reached = claimed.unwrap_or(last);
    Err(Error::corrupt(
        gen_dir.join(segment::file_name(last + 1)),
        0,
        format!(
            "log segment {} is missing: REACH says the log reached segment {reached}, but its last segment is {last} \
             (the jobs written there are lost; `jobq repair` accepts the loss)",
            last + 1
        ),
    ))
}
