//! The import's external sort: index entries are sorted in runs, each spilled to a
//! temp file (through the file-system trait) but the last, kept in memory; the
//! runs are then merged into one index file written piece by piece
//! ([`super::spill_build`]), so that memory holds a run at a time, never the
//! whole import.
//!
//! A run is a sequence of records, in listing order (project, then `ts` and
//! `order_seq` descending); a record is 64 bytes plus 4 per tag:
//!
//! ```text
//! u32 project, u32 tags, u64 local, u64 ts, u64 order_seq, u64 loc, i64 priority,
//! u32 state, u32 unique (term id + 1, 0: none), u32 close_reason (same), u32 0,
//! tags × u32 term id
//! ```
//!
//! Term ids name the run file's strings (tags, `unique`, `close_reason` values),
//! kept in memory. The file is a `.tmp` file: open removes it if a crash left it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::DocEntry;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};
use crate::hash::FastMap;

/// Fixed part of a run record.
pub(crate) const REC: usize = 64;
/// Bytes written at once.
const WRITE_BLOCK: usize = 4 << 20;

/// Sorted runs of index entries in a temp file.
pub struct Runs {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn FsFile>,
    /// Byte ranges of the runs in the file.
    pub(crate) runs: Vec<(u64, u64)>,
    /// Per run, where each of its projects' records start (file offsets, ascending).
    pub(crate) starts: Vec<Vec<(u32, u64)>>,
    end: u64,
    /// Entries spilled per project (every version, superseded ones too).
    pub(crate) per_project: FastMap<u32, u64>,
    ids: FastMap<Arc<str>, u32>,
    pub(crate) names: Vec<Arc<str>>,
    buf: Vec<u8>,
    /// The next run's records in arrival order (kept between runs: no fresh
    /// pages each run), and their listing-order keys and offsets in `staged`.
    staged: Vec<u8>,
    order: Vec<(u32, u64, u64, usize)>,
    /// The last run when kept in memory, and the offset it stands for.
    kept: Vec<u8>,
    kept_at: u64,
}

/// Keys of which an import holds more than one version: the newest version's
/// `order_seq`, and how many versions there are. Only the newest is indexed.
pub type Repeats = FastMap<(u32, u64), (u64, u32)>;

impl Runs {
    /// A new, empty run file at `path` (replacing a leftover of that name).
    pub fn create(fs: Arc<dyn FileSystem>, path: &Path) -> Result<Runs> {
        let err = |e| Error::io("spill", path, e);
        if fs.exists(path).map_err(err)? {
            fs.remove_file(path).map_err(err)?;
        }
        let file = fs.open(path, OpenMode::CreateNew).map_err(err)?;
        Ok(Runs {
            fs,
            path: path.to_path_buf(),
            file,
            runs: Vec::new(),
            starts: Vec::new(),
            end: 0,
            per_project: FastMap::default(),
            ids: FastMap::default(),
            names: Vec::new(),
            buf: Vec::with_capacity(WRITE_BLOCK + (1 << 16)),
            staged: Vec::new(),
            order: Vec::new(),
            kept: Vec::new(),
            kept_at: u64::MAX,
        })
    }

