//! `jobq check`: verify a store without changing it. Every frame and record
//! checksum, the frame sequence and transaction rules, every index file; then the
//! indexes against a rebuild from the whole log (each current job served exactly as
//! the log says), and the store's invariants: job ids below their spider's next id
//! in every index catalog, one id per spider name, one active job per `unique`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{layout, Options, Store};
use crate::codec::frame::FrameKind;
use crate::codec::record;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, OpenMode};
use crate::hash::FastMap;
use crate::index::{format, merge, IndexSegment};
use crate::log::recovery::{check_frame, RecoveryPolicy};
use crate::log::scan::{FrameScanner, Step};
use crate::log::{segment, LogPos};
use crate::model::JobState;

/// One problem found: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {o}: {}", self.path.display(), self.what),
            None => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What a check looked at and found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub segments: u64,
    pub frames: u64,
    pub records: u64,
    pub jobs: u64,
    pub index_files: u64,
    pub millis: u64,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
    fn found(&mut self, path: &Path, offset: Option<u64>, what: impl Into<String>) {
        self.findings.push(Finding { path: path.to_path_buf(), offset, what: what.into() });
    }
}

/// The current version of a job: the fields the indexes hold (tags and an active
/// job's `unique` as fingerprints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    loc: u64,
    ts: u64,
    order_seq: u64,
    state: JobState,
    priority: i64,
    tags: u64,
    unique: u64,
}

/// A fixed-seed hash of byte strings: the same fingerprint on both sides of a comparison.
fn fingerprint<'a>(parts: impl Iterator<Item = &'a [u8]>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xFF);
    }
    h.finish()
}

/// Fingerprint of a tag set (order does not matter).
fn tags_print<'a>(tags: impl Iterator<Item = &'a str>) -> u64 {
    let mut v: Vec<&str> = tags.collect();
    v.sort_unstable();
    fingerprint(v.into_iter().map(str::as_bytes))
}

/// Fingerprint of the `unique` an index holds: only active jobs'.
fn unique_print(unique: Option<&str>, state: JobState) -> u64 {
    unique.filter(|_| state.is_active()).map_or(0, |u| fingerprint(std::iter::once(u.as_bytes())))
}

/// Everything the log says: per job its current version and that record's sequence
/// number, and the active `unique` values.
#[derive(Default)]
struct Rebuild {
    jobs: FastMap<(u32, u64), (Current, u64)>,
    uniques: FastMap<(u32, u64), String>,
    names: FastMap<(u32, u32), String>,
    ids: FastMap<(u32, String), u32>,
}

