//! Installing a received snapshot (format-spec/snapshot.md, "Install"). Nothing
//! of the node's current state is touched until the snapshot is checked and
//! durable as a new generation (durability rule 3):
//! 1. the head and table decode, the stream is as long as they say, and the last
//!    log id is the one openraft asked for;
//! 2. each segment is written to `<name>.tmp` in a new generation directory, its
//!    checksum checked, its header rewritten for that generation, its durable
//!    marks written (each node its own), synced, renamed; the directory synced;
//! 3. the new log is replayed: every frame checks, and its last entry is the
//!    snapshot's last log id; `REACH` names its last segment;
//! 4. `CURRENT` switches to the new generation; then `RAFT` gets the purge point
//!    (the snapshot's last entry: every entry up to it is applied);
//! 5. the store reopens on it (the old generation is removed as a leftover).
//!
//! Entries this node held after the snapshot's last one (when it holds that one
//! too) may count toward a majority: they are written after the unpacked log,
//! synced, before the switch.
//!
//! A crash before step 4 leaves the old state (the new directory is a leftover);
//! after it, the new log, whose entries up to the snapshot's are applied by the
//! purge point or, before `RAFT` is written, re-applied as Raft commits them (a
//! new log that begins past the old purge point gets its first entry as purge
//! point at the node's start: [`crate::cluster::shared`]'s `load_table`).

use std::path::Path;
use std::sync::Arc;

use super::stream::SnapshotStream;
use super::{checksum_range, io, SnapMeta};
use crate::cluster::raft_file::{self, StoredLogId};
use crate::cluster::shared::{load_table, loc_id, stored_id, Node};
use crate::codec::entry::{self, EntryType};
use crate::codec::frame::FrameKind;
use crate::codec::snapshot::{decode_head, decode_table, Table, HEAD_LEN};
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};
use crate::log::mark::{self, Mark};
use crate::log::writer::LogWriter;
use crate::log::{reach, recovery, segment, LogPos};
use crate::store::layout;
use crate::store::raft::{split_data, RaftEntry};

/// Install the snapshot `stream` received, described by `meta`, on `node`.
pub fn install(node: &Node, meta: &SnapMeta, stream: &SnapshotStream) -> Result<()> {
    let (file, path) =
        stream.received().ok_or_else(|| Error::Replication("a snapshot to install was not received".into()))?;
    let fsys = node.store.options().fs.clone();
    let fs = &*fsys;
    let table = read_table(&**file, path)?;
    let last = meta.last_log_id.ok_or_else(|| Error::Replication("a snapshot without a last log id".into()))?;
    let want = stored_id(&last);
    if table.last != (want.index, want.term, want.leader) {
        return Err(Error::corrupt(path, 0, format!("the snapshot holds entries up to {:?}, not {last}", table.last)));
    }
    let _no_appends = node.installing.write();
    let current = layout::read_current(fs, &node.dir)?.unwrap_or(0);
    let generation = current.max(table.generation) + 1;
    let gen_dir = layout::gen_dir(&node.dir, generation);
    if fs.exists(&gen_dir).map_err(io("stat", &gen_dir))? {
        fs.remove_dir_all(&gen_dir).map_err(io("remove", &gen_dir))?;
    }
    fs.create_dir(&gen_dir).map_err(io("create", &gen_dir))?;
    // IMPORTANT: fsync folder, so the generation directory survives.
    fs.sync_dir(&node.dir).map_err(io("fsync dir", &node.dir))?;
    unpack(fs, &**file, path, &table, &gen_dir, generation)?;
    check_entries(fs, &gen_dir, &table, path)?;
    // The new generation says how far its log reached before CURRENT names it
    // (later segments, for the entries kept, raise it as they are made).
    let reached = table.members.last().map_or(1, |m| m.segment);
    reach::write(fs, &gen_dir, reached)?;
    let keep = entries_after(node, &last)?;
    append_kept(&fsys, &gen_dir, generation, &table, node.store.options().segment_bytes, &keep)?;
    // The switch: from here on the node is the snapshot's.
    layout::write_current(fs, &node.dir, generation, table.members.first().map_or(1, |m| m.segment))?;
    let mut state = node.table.lock().state;
    if state.purged.is_none_or(|p| p.index < want.index) {
        state.purged = Some(StoredLogId { index: want.index, term: want.term, leader: want.leader });
    }
    raft_file::write(fs, &node.dir, &state)?;
    node.store.reload()?;
    let mut table = load_table(&node.store, state)?;
    table.applied = Some(last);
    table.committed = table.committed.max(Some(last));
    table.applied_membership = meta.last_membership.clone();
    *node.table.lock() = table;
    let _ = fs.remove_file(path);
    tracing::info!(index = want.index, generation, "cluster: installed a snapshot");
    Ok(())
}

