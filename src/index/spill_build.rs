//! Merging sorted runs ([`super::spill`]) into one index file, written piece by
//! piece: the same bytes [`super::build::build`] makes from the same entries, in
//! memory bounded by a section's postings, key table and packed columns.
//!
//! The file is written to `<name>.tmp`, fsynced, renamed and its directory
//! fsynced: the caller calls this only once the log under the index is durable.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use byteorder::{ByteOrder, LittleEndian as LE};

use super::build::{encode_tail, encode_terms, sort_terms, Columns, EncodedTerm};
use super::format::{self, field, DirEntry, SegmentMeta};
use super::spill::{order_of, Cursor, Repeats, Runs};
use crate::codec::docz::Dict;
use crate::codec::frame::mask_crc;
use crate::codec::record::SpiderEntry;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, FsFile, OpenMode};
use crate::hash::FastMap;
use crate::in_order::InOrder;
use crate::model::JobState;

/// Where sections are written: the index file, or memory (a piece built on a
/// builder thread, written in file order later; a section's bytes do not
/// depend on where it lies). Failures name the file.
struct Out<'a> {
    file: Option<&'a dyn FsFile>,
    mem: RefCell<Vec<u8>>,
    path: &'a Path,
}

impl Out<'_> {
    fn write(&self, bytes: &[u8], at: u64) -> Result<()> {
        match self.file {
            Some(f) => fs::write_all_at(f, bytes, at).map_err(|e| Error::io("publish index", self.path, e)),
            None => {
                let mut m = self.mem.borrow_mut();
                let (at, end) = (at as usize, at as usize + bytes.len());
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[at..end].copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Docs an index holds at least before it is built in pieces on two threads.
const SPLIT_DOCS: u64 = 1 << 16;

/// One project's section while its docs stream in (listing order).
struct Section {
    project: u32,
    /// Docs the section holds (known before the first one comes).
    n: u64,
    /// Offset of the section in the file.
    base: u64,
    docs: u32,
    cols: Columns,
    state: [Vec<u32>; 5],
    spider: FastMap<u32, Vec<u32>>,
    priority: FastMap<i64, Vec<u32>>,
    tag: FastMap<u32, Vec<u32>>,
    unique: FastMap<u32, Vec<u32>>,
    close_reason: FastMap<u32, Vec<u32>>,
    token: FastMap<u32, Vec<u32>>,
}

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

impl Section {
    fn new(project: u32, n: u64, base: u64) -> Section {
        Section {
            project,
            n,
            base,
            docs: 0,
            cols: Columns::new(n as usize),
            state: Default::default(),
            spider: FastMap::default(),
            priority: FastMap::default(),
            tag: FastMap::default(),
            unique: FastMap::default(),
            close_reason: FastMap::default(),
            token: FastMap::default(),
        }
    }

    /// Add the next doc (a run record).
    fn push(&mut self, r: &[u8], out: &Out<'_>) -> Result<()> {
        if u64::from(self.docs) >= self.n {
            return Err(Error::corrupt(out.path, self.base, "a section holds more docs than counted"));
        }
        let doc = self.docs;
        self.docs += 1;
        let local = LE::read_u64(&r[8..16]);
        self.cols.push(LE::read_u64(&r[16..24]), LE::read_u64(&r[24..32]), local, LE::read_u64(&r[32..40]));
        let state = LE::read_u32(&r[48..52]);
        let active = JobState::from_code(state as u8).is_some_and(|s| s.is_active());
        if let Some(list) = self.state.get_mut(state as usize) {
            list.push(doc);
        }
        self.spider.entry((local >> 32) as u32).or_default().push(doc);
        self.priority.entry(LE::read_i64(&r[40..48])).or_default().push(doc);
        let tags = LE::read_u32(&r[4..8]) as usize;
        for t in 0..tags {
            let id = LE::read_u32(&r[64 + 4 * t..68 + 4 * t]);
            let list = self.tag.entry(id).or_default();
            if list.last() != Some(&doc) {
                list.push(doc);
            }
        }
        let unique = LE::read_u32(&r[52..56]);
        if unique > 0 && active {
            self.unique.entry(unique - 1).or_default().push(doc);
        }
        let close = LE::read_u32(&r[56..60]);
        if close > 0 {
            self.close_reason.entry(close - 1).or_default().push(doc);
        }
        let token = LE::read_u32(&r[60..64]);
        if token > 0 && state == JobState::Running as u32 {
            self.token.entry(token - 1).or_default().push(doc);
        }
        Ok(())
    }

    /// Write the rest of the section; its directory entry.
    fn finish(mut self, names: &[std::sync::Arc<str>], out: &Out<'_>) -> Result<DirEntry> {
        if u64::from(self.docs) != self.n {
            return Err(Error::corrupt(out.path, self.base, "a section holds fewer docs than counted"));
        }
        let name = |id: u32| names.get(id as usize).map_or(&[][..], |s| s.as_bytes()).to_vec();
        let mut terms: Vec<(EncodedTerm, Vec<u32>)> = Vec::new();
        for (code, list) in std::mem::take(&mut self.state).into_iter().enumerate() {
            if !list.is_empty() {
                terms.push(((field::STATE, vec![code as u8]), list));
            }
        }
        terms.extend(self.spider.drain().map(|(s, l)| ((field::SPIDER, s.to_le_bytes().to_vec()), l)));
        terms.extend(self.tag.drain().map(|(t, l)| ((field::TAG, name(t)), l)));
        terms.extend(self.priority.drain().map(|(p, l)| ((field::PRIORITY, p.to_le_bytes().to_vec()), l)));
        terms.extend(self.unique.drain().map(|(u, l)| ((field::UNIQUE, name(u)), l)));
        terms.extend(self.close_reason.drain().map(|(c, l)| ((field::CLOSE_REASON, name(c)), l)));
        terms.extend(self.token.drain().map(|(k, l)| ((field::TOKEN, name(k)), l)));
        sort_terms(&mut terms);
        // The header, the columns and their padding, then the dictionary: written
        // in file order, the CRC taken as they go (nothing is read back).
        let mut crc = crc32fast::Hasher::new();
        let mut at = self.base;
        let cols = std::mem::replace(&mut self.cols, Columns::new(0));
        cols.finish(self.project, terms.len(), &mut |piece| {
            crc.update(piece);
            out.write(piece, at)?;
            at += piece.len() as u64;
            Ok(())
        })?;
        let dict_at = at - self.base;
        let tail = encode_terms(&terms, dict_at);
        crc.update(&tail);
        out.write(&tail, at)?;
        let len = dict_at + tail.len() as u64;
        Ok(DirEntry {
            project: self.project,
            docs: self.n as u32,
            offset: self.base,
            len,
            crc: mask_crc(crc.finalize()),
        })
    }
}

/// Merge the runs into the index file `meta` names, in `dir`: written to a temp
/// file, fsynced, renamed, the directory fsynced. Only the newest version of a
/// key `repeats` names is indexed. The run file is removed in any case.
pub fn build_file(
    runs: Runs,
    repeats: &Repeats,
    meta: SegmentMeta,
    catalog: &[SpiderEntry],
    dicts: &[Arc<Dict>],
    dir: &Path,
) -> Result<PathBuf> {
    build_file_with(runs, repeats, meta, catalog, dicts, dir, SPLIT_DOCS)
}

/// [`build_file`], on two threads from `split_docs` docs on.
fn build_file_with(
    runs: Runs,
    repeats: &Repeats,
    meta: SegmentMeta,
    catalog: &[SpiderEntry],
    dicts: &[Arc<Dict>],
    dir: &Path,
    split_docs: u64,
) -> Result<PathBuf> {
    let fsys = runs.fs.clone();
    let name = meta.file_name();
    let (path, tmp) = (dir.join(&name), dir.join(format!("{name}.tmp")));
    let written = write_file(&runs, repeats, meta, catalog, dicts, &*fsys, &tmp, split_docs);
    runs.discard();
    if written.is_err() {
        // Not left to fill a full disk: the file is nobody's yet.
        let _ = fsys.remove_file(&tmp);
    }
    written?;
    crate::crashpoint::hit("publish_before_rename");
    fsys.rename(&tmp, &path).map_err(|e| Error::io("publish index", &path, e))?;
    // IMPORTANT: fsync folder, or the rename may be lost on power failure.
    fsys.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))?;
    Ok(path)
}

#[allow(clippy::too_many_arguments)]
fn write_file(
    runs: &Runs,
    repeats: &Repeats,
    meta: SegmentMeta,
    catalog: &[SpiderEntry],
    dicts: &[Arc<Dict>],
    fsys: &dyn FileSystem,
    tmp: &Path,
    split_docs: u64,
) -> Result<()> {
    let err = |e| Error::io("publish index", tmp, e);
    if fsys.exists(tmp).map_err(err)? {
        fsys.remove_file(tmp).map_err(err)?;
    }
    let file = fsys.open(tmp, OpenMode::CreateNew).map_err(err)?;
    let counts = runs.kept_per_project(repeats);
    let total: u64 = counts.values().sum();
    let mut projects: Vec<(u32, u64)> = counts.iter().map(|(p, n)| (*p, *n)).collect();
    projects.sort_unstable();
    let pieces = piece_bounds(&projects, total, if total >= split_docs { PIECES } else { 1 });
    let (dir, end) = build_pieces(runs, repeats, &counts, &pieces, &*file, tmp)?;
    let first = Out { file: Some(&*file), mem: RefCell::default(), path: tmp };
    let head = format::encode_header(&SegmentMeta { docs: total, ..meta });
    first.write(&encode_tail(end, &head, &dir, catalog, dicts), end)?;
    first.write(&head, 0)?;
    file.sync_data().map_err(err)
}

/// Pieces such an index is built in (an import's, a big merge's), on two threads.
const PIECES: u64 = 16;

/// Consecutive ranges of whole projects (`lo..hi`, ids as u64 so that the last
/// range's end, 2^32, lies past every project), each about `total / pieces` docs.
fn piece_bounds(projects: &[(u32, u64)], total: u64, pieces: u64) -> Vec<(u64, u64)> {
    let target = total.div_ceil(pieces.max(1)).max(1);
    let (mut out, mut lo, mut docs) = (Vec::new(), 0u64, 0u64);
    for (p, n) in projects {
        docs += n;
        if docs >= target {
            out.push((lo, u64::from(*p) + 1));
            (lo, docs) = (u64::from(*p) + 1, 0);
        }
    }
    match out.last_mut() {
        Some(last) if docs == 0 => last.1 = ALL_PROJECTS,
        _ => out.push((lo, ALL_PROJECTS)),
    }
    out
}

/// Past every project id.
const ALL_PROJECTS: u64 = 1 << 32;

/// Build the sections of `pieces` after the header: one piece in this thread,
/// straight into `file`; more on two builder threads, the first piece straight
/// into `file`, the others in memory, written here in file order as they come
/// (the serial tail is the last piece). The directory and where the last section ends.
fn build_pieces(
    runs: &Runs,
    repeats: &Repeats,
    counts: &FastMap<u32, u64>,
    pieces: &[(u64, u64)],
    file: &dyn FsFile,
    tmp: &Path,
) -> Result<(Vec<DirEntry>, u64)> {
    let head_len = format::HEADER_LEN as u64;
    let to_file = || Out { file: Some(file), mem: RefCell::default(), path: tmp };
    if pieces.len() == 1 {
        return merge_projects(runs, repeats, counts, pieces[0], &to_file(), head_len);
    }
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Built)>();
    std::thread::scope(|scope| {
        let builders: Vec<_> = (0..2)
            .map(|_| {
                let (tx, next) = (tx.clone(), &next);
                scope.spawn(move || loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(range) = pieces.get(k) else { return };
                    let (out, start) = match k {
                        0 => (to_file(), head_len),
                        _ => (Out { file: None, mem: RefCell::default(), path: tmp }, 0),
                    };
                    let built = merge_projects(runs, repeats, counts, *range, &out, start);
                    let failed = built.is_err();
                    if tx.send((k, built.map(|b| (b, out.mem.into_inner())))).is_err() || failed {
                        next.store(pieces.len(), Ordering::Relaxed);
                        return;
                    }
                })
            })
            .collect();
        drop(tx);
        let written = write_in_order(&rx, pieces.len(), &to_file(), head_len);
        // The builders stop at their next piece once `rx` is gone.
        drop(rx);
        // Every builder joined (a panic in one is an error, not the scope's panic).
        let stopped = builders.into_iter().map(|b| b.join()).filter(Result::is_err).count() > 0;
        match (written, stopped) {
            (Err(e), _) => Err(e),
            (Ok(_), true) => Err(Error::corrupt(tmp, 0, "an index builder stopped")),
            (Ok(built), false) => Ok(built),
        }
    })
}

