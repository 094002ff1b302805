//! `jobq check`: verify a store without changing it. Every frame and record
//! checksum, the frame sequence and transaction rules, every index file; then the
//! indexes against a rebuild from the whole log (each current job served exactly as
//! the log says), and the store's invariants: job ids below their spider's next id
//! in every index catalog, one id per spider name, one active job per `unique`.
//!
//! Check and open share their rules: the verdict on the log's tail (torn, to be
//! cut, or damaged, refused) is open's own (`recovery::validate`, through a
//! read-only open), and the rebuild applies frames the way open does.

mod rebuild;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{layout, Options, Store};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::hash::FastMap;
use crate::index::{format, merge, IndexSegment};
use crate::log::recovery::RecoveryPolicy;
use crate::model::JobState;
use rebuild::{current_of_view, ChainFile, Rebuild, UNSERVED};

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
    /// Damage: each makes the check fail.
    pub findings: Vec<Finding>,
    /// What the next open will do that is not damage (cut a torn tail, drop an
    /// import that never committed): printed, not failed on.
    pub notes: Vec<String>,
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

/// The current version of a job: the fields the indexes hold (tags, an active
/// job's `unique`, the close_reason term and a running job's token as fingerprints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Current {
    loc: u64,
    ts: u64,
    order_seq: u64,
    state: JobState,
    priority: i64,
    tags: u64,
    unique: u64,
    close_reason: u64,
    token: u64,
}

impl Current {
    /// A fingerprint of every field but `loc` (what the rebuild keeps of them).
    fn print(&self) -> u64 {
        let (state, priority) = (self.state as u64, self.priority as u64);
        let words = [self.ts, self.order_seq, state, priority, self.tags, self.unique, self.close_reason, self.token];
        let words = words.map(u64::to_le_bytes);
        fingerprint(words.iter().map(|w| &w[..]))
    }