/// A received stream checks whole: head, table, length, each segment's checksum.
pub fn check_stream(file: &dyn FsFile, path: &Path) -> Result<Table> {
    let t = read_table(file, path)?;
    // The members follow the head and the table.
    let mut at = t.encode().len() as u64;
    for m in &t.members {
        if checksum_range(file, path, at, m.len, None)? != m.crc {
            return Err(Error::corrupt(path, at, format!("snapshot segment {}: checksum mismatch", m.segment)));
        }
        at += m.len;
    }
    Ok(t)
}

/// The received stream's head and table, checked against its length.
fn read_table(file: &dyn FsFile, path: &Path) -> Result<Table> {
    let len = file.len().map_err(io("stat", path))?;
    let mut head = [0u8; HEAD_LEN];
    if len < HEAD_LEN as u64 {
        return Err(Error::corrupt(path, len, "a snapshot cut short in its head"));
    }
    fs::read_exact_at(file, &mut head, 0).map_err(io("read", path))?;
    let (table_len, data_len) = decode_head(&head).map_err(|e| Error::corrupt(path, 0, e))?;
    let whole = (HEAD_LEN as u64 + table_len as u64).checked_add(data_len);
    if whole != Some(len) {
        return Err(Error::corrupt(path, len, format!("the snapshot is {len} bytes; its head says {whole:?}")));
    }
    let mut t = vec![0u8; table_len as usize];
    fs::read_exact_at(file, &mut t, HEAD_LEN as u64).map_err(io("read", path))?;
    decode_table(&t, data_len).map_err(|e| Error::corrupt(path, HEAD_LEN as u64, e))
}

