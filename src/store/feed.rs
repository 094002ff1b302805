//! The change feed: the job versions written after a log position, in write
//! order, read from the log itself (never by scanning a project's jobs) and only
//! as far as it is durable.
//!
//! A **position** is a log sequence number (format-spec/log.md): every frame uses
//! one or more, a job record exactly one, so a change is named by its record's
//! sequence number. Reading "after position S" reads the frames from the one
//! holding S + 1 up to the feed's limit: the highest sequence number both durable
//! and published (what a snapshot taken now sees). Spider, catalog and commit
//! frames use positions but are no changes; neither are relocated frames (copies
//! online compaction made of current versions) nor import frames whose commit is
//! not within the limit yet (the read stops before them).
//!
//! `prevstate` comes from the record (format 3 names the previous state); records
//! of older formats do not say it, and it is derived from the record alone where
//! that is exact (see [`previous_state`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::version::{find_in_segments, Found};
use super::{Snapshot, Store};
use crate::codec::frame::FrameKind;
use crate::codec::record::{self, JobView, Prev};
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::log::cursor::{FrameAt, LogCursor, Next, Seek};
use crate::model::{JobKey, JobState};
use crate::query::ChangeFilter;

/// Frame bytes one read goes through at most before it answers (with what it
/// found, or nothing, and how far it got).
pub const MAX_SCAN_BYTES: u64 = 16 << 20;

/// One job version the feed reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its position: the record's sequence number.
    pub seq: u64,
    pub key: JobKey,
    pub state: JobState,
    /// The state of the job's previous version; `None` when this one created it.
    pub prevstate: Option<JobState>,
    /// When the job entered `state` (ms since the epoch).
    pub ts: u64,
    pub spider: Arc<str>,
}

/// Where a read ended: every change at or below `seq` was considered. Give it
/// back as [`FeedFrom::Mark`] to read on without looking the position up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedMark {
    pub seq: u64,
    /// The start of the frame holding `seq + 1`, when known.
    at: Option<FrameAt>,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedFrom {
    /// After this position.
    Seq(u64),
    /// Where an earlier read ended.
    Mark(FeedMark),
}

/// What one read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedPage {
    Changes {
        changes: Vec<Change>,
        /// How far the read got: the next read starts after it.
        mark: FeedMark,
        /// The read reached the limit: nothing more is durable yet.
        caught_up: bool,
    },
    /// Changes after the position were removed by compaction: the oldest
    /// position still answerable is `oldest`.
    Gone { oldest: u64 },
}

/// Checks made by one read before it indexes the project's tail (finding a job in
/// the tail walks it; a read of many changes builds a set once instead).
const TAIL_WALKS: usize = 4;

/// Is a job still in the store? A change of a job that is gone is not reported:
/// purged by the retention (its current version a tombstone), or dropped by a
/// compaction. The one place that decides it.
struct Presence<'a> {
    snap: &'a Snapshot,
    project: u32,
    checks: usize,
    /// The state of each of the project's jobs in the snapshot's tail, once built.
    tail: Option<FastMap<u64, JobState>>,
}

impl Presence<'_> {
    fn exists(&mut self, key: JobKey) -> bool {
        let (v, local) = (&self.snap.version, key.local());
        self.checks += 1;
        if self.tail.is_none() && self.checks > TAIL_WALKS {
            let mem = v.mem.project(self.project);
            self.tail = Some(mem.map(|p| p.iter().map(|e| (e.local, e.state)).collect()).unwrap_or_default());
        }
        let in_tail = match &self.tail {
            Some(tail) => tail.get(&local).copied(),
            None => v.mem.project(self.project).and_then(|p| p.iter().find(|e| e.local == local)).map(|e| e.state),
        };
        if let Some(state) = in_tail {
            return state != JobState::Purged;
        }
        match find_in_segments(&v.segments, key.project, local) {
            Some(Found::Segment { slot, doc, .. }) => {
                let purged = v.segments[slot].project(key.project).and_then(|(sec, _)| sec.state(JobState::Purged));
                !purged.is_some_and(|p| p.contains(doc))
            }
            _ => false,
        }
    }
}

