//! A simulated file handle and lock (stale after a simulated crash).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{err, FaultKind, FsOp, State};
use crate::fs::FsFile;

pub(super) struct SimFile {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) ino: u64,
    pub(super) generation: u64,
    pub(super) path: PathBuf,
    pub(super) writable: bool,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl SimFile {
    fn check(&self, s: &State) -> io::Result<()> {
        if s.generation != self.generation {
            return Err(io::Error::other("stale handle: opened before a simulated crash"));
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = self.state.lock();
        self.check(&s)?;
        if s.dead {
            return Err(err(FaultKind::PowerCut));
        }
        let data = &s.inodes[&self.ino].data;
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut s = self.state.lock();
        self.check(&s)?;
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        if s.full && offset as usize + buf.len() > s.inodes[&self.ino].data.len() {
            return Err(err(FaultKind::DiskFull));
        }
        let short = s.mutate(FsOp::Write { path: self.path.clone(), offset, len: buf.len() })?;
        let n = if short { buf.len() / 2 } else { buf.len() };
        let inode = s.inodes.get_mut(&self.ino).expect("open inode exists");
        let off = offset as usize;
        let old_len = inode.data.len();
        if old_len < off + n {
            inode.data.resize(off + n, 0);
        }
        inode.data[off..off + n].copy_from_slice(&buf[..n]);
        inode.touch(off.min(old_len), off + n);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        self.check(&s)?;
        s.mutate(FsOp::SyncData(self.path.clone()))?;
        s.inodes.get_mut(&self.ino).expect("open inode exists").mark_synced();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        self.check(&s)?;
        s.mutate(FsOp::SetLen(self.path.clone(), len))?;
        let inode = s.inodes.get_mut(&self.ino).expect("open inode exists");
        let len = len as usize;
        let old = inode.data.len();
        inode.data.resize(len, 0);
        inode.touch(old, len);
        inode.resized = true;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.state.lock();
        self.check(&s)?;
        Ok(s.inodes[&self.ino].data.len() as u64)
    }
}

pub(super) struct SimLock {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) path: PathBuf,
    pub(super) generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.generation == self.generation {
            s.locks.remove(&self.path);
            if let Some(log) = &mut s.log {
                log.push(FsOp::Mark(format!("unlock {}", self.path.display())));
            }
        }
    }
}