/// Write every member as a segment of `generation` in `gen_dir`.
fn unpack(
    fs: &dyn FileSystem,
    file: &dyn FsFile,
    path: &Path,
    t: &Table,
    gen_dir: &Path,
    generation: u64,
) -> Result<()> {
    let mut offsets = Vec::with_capacity(t.members.len());
    let mut at = t.encode().len() as u64;
    for m in &t.members {
        offsets.push(at);
        at += m.len;
    }
    let headers = t
        .members
        .iter()
        .zip(&offsets)
        .map(|(m, off)| {
            let mut b = [0u8; segment::HEADER_LEN as usize];
            if m.len < segment::HEADER_LEN {
                return Err(Error::corrupt(path, *off, "a snapshot segment shorter than a header"));
            }
            fs::read_exact_at(file, &mut b, *off).map_err(io("read", path))?;
            let h = segment::decode_header(path, &b)?;
            if h.number != m.segment || m.len < h.data_start() {
                return Err(Error::corrupt(path, *off, "a snapshot segment's header does not match its table row"));
            }
            Ok(h)
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, (m, off)) in t.members.iter().zip(&offsets).enumerate() {
        let name = segment::file_name(m.segment);
        let tmp = gen_dir.join(format!("{name}.tmp"));
        let out = fs.open(&tmp, OpenMode::CreateNew).map_err(io("create", &tmp))?;
        if checksum_range(file, path, *off, m.len, Some((&*out, &tmp)))? != m.crc {
            return Err(Error::corrupt(path, *off, format!("snapshot segment {}: checksum mismatch", m.segment)));
        }
        let header = segment::SegmentHeader { generation, ..headers[i] };
        fs::write_all_at(&*out, &segment::encode_header(&header), 0).map_err(io("write", &tmp))?;
        if header.has_marks() {
            let next_seq = headers.get(i + 1).map_or(t.next_seq, |n| n.first_seq);
            for epoch in [1, 2] {
                mark::write(&*out, &tmp, m.segment, generation, &Mark { epoch, durable_end: m.len, next_seq })?;
            }
        }
        out.sync_data().map_err(io("fdatasync", &tmp))?;
        fs.rename(&tmp, &gen_dir.join(&name)).map_err(io("rename", &tmp))?;
    }
    // IMPORTANT: fsync folder, so every segment is in place before CURRENT names it.
    fs.sync_dir(gen_dir).map_err(io("fsync dir", gen_dir))
}

/// Every frame of the unpacked log checks, and its last entry is the snapshot's.
fn check_entries(fs: &dyn FileSystem, gen_dir: &Path, t: &Table, path: &Path) -> Result<()> {
    let (first, last) = (t.members[0], t.members[t.members.len() - 1]);
    let file =
        fs.open(&gen_dir.join(segment::file_name(first.segment)), OpenMode::Read).map_err(io("open", gen_dir))?;
    let start = LogPos { segment: first.segment, offset: segment::read_header(&*file, gen_dir)?.data_start() };
    let end = LogPos { segment: last.segment, offset: last.len };
    let mut newest = None;
    let mut reached = start;
    recovery::replay(fs, gen_dir, start, end, &mut |f| {
        reached = LogPos { segment: f.pos.segment, offset: f.pos.offset + f.header.frame_len() };
        if f.header.kind == FrameKind::Entry {
            let (h, _) = entry::decode(f.payload).map_err(|e| Error::corrupt(gen_dir, f.pos.offset, e.what))?;
            newest = Some((h.index, h.term, h.leader));
        }
        Ok(())
    })?;
    if reached != end || newest != Some(t.last) {
        return Err(Error::corrupt(path, 0, "the snapshot's log does not end with its last entry"));
    }
    Ok(())
}

/// The entries this node holds after `last`, when it holds `last` itself:
/// Raft keeps them (they may count toward a majority). openraft purges the log
/// up to `last` as it hands the install over (its core runs the purge beside the
/// state machine's install, in either order): `last` is then the purge point,
/// and the entries after it are still the node's log as openraft knows it.
fn entries_after(node: &Node, last: &crate::cluster::LogId) -> Result<Vec<RaftEntry>> {
    let locs: Vec<_> = {
        let t = node.table.lock();
        let holds = match t.find(last.index) {
            Some(l) => loc_id(l) == *last,
            None => t.state.purged == Some(stored_id(last)),
        };
        if holds {
            t.entries.iter().filter(|e| e.head.index > last.index).cloned().collect()
        } else {
            Vec::new()
        }
    };
    locs.iter()
        .map(|l| {
            let data = if l.head.kind == EntryType::Normal { node.store.raft_data(l)? } else { Vec::new() };
            Ok(RaftEntry { head: l.head, body: l.body.clone(), data })
        })
        .collect()
}

/// Write `keep` after the unpacked log, durably, as this node's log did.
fn append_kept(
    fsys: &Arc<dyn FileSystem>,
    gen_dir: &Path,
    generation: u64,
    t: &Table,
    segment_bytes: u64,
    keep: &[RaftEntry],
) -> Result<()> {
    if keep.is_empty() {
        return Ok(());
    }
    let last = t.members[t.members.len() - 1];
    let end = LogPos { segment: last.segment, offset: last.len };
    let mut log = LogWriter::resume(fsys.clone(), gen_dir, generation, end, t.next_seq, segment_bytes)?;
    let durable = t.next_seq.saturating_sub(1);
    let mut payload = Vec::new();
    for e in keep {
        payload.clear();
        entry::encode(&e.head, &e.body, &mut payload);
        log.append(FrameKind::Entry, 0, 1, durable, &payload)?;
        let frames = match e.head.kind {
            EntryType::Normal => split_data(&e.head, &e.data).map_err(Error::Replication)?,
            _ => Vec::new(),
        };
        for (h, from) in frames {
            log.append(h.kind, h.flags, h.count, durable, &e.data[from..from + h.len as usize])?;
        }
    }
    log.seal()
}

/// Where a snapshot being received lands, in the data directory.
pub const RECEIVING: &str = "snap-in.tmp";

/// A new, empty file for a snapshot being received: [`RECEIVING`] in the data directory.
pub fn receiving(fsys: &Arc<dyn FileSystem>, data_dir: &Path) -> Result<SnapshotStream> {
    let fs = &**fsys;
    let path = data_dir.join(RECEIVING);
    if fs.exists(&path).map_err(io("stat", &path))? {
        fs.remove_file(&path).map_err(io("remove", &path))?;
    }
    let file = fs.open(&path, OpenMode::CreateNew).map_err(io("create", &path))?;
    Ok(SnapshotStream::receiving(file, path))
}
