//! `jobq repair`'s first step: a segment whose 64-byte header is damaged (its
//! checksum, magic or reserved bytes fail) is given its header back when what
//! the header says can be told from elsewhere, so that the frames behind it are
//! kept instead of cut:
//! - the segment number from the file name, the generation from the directory;
//! - the version: a neighbour's, else the damaged header's own version field,
//!   else the newest first (each holds what older ones hold): the first one
//!   whose data start holds a frame that
//!   verifies (a version 1 segment's frames start at 64, later ones' at 12288;
//!   a Raft entry frame needs version 7);
//! - the first sequence number: that frame's.
//!
//! A segment without such a frame keeps its damaged header (and is cut as
//! before). The old 64 bytes are saved aside, durably, before the new header is
//! written over them (durability.md, rule 3).

use std::path::Path;

use crate::codec::frame::{self, FrameKind};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};
use crate::log::segment::{self, SegmentHeader, HEADER_LEN, VERSION};

/// A header repair rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuiltHeader {
    pub segment: u32,
    pub version: u32,
    pub first_seq: u64,
}

/// Rebuild the damaged headers of `gen_dir`'s segments; the old bytes go to `saved`.
pub fn rebuild_headers(
    fs: &dyn FileSystem,
    dir: &Path,
    gen_dir: &Path,
    generation: u64,
    saved: &Path,
) -> Result<Vec<RebuiltHeader>> {
    let numbers = segment::list(fs, gen_dir)?;
    let mut heads = Vec::with_capacity(numbers.len());
    for n in &numbers {
        let path = gen_dir.join(segment::file_name(*n));
        let bytes = read_head(fs, &path)?;
        let decoded = segment::decode_header(&path, &bytes);
        heads.push((bytes, decoded));
    }
    let mut rebuilt = Vec::new();
    for (i, n) in numbers.iter().enumerate() {
        // Only damage: a header of a newer version (Unsupported) is never rewritten.
        let (old, Err(Error::Corrupt { .. })) = &heads[i] else { continue };
        let neighbour =
            |j: Option<usize>| j.and_then(|j| heads.get(j)).and_then(|(_, h)| h.as_ref().ok().map(|h| h.version));
        let own = (old.len() >= 12).then(|| u32::from_le_bytes([old[8], old[9], old[10], old[11]]));
        let mut versions: Vec<u32> = Vec::new();
        let candidates = [neighbour(i.checked_sub(1)), neighbour(Some(i + 1)), own].into_iter().flatten();
        for v in candidates.chain((1..=VERSION).rev()) {
            if (1..=VERSION).contains(&v) && !versions.contains(&v) {
                versions.push(v);
            }
        }
        let path = gen_dir.join(segment::file_name(*n));
        let Some((version, first_seq)) = first_frame(fs, &path, &versions)? else { continue };
        let h = SegmentHeader { version, number: *n, generation, first_seq };
        save_old(fs, dir, saved, &path, old)?;
        let f = fs.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("open", &path, e))?;
        fs::write_all_at(&*f, &segment::encode_header(&h), 0).map_err(|e| Error::io("write", &path, e))?;
        f.sync_data().map_err(|e| Error::io("fdatasync", &path, e))?;
        rebuilt.push(RebuiltHeader { segment: *n, version, first_seq });
    }
    Ok(rebuilt)
}

fn read_head(fs: &dyn FileSystem, path: &Path) -> Result<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read).map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", path, e))?.min(HEADER_LEN);
    let mut b = vec![0u8; len as usize];
    fs::read_exact_at(&*f, &mut b, 0).map_err(|e| Error::io("read", path, e))?;
    Ok(b)
}

/// The first of `versions` whose data start holds a frame that verifies, with
/// that frame's first sequence number.
fn first_frame(fs: &dyn FileSystem, path: &Path, versions: &[u32]) -> Result<Option<(u32, u64)>> {
    let f = fs.open(path, OpenMode::Read).map_err(|e| Error::io("open", path, e))?;
    let file_len = f.len().map_err(|e| Error::io("stat", path, e))?;
    for &version in versions {
        let start = SegmentHeader { version, number: 1, generation: 1, first_seq: 1 }.data_start();
        if start + frame::HEADER_LEN as u64 > file_len {
            continue;
        }
        let mut h = [0u8; frame::HEADER_LEN];
        fs::read_exact_at(&*f, &mut h, start).map_err(|e| Error::io("read", path, e))?;
        let Ok(head) = frame::decode_header(&h) else { continue };
        if head.kind == FrameKind::Entry && version < VERSION {
            continue;
        }
        let end = start + frame::HEADER_LEN as u64 + u64::from(head.len);
        if end > file_len {
            continue;
        }
        let mut payload = vec![0u8; head.len as usize];
        fs::read_exact_at(&*f, &mut payload, start + frame::HEADER_LEN as u64)
            .map_err(|e| Error::io("read", path, e))?;
        if frame::verify(&h, &head, &payload) {
            return Ok(Some((version, head.first_seq)));
        }
    }
    Ok(None)
}

/// Keep a damaged header's bytes in `saved/<segment file>.header`, durably.
fn save_old(fs: &dyn FileSystem, dir: &Path, saved: &Path, path: &Path, old: &[u8]) -> Result<()> {
    ensure_dir(fs, dir, saved)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dst = saved.join(format!("{name}.header"));
    let f = fs.open(&dst, OpenMode::CreateNew).map_err(|e| Error::io("create", &dst, e))?;
    fs::write_all_at(&*f, old, 0).map_err(|e| Error::io("write", &dst, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", &dst, e))?;
    // IMPORTANT: fsync folder: the copy exists before the header is overwritten.
    fs.sync_dir(saved).map_err(|e| Error::io("fsync dir", saved, e))
}

/// Create `saved` (in `dir`) unless it exists, durably.
pub fn ensure_dir(fs: &dyn FileSystem, dir: &Path, saved: &Path) -> Result<()> {
    if fs.exists(saved).map_err(|e| Error::io("stat", saved, e))? {
        return Ok(());
    }
    fs.create_dir(saved).map_err(|e| Error::io("create", saved, e))?;
    // IMPORTANT: fsync folder.
    fs.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))
}