    fn id(&mut self, s: &Arc<str>) -> u32 {
        if let Some(id) = self.ids.get(&**s) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.clone());
        self.ids.insert(s.clone(), id);
        id
    }

    /// Sort `docs` into listing order and append them to the file as one run.
    pub fn add_run(&mut self, docs: Vec<DocEntry>) -> Result<()> {
        self.stage(docs);
        self.write_run()
    }

    /// Entries staged for the next run.
    pub fn staged(&self) -> usize {
        self.order.len()
    }

    /// Make the run records of `docs` (the next run's, after those staged
    /// already), in the order they came: their memory, and their tag lists',
    /// read in order (reading the entries in listing order missed the cache
    /// twice an entry). [`Runs::write_run`] sorts and writes them.
    pub fn stage(&mut self, docs: Vec<DocEntry>) {
        let mut staged = std::mem::take(&mut self.staged);
        staged.reserve(docs.len() * (REC + 8));
        self.order.reserve(docs.len());
        // Term ids of the tag lists of `docs`, by list: the parse shares one list
        // among the jobs that have the same tags, and every list here is alive
        // until the records are made, so its address names it (within this call
        // only: a later call's lists may lie where these did).
        let mut lists: FastMap<usize, (usize, usize)> = FastMap::default();
        let mut list_ids: Vec<u32> = Vec::new();
        // The same for single strings (close_reason and unique values).
        let mut words: FastMap<usize, u32> = FastMap::default();
        let mut word =
            |runs: &mut Runs, s: &Arc<str>| -> u32 { *words.entry(s.as_ptr() as usize).or_insert_with(|| runs.id(s)) };
        for d in &docs {
            let at = staged.len();
            self.order.push((d.project, !d.ts, !d.order_seq, at));
            staged.resize(at + REC, 0);
            let unique = d.unique.as_ref().map_or(0, |u| word(self, u) + 1);
            let close = d.close_reason.as_ref().map_or(0, |c| word(self, c) + 1);
            // A running version's token (a name like the others; tokens rarely repeat).
            let token = d.token.as_ref().filter(|_| d.state == crate::model::JobState::Running);
            let token = token.map_or(0, |k| self.id(k) + 1);
            let r = &mut staged[at..at + REC];
            LE::write_u32(&mut r[0..4], d.project);
            LE::write_u32(&mut r[4..8], d.tags.len() as u32);
            LE::write_u64(&mut r[8..16], d.local);
            LE::write_u64(&mut r[16..24], d.ts);
            LE::write_u64(&mut r[24..32], d.order_seq);
            LE::write_u64(&mut r[32..40], d.loc);
            LE::write_i64(&mut r[40..48], d.priority);
            LE::write_u32(&mut r[48..52], d.state as u32);
            LE::write_u32(&mut r[52..56], unique);
            LE::write_u32(&mut r[56..60], close);
            LE::write_u32(&mut r[60..64], token);
            let key = d.tags.as_ptr() as usize;
            let (from, to) = match lists.get(&key) {
                Some(r) => *r,
                None => {
                    let from = list_ids.len();
                    for t in d.tags.iter() {
                        let id = self.id(t);
                        list_ids.push(id);
                    }
                    lists.insert(key, (from, list_ids.len()));
                    (from, list_ids.len())
                }
            };
            for id in &list_ids[from..to] {
                staged.extend_from_slice(&id.to_le_bytes());
            }
        }
        self.staged = staged;
    }

    /// Sort the staged records into listing order and append them to the file
    /// as one run (none when nothing is staged).
    pub fn write_run(&mut self) -> Result<()> {
        self.sort_run(false)
    }

    /// Sort the staged records into listing order as the last run, kept in
    /// memory: the merge reads it from there (it follows the file's runs at the
    /// offsets it would have had). Nothing is staged or written after it.
    pub fn keep_last_run(&mut self) {
        debug_assert!(self.kept.is_empty(), "one run is kept in memory, the last");
        // In memory nothing fails.
        let _ = self.sort_run(true);
        self.done_adding();
    }

    fn sort_run(&mut self, keep: bool) -> Result<()> {
        if self.order.is_empty() {
            return Ok(());
        }
        let (mut order, staged) = (std::mem::take(&mut self.order), std::mem::take(&mut self.staged));
        order.sort_unstable();
        let start = self.end;
        self.buf.clear();
        // Runs are sorted by project: count a project's entries at its end.
        let mut counted: Option<(u32, u64)> = None;
        let mut starts = Vec::new();
        for &(project, _, _, at) in &order {
            counted = match counted {
                Some((p, n)) if p == project => Some((p, n + 1)),
                other => {
                    if let Some((p, n)) = other {
                        *self.per_project.entry(p).or_default() += n;
                    }
                    starts.push((project, self.end + self.buf.len() as u64));
                    Some((project, 1))
                }
            };
            let len = REC + 4 * LE::read_u32(&staged[at + 4..at + 8]) as usize;
            self.buf.extend_from_slice(&staged[at..at + len]);
            if self.buf.len() >= WRITE_BLOCK && !keep {
                self.flush()?;
            }
        }
        if let Some((p, n)) = counted {
            *self.per_project.entry(p).or_default() += n;
        }
        if keep {
            self.kept_at = self.end;
            self.kept = std::mem::take(&mut self.buf);
            self.end += self.kept.len() as u64;
        } else {
            self.flush()?;
        }
        self.runs.push((start, self.end - start));
        self.starts.push(starts);
        // Kept for the next run: no fresh pages each run.
        (self.order, self.staged) = (order, staged);
        self.order.clear();
        self.staged.clear();
        Ok(())
    }

    /// Free the buffers of adding runs (none is added after).
    fn done_adding(&mut self) {
        self.staged = Vec::new();
        self.order = Vec::new();
        self.buf = Vec::new();
    }

    /// Fill `dst` with the runs' bytes from offset `at`: from the file, or from
    /// the run kept in memory.
    fn read_at(&self, dst: &mut [u8], at: u64) -> Result<()> {
        let Some(off) = at.checked_sub(self.kept_at) else {
            return fs::read_exact_at(&*self.file, dst, at).map_err(|e| Error::io("spill", &self.path, e));
        };
        let src = usize::try_from(off).ok().and_then(|o| self.kept.get(o..o.checked_add(dst.len())?));
        dst.copy_from_slice(src.ok_or_else(|| Error::corrupt(&self.path, at, "a read past the run kept in memory"))?);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        fs::write_all_at(&*self.file, &self.buf, self.end).map_err(|e| Error::io("spill", &self.path, e))?;
        self.end += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Entries per project that the index holds: one per key.
    pub(crate) fn kept_per_project(&self, repeats: &Repeats) -> FastMap<u32, u64> {
        let mut n = self.per_project.clone();
        for ((project, _), (_, versions)) in repeats {
            if let Some(c) = n.get_mut(project) {
                *c = c.saturating_sub(u64::from(*versions) - 1);
            }
        }
        n
    }

    /// Remove the run file (what a crash leaves, open removes).
    pub fn discard(self) {
        let Runs { fs, path, file, .. } = self;
        drop(file);
        let _ = fs.remove_file(&path);
    }
}

