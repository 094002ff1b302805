//! How far the log has reached (format 10, format-spec/layout.md, "REACH"): the
//! generation's `REACH` file names a segment the log has reached, so that a log
//! whose newest segments are gone (removed by hand) is told from one that simply
//! ends there. Raised when a segment is created (after it is durable), lowered
//! before segments are removed (an undone import, a Raft truncation, a recovery
//! cut), by the new-file protocol each time. A generation without the file
//! (written by an older jobq) makes no claim.
//!
//! 20 bytes: magic "JOBQRCH\0", u32 version (1), u32 segment number, u32 masked
//! CRC-32 of bytes 0..16.

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::segment;
use crate::codec::frame::checksum;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};

pub const REACH: &str = "REACH";
const MAGIC: &[u8; 8] = b"JOBQRCH\0";
const VERSION: u32 = 1;
const LEN: u64 = 20;

pub fn encode(segment: u32) -> [u8; LEN as usize] {
    let mut b = [0u8; LEN as usize];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], VERSION);
    LE::write_u32(&mut b[12..16], segment);
    let crc = checksum(&[&b[0..16]]);
    LE::write_u32(&mut b[16..20], crc);
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
    if file.len().map_err(|e| Error::io("stat", &path, e))? != LEN {
        return Err(Error::corrupt(&path, 0, format!("not a jobq REACH file (it must be {LEN} bytes)")));
    }
    let mut b = [0u8; LEN as usize];
    fs::read_exact_at(&*file, &mut b, 0).map_err(|e| Error::io("read", &path, e))?;
    if &b[0..8] != MAGIC {
        return Err(Error::corrupt(&path, 0, "not a jobq REACH file"));
    }
    if checksum(&[&b[0..16]]) != LE::read_u32(&b[16..20]) {
        return Err(Error::corrupt(&path, 16, "REACH checksum mismatch"));
    }
    let version = LE::read_u32(&b[8..12]);
    if version != VERSION {
        let what = format!("REACH format version {version}: written by a newer jobq (this one reads {VERSION})");
        return Err(Error::Unsupported { path, what });
    }
    match LE::read_u32(&b[12..16]) {
        0 => Err(Error::corrupt(&path, 12, "REACH names segment 0 (segments count from 1)")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn reach_fields_are_checked() {
        let sim = SimFs::new();
        let dir = Path::new("/g");
        crate::fs::FileSystem::create_dir(&sim, dir).unwrap();
        assert_eq!(read(&sim, dir).unwrap(), None, "no file: no claim");
        write(&sim, dir, 7).unwrap();
        assert_eq!(read(&sim, dir).unwrap(), Some(7));
        let put = |b: &[u8]| fs::publish_file(&sim, dir, REACH, b).unwrap();
        let resealed = |mut b: [u8; LEN as usize]| {
            let crc = checksum(&[&b[0..16]]);
            LE::write_u32(&mut b[16..20], crc);
            b
        };
        let mut b = encode(7);
        b[8] = 2;
        put(&resealed(b));
        let e = read(&sim, dir).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("newer jobq"), "{e}");
        put(&resealed(encode(0)));
        assert!(matches!(read(&sim, dir), Err(Error::Corrupt { offset: 12, .. })));
        let mut b = encode(7);
        b[13] ^= 1;
        put(&b);
        assert!(matches!(read(&sim, dir), Err(Error::Corrupt { offset: 16, .. })));
        put(&encode(7)[..19]);
        assert!(matches!(read(&sim, dir), Err(Error::Corrupt { offset: 0, .. })));
    }
}
