//! The store's side of a cluster node (docs/cluster.md): Raft entries are written
//! to the store's own log (one write path: an entry frame, then the data frames a
//! single node would write), read back for replication, cut off when a new leader
//! overrides them, and applied by replaying their data frames as open replays a
//! tail. Readers see applied entries only.

use super::{open, Store};
use crate::codec::entry::{self, EntryHead, EntryType};
use crate::codec::frame::{self, FrameHeader, FrameKind, FLAG_RELOCATED};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::log::recovery::{self, FrameRef};
use crate::log::LogPos;
use std::path::Path;

/// An entry to append: its head, a membership entry's body, and a normal
/// entry's data frames (whole frames, headers and checksums included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftEntry {
    pub head: EntryHead,
    pub body: Vec<u8>,
    pub data: Vec<u8>,
}

/// A leader's batch applied in the writer ahead of its entry: the reserved
/// entry frame (its position and sequence number), where the batch ends, its
/// data frames, and its entry's index once written.
#[derive(Debug)]
pub struct Speculative {
    pub at: LogPos,
    pub seq: u64,
    pub end: LogPos,
    pub data: Vec<u8>,
    pub appended: Option<u64>,
}

/// What a sync of appended entries covers: the tail segment, where the log
/// ended and the sequence number there.
pub struct RaftSync {
    tail: std::sync::Arc<crate::log::tail::Tail>,
    end: u64,
    next_seq: u64,
}

/// Where an entry is in this node's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLoc {
    pub head: EntryHead,
    pub body: Vec<u8>,
    /// Its entry frame, and that frame's sequence number.
    pub at: LogPos,
    pub seq: u64,
    /// Where its last frame ends.
    pub end: LogPos,
}

/// Check a normal entry's data: whole, checksummed frames of the kinds an entry
/// may carry, as many and as long as its head says. Returns each frame's header
/// and where its payload starts within `data`.
pub fn split_data(head: &EntryHead, data: &[u8]) -> std::result::Result<Vec<(FrameHeader, usize)>, String> {
    if data.len() != head.data_len as usize {
        return Err(format!("entry {}: {} data bytes, its head says {}", head.index, data.len(), head.data_len));
    }
    let frames = scan_data(head.index, data)?;
    if frames.len() != head.frames as usize {
        return Err(format!("entry {}: {} data frames, its head says {}", head.index, frames.len(), head.frames));
    }
    Ok(frames)
}

/// The data frames of entry `index`'s `data`, checked as [`split_data`] does.
pub fn scan_data(index: u64, data: &[u8]) -> std::result::Result<Vec<(FrameHeader, usize)>, String> {
    let head =
        EntryHead { index, term: 0, leader: 0, committed: None, kind: EntryType::Normal, frames: 0, data_len: 0 };
    let mut frames = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let bytes: &[u8; frame::HEADER_LEN] = data
            .get(at..at + frame::HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("entry {}: a frame header cut short at {at}", head.index))?;
        let h = frame::decode_header(bytes).map_err(|e| format!("entry {}: frame at {at}: {e}", head.index))?;
        let end = at + h.frame_len() as usize;
        if end > data.len() {
            return Err(format!("entry {}: frame at {at} runs past the data", head.index));
        }
        if !frame::verify(bytes, &h, &data[at + frame::HEADER_LEN..end]) {
            return Err(format!("entry {}: frame at {at}: checksum mismatch", head.index));
        }
        let allowed = matches!(h.kind, FrameKind::Jobs | FrameKind::Spider | FrameKind::Catalog | FrameKind::Dict);
        if !allowed || h.flags & !FLAG_RELOCATED != 0 || (h.flags != 0 && h.kind != FrameKind::Jobs) {
            return Err(format!(
                "entry {}: a {:?} frame with flags {} cannot be in an entry",
                head.index, h.kind, h.flags
            ));
        }
        frames.push((h, at + frame::HEADER_LEN));
        at = end;
    }
    if frames.is_empty() {
        return Err(format!("entry {}: a normal entry without data", head.index));
    }
    Ok(frames)
}

