//! Building a snapshot on a node (docs/cluster.md, "Snapshots and catch-up"):
//! the log up to the applied end, which is the store as of the last applied
//! entry (the indexes are derived data; the receiver builds its own). Sealed
//! segments are hard-linked (never written again), the last is copied up to
//! the applied end, with its durable marks zeroed (each node writes its own).
//! The snapshot is a directory `snap-<index>` in the data directory, made by the
//! new-file protocol: `snap.tmp` written and synced, renamed, the data directory
//! synced; older snapshots are removed after, one being sent when its last
//! stream ends ([`Lease`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::stream::SnapshotStream;
use super::{io, SnapMeta, HEAD_FILE};
use crate::cluster::shared::{stored_id, Node};
use crate::cluster::{log_id, LogId, StoredMembership};
use crate::codec::snapshot::{Member, Table};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};
use crate::log::recovery;
use crate::log::{segment, LogPos};

/// A snapshot being built; only the build holding `Node::snap_building` writes it.
const TMP: &str = "snap.tmp";

/// Remove what a build cut by a crash left ([`TMP`]): at the node's start.
pub(crate) fn remove_unfinished(fs: &dyn FileSystem, data_dir: &Path) -> Result<()> {
    let tmp = data_dir.join(TMP);
    if fs.exists(&tmp).map_err(io("stat", &tmp))? {
        fs.remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    Ok(())
}

/// The directory name of the snapshot whose last entry is `index`.
pub fn dir_name(index: u64) -> String {
    format!("snap-{index:020}")
}

pub fn parse_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-").filter(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// Build a snapshot of what `node` applied; the sending stream and its meta.
/// openraft builds beside applies; an install waits for a build, and a segment
/// that compaction removed meanwhile starts the build again. One build at a
/// time: openraft's (on a task it spawns) and the one after an install may be
/// asked for at once, and both write [`TMP`].
pub fn build(node: &Node) -> Result<(SnapMeta, SnapshotStream)> {
    // Before `installing`: a build waiting here holds nothing an install needs.
    let _one_build = node.snap_building.lock();
    let _no_install = node.installing.read();
    if node.table.lock().applied.is_none() {
        // Asked for before the first entry applied (a trigger on a new cluster):
        // a snapshot of nothing, which openraft takes as none; an error would
        // stop its core.
        let meta =
            SnapMeta { last_log_id: None, last_membership: StoredMembership::default(), snapshot_id: "none".into() };
        return Ok((meta, SnapshotStream::sending(node.store.options().fs.clone(), Vec::new(), Vec::new())));
    }
    let mut attempt = 0;
    loop {
        match build_once(node) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && attempt < 8 => {
                attempt += 1
            }
            r => return r,
        }
    }
}

/// The last applied entry as the store and the node's table both know it: its
/// generation and directory, where it ends, its log id, the membership then.
fn applied_now(node: &Node) -> Result<(std::path::PathBuf, u64, LogPos, LogId, StoredMembership)> {
    for _ in 0..2000 {
        let (gen_dir, generation, at) = node.store.raft_applied_at();
        let (end, [index, term, leader]) =
            at.ok_or_else(|| Error::Replication("nothing applied yet: no snapshot to build".into()))?;
        let t = node.table.lock();
        if t.applied == Some(log_id(term, leader, index)) {
            return Ok((gen_dir, generation, end, log_id(term, leader, index), t.applied_membership.clone()));
        }
        drop(t);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(Error::Replication("the applied entry kept moving while a snapshot began".into()))
}

fn build_once(node: &Node) -> Result<(SnapMeta, SnapshotStream)> {
    let (gen_dir, generation, end, last, membership) = applied_now(node)?;
    let fsys = node.store.options().fs.clone();
    let fs = &*fsys;
    let tmp = node.dir.join(TMP);
    // Left by an attempt that found a segment gone (or by a crash).
    remove_unfinished(fs, &node.dir)?;
    fs.create_dir(&tmp).map_err(io("create", &tmp))?;
    let mut members = Vec::new();
    for n in segment::list(fs, &gen_dir)?.into_iter().filter(|n| *n <= end.segment) {
        let name = segment::file_name(n);
        let (from, to) = (gen_dir.join(&name), tmp.join(&name));
        let len = if n < end.segment {
            match fs.hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::io("link", &from, e)),
                // No hard links here (another file system, say): a synced copy.
                Err(_) => copy_segment(fs, &from, &to, None, false)?,
            }
            fs.open(&to, OpenMode::Read).map_err(io("open", &to))?.len().map_err(io("stat", &to))?
        } else {
            copy_segment(fs, &from, &to, Some(end.offset), true)?;
            end.offset
        };
        let crc = member_crc(node, fs, &to, generation, n, len)?;
        members.push(Member { segment: n, len, crc });
    }
    let id = stored_id(&last);
    let table = Table {
        last: (id.index, id.term, id.leader),
        next_seq: next_seq_at(fs, &gen_dir, end)?,
        generation,
        membership: serde_json::to_vec(&membership).map_err(|e| Error::Replication(format!("membership: {e}")))?,
        members,
    };
    fs::publish_file(fs, &tmp, HEAD_FILE, &table.encode()).map_err(io("publish", &tmp.join(HEAD_FILE)))?;
    // IMPORTANT: fsync folder, so the snapshot's files are in it before it is named.
    fs.sync_dir(&tmp).map_err(io("fsync dir", &tmp))?;
    let dir = node.dir.join(dir_name(last.index));
    let lease = {
        let mut readers = node.snap_readers.lock();
        if readers.count.contains_key(&last.index) {
            // A stream is sending the snapshot of this same entry: it stays, this
            // one goes (replacing it would fail that stream's next read).
            fs.remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
        } else {
            if fs.exists(&dir).map_err(io("stat", &dir))? {
                fs.remove_dir_all(&dir).map_err(io("remove", &dir))?;
            }
            fs.rename(&tmp, &dir).map_err(io("rename", &tmp))?;
            // IMPORTANT: fsync folder, so the snapshot survives before Raft purges the log it covers.
            fs.sync_dir(&node.dir).map_err(io("fsync dir", &node.dir))?;
        }
        remove_older(fs, &node.dir, last.index, &mut readers)?;
        Lease::take(node, &mut readers, last.index)
    };
    tracing::info!(index = last.index, "cluster: built a snapshot");
    open(&fsys, &dir, Some(lease))
}

