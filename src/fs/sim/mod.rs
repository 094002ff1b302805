//! A simulated file system for crash and fault tests.
//!
//! It keeps, per file, the bytes written and the bytes durable (as of the last
//! `sync_data`), and per directory the entries durable (as of the last `sync_dir`).
//! [`SimFs::crash`] simulates a power cut: names not made durable are forgotten and
//! the unsynced bytes of each file are dropped, cut, zeroed or garbled. Faults (EIO,
//! ENOSPC, short writes, a frozen machine) are injected at the k-th mutating call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, FsFile, LockGuard, MappedBytes, OpenMode, Space};

mod file;
mod power_cut;

use file::{SimFile, SimLock};
use power_cut::{damage, Rng};

/// What a simulated power cut does to bytes written but not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Unsynced bytes are lost.
    Drop,
    /// A random prefix of the unsynced bytes survives.
    Cut,
    /// The unsynced range keeps its length but reads as zeros.
    Zero,
    /// Each unsynced 512-byte sector survives, reads as zeros or as garbage; the
    /// length may be cut at a sector boundary.
    Garble,
}

impl CrashMode {
    pub const ALL: [CrashMode; 4] = [CrashMode::Drop, CrashMode::Cut, CrashMode::Zero, CrashMode::Garble];
}

/// The error a fault injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Eio,
    Enospc,
    /// A write writes half its bytes and reports so; other calls fail with EIO.
    ShortWrite,
    /// The disk fills up: this write stores half its bytes and reports so (any
    /// other call goes on), and from then on every write that would grow a file
    /// fails with ENOSPC (writes in place, truncation, syncs and reads go on),
    /// until the next power cut.
    DiskFull,
    /// The machine stops: this call and every later one fail, and nothing more
    /// reaches the disk. Follow with [`SimFs::crash`].
    PowerCut,
}

/// A fault at the `at`-th mutating call (0-based, counted from when it is set).
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub at: u64,
    pub kind: FaultKind,
    /// Every later mutating call fails too.
    pub sticky: bool,
}

/// One recorded file-system call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsOp {
    Create(PathBuf),
    Write {
        path: PathBuf,
        offset: u64,
        len: usize,
    },
    SyncData(PathBuf),
    SetLen(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    /// A second name for a file (`from` keeps its own).
    HardLink(PathBuf, PathBuf),
    Remove(PathBuf),
    CreateDir(PathBuf),
    RemoveDir(PathBuf),
    SyncDir(PathBuf),
    /// A marker the test or engine put in the log (see [`SimFs::mark`]); also
    /// `lock <path>` and `unlock <path>` when a lock is taken and released.
    Mark(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Byte ranges written since the last sync (start -> end, disjoint, merged).
    dirty: BTreeMap<usize, usize>,
    /// The size changed since the last sync.
    resized: bool,
}

impl Inode {
    fn touch(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let (mut a, mut b) = (from, to);
        let overlapping: Vec<(usize, usize)> =
            self.dirty.range(..=b).rev().take_while(|(_, &e)| e >= a).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.dirty.remove(&s);
            a = a.min(s);
            b = b.max(e);
        }
        self.dirty.insert(a, b);
    }

    fn is_dirty(&self) -> bool {
        self.resized || !self.dirty.is_empty()
    }

    fn mark_synced(&mut self) {
        self.synced.resize(self.data.len(), 0);
        for (a, b) in std::mem::take(&mut self.dirty) {
            let b = b.min(self.data.len());
            if a < b {
                self.synced[a..b].copy_from_slice(&self.data[a..b]);
            }
        }
        self.resized = false;
    }
}

#[derive(Default)]
struct State {
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    locks: HashSet<PathBuf>,
    mutations: u64,
    fault: Option<Fault>,
    fault_base: u64,
    dead: bool,
    failing: Option<FaultKind>,
    /// The disk is full ([`FaultKind::DiskFull`]).
    full: bool,
    /// What [`FileSystem::space`] reports ([`SimFs::set_space`]); None: a disk
    /// of 1 TiB with nearly all of it free.
    space: Option<Space>,
    log: Option<Vec<FsOp>>,
}

