//! Free space kept on the data directory's file system. A write that runs out of
//! space halfway must be cut from the log (format-spec/durability.md), and an
//! index file or compaction cycle half written is wasted work. So writes, imports, index merges and
//! compaction cycles are refused before they start while less than
//! [`Options::keep_free`](super::Options::keep_free) is free: nothing is
//! written, the store stays sound, reads go on, and writes are taken again as
//! soon as space is freed. A write can still meet a full disk (another process
//! fills it faster than the guard looks, or one write is larger than what is
//! kept): its batch is then cut from the log (store/queue.rs, `cut_batch`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::fs::{FileSystem, Space};

/// Kept free by default, at most ...
pub const AUTO_KEEP: u64 = 64 << 20;
/// ... and at most this fraction (1/20) of the file system (small disks).
pub const AUTO_KEEP_PARTS: u64 = 20;
/// How long a look at the free space is trusted: a burst of writes between two
/// looks takes at most what it writes in this time out of what is kept free.
const TRUSTED_FOR: Duration = Duration::from_millis(100);

/// The data directory's file system as the store sees it ([`Store::disk_space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub total: u64,
    pub available: u64,
    /// What the store keeps free: writes are refused while less is available.
    pub keep_free: u64,
}

impl DiskSpace {
    /// Writes are refused (less than `keep_free` is available).
    pub fn is_low(&self) -> bool {
        self.available < self.keep_free
    }
}

impl super::Store {
    /// The data directory's file system now (one `statvfs`), and what the store
    /// keeps free of it; None when the file system does not say.
    pub fn disk_space(&self) -> Option<DiskSpace> {
        let inner = self.inner();
        let (space, keep_free) = inner.space.now(&*inner.opts.fs)?;
        Some(DiskSpace { total: space.total, available: space.available, keep_free })
    }
}

/// The data directory's free space, looked at once every [`TRUSTED_FOR`] at most.
#[derive(Debug)]
pub(crate) struct SpaceGuard {
    dir: PathBuf,
    keep: Option<u64>,
    seen: Mutex<Option<(Instant, Space)>>,
}

impl SpaceGuard {
    pub fn new(dir: PathBuf, keep: Option<u64>) -> SpaceGuard {
        SpaceGuard { dir, keep, seen: Mutex::new(None) }
    }

    /// Bytes kept free on a file system of this size.
    pub fn keep_on(&self, space: Space) -> u64 {
        self.keep.unwrap_or_else(|| AUTO_KEEP.min(space.total / AUTO_KEEP_PARTS))
    }

    /// The free space now (no cache), and what is kept of it; None when the
    /// file system does not say.
    pub fn now(&self, fs: &dyn FileSystem) -> Option<(Space, u64)> {
        let space = fs.space(&self.dir).ok()?;
        *self.seen.lock() = Some((Instant::now(), space));
        Some((space, self.keep_on(space)))
    }

    /// Refuse (`Error::LowSpace`) unless `need` bytes can be written and what is
    /// kept still be free. A file system that cannot tell its free space is
    /// taken as having enough (the write then fails, if it must, as before).
    pub fn check(&self, fs: &dyn FileSystem, need: u64) -> Result<()> {
        self.check_since(fs, need, TRUSTED_FOR)
    }

    /// [`SpaceGuard::check`] with a fresh look (bulk writes: an import's chunk).
    pub fn check_now(&self, fs: &dyn FileSystem, need: u64) -> Result<()> {
        self.check_since(fs, need, Duration::ZERO)
    }

    fn check_since(&self, fs: &dyn FileSystem, need: u64, trusted_for: Duration) -> Result<()> {
        if self.keep == Some(0) {
            return Ok(());
        }
        let space = {
            let mut seen = self.seen.lock();
            match *seen {
                Some((at, space)) if at.elapsed() < trusted_for => Some(space),
                _ => {
                    let space = fs.space(&self.dir).ok();
                    *seen = space.map(|s| (Instant::now(), s));
                    space
                }
            }
        };
        let Some(space) = space else { return Ok(()) };
        let keep = self.keep_on(space);
        if space.available >= keep.saturating_add(need) {
            return Ok(());
        }
        Err(Error::LowSpace { path: self.dir.clone(), available: space.available, need, keep })
    }

    /// Whether `need` bytes are free, what is kept free included: for work that
    /// frees more than it takes (online compaction). A fresh look.
    pub fn has_room(&self, fs: &dyn FileSystem, need: u64) -> bool {
        self.keep == Some(0) || self.now(fs).is_none_or(|(space, _)| space.available >= need)
    }

    /// Forget the last look (a test changed the simulated disk).
    #[cfg(test)]
    pub fn forget(&self) {
        *self.seen.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn what_is_kept_free_by_default_and_when_asked() {
        let sim = SimFs::new();
        let g = SpaceGuard::new(PathBuf::from("/"), None);
        // 64 MiB on a large disk, a twentieth of a small one.
        assert_eq!(g.keep_on(Space { total: 1 << 40, available: 0 }), 64 << 20);
        assert_eq!(g.keep_on(Space { total: 100 << 20, available: 0 }), 5 << 20);
        sim.set_space(Some(Space { total: 1 << 40, available: 65 << 20 }));
        assert!(g.check(&sim, 0).is_ok());
        assert!(g.check(&sim, 1 << 20).is_ok());
        let e = g.check(&sim, 2 << 20).unwrap_err();
        assert!(matches!(e, Error::LowSpace { available, need, keep, .. }
            if available == 65 << 20 && need == 2 << 20 && keep == 64 << 20));
        assert!(e.to_string().contains("needs beside the 67108864"), "{e}");
        // A look is trusted a while; then the disk is asked again.
        sim.set_space(Some(Space { total: 1 << 40, available: 1 << 20 }));
        assert!(g.check(&sim, 0).is_ok(), "the look before is still trusted");
        g.forget();
        assert!(g.check(&sim, 0).unwrap_err().is_low_space());
        // Nothing kept: never refused.
        let none = SpaceGuard::new(PathBuf::from("/"), Some(0));
        assert!(none.check(&sim, 1 << 30).is_ok());
        let some = SpaceGuard::new(PathBuf::from("/"), Some(512 << 10));
        assert!(some.check(&sim, 0).is_ok());
        // A file system that does not answer: taken as having room.
        let gone = SpaceGuard::new(PathBuf::from("/no/such/dir"), None);
        assert!(gone.check(&sim, 0).is_ok());
    }
}