/// The state before `v` (at sequence number `seq`): what the record names, or for
/// records that name nothing (formats 1 and 2), what the record alone tells: the
/// same state when the version did not move the job (`order_seq` is older), none
/// when the version holds the time of its own state only (it created the job);
/// else, among the other states the job has a time for, the one entered last
/// (ties: the later state in pending, running, finished, deleted order).
pub(crate) fn previous_state(v: &JobView<'_>, seq: u64) -> Option<JobState> {
    match v.prev {
        Prev::State(s) => Some(s),
        Prev::Created => None,
        Prev::Unrecorded if v.order_seq < seq => Some(v.state),
        Prev::Unrecorded => JobState::ALL
            .into_iter()
            .filter(|s| *s != v.state)
            .filter_map(|s| v.times[s as usize].map(|t| (t, s)))
            .max_by_key(|&(t, s)| (t, s as u8))
            .map(|(_, s)| s),
    }
}

impl Store {
    /// The position a change feed can answer up to now: durable and visible.
    pub fn feed_position(&self) -> u64 {
        self.inner().commit.durable_seq().min(self.inner().commit.published().seq)
    }

    /// Call `hook` with the new durable position after each group commit (and
    /// each other sync): what a waiting feed parks on.
    pub fn on_durable(&self, hook: super::commit::DurableHook) {
        self.inner().commit.on_durable(hook);
    }

    /// The changes of `project` after `from` that pass `filter`: at most `count`,
    /// and at most [`MAX_SCAN_BYTES`] of frames read. A position ahead of the log
    /// is refused (`since`, 400).
    pub fn changes(&self, project: u32, from: FeedFrom, filter: &ChangeFilter, count: usize) -> Result<FeedPage> {
        self.changes_scanning(project, from, filter, count, MAX_SCAN_BYTES)
    }

    /// [`Store::changes`], reading at most about `scan_bytes` of frames (at least
    /// one frame): a small budget keeps a read short enough to run where blocking
    /// is unwelcome (a resumed read of what was just written, from the page cache).
    pub fn changes_scanning(
        &self,
        project: u32,
        from: FeedFrom,
        filter: &ChangeFilter,
        count: usize,
        scan_bytes: u64,
    ) -> Result<FeedPage> {
        match self.changes_once(project, from, filter, count, scan_bytes) {
            // Online compaction removed a segment the read was about to open: read
            // again from the log as it is now (the position is gone, or readable).
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                self.changes_once(project, from, filter, count, scan_bytes)
            }
            r => r,
        }
    }

    fn changes_once(
        &self,
        project: u32,
        from: FeedFrom,
        filter: &ChangeFilter,
        count: usize,
        scan_bytes: u64,
    ) -> Result<FeedPage> {
        let snap = self.snapshot();
        let limit = self.inner().commit.durable_seq().min(snap.seq());
        let since = match from {
            FeedFrom::Seq(s) | FeedFrom::Mark(FeedMark { seq: s, .. }) => s,
        };
        if since > limit {
            return Err(Error::field("since", format!("{since} is ahead of the log (its newest position is {limit})")));
        }
        let idle = match from {
            FeedFrom::Mark(m) => m,
            FeedFrom::Seq(seq) => FeedMark { seq, at: None },
        };
        if since == limit {
            return Ok(FeedPage::Changes { changes: Vec::new(), mark: idle, caught_up: true });
        }
        let inner = self.inner();
        let (fs, dir) = (&*inner.opts.fs, &*inner.gen_dir);
        let resumed = match from {
            FeedFrom::Mark(FeedMark { at: Some(at), .. }) => inner.feed.resume(fs, dir, at, limit)?,
            _ => None,
        };
        let cursor = match resumed {
            Some(c) => c,
            None => match inner.feed.seek(fs, dir, since + 1, limit)? {
                Seek::At(c) => c,
                Seek::Gone { first_seq } => return Ok(FeedPage::Gone { oldest: first_seq - 1 }),
            },
        };
        // Even a read of nothing says when `since` is gone (410), as any other would.
        if count == 0 {
            return Ok(FeedPage::Changes { changes: Vec::new(), mark: idle, caught_up: false });
        }
        let presence = Presence { snap: &snap, project, checks: 0, tail: None };
        let read = Read {
            snap: &snap,
            presence,
            dir,
            project,
            filter,
            count,
            scan_bytes,
            spiders: HashMap::new(),
            changes: Vec::new(),
        };
        read.run(cursor, since, &inner.feed)
    }
}