/// One run being read back, a block at a time.
pub(crate) struct Cursor {
    at: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

/// Bytes read from a run at once.
const READ_BLOCK: usize = 1 << 20;

impl Cursor {
    pub fn new((start, len): (u64, u64)) -> Cursor {
        Cursor { at: start, end: start + len, buf: Vec::new(), pos: 0 }
    }

    /// The records of run `i` of the projects in `lo..hi` (nothing past them is
    /// read: a run's blocks are read once over all the ranges).
    pub fn of_projects(runs: &Runs, i: usize, (lo, hi): (u64, u64)) -> Cursor {
        let (start, len) = runs.runs[i];
        let first_from =
            |bound: u64| runs.starts[i].iter().find(|(p, _)| u64::from(*p) >= bound).map_or(start + len, |(_, at)| *at);
        let (at, end) = (first_from(lo), first_from(hi));
        Cursor::new((at, end.max(at) - at))
    }

    /// Make at least `need` bytes available from `pos`; false at the run's end.
    fn fill(&mut self, runs: &Runs, need: usize) -> Result<bool> {
        let have = self.buf.len() - self.pos;
        if have >= need {
            return Ok(true);
        }
        let left = self.end - self.at;
        if (have as u64) + left < need as u64 {
            if have == 0 && left == 0 {
                return Ok(false);
            }
            return Err(Error::corrupt(&runs.path, self.at, "a run ends inside a record"));
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let take = (need - have).max(READ_BLOCK).min(left as usize);
        let at = self.buf.len();
        self.buf.resize(at + take, 0);
        runs.read_at(&mut self.buf[at..], self.at)?;
        self.at += take as u64;
        Ok(true)
    }

    /// The next record's bytes, without consuming it; `None` at the end.
    pub fn peek(&mut self, runs: &Runs) -> Result<Option<&[u8]>> {
        if !self.fill(runs, REC)? {
            return Ok(None);
        }
        let tags = LE::read_u32(&self.buf[self.pos + 4..self.pos + 8]) as usize;
        let len = REC + 4 * tags;
        if !self.fill(runs, len)? {
            return Err(Error::corrupt(&runs.path, self.at, "a run ends inside a record"));
        }
        Ok(Some(&self.buf[self.pos..self.pos + len]))
    }

    /// Step past the record [`Cursor::peek`] gave.
    pub fn advance(&mut self, len: usize) {
        self.pos += len;
    }
}

/// The listing-order key of a record: merged runs come out in this order.
pub(crate) fn order_of(r: &[u8]) -> (u32, u64, u64) {
    (LE::read_u32(&r[0..4]), !LE::read_u64(&r[16..24]), !LE::read_u64(&r[24..32]))
}
