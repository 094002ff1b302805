//! An index file read in place: checked whole (lengths, offsets, orders and every
//! checksum) when opened, then read without copying.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::block_cache::BlockCache;
use super::format::{self, field, DirEntry, SegmentMeta, FOOTER_LEN, HEADER_LEN, SECTION_HEADER, TERM_ENTRY};
use super::packed;
use super::posting;
use super::terms::TermTable;
use crate::codec::docz::Dict;
use crate::codec::frame::checksum;
use crate::codec::record::{decode_catalog, SpiderEntry};
use crate::error::{Error, Result};
use crate::fs::MappedBytes;
use crate::hash::FastMap;
use crate::model::JobState;
use crate::query::docset::DocId;

/// An open, checked index file.
#[derive(Debug)]
pub struct IndexSegment {
    bytes: MappedBytes,
    path: PathBuf,
    meta: SegmentMeta,
    dir: Vec<DirEntry>,
    /// Project -> index of its section in `dir` (a hash probe, not a search).
    by_project: FastMap<u32, u32>,
    sections: Vec<SectionInfo>,
    /// Every section's key of every 128th rank (`sorted_key(128k)`), section
    /// after section (one allocation, not one a section: a store of many small
    /// projects holds them all): a key lookup searches these in memory, then one
    /// block of `by_key`. Section `i`'s are `samples[sample_at[i]..sample_at[i + 1]]`.
    samples: Vec<u64>,
    sample_at: Vec<u32>,
    /// Per section, its term dictionary hashed (terms.rs); none built for a
    /// dictionary of at most [`SEARCHED_TERMS`] terms (searched in place).
    terms: Vec<TermTable>,
    catalog: (usize, usize),
    /// The catalog's dictionaries (version 4): id, start and end in the file.
    dicts: Vec<(u32, usize, usize)>,
    on_disk: bool,
    /// Decoded array containers of this file's posting lists (block_cache.rs).
    blocks: BlockCache,
}

#[derive(Clone, Copy, Debug)]
struct SectionInfo {
    start: usize,
    n: u32,
    n_terms: u32,
    cols: [usize; 7],
}

const TS: usize = 0;
const SEQ: usize = 1;
const SPIDER: usize = 2;
const JOB: usize = 3;
const LOC: usize = 4;
const BY_KEY: usize = 5;
const DICT: usize = 6;