/// A piece built: its directory entries and end, and its bytes (empty for piece
/// 0, built straight into the file).
type Built = Result<((Vec<DirEntry>, u64), Vec<u8>)>;

/// Receive the `n` built pieces and write them one after the other from
/// `start` on (piece 0 is in the file already, from `start`).
fn write_in_order(
    rx: &mpsc::Receiver<(usize, Built)>,
    n: usize,
    out: &Out<'_>,
    start: u64,
) -> Result<(Vec<DirEntry>, u64)> {
    let (mut dir, mut end) = (Vec::new(), start);
    let mut pieces = InOrder::default();
    while pieces.handed() < n as u64 {
        let Ok((k, built)) = rx.recv() else {
            return Err(Error::corrupt(out.path, 0, "an index builder stopped"));
        };
        pieces.put(k as u64, built?);
        loop {
            let first = pieces.handed() == 0;
            let Some(((more, more_end), bytes)) = pieces.pop() else { break };
            if first {
                (dir, end) = (more, more_end);
            } else if !more.is_empty() {
                let shift = align8(end);
                out.write(&bytes, shift)?;
                dir.extend(more.into_iter().map(|d| DirEntry { offset: d.offset + shift, ..d }));
                end = more_end + shift;
            }
        }
    }
    Ok((dir, end))
}

