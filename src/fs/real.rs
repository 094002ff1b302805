//! The real file system (Linux/Unix): std::fs with positional I/O, fdatasync,
//! directory fsync, flock-style locks, and the crate's only `unsafe`: mmap.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{FileSystem, FsFile, LockGuard, MappedBytes, OpenMode, Space};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FsFile for RealFile {
    fn still_at(&self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let held = self.0.metadata()?;
        match std::fs::metadata(path) {
            Ok(there) => Ok((there.dev(), there.ino()) == (held.dev(), held.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
        };
        Ok(Arc::new(RealFile(opts.open(path)?)))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    /// Locks the file and also the directory that holds it: a lock on the file
    /// alone is lost when the file is removed (a cleanup of "stale lock files"),
    /// and the next process would lock a new file of the same name beside the
    /// holder. A directory that holds files cannot be removed.
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let try_lock = |file: File| match file.try_lock() {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(TryLockError::Error(e)) => Err(e),
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Where a directory cannot be locked (NFS emulates flock with byte-range
        // locks, which need a file open for writing: EBADF), the file's lock alone.
        let dir = match File::open(dir).and_then(try_lock) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => None,
        };
        let file = try_lock(OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?)?;
        Ok(Box::new((dir, file)))
    }

    fn space(&self, path: &Path) -> io::Result<Space> {
        let v = rustix::fs::statvfs(path)?;
        let unit = v.f_frsize.max(1);
        Ok(Space { total: v.f_blocks.saturating_mul(unit), available: v.f_bavail.saturating_mul(unit) })
    }

    #[allow(unsafe_code)]
    fn map(&self, path: &Path) -> io::Result<MappedBytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(MappedBytes::from_vec(Vec::new()));
        }
        // SAFETY: jobq maps index files and log segments. Index files are
        // immutable once published (written to a temp file, fsynced, renamed) and
        // never truncated or rewritten in place: a newer index is a new file, and
        // an old one is only unlinked, which keeps the mapping valid. A log
        // segment's bytes below the writer's end never change (appends go past the
        // map's end, which readers check); a segment is truncated only past its
        // last valid frame (recovery at open, a failed write's cut, `jobq repair`),
        // where no record a reader was given lies (a read-only opener beside a
        // server, which may have replayed unsynced records of the last segment,
        // maps that one only below its durable mark: a failed write's cut never
        // goes below what an fsync made durable, and an undone import's cut only
        // drops frames no reader was given), or cut back to its last frame, dropping
        // preallocated zeros (rotation, close): a reader uses a segment's map only
        // up to its last non-zero byte, found by positional reads, never through
        // the map. Compaction unlinks whole segments. Every reader checks the lengths and checksums of what it decodes.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedBytes::from_map(map))
    }
}