/// Snapshots of a node being sent, by index: how many streams read each, and
/// the older ones a newer build left in place for them. openraft reads a
/// snapshot chunk by chunk while the node goes on (and builds newer ones), and
/// a stream opens its files one at a time: removed beside it, its next read
/// failed, which openraft takes as fatal (the sender's Raft stopped).
#[derive(Default)]
pub(crate) struct Readers {
    count: HashMap<u64, usize>,
    /// Older than the newest: removed as their last stream ends.
    retired: HashSet<u64>,
}

/// One stream's hold on a snapshot's directory.
pub struct Lease {
    readers: Arc<Mutex<Readers>>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    index: u64,
}

impl Lease {
    fn take(node: &Node, readers: &mut Readers, index: u64) -> Lease {
        *readers.count.entry(index).or_default() += 1;
        Lease {
            readers: node.snap_readers.clone(),
            fs: node.store.options().fs.clone(),
            dir: node.dir.join(dir_name(index)),
            index,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut readers = self.readers.lock();
        let Some(n) = readers.count.get_mut(&self.index) else { return };
        *n -= 1;
        if *n > 0 {
            return;
        }
        readers.count.remove(&self.index);
        if readers.retired.remove(&self.index) {
            if let Err(e) = self.fs.remove_dir_all(&self.dir) {
                // The next build removes it.
                tracing::warn!("cluster: removing an older snapshot after its last stream: {e}");
            }
        }
    }
}

/// The newest snapshot in `data_dir`, when there is one. Unleased: for a data
/// directory no node builds in meanwhile ([`current_of`] for a running node).
pub fn current(fsys: &Arc<dyn FileSystem>, data_dir: &Path) -> Result<Option<(SnapMeta, SnapshotStream)>> {
    newest(&**fsys, data_dir)?.map(|i| open(fsys, &data_dir.join(dir_name(i)), None)).transpose()
}

/// `node`'s newest snapshot, when there is one: its files stay while the
/// stream lives, whatever the node builds meanwhile.
pub fn current_of(node: &Node) -> Result<Option<(SnapMeta, SnapshotStream)>> {
    let fsys = node.store.options().fs.clone();
    let lease = {
        let mut readers = node.snap_readers.lock();
        let Some(i) = newest(&*fsys, &node.dir)? else { return Ok(None) };
        Lease::take(node, &mut readers, i)
    };
    let dir = lease.dir.clone();
    open(&fsys, &dir, Some(lease)).map(Some)
}

fn newest(fs: &dyn FileSystem, data_dir: &Path) -> Result<Option<u64>> {
    Ok(fs.read_dir(data_dir).map_err(io("list", data_dir))?.iter().filter_map(|n| parse_dir_name(n)).max())
}

/// The newest snapshot's meta (its last entry and membership), when there is one.
pub fn newest_meta(fs: &dyn FileSystem, data_dir: &Path) -> Result<Option<SnapMeta>> {
    let Some(i) = newest(fs, data_dir)? else { return Ok(None) };
    let path = data_dir.join(dir_name(i)).join(HEAD_FILE);
    let head = fs::read_all(fs, &path).map_err(io("read", &path))?;
    let table = super::decode(&head).map_err(|e| Error::corrupt(&path, 0, e))?;
    super::meta_of(&table).map(Some).map_err(|e| Error::corrupt(&path, 0, e))
}

/// A built snapshot's stream: its head file, then its segments (each checked
/// here, opened by the stream only while it is read: a snapshot of any number of
/// segments holds one descriptor).
fn open(fsys: &Arc<dyn FileSystem>, dir: &Path, lease: Option<Lease>) -> Result<(SnapMeta, SnapshotStream)> {
    let fs = &**fsys;
    let head_path = dir.join(HEAD_FILE);
    let head = fs::read_all(fs, &head_path).map_err(io("read", &head_path))?;
    let table = super::decode(&head).map_err(|e| Error::corrupt(&head_path, 0, e))?;
    let mut files: Vec<(PathBuf, u64)> = Vec::with_capacity(table.members.len());
    for m in &table.members {
        let p = dir.join(segment::file_name(m.segment));
        let f = fs.open(&p, OpenMode::Read).map_err(io("open", &p))?;
        if f.len().map_err(io("stat", &p))? < m.len {
            return Err(Error::corrupt(&p, m.len, "a snapshot's segment is shorter than its table says"));
        }
        files.push((p, m.len));
    }
    let meta = super::meta_of(&table).map_err(|e| Error::corrupt(&head_path, 0, e))?;
    Ok((meta, SnapshotStream::sending(fsys.clone(), head, files).leased(lease)))
}

/// A copy of segment `from` into the new file `to`, synced: its first `len`
/// bytes (all of it: `None`), its mark pages zeroed with `zero_marks`.
fn copy_segment(fs: &dyn FileSystem, from: &Path, to: &Path, len: Option<u64>, zero_marks: bool) -> Result<()> {
    let src = fs.open(from, OpenMode::Read).map_err(io("open", from))?;
    let header = segment::read_header(&*src, from)?;
    let len = match len {
        Some(l) => l,
        None => src.len().map_err(io("stat", from))?,
    };
    let dst = fs.open(to, OpenMode::CreateNew).map_err(io("create", to))?;
    let mut buf = Vec::new();
    let mut at = 0;
    while at < len {
        buf.resize((len - at).min(4 << 20) as usize, 0);
        fs::read_exact_at(&*src, &mut buf, at).map_err(io("read", from))?;
        fs::write_all_at(&*dst, &buf, at).map_err(io("write", to))?;
        at += buf.len() as u64;
    }
    if zero_marks && header.has_marks() {
        let marks = segment::HEADER_LEN..header.data_start();
        fs::write_all_at(&*dst, &vec![0u8; (marks.end - marks.start) as usize], marks.start)
            .map_err(io("write", to))?;
    }
    dst.sync_data().map_err(io("fdatasync", to))
}

/// The masked CRC-32 of a member's bytes. A sealed segment never changes, but a
/// cut of entries not applied may remove one and write another of the same
/// number: its checksum is kept under its generation, number, length and the
/// checksum of its last 64 KiB (frames end in their own checksums), so a build
/// reads the tail and only the ends of the others.
fn member_crc(node: &Node, fs: &dyn FileSystem, path: &Path, generation: u64, n: u32, len: u64) -> Result<u32> {
    let f = fs.open(path, OpenMode::Read).map_err(io("open", path))?;
    let mut end = vec![0u8; len.min(64 << 10) as usize];
    let from = len - end.len() as u64;
    fs::read_exact_at(&*f, &mut end, from).map_err(io("read", path))?;
    let key = (generation, n, len, crc32fast::hash(&end));
    if let Some(c) = node.snap_crcs.lock().get(&key) {
        return Ok(*c);
    }
    let crc = super::checksum_range(&*f, path, 0, len, None)?;
    node.snap_crcs.lock().insert(key, crc);
    Ok(crc)
}

/// The sequence number after the frames before `end` in its segment.
fn next_seq_at(fs: &dyn FileSystem, gen_dir: &Path, end: LogPos) -> Result<u64> {
    let path = gen_dir.join(segment::file_name(end.segment));
    let f = fs.open(&path, OpenMode::Read).map_err(io("open", &path))?;
    let header = segment::read_header(&*f, &path)?;
    let mut next = header.first_seq;
    let from = LogPos { segment: end.segment, offset: header.data_start() };
    recovery::replay(fs, gen_dir, from, end, &mut |fr| {
        next = fr.header.last_seq() + 1;
        Ok(())
    })?;
    Ok(next)
}

/// Remove every snapshot but the one of `keep`; one a stream is sending goes
/// when its last stream ends.
fn remove_older(fs: &dyn FileSystem, data_dir: &Path, keep: u64, readers: &mut Readers) -> Result<()> {
    for name in fs.read_dir(data_dir).map_err(io("list", data_dir))? {
        match parse_dir_name(&name) {
            Some(i) if i != keep && readers.count.contains_key(&i) => {
                readers.retired.insert(i);
            }
            Some(i) if i != keep => {
                let p = data_dir.join(&name);
                fs.remove_dir_all(&p).map_err(io("remove", &p))?;
            }
            _ => {}
        }
    }
    Ok(())
}