/// One read of the feed.
struct Read<'a> {
    snap: &'a Snapshot,
    presence: Presence<'a>,
    /// The generation's directory (for errors).
    dir: &'a std::path::Path,
    project: u32,
    filter: &'a ChangeFilter,
    count: usize,
    scan_bytes: u64,
    spiders: HashMap<u32, Arc<str>>,
    changes: Vec<Change>,
}

impl Read<'_> {
    fn run(mut self, mut c: LogCursor<'_>, since: u64, index: &crate::log::cursor::SeqIndex) -> Result<FeedPage> {
        let mut pos = since;
        let mut scanned = 0u64;
        let (at, caught_up) = loop {
            // Between frames: `pos` is the last position of the frame read last.
            if scanned >= self.scan_bytes {
                break (Some(c.at()), false);
            }
            let frame_at = c.at();
            let f = match c.next_frame()? {
                Next::Frame(f) => f,
                Next::End => {
                    index.note_end(c.at());
                    pos = c.at().seq - 1;
                    break (Some(c.at()), true);
                }
                // The rest was removed meanwhile: the next read finds out where the log starts.
                Next::Vanished => break (None, false),
            };
            let h = f.header;
            scanned += h.frame_len();
            if h.kind != FrameKind::Jobs || h.is_relocation() {
                pos = h.last_seq();
                continue;
            }
            if h.is_txn() && !c.txn_committed(&h)? {
                // Its commit is not durable yet: nothing after it can be answered.
                break (Some(frame_at), true);
            }
            let bad = |e: crate::codec::DecodeError| {
                let at = f.pos.offset + crate::codec::frame::HEADER_LEN as u64 + e.offset as u64;
                Error::corrupt(self.dir.join(crate::log::segment::file_name(f.pos.segment)), at, e.what)
            };
            let records = record::decode_jobs(c.payload(&f), h.count).map_err(bad)?;
            for (i, (off, mut v)) in records.into_iter().enumerate() {
                let seq = h.first_seq + i as u64;
                if seq <= pos {
                    continue;
                }
                pos = seq;
                v.unpack(&self.snap.reader.dicts)
                    .map_err(|e| bad(crate::codec::DecodeError::new(off + e.offset, e.what)))?;
                let v = &v;
                if let Some(change) = self.change(v, seq) {
                    self.changes.push(change);
                    if self.changes.len() >= self.count {
                        let at = if seq == h.last_seq() { c.at() } else { frame_at };
                        return Ok(self.page(pos, Some(at), false));
                    }
                }
            }
        };
        Ok(self.page(pos, at, caught_up))
    }

    fn page(self, seq: u64, at: Option<FrameAt>, caught_up: bool) -> FeedPage {
        FeedPage::Changes { changes: self.changes, mark: FeedMark { seq, at }, caught_up }
    }

    /// The change `v` (at `seq`) is, when it is one the read reports.
    fn change(&mut self, v: &JobView<'_>, seq: u64) -> Option<Change> {
        if v.key.project != self.project {
            return None;
        }
        let spider = match self.spiders.get(&v.key.spider) {
            Some(name) => name.clone(),
            None => {
                let name = self.snap.spider_name(self.project, v.key.spider).unwrap_or_else(|| Arc::from(""));
                self.spiders.insert(v.key.spider, name.clone());
                name
            }
        };
        if !self.filter.matches(v, &spider) || !self.presence.exists(v.key) {
            return None;
        }
        Some(Change { seq, key: v.key, state: v.state, prevstate: previous_state(v, seq), ts: v.ts(), spider })
    }
}