/// Check the store in `dir`. `Err` means the check could not run.
pub fn check(dir: &Path, fsys: Arc<dyn FileSystem>) -> Result<CheckReport> {
    let started = Instant::now();
    let mut r = CheckReport::default();
    let generation = match layout::read_current(&*fsys, dir) {
        Ok(Some(g)) => g,
        Ok(None) => return Err(Error::Unsupported { path: dir.to_path_buf(), what: "no jobq store here".into() }),
        Err(e @ Error::Corrupt { .. }) => {
            r.found(&dir.join(layout::CURRENT), Some(0), e.to_string());
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let gen_dir = layout::gen_dir(dir, generation);
    let log = scan_log(&*fsys, &gen_dir, generation, &mut r)?;
    check_indexes(&*fsys, &gen_dir, generation, &log, &mut r)?;
    let opts = Options {
        fs: fsys,
        read_only: true,
        create: false,
        recovery: RecoveryPolicy::TruncateAtCorruption,
        ..Options::default()
    };
    match Store::open(dir, opts) {
        Ok(store) => compare(&store, &log, &mut r)?,
        Err(e) => r.found(&gen_dir, None, format!("the store does not open: {e}")),
    }
    invariants(&log, &gen_dir, &mut r);
    r.jobs = log.jobs.len() as u64;
    r.millis = started.elapsed().as_millis() as u64;
    Ok(r)
}

fn scan_log(fsys: &dyn FileSystem, gen_dir: &Path, generation: u64, r: &mut CheckReport) -> Result<Rebuild> {
    let mut b = Rebuild::default();
    let segments = segment::list(fsys, gen_dir)?;
    let mut expected = 0;
    let mut txn = None;
    for (i, &n) in segments.iter().enumerate() {
        r.segments += 1;
        let path = gen_dir.join(segment::file_name(n));
        let file = fsys.open(&path, OpenMode::Read).map_err(|e| Error::io("open", &path, e))?;
        let h = match segment::read_header(&*file, &path) {
            Ok(h) => h,
            Err(e) => {
                r.found(&path, Some(0), e.to_string());
                continue;
            }
        };
        if h.generation != generation || h.number != n || (i > 0 && n != segments[i - 1] + 1) {
            r.found(&path, Some(0), "segment header, name or numbering is wrong");
        }
        if i == 0 {
            expected = h.first_seq;
        }
        let mut sc = FrameScanner::new(file, &path, segment::HEADER_LEN)?;
        loop {
            match sc.next_step()? {
                Step::End => break,
                Step::Bad { offset, reason } => {
                    let last = i + 1 == segments.len();
                    let kind =
                        if last { "a torn or damaged tail (recovery cuts it at the next open)" } else { "damage" };
                    r.found(&path, Some(offset), format!("{kind}: {reason}"));
                    break;
                }
                Step::Frame { offset, header, payload } => {
                    r.frames += 1;
                    if let Err(why) = check_frame(&header, payload, expected, &mut txn, n, offset) {
                        r.found(&path, Some(offset), why);
                    }
                    expected = header.last_seq() + 1;
                    apply(&mut b, &path, offset, &header, payload, r);
                }
            }
        }
    }
    if let Some((at, _)) = txn {
        r.found(
            &gen_dir.join(segment::file_name(at.segment)),
            Some(at.offset),
            "an import transaction without its commit",
        );
    }
    Ok(b)
}

fn apply(
    b: &mut Rebuild,
    path: &Path,
    offset: u64,
    h: &crate::codec::frame::FrameHeader,
    payload: &[u8],
    r: &mut CheckReport,
) {
    let at = |e: crate::codec::DecodeError| (Some(offset + 32 + e.offset as u64), e.what);
    let seg = crate::log::segment::parse_name(path.file_name().and_then(|n| n.to_str()).unwrap_or("")).unwrap_or(0);
    match h.kind {
        FrameKind::Jobs => match record::decode_jobs(payload, h.count) {
            Ok(recs) => {
                for (i, (off, v)) in recs.into_iter().enumerate() {
                    r.records += 1;
                    let seq = h.first_seq + i as u64;
                    if v.order_seq > seq {
                        r.found(path, Some(offset + 32 + off as u64), "order_seq is later than the record");
                    }
                    let loc = LogPos { segment: seg, offset: offset + 32 + off as u64 }.pack();
                    let cur = Current {
                        loc,
                        ts: v.ts(),
                        order_seq: v.order_seq,
                        state: v.state,
                        priority: v.priority,
                        tags: tags_print(v.tags.iter().copied()),
                        unique: unique_print(v.unique, v.state),
                    };
                    let key = (v.key.project, v.key.local());
                    b.jobs.insert(key, (cur, seq));
                    match v.unique.filter(|_| v.state.is_active()) {
                        Some(u) => b.uniques.insert(key, u.to_string()),
                        None => b.uniques.remove(&key),
                    };
                }
            }
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Spider => match record::decode_spider(payload) {
            Ok(s) => name(b, path, offset, s.project, s.spider, &s.name, r),
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Catalog => match record::decode_catalog(payload) {
            Ok(all) => all.iter().for_each(|s| name(b, path, offset, s.project, s.spider, &s.name, r)),
            Err(e) => {
                let (o, w) = at(e);
                r.found(path, o, w)
            }
        },
        FrameKind::Commit => {}
    }
}

fn name(b: &mut Rebuild, path: &Path, offset: u64, project: u32, id: u32, name: &str, r: &mut CheckReport) {
    let by_id = b.names.entry((project, id)).or_insert_with(|| name.to_string()).clone();
    let by_name = *b.ids.entry((project, name.to_string())).or_insert(id);
    if by_id != name || by_name != id {
        r.found(
            path,
            Some(offset),
            format!("spider {id} / {name:?} of project {project} conflicts with an earlier registration"),
        );
    }
}

/// Every index file must open; its catalog must cover the job ids of its range.
fn check_indexes(
    fsys: &dyn FileSystem,
    gen_dir: &Path,
    generation: u64,
    log: &Rebuild,
    r: &mut CheckReport,
) -> Result<()> {
    for name in fsys.read_dir(gen_dir).map_err(|e| Error::io("list", gen_dir, e))? {
        let Some((lo, hi)) = format::parse_name(&name) else { continue };
        r.index_files += 1;
        let path = gen_dir.join(&name);
        let bytes = fsys.map(&path).map_err(|e| Error::io("map", &path, e))?;
        match IndexSegment::open(bytes, &path, true) {
            Err(e) => r.found(&path, None, e.to_string()),
            Ok(seg) => {
                if let Err((offset, what)) = seg.verify_order() {
                    r.found(&path, Some(offset), what);
                }
                let m = seg.meta();
                if m.generation != generation || (m.lo_seq, m.hi_seq) != (lo, hi) {
                    r.found(&path, Some(0), "header does not match the file name or generation");
                }
                let next: FastMap<(u32, u32), u32> =
                    seg.catalog().iter().map(|e| ((e.project, e.spider), e.next_job)).collect();
                for ((p, local), (_, seq)) in &log.jobs {
                    let (s, j) = ((local >> 32) as u32, *local as u32);
                    if *seq <= hi && next.get(&(*p, s)).is_none_or(|n| j >= *n) {
                        r.found(&path, None, format!("its catalog would allocate job {p}/{s}/{j} again"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The indexes (and the replayed tail) must serve exactly the log's current jobs.
fn compare(store: &Store, log: &Rebuild, r: &mut CheckReport) -> Result<()> {
    for (name, why) in &store.report().discarded {
        if !why.contains("covered by a larger index") {
            r.found(&store.inner.gen_dir.join(name), None, format!("set aside at open: {why}"));
        }
    }
    let v = store.snapshot().version;
    let tail = &store.inner.gen_dir;
    let path = |slot: Option<usize>| slot.map_or(tail.clone(), |i| v.segments[i].seg.path().to_path_buf());
    // Per served job: the index file (None: the replayed tail) and what it serves.
    let mut served: FastMap<(u32, u64), (Option<usize>, Current)> = FastMap::default();
    for (i, slot) in v.segments.iter().enumerate() {
        for (k, _) in slot.seg.projects().enumerate() {
            let mut docs = Vec::new();
            merge::live_entries(&slot.seg.section_at(k), &slot.dead[k], &mut docs);
            for e in docs {
                if let Some((other, _)) = served.insert((e.project, e.local), (Some(i), current_of(&e))) {
                    let what = format!("a second live version of a job also in {}", path(other).display());
                    r.found(slot.seg.path(), None, what);
                }
            }
        }
    }
    for (_, p) in v.mem.projects() {
        for e in p.iter() {
            served.insert((e.project, e.local), (None, current_of(e)));
        }
    }
    for (key, (want, _)) in &log.jobs {
        let job = crate::model::JobKey::from_local(key.0, key.1);
        match served.get(key) {
            None => r.found(tail, None, format!("job {job} is in the log but no index serves it")),
            Some((slot, got)) if got != want => {
                r.found(&path(*slot), None, format!("job {job} is served as {got:?}, the log says {want:?}"))
            }
            _ => {}
        }
    }
    for (key, (slot, _)) in &served {
        if !log.jobs.contains_key(key) {
            let job = crate::model::JobKey::from_local(key.0, key.1);
            r.found(&path(*slot), None, format!("serves job {job}, which the log does not hold"));
        }
    }
    Ok(())
}

fn current_of(e: &crate::index::DocEntry) -> Current {
    Current {
        loc: e.loc,
        ts: e.ts,
        order_seq: e.order_seq,
        state: e.state,
        priority: e.priority,
        tags: tags_print(e.tags.iter().map(|t| &**t)),
        unique: unique_print(e.unique.as_deref(), e.state),
    }
}

fn invariants(log: &Rebuild, gen_dir: &Path, r: &mut CheckReport) {
    for (p, local) in log.jobs.keys() {
        let job = crate::model::JobKey::from_local(*p, *local);
        if !log.names.contains_key(&(*p, job.spider)) {
            r.found(gen_dir, None, format!("job {job} belongs to a spider never registered"));
        }
    }
    let mut holders: FastMap<(u32, &str), u64> = FastMap::default();
    for ((p, local), u) in &log.uniques {
        if let Some(other) = holders.insert((*p, u.as_str()), *local) {
            let (a, b) = (crate::model::JobKey::from_local(*p, *local), crate::model::JobKey::from_local(*p, other));
            r.found(gen_dir, None, format!("active jobs {a} and {b} both hold unique {u:?}"));
        }
    }
}