/// The end of the applied part of `[start, end)` (and the sequence number there):
/// after the last entry whose index some entry frame of the range states
/// committed, or at most `purged` (the `RAFT` file's purge point: Raft purges
/// applied entries only, and an installed snapshot's entries are all applied).
/// Entries after it were appended but may still be overridden.
pub(crate) fn applied_end(
    fs: &dyn FileSystem,
    gen_dir: &Path,
    (start, start_seq): (LogPos, u64),
    end: LogPos,
    purged: Option<u64>,
) -> Result<(LogPos, u64)> {
    let mut committed: Option<u64> = purged;
    let mut ends: Vec<(u64, LogPos, u64)> = Vec::new();
    let mut current: Option<u64> = None;
    let mut last = (start, start_seq);
    recovery::replay(fs, gen_dir, start, end, &mut |f: FrameRef<'_>| {
        let after =
            (LogPos { segment: f.pos.segment, offset: f.pos.offset + f.header.frame_len() }, f.header.last_seq() + 1);
        last = after;
        if f.header.kind == FrameKind::Entry {
            let (h, _) = entry::decode(f.payload).map_err(|e| Error::corrupt(gen_dir, f.pos.offset, e.what))?;
            committed = committed.max(h.committed);
            current = Some(h.index);
        }
        // Each entry's end moves with its frames (recovery checked they are whole).
        if let Some(i) = current {
            match ends.last_mut() {
                Some(last) if last.0 == i => (last.1, last.2) = after,
                _ => ends.push((i, after.0, after.1)),
            }
        }
        Ok(())
    })?;
    if ends.is_empty() && purged.is_some() {
        // No entry frame after the index files: compaction removed the purged
        // entries' frames, and every frame left belongs to one of them.
        return Ok(last);
    }
    Ok(ends
        .iter()
        .rev()
        .find(|(i, _, _)| committed.is_some_and(|c| *i <= c))
        .map_or((start, start_seq), |(_, pos, seq)| (*pos, *seq)))
}

impl Store {
    /// Where the applied part of the log ends.
    pub fn raft_applied_end(&self) -> LogPos {
        self.inner().writer.lock().replay_end
    }

    /// The last applied entry, where it ends, and the generation (and its
    /// directory) that holds it: what a snapshot copies. The bytes before it never
    /// change while the generation lives (only entries after it may be cut).
    pub fn raft_applied_at(&self) -> (std::path::PathBuf, u64, Option<(LogPos, [u64; 3])>) {
        let inner = self.inner();
        let w = inner.writer.lock();
        let applied = *inner.raft_applied.lock();
        (w.gen_dir.clone(), w.generation, applied)
    }

    /// The last applied entry as the node found it at start: where it ends and
    /// its (index, term, leader).
    pub fn set_raft_applied(&self, applied: Option<(LogPos, [u64; 3])>) {
        let inner = self.inner();
        let _w = inner.writer.lock();
        *inner.raft_applied.lock() = applied;
    }

