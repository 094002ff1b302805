//! The segment being appended to, shared by the log writer (appends, under the
//! writer lock) and the group-commit leader (fdatasync, outside it), and the
//! durable mark it keeps ([`super::mark`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::mark::{self, Mark};
use super::segment::SegmentHeader;
use crate::error::{Error, Result};
use crate::fs::FsFile;

/// What is known of the segment's durability.
#[derive(Clone, Copy, Debug)]
struct Marks {
    /// Epoch of the newest mark written (0: none).
    epoch: u64,
    /// What that mark says: (end, next sequence number).
    marked: (u64, u64),
    /// What the last successful fdatasync covered.
    synced: (u64, u64),
    /// When a sync last found the segment at its path ([`Tail::at_home`]).
    home_seen: Option<std::time::Instant>,
}

/// How often syncs look whether the data directory is still where it was.
const HOME_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The tail segment.
#[derive(Debug)]
pub struct Tail {
    pub file: Arc<dyn FsFile>,
    pub path: PathBuf,
    pub header: SegmentHeader,
    marks: Mutex<Marks>,
}

impl Tail {
    /// A segment whose durable part ends at `synced` (its data start when new),
    /// with `last` its newest mark on disk.
    pub fn new(file: Arc<dyn FsFile>, path: PathBuf, header: SegmentHeader, last: Option<Mark>) -> Tail {
        let start = (header.data_start(), header.first_seq);
        let marks = match last {
            Some(m) => Marks {
                epoch: m.epoch,
                marked: (m.durable_end, m.next_seq),
                synced: (m.durable_end, m.next_seq),
                home_seen: None,
            },
            None => Marks { epoch: 0, marked: start, synced: start, home_seen: None },
        };
        Tail { file, path, header, marks: Mutex::new(marks) }
    }

    /// Open an existing segment to continue it: its newest mark is read back.
    pub fn open(file: Arc<dyn FsFile>, path: &Path, header: SegmentHeader) -> Result<Tail> {
        let last = if header.has_marks() { mark::read(&*file, path, header.number, header.generation)? } else { None };
        Ok(Tail::new(file, path.to_path_buf(), header, last))
    }

    /// fdatasync, making every byte written so far durable; `(end, next_seq)` is
    /// where the log stood when the caller asked. Before it, the mark of what the
    /// previous sync made durable is written, so this sync makes the mark durable
    /// too: a mark never claims bytes that were not durable.
    pub fn sync(&self, end: u64, next_seq: u64) -> Result<()> {
        let mut m = self.marks.lock();
        // Two stat calls cost a fifth of 32 writers' rate when made at every sync.
        if m.home_seen.is_none_or(|t| t.elapsed() >= HOME_EVERY) {
            self.at_home()?;
            m.home_seen = Some(std::time::Instant::now());
        }
        if self.header.has_marks() && m.synced.0 > m.marked.0 {
            let at = m.synced;
            self.write_mark(&mut m, at)?;
        }
        self.file.sync_data().map_err(|e| Error::io("fdatasync", &self.path, e))?;
        if end > m.synced.0 {
            m.synced = (end, next_seq);
        }
        Ok(())
    }

    /// A data directory moved or replaced under the store: its next files would
    /// be made in whatever now has its name (another store). An error, as a
    /// failed sync (the store is poisoned): what was written stays in the file.
    pub fn at_home(&self) -> Result<()> {
        if self.file.still_at(&self.path).map_err(|e| Error::io("stat", &self.path, e))? {
            return Ok(());
        }
        let why = "the data directory was moved or replaced while the store was open (this segment is no longer \
                   at its path): writes stop; restart on the directory that holds the store";
        Err(Error::io("fdatasync", &self.path, std::io::Error::other(why)))
    }

    /// Make the mark name everything synced (for a clean close): write it and
    /// fdatasync once more.
    pub fn seal_mark(&self) -> Result<()> {
        let mut m = self.marks.lock();
        if !self.header.has_marks() || m.marked.0 >= m.synced.0 {
            return Ok(());
        }
        let at = m.synced;
        self.write_mark(&mut m, at)?;
        self.file.sync_data().map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    /// The end of what the last sync made durable, and the sequence number there.
    pub fn synced(&self) -> (u64, u64) {
        self.marks.lock().synced
    }

    /// Before the log is cut back to `end` (an import undone, a salvage): when a
    /// mark claims more, both slots are rewritten to `end` and synced first, so no
    /// crash leaves a mark past the end of the log.
    pub fn lower_marks(&self, end: u64, next_seq: u64) -> Result<()> {
        let mut m = self.marks.lock();
        if m.synced.0 > end {
            m.synced = (end, next_seq);
        }
        // A mark at `end` that says another next sequence number is rewritten too.
        if !self.header.has_marks() || m.marked.0 < end || m.marked == (end, next_seq) {
            return Ok(());
        }
        for _ in 0..2 {
            self.write_mark(&mut m, (end, next_seq))?;
        }
        self.file.sync_data().map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    fn write_mark(&self, m: &mut Marks, at: (u64, u64)) -> Result<()> {
        let next = Mark { epoch: m.epoch + 1, durable_end: at.0, next_seq: at.1 };
        mark::write(&*self.file, &self.path, self.header.number, self.header.generation, &next)?;
        m.epoch = next.epoch;
        m.marked = at;
        Ok(())
    }
}