    /// The fields that differ, in words (fingerprinted ones only as differing).
    fn differences(&self, log: &Current) -> String {
        let pos = |loc: u64| {
            let p = crate::log::LogPos::unpack(loc);
            format!("segment {} offset {}", p.segment, p.offset)
        };
        let mut out: Vec<String> = Vec::new();
        if self.loc != log.loc {
            out.push(format!("version at {} in the index, {} in the log", pos(self.loc), pos(log.loc)));
        }
        if self.state != log.state {
            out.push(format!("state {} in the index, {} in the log", self.state, log.state));
        }
        for (name, a, b) in [("ts", self.ts, log.ts), ("order_seq", self.order_seq, log.order_seq)] {
            if a != b {
                out.push(format!("{name} {a} in the index, {b} in the log"));
            }
        }
        if self.priority != log.priority {
            out.push(format!("priority {} in the index, {} in the log", self.priority, log.priority));
        }
        let fingerprints = [
            ("tags differ", self.tags, log.tags),
            ("unique differs", self.unique, log.unique),
            ("close_reason differs", self.close_reason, log.close_reason),
            ("the running job's token differs", self.token, log.token),
        ];
        out.extend(fingerprints.iter().filter(|(_, a, b)| a != b).map(|(what, _, _)| what.to_string()));
        out.join("; ")
    }
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

/// Fingerprint of the token an index holds: only running jobs'.
fn token_print(token: Option<&str>, state: JobState) -> u64 {
    token.filter(|_| state == JobState::Running).map_or(0, |t| fingerprint(std::iter::once(t.as_bytes())))
}

/// Fingerprint of the close_reason term an index holds.
fn close_reason_print(term: Option<&str>) -> u64 {
    term.map_or(0, |t| fingerprint(std::iter::once(t.as_bytes())))
}

/// Check the store in `dir`. `Err` means the check could not run.
///
/// Beside a server (its lock is held), the check reads the store as of one log
/// position, the end a read-only open sees; a file that vanished or shrank
/// meanwhile (an index merge, a segment online compaction removed) means the
/// store moved on, and the whole check runs again.
pub fn check(dir: &Path, fsys: Arc<dyn FileSystem>) -> Result<CheckReport> {
    let live = super::served(&*fsys, dir);
    let mut attempt = 0;
    loop {
        match check_once(dir, fsys.clone(), live) {
            Err(e) if live && super::moved_on(&e) && attempt < LIVE_ATTEMPTS => attempt += 1,
            Ok(mut r) if live => {
                r.notes.push("checked beside a running server, as of one log position".into());
                return Ok(r);
            }
            r => return r,
        }
    }
}

/// Checks beside a server that tries before it gives up on a store that keeps moving.
const LIVE_ATTEMPTS: u32 = 32;

fn check_once(dir: &Path, fsys: Arc<dyn FileSystem>, live: bool) -> Result<CheckReport> {
    let started = Instant::now();
    let mut r = CheckReport::default();
    let generation = match layout::read_current(&*fsys, dir) {
        Ok(Some(g)) => g,
        Ok(None) => {
            // Open's verdict: a generation holding data without `CURRENT` is damage.
            if let Err(e @ Error::Corrupt { .. }) = super::open::lost_current(&*fsys, dir) {
                r.found(&dir.join(layout::CURRENT), Some(0), e.to_string());
                return Ok(finish(r, started));
            }
            return Err(Error::Unsupported { path: dir.to_path_buf(), what: "no jobq store here".into() });
        }
        Err(e @ Error::Corrupt { .. }) => {
            r.found(&dir.join(layout::CURRENT), Some(0), e.to_string());
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let gen_dir = layout::gen_dir(dir, generation);
    let open = |recovery| {
        let opts = Options { fs: fsys.clone(), read_only: true, create: false, recovery, ..Options::default() };
        Store::open(dir, opts)
    };
    // Open's verdict, exactly: a strict open refuses what the server would refuse.
    let store = match open(RecoveryPolicy::Strict) {
        Ok(store) => store,
        // Out of descriptors or memory, or not allowed: no verdict on the store.
        Err(e) if cannot_run(&e) => return Err(e),
        Err(e) => {
            let what = format!("the store does not open: {e}");
            match &e {
                Error::Corrupt { path, offset, .. } => r.found(path, Some(*offset), what),
                _ => r.found(&gen_dir, None, what),
            }
            match open(RecoveryPolicy::TruncateAtCorruption) {
                Ok(store) => store,
                Err(_) => return Ok(finish(r, started)),
            }
        }
    };
    // A cluster node's entries after the applied ones are not the store's yet.
    let applied = store.report().applied_end;
    // No further than the open read: a server beside us may have written since.
    let stop =
        store.report().cut.as_ref().map(|c| c.at).into_iter().chain(applied).chain([store.report().log_end]).min();
    if let Some(c) = store.report().cut.as_ref().filter(|c| !c.lost_durable) {
        r.notes.push(format!(
            "{}: the next open cuts {} bytes at offset {} ({}); those writes were never acknowledged",
            gen_dir.join(crate::log::segment::file_name(c.at.segment)).display(),
            c.bytes,
            c.at.offset,
            c.reason
        ));
    }
    let chain = chain_of(&store, &gen_dir)?;
    let live = live.then_some(store.report().log_start);
    // The jobs the indexes hold (each section's docs: bounded by its file's size).
    let version = store.snapshot().version;
    let docs = |s: &IndexSegment| (0..s.projects().count()).map(|k| s.section_at(k).len() as usize).sum::<usize>();
    let hint = version.segments.iter().map(|s| docs(&s.seg)).sum();
    let mut log = rebuild::scan(&*fsys, &gen_dir, generation, &chain, stop, live, hint, &mut r)?;
    check_indexes(&*fsys, &gen_dir, generation, &log, &mut r)?;
    compare(&store, &mut log, &mut r)?;
    invariants(&log, &gen_dir, &mut r);
    r.jobs = log.jobs.len() as u64;
    Ok(finish(r, started))
}

fn finish(mut r: CheckReport, started: Instant) -> CheckReport {
    r.millis = started.elapsed().as_millis() as u64;
    r
}

/// The index files open chose, in order, with where each ends in the log.
fn chain_of(store: &Store, gen_dir: &Path) -> Result<Vec<ChainFile>> {
    let v = store.snapshot().version;
    let fs = &*store.inner().opts.fs;
    let mut out = Vec::with_capacity(v.segments.len());
    for slot in v.segments.iter() {
        let m = slot.seg.meta();
        let ends_in_txn = super::chain::last_frame_in_txn(fs, gen_dir, m)?;
        out.push(ChainFile { path: slot.seg.path().to_path_buf(), hi_seq: m.hi_seq, log_end: m.log_end, ends_in_txn });
    }
    Ok(out)
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
        let bytes = match fsys.map(&path) {
            Ok(b) => b,
            Err(e) => {
                let e = Error::io("map", &path, e);
                // Gone (a server's merge beside us) or no room to look: no verdict.
                if cannot_run(&e)
                    || matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
                {
                    return Err(e);
                }
                // A directory in its place, say: open sets it aside, as a damaged file.
                r.found(&path, None, format!("{e}: open sets it aside and rebuilds its range from the log"));
                continue;
            }
        };
        match IndexSegment::open(bytes, &path, true) {
            // Index files are caches: one of another version is rebuilt, not damage.
            Err(e @ Error::Unsupported { .. }) => {
                r.notes.push(format!("{e}: the next writable open rebuilds it from the log"))
            }
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
                for ((p, local), logged) in &log.jobs {
                    let (s, j) = ((local >> 32) as u32, *local as u32);
                    // A next id of u32::MAX gives none (catalog.rs, `JobIds::left`).
                    if logged.seq <= hi && next.get(&(*p, s)).is_none_or(|n| j >= *n && *n < u32::MAX) {
                        r.found(&path, None, format!("its catalog would allocate job {p}/{s}/{j} again"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The indexes (and the replayed tail) must serve exactly the log's current jobs.
///
/// Streamed, in bounded memory beyond the rebuild: each served entry is matched
/// against the log's job as it comes (the last index file serving a job wins, the
/// replayed tail over every file, as open's dead sets rule); only entries that
/// differ, and those the log lacks, are kept until the end.
fn compare(store: &Store, log: &mut Rebuild, r: &mut CheckReport) -> Result<()> {
    for (name, why) in &store.report().discarded {
        if why.contains("covered by a larger index") || r.notes.iter().any(|n| n.contains(name.as_str())) {
            continue;
        }
        if why.contains("gap before it") {
            // A good file no chain reaches (an interrupted compaction cycle removed
            // the one before it): its range is replayed, the next writable open
            // rebuilds it. Not damage.
            r.notes.push(format!("{name}: set aside at open: {why}"));
        } else {
            r.found(&store.inner().gen_dir.join(name), None, format!("set aside at open: {why}"));
        }
    }
    let v = store.snapshot().version;
    let tail = &store.inner().gen_dir;
    let path = |slot: u32| match slot {
        TAIL => tail.clone(),
        i => v.segments[i as usize].seg.path().to_path_buf(),
    };
    let mut m = Matcher::default();
    for (i, slot) in v.segments.iter().enumerate() {
        for (k, _) in slot.seg.projects().enumerate() {
            let mut sink = |docs: Vec<crate::index::DocEntry>| -> std::result::Result<(), ()> {
                for e in docs {
                    if let Some(other) = m.serve(log, i as u32, &e) {
                        let what = format!("a second live version of a job also in {}", path(other).display());
                        r.found(slot.seg.path(), None, what);
                    }
                }
                Ok(())
            };
            let _ = merge::for_live_entries(&slot.seg.section_at(k), &slot.dead[k], COMPARE_CHUNK, &mut sink);
        }
    }
    for (_, p) in v.mem.projects() {
        for e in p.iter() {
            m.serve(log, TAIL, e);
        }
    }
    let reader = &store.inner().reader;
    for (key, logged) in &log.jobs {
        let job = crate::model::JobKey::from_local(key.0, key.1);
        if m.unknown.contains(key) {
            continue;
        }
        if logged.served_by == UNSERVED {
            r.found(tail, None, format!("job {job} is in the log but no index serves it"));
        } else if let Some(got) = m.differ.get(key) {
            // Rare: the log's version is read again to say what differs.
            let differences = match reader.read(logged.loc) {
                Ok(j) => got.differences(&current_of_view(&crate::codec::record::JobView::of(&j), logged.loc)),
                Err(e) => format!("the log's version could not be read again to compare: {e}"),
            };
            r.found(&path(logged.served_by), None, format!("job {job}: the index and the log differ: {differences}"));
        }
    }
    for (key, (slot, unknown)) in &m.strays {
        if !unknown {
            let job = crate::model::JobKey::from_local(key.0, key.1);
            r.found(&path(*slot), None, format!("serves job {job}, which the log does not hold"));
        }
    }
    Ok(())
}

/// Served entries compared per section at most this many at a time.
const COMPARE_CHUNK: u32 = 1 << 16;
/// [`rebuild::Logged::served_by`] of a job the replayed tail serves.
const TAIL: u32 = u32::MAX - 1;

/// What the comparison keeps besides the rebuild's own marks.
#[derive(Default)]
struct Matcher {
    /// Served jobs whose served version differs from the log's (the last one served).
    differ: FastMap<(u32, u64), Current>,
    /// Served jobs the log does not hold: who serves them, and whether from a
    /// log range skipped after damage.
    strays: FastMap<(u32, u64), (u32, bool)>,
    /// Jobs served from a log range skipped after damage: not compared.
    unknown: std::collections::HashSet<(u32, u64)>,
}

impl Matcher {
    /// Match entry `e` served by `slot` (an index file, or [`TAIL`]) against the
    /// log; the index file that served the job before, if any (a duplicate; the
    /// tail replaces a file's version silently).
    fn serve(&mut self, log: &mut Rebuild, slot: u32, e: &crate::index::DocEntry) -> Option<u32> {
        let key = (e.project, e.local);
        let got = current_of(e);
        let skipped = log.skipped_loc(got.loc);
        let before = match log.jobs.get_mut(&key) {
            Some(logged) => {
                let before = std::mem::replace(&mut logged.served_by, slot);
                match got.loc != logged.loc || got.print() != logged.print {
                    true => self.differ.insert(key, got),
                    false => self.differ.remove(&key),
                };
                (before != UNSERVED).then_some(before)
            }
            None => self.strays.insert(key, (slot, skipped)).map(|(before, _)| before),
        };
        match skipped {
            true => self.unknown.insert(key),
            false => self.unknown.remove(&key),
        };
        before.filter(|_| slot != TAIL)
    }
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
        close_reason: close_reason_print(e.close_reason.as_deref()),
        token: token_print(e.token.as_deref(), e.state),
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

/// An error that says nothing of the store: the process ran out of descriptors
/// (EMFILE, ENFILE) or memory (ENOMEM), or may not read (EACCES, EPERM).
fn cannot_run(e: &Error) -> bool {
    const LIMITS: [i32; 5] = [24, 23, 12, 13, 1];
    matches!(e, Error::Io { source, .. } if source.raw_os_error().is_some_and(|c| LIMITS.contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::Current;
    use crate::model::JobState;

    #[test]
    fn differences_name_each_field_in_words() {
        let log = Current {
            loc: crate::log::LogPos { segment: 3, offset: 12_300 }.pack(),
            ts: 5,
            order_seq: 9,
            state: JobState::Finished,
            priority: 2,
            tags: 1,
            unique: 0,
            close_reason: 7,
            token: 0,
        };
        let index = Current { state: JobState::Running, tags: 2, ..log };
        let text = index.differences(&log);
        assert_eq!(text, "state running in the index, finished in the log; tags differ");
        let moved = Current { loc: crate::log::LogPos { segment: 2, offset: 64 }.pack(), ..log };
        assert!(moved.differences(&log).contains("segment 2 offset 64 in the index, segment 3 offset 12300"));
    }
}