    /// Every Raft entry in the log, in order (a node's start).
    pub fn raft_entries(&self) -> Result<Vec<EntryLoc>> {
        let (first, end) = {
            let inner = self.inner();
            let w = inner.writer.lock();
            let log = w.log.as_ref().ok_or(Error::ReadOnly)?;
            log.flush()?;
            (open::first_segment(&*self.inner().opts.fs, &self.inner().gen_dir, w.generation)?, log.end())
        };
        let start = LogPos { segment: first.number, offset: first.data_start() };
        let mut out: Vec<EntryLoc> = Vec::new();
        let dir = &self.inner().gen_dir;
        recovery::replay(&*self.inner().opts.fs, dir, start, end, &mut |f| {
            let after = LogPos { segment: f.pos.segment, offset: f.pos.offset + f.header.frame_len() };
            if f.header.kind == FrameKind::Entry {
                let (head, body) = entry::decode(f.payload).map_err(|e| Error::corrupt(dir, f.pos.offset, e.what))?;
                out.push(EntryLoc { head, body: body.to_vec(), at: f.pos, seq: f.header.first_seq, end: after });
            } else if let Some(last) = out.last_mut() {
                last.end = after;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Append `entries` to the log and make them durable (one fdatasync).
    pub fn raft_append(&self, entries: &[RaftEntry]) -> Result<Vec<EntryLoc>> {
        let (locs, sync) = self.raft_write(entries)?;
        self.raft_sync(&sync)?;
        Ok(locs)
    }

    /// Make what [`Store::raft_write`] wrote durable (one fdatasync, which also
    /// covers whatever was written before it).
    pub fn raft_sync(&self, s: &RaftSync) -> Result<()> {
        let inner = self.inner();
        let _one = inner.raft_sync.lock();
        let (mut end, mut next_seq) = (s.end, s.next_seq);
        if let Some(log) = self.inner().writer.lock().log.as_ref() {
            if std::sync::Arc::ptr_eq(log.tail(), &s.tail) && log.end().offset < end {
                // Entries were cut since: the sync covers what is left.
                (end, next_seq) = (log.end().offset, log.next_seq());
            }
        }
        s.tail.sync(end, next_seq).inspect_err(|e| self.inner().commit.poison(e))
    }

    /// Append `entries` to the log, unsynced: they are durable once the
    /// returned sync ran. Entries are acknowledged to Raft only then.
    pub fn raft_write(&self, entries: &[RaftEntry]) -> Result<(Vec<EntryLoc>, RaftSync)> {
        let inner = self.inner();
        let inner = &*inner;
        inner.commit.check()?;
        let mut split = Vec::with_capacity(entries.len());
        for e in entries {
            let frames = match e.head.kind {
                EntryType::Normal => split_data(&e.head, &e.data).map_err(Error::Replication)?,
                _ if e.data.is_empty() => Vec::new(),
                _ => return Err(Error::Replication(format!("entry {}: data in a non-normal entry", e.head.index))),
            };
            split.push(frames);
        }
        let mut w = inner.writer.lock();
        let w = &mut *w;
        let durable = inner.commit.durable_seq();
        let log = w.log.as_mut().ok_or(Error::ReadOnly)?;
        let mut locs = Vec::with_capacity(entries.len());
        let mut payload = Vec::new();
        // The entries' frames go to the log in one write (a follower's append).
        log.defer_writes();
        let r = (|| {
            for (e, frames) in entries.iter().zip(&split) {
                payload.clear();
                entry::encode(&e.head, &e.body, &mut payload);
                if let Some(s) = w.spec.as_mut().filter(|s| s.appended.is_none()) {
                    if e.head.kind == EntryType::Normal && log.end() == s.end && e.data == s.data {
                        // This node's own batch: its frames are in place.
                        let mut head = Vec::with_capacity(frame::HEADER_LEN + payload.len());
                        frame::encode(&mut head, FrameKind::Entry, 0, s.seq, 1, durable, &payload);
                        log.end_reserved(s.at, &head)?;
                        s.appended = Some(e.head.index);
                        locs.push(EntryLoc { head: e.head, body: Vec::new(), at: s.at, seq: s.seq, end: s.end });
                        continue;
                    }
                    // Something else comes first: the batch is cut off, its records
                    // leave the writer (rebuilt before the next write or apply).
                    let (at, seq) = (s.at, s.seq);
                    w.spec = None;
                    // `w.mark_dirty()`, beside the borrowed log.
                    (w.dirty, w.cuts) = (true, w.cuts + 1);
                    log.truncate_to(at, seq)?;
                    log.release_rotation();
                    w.reader.forget_from(at.segment);
                }
                let a = log.append(FrameKind::Entry, 0, 1, durable, &payload)?;
                let mut end = LogPos { offset: a.pos.offset + (frame::HEADER_LEN + payload.len()) as u64, ..a.pos };
                for (h, from) in frames {
                    let p = &e.data[*from..*from + h.len as usize];
                    let d = log.append(h.kind, h.flags, h.count, durable, p)?;
                    end = LogPos { offset: d.pos.offset + h.frame_len(), ..d.pos };
                }
                locs.push(EntryLoc { head: e.head, body: e.body.clone(), at: a.pos, seq: a.first_seq, end });
            }
            crate::crashpoint::hit("raft_before_sync");
            log.stop_deferring()
        })();
        if let Err(e) = r {
            // Written as a frame-by-frame append would have; poisoned: none is acknowledged.
            let _ = log.stop_deferring();
            inner.commit.poison(&e);
            return Err(e);
        }
        let sync = RaftSync { tail: log.tail().clone(), end: log.end().offset, next_seq: log.next_seq() };
        Ok((locs, sync))
    }

    /// A normal entry's data frames, as its leader sent them (whole frames).
    pub fn raft_data(&self, loc: &EntryLoc) -> Result<Vec<u8>> {
        if loc.head.kind != EntryType::Normal {
            return Ok(Vec::new());
        }
        self.inner().writer.lock().log.as_ref().map_or(Ok(()), |l| l.flush())?;
        if loc.at.segment == loc.end.segment {
            return self.raft_data_bytes(loc);
        }
        let mut out = Vec::with_capacity(loc.head.data_len as usize);
        recovery::replay(&*self.inner().opts.fs, &self.inner().gen_dir, loc.at, loc.end, &mut |f| {
            if f.pos != loc.at {
                frame::encode(
                    &mut out,
                    f.header.kind,
                    f.header.flags,
                    f.header.first_seq,
                    f.header.count,
                    f.header.durable_seq,
                    f.payload,
                );
            }
            Ok(())
        })?;
        if out.len() != loc.head.data_len as usize {
            let path = self.inner().gen_dir.join(crate::log::segment::file_name(loc.at.segment));
            return Err(Error::corrupt(path, loc.at.offset, "a Raft entry's data frames are not all there"));
        }
        Ok(out)
    }

    /// [`Store::raft_data`] of an entry in one segment: its bytes exactly, read
    /// without the writer lock. IMPORTANT: never read past `loc.end` (a frame
    /// scanner reads windows up to the file's length when it started), so that a
    /// cut of the log after the entry, beside the read, cannot fail it.
    fn raft_data_bytes(&self, loc: &EntryLoc) -> Result<Vec<u8>> {
        let inner = self.inner();
        let path = inner.gen_dir.join(crate::log::segment::file_name(loc.at.segment));
        let corrupt = |what: String| Error::corrupt(&path, loc.at.offset, what);
        let file = inner.opts.fs.open(&path, crate::fs::OpenMode::Read).map_err(|e| Error::io("open", &path, e))?;
        let len = loc
            .end
            .offset
            .checked_sub(loc.at.offset)
            .ok_or_else(|| corrupt("an entry ends before it starts".into()))?;
        let mut bytes = vec![0u8; len as usize];
        crate::fs::read_exact_at(&*file, &mut bytes, loc.at.offset).map_err(|e| Error::io("read", &path, e))?;
        let head: &[u8; frame::HEADER_LEN] = bytes
            .get(..frame::HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("a Raft entry's frame cut short".into()))?;
        let h = frame::decode_header(head).map_err(|e| corrupt(e.to_string()))?;
        let data_start = h.frame_len() as usize;
        if h.kind != FrameKind::Entry || data_start > bytes.len() {
            return Err(corrupt("not a Raft entry's frame".into()));
        }
        let data = bytes.split_off(data_start);
        // The data frames' checksums, kinds, count and length, as a follower checks them.
        split_data(&loc.head, &data).map_err(corrupt)?;
        Ok(data)
    }

    /// Cut the log at `loc`, removing that entry and every later one. Only
    /// entries not applied may go (Raft never overrides a committed entry).
    pub fn raft_truncate(&self, loc: &EntryLoc) -> Result<()> {
        let inner = self.inner();
        let _no_sync = inner.raft_sync.lock();
        let inner = self.inner();
        let mut w = inner.writer.lock();
        let w = &mut *w;
        if loc.at < w.replay_end {
            return Err(Error::Replication(format!("entry {} is applied: it cannot be cut", loc.head.index)));
        }
        if w.spec.as_ref().is_some_and(|s| s.at >= loc.at) {
            // This node's own batch goes with the entries cut.
            w.spec = None;
            w.mark_dirty();
        }
        let log = w.log.as_mut().ok_or(Error::ReadOnly)?;
        log.truncate_to(loc.at, loc.seq).inspect_err(|e| self.inner().commit.poison(e))?;
        log.release_rotation();
        w.reader.forget_from(loc.at.segment);
        Ok(())
    }

    /// Apply an appended entry: replay its frames into the store and publish the
    /// result to readers. Entries are applied in order, each once.
    pub fn raft_apply(&self, loc: &EntryLoc) -> Result<()> {
        let inner = self.inner();
        let inner = &*inner;
        let mut w = inner.writer.lock();
        let own = w.spec.as_ref().is_some_and(|s| s.appended == Some(loc.head.index) && s.at == loc.at);
        if own && !w.dirty {
            // This node's batch: its records are in the writer already.
            let s = w.spec.take().expect("checked");
            w.replay_end = s.end;
            learn_dicts(&w, &s.data)?;
            *inner.raft_applied.lock() = Some((s.end, [loc.head.index, loc.head.term, loc.head.leader]));
            return self.applied(w);
        }
        if w.dirty || w.spec.is_some() {
            w.spec = None;
            w.mark_dirty();
            drop(w);
            super::rebuild::rebuild(inner)?;
            w = inner.writer.lock();
        }
        // The next entry starts where the last applied one ended, or at the start
        // of the next segment (the log rotated between them).
        let next_segment = LogPos { segment: w.replay_end.segment + 1, offset: crate::log::segment::DATA_START_V2 };
        if loc.at != w.replay_end && loc.at != next_segment {
            return Err(Error::Replication(format!(
                "entry {} at {:?} applied out of order (applied up to {:?})",
                loc.head.index, loc.at, w.replay_end
            )));
        }
        w.log.as_ref().map_or(Ok(()), |l| l.flush())?;
        let fs = inner.opts.fs.clone();
        recovery::replay(&*fs, &inner.gen_dir, loc.at, loc.end, &mut |f| {
            let last = LogPos { offset: f.pos.offset + f.header.frame_len(), ..f.pos } == loc.end;
            open::replay_frame(&mut w, f.pos, &f.header, f.payload, last)
        })?;
        *inner.raft_applied.lock() = Some((loc.end, [loc.head.index, loc.head.term, loc.head.leader]));
        self.applied(w)
    }

    /// An entry applied: publish, wake writers waiting for it, persist indexes.
    fn applied(&self, mut w: parking_lot::MutexGuard<'_, super::writer::Writer>) -> Result<()> {
        let inner = self.inner();
        let inner = &*inner;
        if w.should_freeze() {
            w.freeze()?;
        }
        let froze = std::mem::take(&mut w.frozen) > 0;
        let version = w.version();
        let writes = w.writes;
        inner.applied.notify_all();
        drop(w);
        inner.commit.synced(version, writes);
        if froze {
            super::maintain::after_freeze(inner)?;
        }
        Ok(())
    }

    /// Where the log ends (appended entries included).
    pub fn raft_log_end(&self) -> LogPos {
        self.inner().writer.lock().log_end()
    }

    /// The oldest segment holding an entry Raft has not purged: online
    /// compaction removes only segments before it.
    pub fn set_raft_keep_from(&self, segment: u32) {
        self.inner().raft_keep_from.store(segment, std::sync::atomic::Ordering::Release);
    }

    /// Make this node's store write through Raft (none: refuse writes).
    pub fn set_proposer(&self, p: Option<std::sync::Arc<dyn super::Proposer>>) {
        *self.inner().proposer.write() = p;
    }
}

/// The dictionaries an entry's data frames carry: a leader learns them when the
/// entry applies (its batch did not add them to the readers' set).
fn learn_dicts(w: &super::writer::Writer, data: &[u8]) -> Result<()> {
    for (h, from) in scan_data(0, data).map_err(Error::Replication)? {
        if h.kind == FrameKind::Dict {
            let d = crate::codec::docz::decode_dict(&data[from..from + h.len as usize])
                .map_err(|e| Error::Replication(format!("a dictionary in an entry: {}", e.what)))?;
            w.reader.dicts.add(std::sync::Arc::new(d));
        }
    }
    Ok(())
}

/// Before the log is sealed: a batch whose entry was never written leaves it
/// (sealed, its reserved zeros would read as damage below the durable mark).
pub(crate) fn drop_unappended(w: &mut super::writer::Writer) -> Result<()> {
    if let Some(s) = w.spec.take_if(|s| s.appended.is_none()) {
        w.mark_dirty();
        if let Some(log) = w.log.as_mut() {
            log.truncate_to(s.at, s.seq)?;
            log.release_rotation();
        }
        w.reader.forget_from(s.at.segment);
    }
    Ok(())
}
