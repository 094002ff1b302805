//! The one file-system interface of the engine. Every byte jobq reads or writes goes
//! through [`FileSystem`] and [`FsFile`], so that tests can swap the real disk for
//! [`SimFs`], which keeps written and durable bytes apart and injects faults.

mod mapped;
mod real;
mod sim;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use mapped::MappedBytes;
pub use real::RealFs;
pub use sim::{CrashMode, Fault, FaultKind, FsOp, SimFs};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// An open file. Positional I/O only: there is no cursor to share between threads.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Read up to `buf.len()` bytes at `offset`; fewer at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write `buf` at `offset`; may write fewer bytes (a short write).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// fdatasync: the file's data (and its size) are durable when this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncate or extend the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current size.
    fn len(&self) -> io::Result<u64>;
    /// True when the file holds no byte.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// False when `path` no longer names this file (its directory was moved or
    /// replaced under the process). A file system without identities: true.
    fn still_at(&self, path: &Path) -> io::Result<bool> {
        let _ = path;
        Ok(true)
    }
}

/// The size of a file system and the bytes still free on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// What an unprivileged writer may still take (statvfs `f_bavail`).
    pub available: u64,
}

/// A held exclusive lock; released when dropped.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// The file-system operations jobq needs, and no more.
pub trait FileSystem: Send + Sync + fmt::Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Atomically replace `to` with `from` (both in the same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Give the file `from` a second name `to` (which must not exist). Fails when
    /// the two are on different file systems: then copy.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync a directory: entries created, renamed or removed in it become durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Take an exclusive advisory lock on `path` (created if missing); `WouldBlock` when held.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
    /// Map a file that is never written again, read-only.
    fn map(&self, path: &Path) -> io::Result<MappedBytes>;
    /// The size and free space of the file system holding `path`.
    fn space(&self, path: &Path) -> io::Result<Space>;
}

/// Read exactly `buf.len()` bytes at `offset`; `UnexpectedEof` when the file is shorter.
pub fn read_exact_at(file: &dyn FsFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `buf` at `offset`, continuing after short writes.
pub fn write_all_at(file: &dyn FsFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A failed fsync inside [`publish_file`], marked so that callers tell it from a
/// failed write (its kind is kept: a full disk stays a full disk). A failed
/// sync is never taken back as if nothing happened (durability.md).
#[derive(Debug)]
pub struct SyncFailed(pub io::Error);

impl std::fmt::Display for SyncFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fsync failed: {}", self.0)
    }
}

impl std::error::Error for SyncFailed {}

pub(crate) fn sync_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SyncFailed(e))
}

/// True for an error [`publish_file`] got from an fsync.
pub fn is_sync_failed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<SyncFailed>())
}

/// Read a whole (small) file.
pub fn read_all(fs: &dyn FileSystem, path: &Path) -> io::Result<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read)?;
    let len = file.len()? as usize;
    let mut buf = vec![0u8; len];
    read_exact_at(&*file, &mut buf, 0)?;
    Ok(buf)
}

/// Publish a new file durably: write `name.tmp`, fsync it, rename it to `name`,
/// fsync the directory. Readers see the old file or the new one, never a mix.
pub fn publish_file(fs: &dyn FileSystem, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if fs.exists(&tmp)? {
        fs.remove_file(&tmp)?;
    }
    let file = fs.open(&tmp, OpenMode::CreateNew)?;
    let written = write_all_at(&*file, bytes, 0).and_then(|()| file.sync_data().map_err(sync_failed));
    drop(file);
    if let Err(e) = written {
        // Not left to fill a full disk: the file is nobody's yet.
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    crate::crashpoint::hit("publish_before_rename");
    fs.rename(&tmp, &dir.join(name))?;
    // IMPORTANT: fsync folder, or the rename may be lost on power failure.
    fs.sync_dir(dir).map_err(sync_failed)
}