/// Merge the runs' records of the projects in `range` (`lo..hi`) into sections
/// written to `out` from `start` on: their directory entries and where the last one ends.
fn merge_projects(
    runs: &Runs,
    repeats: &Repeats,
    counts: &FastMap<u32, u64>,
    range: (u64, u64),
    out: &Out<'_>,
    start: u64,
) -> Result<(Vec<DirEntry>, u64)> {
    let mut cursors: Vec<Cursor> = (0..runs.runs.len()).map(|i| Cursor::of_projects(runs, i, range)).collect();
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(r) = c.peek(runs)? {
            heap.push(Reverse((order_of(r), i)));
        }
    }
    let mut end = start;
    let mut dir: Vec<DirEntry> = Vec::new();
    let mut sec: Option<Section> = None;
    while let Some(Reverse((_, i))) = heap.pop() {
        let c = &mut cursors[i];
        let r = c.peek(runs)?.ok_or_else(|| Error::corrupt(&runs.path, 0, "a run record vanished"))?;
        let len = r.len();
        let project = LE::read_u32(&r[0..4]);
        let (local, seq) = (LE::read_u64(&r[8..16]), LE::read_u64(&r[24..32]));
        if repeats.get(&(project, local)).is_none_or(|(newest, _)| *newest == seq) {
            if sec.as_ref().is_none_or(|s| s.project != project) {
                if let Some(s) = sec.take() {
                    let d = s.finish(&runs.names, out)?;
                    end = d.offset + d.len;
                    dir.push(d);
                }
                let n = counts.get(&project).copied().unwrap_or(0);
                sec = Some(Section::new(project, n, align8(end)));
            }
            if let Some(s) = &mut sec {
                s.push(r, out)?;
            }
        }
        c.advance(len);
        if let Some(r) = c.peek(runs)? {
            heap.push(Reverse((order_of(r), i)));
        }
    }
    if let Some(s) = sec.take() {
        let d = s.finish(&runs.names, out)?;
        end = d.offset + d.len;
        dir.push(d);
    }
    Ok((dir, end))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::{Fault, FaultKind, SimFs};
    use crate::index::{build, DocEntry};
    use crate::log::LogPos;

    fn doc(i: u64, project: u32, key: u64, ts: u64) -> DocEntry {
        let s = |t: &str| -> Arc<str> { Arc::from(t) };
        let state = [JobState::Pending, JobState::Running, JobState::Finished, JobState::Deleted][(i % 4) as usize];
        DocEntry {
            project,
            local: (1 + key % 3) << 32 | key,
            ts,
            order_seq: i + 1,
            state,
            priority: (i % 5) as i64,
            tags: (0..i % 4).map(|t| s(&format!("tag-{}", (t * 7 + i) % 5))).chain([s("tag-0")]).collect(),
            unique: i.is_multiple_of(3).then(|| s(&format!("u{}", key % 7))),
            close_reason: i.is_multiple_of(2).then(|| s(["ok", "failed"][(i % 4 / 2) as usize])),
            token: (i % 5 == 1).then(|| s(&format!("token-{}", i % 7))),
            loc: 1000 + i,
        }
    }

    fn meta() -> SegmentMeta {
        let at = |offset| LogPos { segment: 1, offset };
        SegmentMeta { generation: 1, lo_seq: 1, hi_seq: 900, log_end: at(900), last_frame: at(800), docs: 0 }
    }

    /// Runs merged into a file give the bytes `build` makes of the newest version
    /// of each key, whatever the runs' sizes.
    #[test]
    fn merged_runs_are_the_built_image() {
        let sim = SimFs::new();
        sim.create_dir(Path::new("/d")).unwrap();
        let catalog = vec![SpiderEntry { project: 3, spider: 1, next_job: 50, name: "s1".into() }];
        // Projects 3, 5, 9 and the largest id; keys repeat (newer versions
        // supersede), ts ties.
        let projects = [5, 3, 9, u32::MAX];
        let docs: Vec<DocEntry> = (0..700u64).map(|i| doc(i, projects[(i % 4) as usize], i % 301, i % 53)).collect();
        for (run_len, split_docs) in
            [(1, 0), (7, u64::MAX), (7, 0), (64, 0), (700, 0), (700, u64::MAX), (701, 0), (701, u64::MAX)]
        {
            let fsys: Arc<dyn FileSystem> = Arc::new(sim.clone());
            let mut runs = Runs::create(fsys, Path::new("/d/runs.tmp")).unwrap();
            let mut repeats = Repeats::default();
            let mut seen: FastMap<(u32, u64), ()> = FastMap::default();
            for d in &docs {
                if seen.insert((d.project, d.local), ()).is_some() {
                    let r = repeats.entry((d.project, d.local)).or_insert((0, 1));
                    r.1 += 1;
                }
                if let Some(r) = repeats.get_mut(&(d.project, d.local)) {
                    r.0 = d.order_seq;
                }
            }
            let last = docs.len().div_ceil(run_len) - 1;
            for (k, chunk) in docs.chunks(run_len).enumerate() {
                // Runs staged whole, or in pieces as the import hands them; the
                // last written, or kept in memory as the import keeps it.
                for piece in chunk.chunks(if k % 2 == 0 { run_len } else { 5 }) {
                    runs.stage(piece.to_vec());
                }
                match k == last && run_len % 2 == 1 {
                    true => runs.keep_last_run(),
                    false => runs.write_run().unwrap(),
                }
            }
            let path = build_file_with(runs, &repeats, meta(), &catalog, &[], Path::new("/d"), split_docs).unwrap();
            let got = fs::read_all(&sim, &path).unwrap();
            let mut newest = docs.clone();
            newest.sort_by_key(|d| (d.project, d.local, Reverse(d.order_seq)));
            newest.dedup_by_key(|d| (d.project, d.local));
            let want = build::build(newest, meta(), &catalog, &[]);
            assert!(got == want, "run length {run_len}: {} bytes, want {}", got.len(), want.len());
            assert_eq!(sim.read_dir(Path::new("/d")).unwrap(), vec![meta().file_name()], "temp files removed");
            sim.remove_file(&path).unwrap();
        }
    }

    /// A failing write or sync anywhere in a build on two threads is an error
    /// (never a panic or a hang), and the index file is not published before
    /// its bytes are synced.
    #[test]
    fn a_fault_in_a_pieced_build_is_an_error() {
        let docs: Vec<DocEntry> = (0..400u64).map(|i| doc(i, 1 + (i % 9) as u32, i, i % 31)).collect();
        for at in 0.. {
            let sim = SimFs::new();
            sim.create_dir(Path::new("/d")).unwrap();
            let fsys: Arc<dyn FileSystem> = Arc::new(sim.clone());
            let mut runs = Runs::create(fsys, Path::new("/d/runs.tmp")).unwrap();
            for chunk in docs.chunks(50) {
                runs.stage(chunk.to_vec());
                runs.write_run().unwrap();
            }
            sim.set_fault(Some(Fault { at, kind: FaultKind::Eio, sticky: false }));
            let built = build_file_with(runs, &Repeats::default(), meta(), &[], &[], Path::new("/d"), 0);
            let published = sim.read_dir(Path::new("/d")).unwrap().contains(&meta().file_name());
            if sim.mutations() <= at {
                assert!(built.is_ok() && published, "no fault at call {at}: built");
                assert!(at > 10, "the build makes more than 10 calls");
                break;
            }
            // The run file's removal may fail unnoticed (open removes a leftover).
            if built.is_ok() && sim.exists(Path::new("/d/runs.tmp")).unwrap() {
                continue;
            }
            assert!(built.is_err(), "a fault at call {at}: {built:?}");
            // Published only when the directory's fsync after the rename failed.
            assert!(!published || at + 1 == sim.mutations(), "a fault at call {at}: published");
        }
    }
}