impl IndexSegment {
    /// Check `bytes` whole and open them. `path` names the file; `on_disk` says
    /// whether the bytes are that durable file (else an image in memory).
    pub fn open(bytes: MappedBytes, path: &Path, on_disk: bool) -> Result<IndexSegment> {
        let bad = |offset: usize, what: String| Error::corrupt(path, offset as u64, what);
        let b: &[u8] = &bytes;
        if b.len() < HEADER_LEN + FOOTER_LEN {
            return Err(bad(0, format!("index file is {} bytes, too short", b.len())));
        }
        let f = &b[b.len() - FOOTER_LEN..];
        let foot_at = b.len() - FOOTER_LEN;
        if &f[40..48] != format::MAGIC {
            return Err(bad(foot_at + 40, "bad footer magic (truncated or not an index file)".into()));
        }
        let version = LE::read_u32(&f[32..36]);
        let unsupported = || Error::Unsupported {
            path: path.to_path_buf(),
            what: format!("index format version {version}; this build reads {}", format::VERSION),
        };
        // Another version only when header and footer agree on it: a flipped
        // version field is damage.
        if version != format::VERSION && (&b[0..8] != format::MAGIC || LE::read_u32(&b[8..12]) != version) {
            return Err(bad(foot_at + 32, format!("footer version {version} disagrees with the header")));
        }
        // A newer build's file may lay its footer out otherwise: nothing more is read.
        if version > format::VERSION {
            return Err(unsupported());
        }
        let (dir_off, dir_len) = (LE::read_u64(&f[0..8]), LE::read_u64(&f[8..16]));
        let (cat_off, cat_len) = (LE::read_u64(&f[16..24]), LE::read_u64(&f[24..32]));
        let within =
            |off: u64, len: u64| off >= HEADER_LEN as u64 && off.checked_add(len).is_some_and(|e| e <= foot_at as u64);
        if !within(dir_off, dir_len) || !within(cat_off, cat_len) {
            return Err(bad(foot_at, "footer offsets point outside the file".into()));
        }
        let dir_bytes = &b[dir_off as usize..(dir_off + dir_len) as usize];
        let cat_bytes = &b[cat_off as usize..(cat_off + cat_len) as usize];
        let crc = checksum(&[&b[..HEADER_LEN], dir_bytes, cat_bytes, &f[..36]]);
        if crc != LE::read_u32(&f[36..40]) {
            return Err(bad(foot_at + 36, "footer checksum mismatch".into()));
        }
        let meta = format::decode_header(b).map_err(|e| bad(0, e))?;
        let read_as = (format::READ_FROM..=format::VERSION).contains(&version);
        let (spiders_len, dicts) = if read_as {
            format::split_catalog(cat_bytes, version).map_err(|e| bad(cat_off as usize + e.offset, e.what))?
        } else {
            decode_catalog(cat_bytes).map_err(|e| bad(cat_off as usize + e.offset, e.what))?;
            (cat_bytes.len(), Vec::new())
        };
        let at = cat_off as usize;
        let dicts = dicts.into_iter().map(|(id, a, z)| (id, at + a, at + z)).collect();
        let dir = decode_dir(dir_bytes, dir_off as usize, cat_off as usize).map_err(|(o, e)| bad(o, e))?;
        // An older file whose checksums all match (its sections are laid out
        // otherwise): set aside and rebuilt from the log, not damage.
        if !read_as {
            if let Some(d) =
                dir.iter().find(|d| checksum(&[&b[d.offset as usize..(d.offset + d.len) as usize]]) != d.crc)
            {
                return Err(bad(d.offset as usize, format!("section of project {} fails its checksum", d.project)));
            }
            return Err(unsupported());
        }
        // Padding after a part (up to the next multiple of 8) is zero: no checksum
        // covers it, so damage there is found here.
        let ends = dir.iter().map(|d| d.offset + d.len).chain([cat_off + cat_len]);
        for e in ends.map(|e| e as usize) {
            if let Some(i) = b[e..e.next_multiple_of(8).min(foot_at)].iter().position(|x| *x != 0) {
                return Err(bad(e + i, "padding after a part is not zero".into()));
            }
        }
        let workers =
            if b.len() < PARALLEL_FROM { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
        let sections = check_sections(b, &dir, workers).map_err(|(o, e)| bad(o, e))?;
        let total: u64 = dir.iter().map(|d| u64::from(d.docs)).sum();
        if total != meta.docs {
            return Err(bad(56, "header doc count does not match the sections".into()));
        }
        // Each section's key samples and hashed terms (a small dictionary is searched).
        let too_many = || bad(0, "more key samples than a u32 counts".into());
        let (mut samples, mut sample_at, mut terms) =
            (Vec::new(), Vec::with_capacity(dir.len() + 1), Vec::with_capacity(dir.len()));
        for (d, info) in dir.iter().zip(&sections) {
            let sec = Section {
                b: &b[info.start..info.start + d.len as usize],
                info: *info,
                project: d.project,
                samples: &[],
                terms: None,
                cache: None,
            };
            sample_at.push(u32::try_from(samples.len()).map_err(|_| too_many())?);
            samples.extend((0..info.n).step_by(packed::BLOCK).map(|r| sec.sorted_key(r)));
            terms.push(match info.n_terms as usize > SEARCHED_TERMS {
                true => TermTable::build(info.n_terms, |t| sec.term_key(t)),
                false => TermTable::default(),
            });
        }
        sample_at.push(u32::try_from(samples.len()).map_err(|_| too_many())?);
        let by_project = dir.iter().enumerate().map(|(i, d)| (d.project, i as u32)).collect();
        Ok(IndexSegment {
            blocks: block_cache_for(&dir),
            path: path.to_path_buf(),
            meta,
            dir,
            by_project,
            sections,
            samples,
            sample_at,
            terms,
            catalog: (cat_off as usize, cat_off as usize + spiders_len),
            dicts,
            bytes,
            on_disk,
        })
    }

    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the bytes are the durable file (not an image in memory).
    pub fn is_persisted(&self) -> bool {
        self.on_disk
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes held by this file's cache of decoded posting blocks.
    pub fn cached_bytes(&self) -> u64 {
        self.blocks.bytes()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The same index read from other bytes with the same content (a memory map of
    /// the file this image was written to).
    pub fn with_bytes(&self, bytes: MappedBytes, path: &Path) -> Result<IndexSegment> {
        if bytes.len() != self.bytes.len() || checksum(&[&bytes]) != checksum(&[&self.bytes]) {
            return Err(Error::corrupt(path, 0, "the written index differs from its image"));
        }
        Ok(IndexSegment { bytes, path: path.to_path_buf(), on_disk: true, ..self.clone_meta() })
    }

    fn clone_meta(&self) -> IndexSegment {
        IndexSegment {
            bytes: self.bytes.clone(),
            path: self.path.clone(),
            meta: self.meta,
            dir: self.dir.clone(),
            by_project: self.by_project.clone(),
            sections: self.sections.clone(),
            samples: self.samples.clone(),
            sample_at: self.sample_at.clone(),
            terms: self.terms.clone(),
            catalog: self.catalog,
            dicts: self.dicts.clone(),
            on_disk: self.on_disk,
            blocks: block_cache_for(&self.dir),
        }
    }

    /// The spiders this index knows, with their next job ids.
    pub fn catalog(&self) -> Vec<SpiderEntry> {
        decode_catalog(&self.bytes[self.catalog.0..self.catalog.1]).expect("checked at open")
    }

    /// The dictionaries this index knows (a copy of each dictionary frame's).
    pub fn dicts(&self) -> Result<Vec<Arc<Dict>>> {
        let d = self.dicts.iter().map(|(id, a, z)| {
            Dict::new(*id, &self.bytes[*a..*z])
                .map(Arc::new)
                .map_err(|e| Error::corrupt(&self.path, (a + e.offset) as u64, e.what))
        });
        d.collect()
    }

    /// Projects with a section, ascending.
    pub fn projects(&self) -> impl Iterator<Item = u32> + '_ {
        self.dir.iter().map(|d| d.project)
    }

    /// Check what opening does not: docs in listing order, keys ascending, and the
    /// key table pointing at the docs that hold them. Returns the first problem.
    pub fn verify_order(&self) -> std::result::Result<(), (u64, String)> {
        for (i, d) in self.dir.iter().enumerate() {
            let sec = self.section_at(i);
            let info = self.sections[i];
            // The header of the packed block holding value `k` of a column.
            let at = |col: usize, k: u32| {
                d.offset + (info.cols[col] + k as usize / packed::BLOCK * packed::BLOCK_HEADER) as u64
            };
            for doc in 1..sec.len() {
                if (sec.ts(doc), sec.seq(doc)) >= (sec.ts(doc - 1), sec.seq(doc - 1)) {
                    return Err((at(TS, doc), "docs not in ts-descending order".into()));
                }
            }
            // close_reason terms (format-spec/index.md, field 6): UTF-8, at most
            // MAX_CLOSE_REASON bytes, a doc in one list at most.
            let mut posted = vec![false; sec.len() as usize];
            for (term, p) in sec.terms(field::CLOSE_REASON) {
                let dict = d.offset + info.cols[DICT] as u64;
                if term.len() > crate::model::MAX_CLOSE_REASON || std::str::from_utf8(term).is_err() {
                    return Err((dict, "a close_reason term is not UTF-8 of at most 1024 bytes".into()));
                }
                if let Some(doc) = p.docs().into_iter().find(|&doc| std::mem::replace(&mut posted[doc as usize], true))
                {
                    return Err((dict, format!("doc {doc} is in two close_reason lists")));
                }
            }
            // Token terms (field 7): UTF-8, posting running docs only, a doc in
            // one list at most.
            let running = sec.state(JobState::Running).map(|p| p.docs()).unwrap_or_default();
            let mut posted = vec![false; sec.len() as usize];
            for (term, p) in sec.terms(field::TOKEN) {
                let dict = d.offset + info.cols[DICT] as u64;
                if std::str::from_utf8(term).is_err() {
                    return Err((dict, "a token term is not UTF-8".into()));
                }
                for doc in p.docs() {
                    if running.binary_search(&doc).is_err() || std::mem::replace(&mut posted[doc as usize], true) {
                        return Err((dict, format!("doc {doc} is in a token list: not running, or in two")));
                    }
                }
            }
            // Keys strictly ascending through by_key: by_key is a permutation.
            for k in 1..sec.len() {
                if sec.sorted_key(k) <= sec.sorted_key(k - 1) {
                    return Err((at(BY_KEY, k), "key table not strictly ascending".into()));
                }
            }
        }
        Ok(())
    }

    /// Index of a project's section.
    pub fn section_index(&self, project: u32) -> Option<usize> {
        self.by_project.get(&project).map(|&i| i as usize)
    }

    pub fn section_at(&self, i: usize) -> Section<'_> {
        let info = self.sections[i];
        Section {
            b: &self.bytes[info.start..info.start + self.dir[i].len as usize],
            info,
            project: self.dir[i].project,
            samples: &self.samples[self.sample_at[i] as usize..self.sample_at[i + 1] as usize],
            terms: Some(&self.terms[i]),
            cache: Some((&self.blocks, info.start as u64)),
        }
    }

    pub fn section(&self, project: u32) -> Option<Section<'_>> {
        self.section_index(project).map(|i| self.section_at(i))
    }
}

/// A cache sized for the posting blocks of the sections in `dir`.
fn block_cache_for(dir: &[DirEntry]) -> BlockCache {
    BlockCache::for_blocks(dir.iter().map(|d| d.docs.div_ceil(crate::query::docset::BLOCK_DOCS) as usize).sum())
}

fn decode_dir(b: &[u8], at: usize, sections_end: usize) -> std::result::Result<Vec<DirEntry>, (usize, String)> {
    if b.len() < 8 {
        return Err((at, "directory too short".into()));
    }
    let n = LE::read_u32(&b[0..4]) as usize;
    if b.len() != 8 + n * format::DIR_ENTRY {
        return Err((at, "directory length does not match its entry count".into()));
    }
    let mut out: Vec<DirEntry> = Vec::with_capacity(n);
    let mut min_start = HEADER_LEN as u64;
    for i in 0..n {
        let e = &b[8 + i * 32..8 + (i + 1) * 32];
        let d = DirEntry {
            project: LE::read_u32(&e[0..4]),
            docs: LE::read_u32(&e[4..8]),
            offset: LE::read_u64(&e[8..16]),
            len: LE::read_u64(&e[16..24]),
            crc: LE::read_u32(&e[24..28]),
        };
        let end = d.offset.checked_add(d.len);
        if d.offset < min_start || end.is_none_or(|e| e > sections_end as u64) || d.docs == 0 {
            return Err((at + 8 + i * 32, "directory entry points outside the sections".into()));
        }
        if out.last().is_some_and(|p| p.project >= d.project) || d.project == 0 {
            return Err((at + 8 + i * 32, "directory not in project order".into()));
        }
        min_start = end.unwrap_or(u64::MAX);
        out.push(d);
    }
    Ok(out)
}

/// A section's check: its layout, or the offset and what is wrong.
type Checked = std::result::Result<SectionInfo, (usize, String)>;

/// Files this large are checked by several threads, a section each at a time.
const PARALLEL_FROM: usize = 16 << 20;
/// Term dictionaries of at most this many terms are not hashed: a binary search
/// of the sorted entries in the file is as quick, and a store of many small
/// projects holds no table for each.
const SEARCHED_TERMS: usize = 8;

/// Check every section (checksum, then structure), largest first on up to
/// `workers` threads; on damage, the error of the first damaged section in file
/// order, with its offset in the file.
fn check_sections(
    b: &[u8],
    dir: &[DirEntry],
    workers: usize,
) -> std::result::Result<Vec<SectionInfo>, (usize, String)> {
    let one = |d: &DirEntry| -> Checked {
        let s = &b[d.offset as usize..(d.offset + d.len) as usize];
        if checksum(&[s]) != d.crc {
            return Err((d.offset as usize, format!("section of project {} fails its checksum", d.project)));
        }
        let info = check_section(s, d).map_err(|(o, e)| (d.offset as usize + o, e))?;
        Ok(SectionInfo { start: d.offset as usize, ..info })
    };
    let workers = workers.min(dir.len()).min(8);
    if workers < 2 {
        return dir.iter().map(one).collect();
    }
    let mut order: Vec<usize> = (0..dir.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(dir[i].len));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Checked)> = std::thread::scope(|scope| {
        let work = || {
            let mut out = Vec::new();
            while let Some(&i) = order.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                out.push((i, one(&dir[i])));
            }
            out
        };
        let handles: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for h in handles {
            // A checker thread only panics if this code has a bug: re-raise it here.
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Check one section's structure; offsets in errors are relative to the section.
fn check_section(s: &[u8], d: &DirEntry) -> Checked {
    if s.len() < SECTION_HEADER {
        return Err((0, "section shorter than its header".into()));
    }
    let (project, n, n_terms) = (LE::read_u32(&s[0..4]), LE::read_u32(&s[4..8]), LE::read_u32(&s[8..12]));
    if project != d.project || n != d.docs {
        return Err((0, "section header disagrees with the directory".into()));
    }
    if s[12..16] != [0; 4] {
        return Err((12, "section header: reserved field not zero".into()));
    }
    let mut cols = [0usize; 7];
    let mut end = SECTION_HEADER;
    for (k, col) in cols.iter_mut().enumerate() {
        let off = LE::read_u64(&s[16 + k * 8..24 + k * 8]);
        if off < SECTION_HEADER as u64 || off > s.len() as u64 {
            return Err((16 + k * 8, "column runs outside the section".into()));
        }
        *col = off as usize;
        // The columns lie back to back from the header on, then padding to 8.
        let want = if k == 0 {
            SECTION_HEADER
        } else if k == DICT {
            end.next_multiple_of(8)
        } else {
            end
        };
        if *col != want {
            return Err((16 + k * 8, format!("column at {col}, expected {want} (back to back after the header)")));
        }
        if k < DICT {
            end = packed::check(s, *col, n)?;
        } else if *col + n_terms as usize * TERM_ENTRY > s.len() {
            return Err((16 + k * 8, "term dictionary runs outside the section".into()));
        }
    }
    let info = SectionInfo { start: 0, n, n_terms, cols };
    // Bounds only: the orders are checked by `verify_order` (jobq check), so that
    // opening a large file reads each byte once. A block's line and width bound
    // its values: few blocks are unpacked.
    let below = |k: usize, limit: u64, what: &str| {
        packed::check_below(s, cols[k], n, limit).map_err(|at| (at, what.to_string()))
    };
    below(SPIDER, 1 << 32, "spider id above 32 bits")?;
    below(JOB, 1 << 32, "job id above 32 bits")?;
    below(BY_KEY, u64::from(n), "key table points past the last doc")?;
    let blob = cols[DICT] + n_terms as usize * TERM_ENTRY;
    let mut prev: Option<(u8, &[u8])> = None;
    for t in 0..n_terms as usize {
        let e = &s[cols[DICT] + t * TERM_ENTRY..cols[DICT] + (t + 1) * TERM_ENTRY];
        let (f, len, off, posting_at) =
            (e[0], usize::from(LE::read_u16(&e[2..4])), LE::read_u32(&e[4..8]) as usize, LE::read_u32(&e[8..12]));
        let at = cols[DICT] + t * TERM_ENTRY;
        let term = s.get(blob + off..blob + off + len).ok_or((at, "term runs outside the section".to_string()))?;
        if !(field::STATE..=field::LAST).contains(&f) || e[1] != 0 {
            return Err((at, "unknown term field".into()));
        }
        if prev.is_some_and(|p| p >= (f, term)) {
            return Err((at, "term dictionary not in order".into()));
        }
        let bytes = s
            .get(posting_at as usize..)
            .filter(|_| posting_at as usize >= blob)
            .ok_or((at, "posting outside the section".to_string()))?;
        posting::validate(bytes, n).map_err(|e| (posting_at as usize, e))?;
        prev = Some((f, term));
    }
    Ok(info)
}

/// One project's docs in one index file.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    b: &'a [u8],
    info: SectionInfo,
    project: u32,
    /// `sorted_key(128k)` for every k (empty while opening).
    samples: &'a [u64],
    /// The hashed term dictionary (`None` while opening: binary search).
    terms: Option<&'a TermTable>,
    /// The file's block cache, and the section's offset in the file.
    cache: Option<(&'a BlockCache, u64)>,
}

impl<'a> Section<'a> {
    pub fn project(&self) -> u32 {
        self.project
    }

    /// Number of docs.
    pub fn len(&self) -> u32 {
        self.info.n
    }

    pub fn is_empty(&self) -> bool {
        self.info.n == 0
    }

    #[inline]
    fn get(&self, col: usize, i: u32) -> u64 {
        packed::get(self.b, self.info.cols[col], i)
    }

    #[inline]
    pub fn ts(&self, doc: DocId) -> u64 {
        self.get(TS, doc)
    }

    #[inline]
    pub fn seq(&self, doc: DocId) -> u64 {
        self.get(SEQ, doc)
    }

    /// The doc's key within the project: `spider << 32 | job` (both checked to
    /// fit 32 bits at open).
    #[inline]
    pub fn local(&self, doc: DocId) -> u64 {
        self.get(SPIDER, doc) << 32 | self.get(JOB, doc)
    }

    /// Packed log position of the doc's record.
    #[inline]
    pub fn loc(&self, doc: DocId) -> u64 {
        self.get(LOC, doc)
    }

    /// The `i`-th key in ascending key order.
    pub fn sorted_key(&self, i: u32) -> u64 {
        self.local(self.by_key(i))
    }

    /// The doc holding the `i`-th key in ascending key order (checked below `n`
    /// at open).
    pub fn by_key(&self, i: u32) -> DocId {
        self.get(BY_KEY, i) as DocId
    }

    /// First doc whose order key `(ts, seq)` is below `(ts, seq)`: the docs before
    /// it are strictly newer.
    pub fn first_older_than(&self, ts: u64, seq: u64) -> DocId {
        let (mut lo, mut hi) = (0, self.info.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if (self.ts(mid), self.seq(mid)) > (ts, seq) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// First doc with `ts < t`.
    pub fn first_ts_below(&self, t: u64) -> DocId {
        let (mut lo, mut hi) = (0, self.info.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.ts(mid) >= t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[path = "segment_keys.rs"]
mod keys;
#[path = "segment_terms.rs"]
mod term_lookup;

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
