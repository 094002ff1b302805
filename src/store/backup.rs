//! `jobq backup`: a consistent copy of a store, taken beside a running server
//! (read-only toward the source, like `export`), incremental when run again.
//!
//! The copy is the store as of one log position `P`: the end of the valid log a
//! read-only open of the source sees. Segments the source moved past, and index
//! files, are never written again (durability.md), so they are hard-linked when
//! the destination is on the same file system, copied otherwise. The last segment
//! is copied up to `P`; a later run appends only what the source appended since.
//!
//! The destination is always a store that opens: every step leaves it as of the
//! previous backup, or as of the end of a source segment, or complete.
//! - New files appear by rename, synced first, in log order (a segment only once
//!   the one before it is whole, an index file only once the log it covers is).
//! - Bytes appended to the last segment are written with their first frame's
//!   checksum left out, synced, and only then is that checksum written and synced
//!   (the commit): before it, the new bytes are a torn tail that recovery cuts.
//! - The destination's durable mark is written after the commit.
//! - Files the source no longer has are removed last; a new generation of the
//!   source (after compaction) is copied whole beside the old one, and `CURRENT`
//!   switches to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::layout;
use super::open::create_dirs;
use super::{Options, Store};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};
use crate::log::mark::{self, Mark};
use crate::log::recovery::RecoveryPolicy;
use crate::log::segment::{self, SegmentHeader};
use crate::log::LogPos;

/// What a backup did.
#[derive(Clone, Debug, Default)]
pub struct BackupReport {
    /// The source's position the copy is as of: log end and next sequence number.
    pub position: LogPos,
    pub next_seq: u64,
    pub generation: u64,
    /// A whole copy (no earlier backup of this generation at the destination).
    pub full: bool,
    /// Files hard-linked, files and bytes copied, files removed.
    pub linked: u64,
    pub copied_files: u64,
    pub copied_bytes: u64,
    pub removed: u64,
    pub millis: u64,
}

/// What the source holds as of one position.
struct Source {
    /// The store's directory, as the caller named it.
    src: PathBuf,
    generation: u64,
    dir: PathBuf,
    end: LogPos,
    next_seq: u64,
    /// Segment numbers up to `end.segment`.
    segments: Vec<u32>,
    /// The index files a reader uses at `end`.
    indexes: Vec<String>,
}

fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// Back `src` up to `dest` (created when missing). Takes `dest`'s lock.
pub fn backup(src: &Path, dest: &Path, fsys: Arc<dyn FileSystem>) -> Result<BackupReport> {
    let started = Instant::now();
    let fs = &*fsys;
    if dest == src || dest.starts_with(src) || src.starts_with(dest) {
        return Err(Error::input(format!(
            "the backup destination {} must lie outside the store {} (and not contain it)",
            dest.display(),
            src.display()
        )));
    }
    if !fs.exists(dest).map_err(io("stat", dest))? {
        create_dirs(fs, dest)?;
    }
    let _lock = match fs.lock(&dest.join(layout::LOCK)) {
        Ok(g) => g,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(Error::Locked { path: dest.to_path_buf() }),
        Err(e) => return Err(Error::io("lock", dest.join(layout::LOCK), e)),
    };
    // The source may merge index files, rotate or compact while we open or copy
    // it: a file that vanished or shrank means a newer state; take the source's
    // position again (every step left `dest` a store that opens).
    let mut attempt = 0;
    loop {
        let mut report = BackupReport::default();
        let r = snapshot(src, fsys.clone()).and_then(|source| {
            report.position = source.end;
            report.next_seq = source.next_seq;
            report.generation = source.generation;
            copy(&fsys, &source, dest, &mut report)
        });
        match r {
            Err(e) if super::moved_on(&e) && attempt < 8 => attempt += 1,
            Err(e) => return Err(e),
            Ok(()) => {
                report.millis = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
        }
    }
}

/// The source's state as a read-only open sees it.
fn snapshot(src: &Path, fsys: Arc<dyn FileSystem>) -> Result<Source> {
    let opts = Options {
        fs: fsys.clone(),
        read_only: true,
        create: false,
        background: false,
        recovery: RecoveryPolicy::Strict,
        ..Options::default()
    };
    let store = Store::open(src, opts)?;
    let r = store.report();
    let dir = layout::gen_dir(src, r.generation);
    // The segments from the open's log start: the index files it chose may point
    // into any of them. Listed later, the log may start further on (online
    // compaction moved that segment's records and removed it): the store moved on.
    let segments: Vec<u32> =
        segment::list(&*fsys, &dir)?.into_iter().filter(|n| (r.log_start..=r.log_end.segment).contains(n)).collect();
    if segments.first() != Some(&r.log_start) {
        let why = format!("log segment {} went since the store was opened", r.log_start);
        return Err(Error::io("list", &dir, std::io::Error::new(std::io::ErrorKind::NotFound, why)));
    }
    Ok(Source {
        src: src.to_path_buf(),
        generation: r.generation,
        dir,
        end: r.log_end,
        next_seq: r.next_seq,
        segments,
        indexes: r.indexes.clone(),
    })
}

/// Bring `dest` to the source's position.
fn copy(fsys: &Arc<dyn FileSystem>, s: &Source, dest: &Path, report: &mut BackupReport) -> Result<()> {
    let fs = &**fsys;
    let gen_dir = layout::gen_dir(dest, s.generation);
    let current = layout::read_current(fs, dest)?;
    let named = backup_of(fs, dest, &s.src)?;
    if let Some(g) = current.filter(|g| *g > s.generation) {
        // Generations only grow: no earlier backup of this source holds a newer
        // one. Another store, or one written to and compacted since: never replaced.
        return Err(Error::input(format!(
            "{} holds a store of generation {g}, newer than the source's {}: it is no backup of this store (or was \
             written to since): back up to a new directory",
            dest.display(),
            s.generation
        )));
    }
    let resume = match current {
        Some(g) if g == s.generation => Some(dest_position(fsys, dest, s)?.map_err(|why| {
            // A store that never named the source may be another store altogether.
            let whose = match named {
                false => {
                    format!(" (or it is no backup of {}: {} does not name it)", s.src.display(), layout::BACKUP_OF)
                }
                true => String::new(),
            };
            Error::input(format!("{}: {why}{whose}: back up to a new directory (then remove this one)", dest.display()))
        })?),
        _ => None,
    };
    // An older generation is replaced only when it is this source's earlier
    // backup (the source compacted since): never another store that happens to
    // be older.
    if let Some(g) = current.filter(|g| *g < s.generation) {
        if !named {
            return Err(Error::input(format!(
                "{} holds a store of generation {g} that is no backup of {} ({} does not name it): it is never replaced; back up to a new directory, or remove that one first",
                dest.display(),
                s.src.display(),
                layout::BACKUP_OF
            )));
        }
    }
    if !named {
        // New, or proved a prefix of this source's log above: it is this source's.
        let bytes = s.src.as_os_str().as_encoded_bytes();
        fs::publish_file(fs, dest, layout::BACKUP_OF, bytes).map_err(io("publish", &dest.join(layout::BACKUP_OF)))?;
    }
    report.full = resume.is_none();
    if report.full && fs.exists(&gen_dir).map_err(io("stat", &gen_dir))? {
        // A leftover of an interrupted first copy: never current.
        fs.remove_dir_all(&gen_dir).map_err(io("remove", &gen_dir))?;
    }
    if report.full {
        fs.create_dir(&gen_dir).map_err(io("create", &gen_dir))?;
        // IMPORTANT: fsync folder, so the generation directory survives.
        fs.sync_dir(dest).map_err(io("fsync dir", dest))?;
    }
    let last = s.end.segment;
    for &n in &s.segments {
        let name = segment::file_name(n);
        let (from, to) = (s.dir.join(&name), gen_dir.join(&name));
        if n < last {
            let want = fs.open(&from, OpenMode::Read).map_err(io("open", &from))?.len().map_err(io("stat", &from))?;
            let have = match fs.open(&to, OpenMode::Read) {
                Ok(f) => Some(f.len().map_err(io("stat", &to))?),
                Err(_) => None,
            };
            if have != Some(want) {
                link_or_copy(fs, &from, &gen_dir, &name, report)?;
            }
        } else {
            tail(fs, s, &from, &gen_dir, &name, resume, report)?;
        }
    }
    for name in &s.indexes {
        if !fs.exists(&gen_dir.join(name)).map_err(io("stat", &gen_dir))? {
            link_or_copy(fs, &s.dir.join(name), &gen_dir, name, report)?;
        }
    }
    // The copy reaches its last segment copied: said before a later one (a
    // leftover of an earlier copy, or of a restore written to) goes.
    crate::log::reach::write(fs, &gen_dir, last)?;
    // Only now, with the new files durable, go what the source no longer has:
    // first the segments its online compaction removed, oldest first (the log
    // stays contiguous, as in the source), then index files and leftovers.
    let first = s.segments.first().copied().unwrap_or(last);
    let mut compacted: Vec<u32> = fs
        .read_dir(&gen_dir)
        .map_err(io("list", &gen_dir))?
        .iter()
        .filter_map(|name| segment::parse_name(name))
        .filter(|n| *n < first)
        .collect();
    compacted.sort_unstable();
    if !compacted.is_empty() && current == Some(s.generation) {
        // IMPORTANT: the new start is durable before a segment goes (layout.md).
        layout::advance_log_start(fs, dest, s.generation, first)?;
    }
    for n in &compacted {
        let p = gen_dir.join(segment::file_name(*n));
        fs.remove_file(&p).map_err(io("remove", &p))?;
        report.removed += 1;
    }
    if !compacted.is_empty() {
        // IMPORTANT: fsync folder, so the segments are gone before the index files go.
        fs.sync_dir(&gen_dir).map_err(io("fsync dir", &gen_dir))?;
    }
    for name in fs.read_dir(&gen_dir).map_err(io("list", &gen_dir))? {
        let stale = name.ends_with(".tmp")
            || crate::index::format::parse_name(&name).is_some() && !s.indexes.contains(&name)
            || segment::parse_name(&name).is_some_and(|n| n > last);
        if stale {
            let p = gen_dir.join(&name);
            fs.remove_file(&p).map_err(io("remove", &p))?;
            report.removed += 1;
        }
    }
    // IMPORTANT: fsync folder, so removals are durable before the switch.
    fs.sync_dir(&gen_dir).map_err(io("fsync dir", &gen_dir))?;
    if current != Some(s.generation) {
        layout::write_current(fs, dest, s.generation, first)?;
        for name in fs.read_dir(dest).map_err(io("list", dest))? {
            if layout::parse_gen_name(&name).is_some_and(|g| g != s.generation) {
                let p = dest.join(&name);
                fs.remove_dir_all(&p).map_err(io("remove", &p))?;
                report.removed += 1;
            }
        }
        fs.sync_dir(dest).map_err(io("fsync dir", dest))?;
    }
    Ok(())
}

/// `dest` names `src` as the store it is a backup of.
fn backup_of(fs: &dyn FileSystem, dest: &Path, src: &Path) -> Result<bool> {
    let path = dest.join(layout::BACKUP_OF);
    let want = src.as_os_str().as_encoded_bytes();
    let file = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    // Of another length (a huge file put there, say): not read.
    if file.len().map_err(io("stat", &path))? != want.len() as u64 {
        return Ok(false);
    }
    let mut got = vec![0u8; want.len()];
    fs::read_exact_at(&*file, &mut got, 0).map_err(io("read", &path))?;
    Ok(got == want)
}

/// Where an earlier backup of this generation left `dest`, when it is a prefix
/// of the source (same sealed segments, same bytes before its end); else why not.
fn dest_position(fsys: &Arc<dyn FileSystem>, dest: &Path, s: &Source) -> Result<std::result::Result<LogPos, String>> {
    let g = s.generation;
    let not_prefix = || {
        Err(format!(
            "it holds a copy of generation {g} that is not a prefix of the source's log (the source was repaired, \
             or the copy was written to)"
        ))
    };
    let fs = &**fsys;
    let opts = Options {
        fs: fsys.clone(),
        read_only: true,
        create: false,
        background: false,
        recovery: RecoveryPolicy::TruncateAtCorruption,
        ..Options::default()
    };
    let Ok(store) = Store::open(dest, opts) else { return Ok(not_prefix()) };
    if store.report().cut.as_ref().is_some_and(|c| c.lost_durable) {
        return Ok(not_prefix());
    }
    let at = store.report().log_end;
    drop(store);
    if at > s.end {
        return Ok(not_prefix());
    }
    if s.segments.first().is_some_and(|first| at.segment < *first) {
        // Nothing left to compare with, and no contiguous log to extend.
        return Ok(Err(format!(
            "the source's online compaction removed log segment {} where this copy ends: an incremental backup \
             cannot continue it (back up more often than compaction reaches the log's end)",
            at.segment
        )));
    }
    let name = segment::file_name(at.segment);
    // The source's segment going or shrinking under us (online compaction since
    // the snapshot) is the store moving on: an error the run tries again on.
    let source = s.dir.join(&name);
    let a = fs.open(&source, OpenMode::Read).map_err(io("open", &source))?;
    let Ok(b) = fs.open(&dest.join(layout::gen_name(s.generation)).join(&name), OpenMode::Read) else {
        return Ok(not_prefix());
    };
    // The header, and the last frame bytes before the end: the same in both.
    let h = segment::read_header(&*a, &source)?;
    let tail_from = at.offset.saturating_sub(4096).max(h.data_start()).min(at.offset);
    for (from, to) in [(0, segment::HEADER_LEN), (tail_from, at.offset)] {
        let (mut x, mut y) = (vec![0u8; (to - from) as usize], vec![0u8; (to - from) as usize]);
        fs::read_exact_at(&*a, &mut x, from).map_err(io("read", &source))?;
        if fs::read_exact_at(&*b, &mut y, from).is_err() || x != y {
            return Ok(not_prefix());
        }
    }
    Ok(Ok(at))
}

/// The last segment: appended from where the earlier backup left it (`resume`, when
/// in this segment and a version-2 one), or copied whole up to the position.
fn tail(
    fs: &dyn FileSystem,
    s: &Source,
    from: &Path,
    gen_dir: &Path,
    name: &str,
    resume: Option<LogPos>,
    report: &mut BackupReport,
) -> Result<()> {
    let src = fs.open(from, OpenMode::Read).map_err(io("open", from))?;
    let header = segment::read_header(&*src, from)?;
    let to = gen_dir.join(name);
    let end = s.end.offset;
    match resume {
        Some(at) if at.segment == s.end.segment && header.has_marks() && at.offset >= header.data_start() => {
            let file = fs.open(&to, OpenMode::ReadWrite).map_err(io("open", &to))?;
            if file.len().map_err(io("stat", &to))? != at.offset {
                // Bytes an interrupted backup left after the valid end: a torn tail.
                file.set_len(at.offset).map_err(io("truncate", &to))?;
            }
            if end > at.offset {
                append_committed(&*src, from, &*file, &to, at.offset, end, report)?;
                write_marks(&*file, &to, &header, end, s.next_seq)?;
                file.sync_data().map_err(io("fdatasync", &to))?;
            }
            Ok(())
        }
        _ => {
            let tmp = gen_dir.join(format!("{name}.tmp"));
            if fs.exists(&tmp).map_err(io("stat", &tmp))? {
                fs.remove_file(&tmp).map_err(io("remove", &tmp))?;
            }
            let file = fs.open(&tmp, OpenMode::CreateNew).map_err(io("create", &tmp))?;
            copy_range(&*src, from, &*file, &tmp, 0, end, report)?;
            if header.has_marks() {
                // This copy's own marks: the source's say something of the source.
                fs::write_all_at(&*file, &vec![0u8; (header.data_start() - 4096) as usize], 4096)
                    .map_err(io("write", &tmp))?;
                write_marks(&*file, &tmp, &header, end, s.next_seq)?;
            }
            file.sync_data().map_err(io("fdatasync", &tmp))?;
            fs.rename(&tmp, &to).map_err(io("rename", &tmp))?;
            // IMPORTANT: fsync folder, so the segment is in place before anything after it.
            fs.sync_dir(gen_dir).map_err(io("fsync dir", gen_dir))?;
            report.copied_files += 1;
            Ok(())
        }
    }
}

/// Append source bytes `[at, end)` to `file`: all but the first frame's checksum,
/// synced; then that checksum, synced (the commit).
#[allow(clippy::too_many_arguments)]
fn append_committed(
    src: &dyn FsFile,
    from: &Path,
    file: &dyn FsFile,
    to: &Path,
    at: u64,
    end: u64,
    report: &mut BackupReport,
) -> Result<()> {
    copy_range(src, from, file, to, at + 4, end, report)?;
    file.sync_data().map_err(io("fdatasync", to))?;
    crate::crashpoint::hit("backup_before_commit");
    copy_range(src, from, file, to, at, at + 4, report)?;
    file.sync_data().map_err(io("fdatasync", to))
}

/// Both mark slots of a copied segment name `end`.
fn write_marks(file: &dyn FsFile, path: &Path, h: &SegmentHeader, end: u64, next_seq: u64) -> Result<()> {
    let newest = mark::read(file, path, h.number, h.generation)?.map_or(0, |m| m.epoch);
    for epoch in [newest + 1, newest + 2] {
        mark::write(file, path, h.number, h.generation, &Mark { epoch, durable_end: end, next_seq })?;
    }
    Ok(())
}

/// Copy bytes `[from_off, to_off)` between files, at the same offsets.
fn copy_range(
    src: &dyn FsFile,
    from: &Path,
    dst: &dyn FsFile,
    to: &Path,
    from_off: u64,
    to_off: u64,
    report: &mut BackupReport,
) -> Result<()> {
    const CHUNK: u64 = 4 << 20;
    let mut buf = Vec::new();
    let mut at = from_off;
    while at < to_off {
        let n = (to_off - at).min(CHUNK) as usize;
        buf.resize(n, 0);
        fs::read_exact_at(src, &mut buf, at).map_err(io("read", from))?;
        fs::write_all_at(dst, &buf, at).map_err(io("write", to))?;
        at += n as u64;
        report.copied_bytes += n as u64;
    }
    Ok(())
}

/// Put the immutable file `from` into `dir` as `name`: a hard link, or a synced
/// copy when the link cannot be made; by rename, then the directory synced.
fn link_or_copy(fs: &dyn FileSystem, from: &Path, dir: &Path, name: &str, report: &mut BackupReport) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if fs.exists(&tmp).map_err(io("stat", &tmp))? {
        fs.remove_file(&tmp).map_err(io("remove", &tmp))?;
    }
    match fs.hard_link(from, &tmp) {
        Ok(()) => report.linked += 1,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::io("link", from, e)),
        Err(_) => {
            let src = fs.open(from, OpenMode::Read).map_err(io("open", from))?;
            let len = src.len().map_err(io("stat", from))?;
            let dst = fs.open(&tmp, OpenMode::CreateNew).map_err(io("create", &tmp))?;
            copy_range(&*src, from, &*dst, &tmp, 0, len, report)?;
            dst.sync_data().map_err(io("fdatasync", &tmp))?;
            report.copied_files += 1;
        }
    }
    fs.rename(&tmp, &dir.join(name)).map_err(io("rename", &tmp))?;
    // IMPORTANT: fsync folder, so the file is in place before anything after it.
    fs.sync_dir(dir).map_err(io("fsync dir", dir))
}