/// The simulated file system. Clones share the same disk.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimFs")
    }
}

fn err(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Enospc | FaultKind::DiskFull => io::Error::from_raw_os_error(28),
        FaultKind::PowerCut => io::Error::other("simulated power cut: the machine is off"),
        _ => io::Error::from_raw_os_error(5),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl State {
    /// Count a mutating call and decide whether it fails. `Ok(true)` means: a short write.
    fn mutate(&mut self, op: FsOp) -> io::Result<bool> {
        if self.dead {
            return Err(err(FaultKind::PowerCut));
        }
        if let Some(kind) = self.failing {
            return Err(err(kind));
        }
        let n = self.mutations - self.fault_base;
        self.mutations += 1;
        if let Some(fault) = self.fault {
            if n == fault.at {
                if fault.sticky {
                    self.failing = Some(if fault.kind == FaultKind::ShortWrite { FaultKind::Eio } else { fault.kind });
                }
                match fault.kind {
                    FaultKind::PowerCut => {
                        self.dead = true;
                        return Err(err(FaultKind::PowerCut));
                    }
                    FaultKind::DiskFull if matches!(op, FsOp::Write { len, .. } if len > 1) => {
                        self.full = true;
                        self.failing = None;
                        if let Some(log) = &mut self.log {
                            log.push(op);
                        }
                        return Ok(true);
                    }
                    // Full from now on; this call (no write) goes on.
                    FaultKind::DiskFull => {
                        self.full = true;
                        self.failing = None;
                    }
                    FaultKind::ShortWrite if matches!(op, FsOp::Write { len, .. } if len > 1) => {
                        if let Some(log) = &mut self.log {
                            log.push(op);
                        }
                        return Ok(true);
                    }
                    kind => return Err(err(kind)),
                }
            }
        }
        if let Some(log) = &mut self.log {
            log.push(op);
        }
        Ok(false)
    }

    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            None => true,
            Some(p) if p.as_os_str().is_empty() || p == Path::new("/") => true,
            Some(p) => self.names.get(p) == Some(&Node::Dir),
        }
    }
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty disk with a root directory `/`.
    pub fn new() -> SimFs {
        let mut s = State::default();
        s.names.insert(PathBuf::from("/"), Node::Dir);
        s.durable.insert(PathBuf::from("/"), Node::Dir);
        SimFs { state: Arc::new(Mutex::new(s)) }
    }

    /// Inject `fault`, counting calls from now.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut s = self.state.lock();
        s.fault = fault;
        s.fault_base = s.mutations;
        s.failing = None;
        s.full = false;
    }

    /// The disk is full from now on (as after [`FaultKind::DiskFull`]), beside
    /// whatever fault is set: a power cut during what a full disk makes happen.
    pub fn fill_up(&self) {
        self.state.lock().full = true;
    }

    /// Make [`FileSystem::space`] report `space` (None: a large, nearly empty disk).
    /// Writes do not consume it: a test sets what the store is to see.
    pub fn set_space(&self, space: Option<Space>) {
        self.state.lock().space = space;
    }

    /// Mutating calls made so far (the `at` of a fault counts from the last `set_fault`).
    pub fn mutations(&self) -> u64 {
        let s = self.state.lock();
        s.mutations - s.fault_base
    }

    /// Start (or restart) recording calls.
    pub fn record(&self) {
        self.state.lock().log = Some(Vec::new());
    }

    /// The calls recorded since [`SimFs::record`].
    pub fn take_log(&self) -> Vec<FsOp> {
        self.state.lock().log.replace(Vec::new()).unwrap_or_default()
    }

    /// Put a marker in the call log (no effect when not recording).
    pub fn mark(&self, label: impl Into<String>) {
        if let Some(log) = &mut self.state.lock().log {
            log.push(FsOp::Mark(label.into()));
        }
    }

    /// Simulate a power cut and reboot: forget names not durable, damage unsynced
    /// bytes per `mode`, release locks, clear faults, and make every handle opened
    /// before stale.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        let mut s = self.state.lock();
        let mut rng = Rng(seed ^ 0x5EED);
        s.generation += 1;
        s.names = s.durable.clone();
        // An entry survives only if every directory above it survived too.
        let dirs: HashSet<PathBuf> = s.names.iter().filter(|(_, n)| **n == Node::Dir).map(|(p, _)| p.clone()).collect();
        s.names.retain(|p, _| {
            p.ancestors().skip(1).all(|a| a.parent().is_none() || a.as_os_str().is_empty() || dirs.contains(a))
        });
        s.locks.clear();
        s.dead = false;
        s.failing = None;
        s.full = false;
        s.fault = None;
        let live: HashSet<u64> =
            s.names.values().filter_map(|n| if let Node::File(i) = n { Some(*i) } else { None }).collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        let mut inos: Vec<u64> = s.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let inode = s.inodes.get_mut(&ino).expect("listed above");
            if !inode.is_dirty() {
                continue;
            }
            inode.data = damage(mode, &inode.synced, &inode.data, &inode.dirty, &mut rng);
            inode.synced = inode.data.clone();
            inode.dirty.clear();
            inode.resized = false;
        }
    }

    /// Simulate the process dying (kill -9) while the machine stays up: every byte
    /// written and every name stays (the page cache), nothing more becomes durable;
    /// locks are released, faults cleared, handles opened before are stale.
    pub fn kill(&self) {
        let mut s = self.state.lock();
        s.generation += 1;
        s.locks.clear();
        s.dead = false;
        s.failing = None;
        s.fault = None;
        s.full = false;
    }

    /// A separate disk holding a copy of this one's current files and directories,
    /// all durable, no lock held (to try many damages on one prepared store).
    pub fn fork(&self) -> SimFs {
        let s = self.state.lock();
        let mut t = State { next_ino: s.next_ino, names: s.names.clone(), ..State::default() };
        for node in s.names.values() {
            if let Node::File(ino) = node {
                let data = s.inodes[ino].data.clone();
                t.inodes.insert(*ino, Inode { synced: data.clone(), data, ..Inode::default() });
            }
        }
        t.durable = t.names.clone();
        SimFs { state: Arc::new(Mutex::new(t)) }
    }

    /// The bytes of a file as they are now (for tests that damage files on purpose).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state.lock();
        match s.names.get(path) {
            Some(Node::File(ino)) => Ok(s.inodes[ino].data.clone()),
            _ => Err(not_found(path)),
        }
    }

    /// Replace a file's bytes durably (for tests that damage files on purpose).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let mut s = self.state.lock();
        match s.names.get(path) {
            Some(Node::File(ino)) => {
                let ino = *ino;
                let inode = s.inodes.get_mut(&ino).expect("named inode exists");
                inode.synced = bytes.clone();
                inode.data = bytes;
                inode.dirty.clear();
                inode.resized = false;
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.state.lock();
        if s.dead {
            return Err(err(FaultKind::PowerCut));
        }
        let ino = match (s.names.get(path).copied(), mode) {
            (Some(Node::File(_)), OpenMode::CreateNew) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()))
            }
            (Some(Node::File(ino)), _) => ino,
            (Some(Node::Dir), _) => return Err(io::Error::other("is a directory")),
            (None, OpenMode::CreateNew) => {
                if !s.parent_exists(path) {
                    return Err(not_found(path));
                }
                s.mutate(FsOp::Create(path.to_path_buf()))?;
                s.next_ino += 1;
                let ino = s.next_ino;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), Node::File(ino));
                ino
            }
            (None, _) => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            ino,
            generation: s.generation,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if s.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        let mut names: Vec<String> = s
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()));
        }
        if !s.parent_exists(path) {
            return Err(not_found(path));
        }
        s.mutate(FsOp::CreateDir(path.to_path_buf()))?;
        s.names.insert(path.to_path_buf(), Node::Dir);
        if path.parent().is_none_or(|p| p.as_os_str().is_empty() || p == Path::new("/")) {
            s.durable.insert(path.to_path_buf(), Node::Dir);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        match s.names.get(path) {
            Some(Node::File(_)) => {
                s.mutate(FsOp::Remove(path.to_path_buf()))?;
                s.names.remove(path);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        s.mutate(FsOp::RemoveDir(path.to_path_buf()))?;
        s.names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let node = s.names.get(from).copied().ok_or_else(|| not_found(from))?;
        if !s.parent_exists(to) {
            return Err(not_found(to));
        }
        s.mutate(FsOp::Rename(from.to_path_buf(), to.to_path_buf()))?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), node);
        if node == Node::Dir {
            // The subtree moves with its directory; its entries stay as durable as
            // they were (they live in the directory, whose own name is durable
            // once its parent is synced).
            let moved = |m: &mut BTreeMap<PathBuf, Node>| {
                let under: Vec<PathBuf> = m.keys().filter(|p| p.starts_with(from) && *p != from).cloned().collect();
                for p in under {
                    let n = m.remove(&p).expect("listed");
                    m.insert(to.join(p.strip_prefix(from).expect("under it")), n);
                }
            };
            moved(&mut s.names);
            moved(&mut s.durable);
        }
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let node = s.names.get(from).copied().ok_or_else(|| not_found(from))?;
        if node == Node::Dir {
            return Err(io::Error::other("is a directory"));
        }
        if !s.parent_exists(to) {
            return Err(not_found(to));
        }
        if s.names.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.display().to_string()));
        }
        s.mutate(FsOp::HardLink(from.to_path_buf(), to.to_path_buf()))?;
        s.names.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if s.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        s.mutate(FsOp::SyncDir(path.to_path_buf()))?;
        let current: Vec<(PathBuf, Node)> =
            s.names.iter().filter(|(p, _)| p.parent() == Some(path)).map(|(p, n)| (p.clone(), *n)).collect();
        s.durable.retain(|p, _| p.parent() != Some(path));
        for (p, n) in current {
            s.durable.insert(p, n);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state.lock().names.contains_key(path))
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut s = self.state.lock();
        if !s.names.contains_key(path) {
            if !s.parent_exists(path) {
                return Err(not_found(path));
            }
            s.next_ino += 1;
            let ino = s.next_ino;
            s.inodes.insert(ino, Inode::default());
            s.names.insert(path.to_path_buf(), Node::File(ino));
        }
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(log) = &mut s.log {
            log.push(FsOp::Mark(format!("lock {}", path.display())));
        }
        Ok(Box::new(SimLock { state: self.state.clone(), path: path.to_path_buf(), generation: s.generation }))
    }

    fn map(&self, path: &Path) -> io::Result<MappedBytes> {
        let s = self.state.lock();
        if s.dead {
            return Err(err(FaultKind::PowerCut));
        }
        match s.names.get(path) {
            Some(Node::File(ino)) => Ok(MappedBytes::from_vec(s.inodes[ino].data.clone())),
            _ => Err(not_found(path)),
        }
    }

    fn space(&self, path: &Path) -> io::Result<Space> {
        let s = self.state.lock();
        if s.dead {
            return Err(err(FaultKind::PowerCut));
        }
        if !s.names.contains_key(path) {
            return Err(not_found(path));
        }
        let space = s.space.unwrap_or(Space { total: 1 << 40, available: (1 << 40) - (1 << 30) });
        Ok(Space { available: if s.full { 0 } else { space.available }, ..space })
    }
}
