//! `jobq repair`: the salvage policy as an offline command. It validates the whole
//! log from its first frame (also the range the index files cover, which open
//! trusts), keeps every valid frame before the first damage, and cuts the rest —
//! after copying the bytes it cuts, durably, to `DIR/salvaged-<ms>/`, so that no
//! byte is destroyed before a copy of it is safe. It reports what was dropped:
//! the job versions it can still read in the cut bytes (each record carries its
//! own checksum), and how many bytes it could not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::layout;
use super::repair_catalog::Found;
use super::repair_header;
use super::{Options, Store};
use crate::codec::frame::{self, FrameKind};
use crate::codec::record;
use crate::error::{Error, Result};
use crate::fs::{self, FileSystem, OpenMode};
use crate::log::recovery::{self, Cut, RecoveryPolicy, StartTxn};
use crate::log::scan::FrameScanner;
use crate::log::{segment, LogPos};
use crate::model::{JobKey, JobState};

/// What a repair did.
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// The cut made, if the log needed one.
    pub cut: Option<Cut>,
    /// Where the cut bytes were saved.
    pub saved_to: Option<PathBuf>,
    /// Job versions found in the cut bytes (key, state), in log order.
    pub dropped: Vec<(JobKey, JobState)>,
    /// Cut bytes that did not decode as records.
    pub undecoded_bytes: u64,
    /// Segments whose damaged header was rebuilt (the old bytes are in `saved_to`).
    pub headers_rebuilt: Vec<repair_header::RebuiltHeader>,
    /// Index files the reopen set aside (they covered the cut range).
    pub indexes_set_aside: Vec<String>,
    /// Index files that covered log segments no longer there (deleted, lost):
    /// each with the segment it reached. The jobs written there are lost.
    pub beyond_log: Vec<(String, u32)>,
    /// Index files that began before the log (online compaction removed the
    /// segments under their start): removed, rebuilt from the log. Their docs
    /// there counted as superseded by relocated copies, which a cut may have
    /// taken (or a lost first segment never had).
    pub began_before_log: Vec<String>,
    /// The first segments were gone (`CURRENT` said the log started before the
    /// first one there): the segments `from..to` are lost, and `CURRENT` now
    /// names `to` as the log's start.
    pub missing_start: Option<(u32, u32)>,
    /// The newest segments were gone (`REACH` said the log reached further than
    /// its last segment): the segments `from..to` are lost, and `REACH` now names
    /// the last one left.
    pub missing_end: Option<(u32, u32)>,
    /// Spiders and job ids written back in a catalog frame (known to index files
    /// the cut set aside, to the cut bytes, or taken by the dropped versions).
    pub catalog_restored: usize,
    /// Dictionaries written back into the log (ids): records it keeps use them,
    /// and their frames were lost or cut.
    pub dicts_restored: Vec<u32>,
    pub millis: u64,
}

/// Repair the store in `dir` (offline: takes the lock).
pub fn repair(dir: &Path, opts: Options) -> Result<RepairReport> {
    let started = Instant::now();
    let fsys = opts.fs.clone();
    let fs = &*fsys;
    let lock = match fs.lock(&dir.join(layout::LOCK)) {
        Ok(g) => g,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(Error::Locked { path: dir.to_path_buf() }),
        Err(e) => return Err(Error::io("lock", dir.join(layout::LOCK), e)),
    };
    if fs.exists(&dir.join(layout::RAFT)).map_err(|e| Error::io("stat", dir, e))? {
        return Err(Error::Unsupported {
            path: dir.to_path_buf(),
            what: "a cluster node's data directory: replace the node instead (README, \"Cluster\")".into(),
        });
    }
    let current = layout::read_current_file(fs, dir)?.ok_or_else(|| Error::Unsupported {
        path: dir.to_path_buf(),
        what: "no jobq store here (no CURRENT file)".into(),
    })?;
    let generation = current.generation;
    let gen_dir = layout::gen_dir(dir, generation);
    let saved = dir.join(format!("salvaged-{}", opts.clock.now_ms()));
    // Every spider and job id known anywhere, before anything is cut or set aside.
    let mut found = Found::default();
    found.load_pending(fs, dir)?;
    found.index_files(fs, &gen_dir)?;
    let mut report = RepairReport {
        headers_rebuilt: repair_header::rebuild_headers(fs, dir, &gen_dir, generation, &saved)?,
        ..RepairReport::default()
    };
    if !report.headers_rebuilt.is_empty() {
        report.saved_to = Some(saved.clone());
    }
    let first =
        *segment::list(fs, &gen_dir)?.first().ok_or_else(|| Error::corrupt(&gen_dir, 0, "the log has no segment"))?;
    let (header, _) = FrameScanner::segment(fs, &gen_dir, first)?;
    let start = LogPos { segment: first, offset: header.data_start() };
    let policy = RecoveryPolicy::TruncateAtCorruption;
    let in_txn = if recovery::begins_in_txn(fs, &gen_dir, start)? { StartTxn::LogStart } else { StartTxn::None };
    let plan = recovery::validate(fs, &gen_dir, generation, start, header.first_seq, in_txn, policy, true)?;
    if let Some(cut) = &plan.cut {
        save_aside(fs, dir, &gen_dir, cut.at, &saved)?;
        describe(fs, &gen_dir, cut.at, &mut report, &mut found)?;
    }
    for (key, _) in &report.dropped {
        found.job(*key);
    }
    // Before anything is forgotten (the cut, index files removed or set aside):
    // a run after a crash reads this back (a killed run's cut left it no other trace).
    found.save_pending(fs, dir)?;
    let mut log_end = (plan.end, plan.next_seq);
    if plan.cut.is_some() {
        // The copy is durable: now the cut (the same validation, applied).
        let done = recovery::validate(fs, &gen_dir, generation, start, header.first_seq, in_txn, policy, false)?;
        log_end = (done.end, done.next_seq);
        report.cut = done.cut;
        report.saved_to = Some(saved);
    }
    // First segments removed by hand: what follows them may update jobs and use
    // dictionaries only they held. Accepted, then rewritten whole (below); until
    // the new generation is live, `CURRENT` still says they are missing.
    report.missing_start = current.log_start.filter(|s| *s < first).map(|s| (s, first));
    // A dictionary the log no longer holds (its frame was in lost first segments,
    // or in the cut bytes: online compaction writes a frame again after records
    // that use it) goes back into the log from the index files' copies (or the
    // cut bytes) before those files go. A run after a crash here finds the index
    // files still there, and appends what is still missing.
    if found.has_dicts() {
        let held = dict_ids(fs, &gen_dir, start, log_end.0)?;
        report.dicts_restored = found.append_dicts(&fsys, &gen_dir, generation, log_end, opts.segment_bytes, &held)?;
    }
    // Newest segments removed by hand (`REACH` says the log reached further):
    // the jobs written there are lost. The claim comes down to what is left, as
    // it does when an unreadable `REACH` is written again.
    let last =
        *segment::list(fs, &gen_dir)?.last().ok_or_else(|| Error::corrupt(&gen_dir, 0, "the log has no segment"))?;
    let claimed = crate::log::reach::read(fs, &gen_dir);
    let reached = claimed.as_ref().ok().copied().flatten();
    report.missing_end = reached.filter(|r| *r > last).map(|r| (last + 1, r + 1));
    if claimed.is_err() {
        // Damaged (removed), or a directory in its place (set aside): out of the way first.
        let reach = [crate::log::reach::REACH.to_string()];
        let is_dir = fs.read_dir(&gen_dir.join(&reach[0])).is_ok();
        let (files, dirs) = if is_dir { (&[][..], &reach[..]) } else { (&reach[..], &[][..]) };
        super::leftovers::clear(fs, &gen_dir, files, dirs, opts.clock.now_ms())?;
    }
    if reached != Some(last) {
        crate::log::reach::write(fs, &gen_dir, last)?;
    }
    report.beyond_log = super::chain::remove_indexes_beyond_log(fs, &gen_dir)?;
    // Also without a cut: a lost first segment, or a store an interrupted
    // compaction left with such a file, serves its jobs from segments gone.
    report.began_before_log = remove_indexes_before_log(fs, &gen_dir)?;
    // A normal open sets aside the index files that no longer match the log. The
    // lock goes with it: no other writer comes in between the cut and the reopen.
    let accept_lost_start = report.missing_start.is_some();
    let o = Options { create: false, read_only: false, background: false, accept_lost_start, ..opts };
    let store = Store::open_held(dir, o, Some(lock))?;
    report.indexes_set_aside = store.report().discarded.iter().map(|(n, _)| n.clone()).collect();
    report.catalog_restored = found.restore(&store)?;
    // The catalog frame is durable; still under the lock.
    Found::clear_pending(fs, dir)?;
    if accept_lost_start {
        // Every job's current version, its spiders, ids and document rewritten
        // into a generation that starts whole (the old one is removed after).
        super::compact::compact_store(dir, store, None, &mut |_, _| {})?;
    } else {
        store.close()?;
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Copy every byte from `at` to the end of the log into `saved`, durably.
fn save_aside(fs: &dyn FileSystem, dir: &Path, gen_dir: &Path, at: LogPos, saved: &Path) -> Result<()> {
    repair_header::ensure_dir(fs, dir, saved)?;
    for n in segment::list(fs, gen_dir)?.into_iter().filter(|n| *n >= at.segment) {
        let from = if n == at.segment { at.offset } else { 0 };
        let name = segment::file_name(n);
        let src = gen_dir.join(&name);
        let bytes = fs::read_all(fs, &src).map_err(|e| Error::io("read", &src, e))?;
        if from as usize >= bytes.len() {
            continue;
        }
        let dst = saved.join(format!("{name}.from-{from}"));
        let f = fs.open(&dst, OpenMode::CreateNew).map_err(|e| Error::io("create", &dst, e))?;
        fs::write_all_at(&*f, &bytes[from as usize..], 0).map_err(|e| Error::io("write", &dst, e))?;
        f.sync_data().map_err(|e| Error::io("fdatasync", &dst, e))?;
    }
    // IMPORTANT: fsync folders, so the copies exist before anything is cut.
    fs.sync_dir(saved).map_err(|e| Error::io("fsync dir", saved, e))?;
    fs.sync_dir(dir).map_err(|e| Error::io("fsync dir", dir, e))
}

/// List the job versions still readable in the bytes from `at` on. Whole frames
/// (checksum verified) are read record by record. Between them, in damaged
/// bytes, every offset is tried as a record: each record carries its own
/// checksum, so a damaged frame header or record costs only its own bytes, and
/// the search resumes at the next whole frame. Zeros after the last frame of a
/// segment are its preallocated space, not lost data.
fn describe(
    fs: &dyn FileSystem,
    gen_dir: &Path,
    at: LogPos,
    report: &mut RepairReport,
    found: &mut Found,
) -> Result<()> {
    for n in segment::list(fs, gen_dir)?.into_iter().filter(|n| *n >= at.segment) {
        let path = gen_dir.join(segment::file_name(n));
        let data = fs::read_all(fs, &path).map_err(|e| Error::io("read", &path, e))?;
        let data_start = segment::decode_header(&path, &data).map_or(0, |h| h.data_start() as usize);
        let from = if n == at.segment { at.offset as usize } else { data_start };
        // No frame starts in the zeros at the end (a frame's kind is not 0).
        let nonzero_end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let mut p = from.min(data.len());
        while p < data.len() {
            if let Some((kind, payload)) = whole_frame(&data, p) {
                match kind {
                    FrameKind::Jobs => scan_records(payload, false, report),
                    FrameKind::Spider => record::decode_spider(payload).iter().for_each(|e| found.spider(e)),
                    FrameKind::Catalog => {
                        record::decode_catalog(payload).iter().flatten().for_each(|e| found.spider(e))
                    }
                    FrameKind::Dict => {
                        if let Ok(d) = crate::codec::docz::decode_dict(payload) {
                            found.dict(std::sync::Arc::new(d));
                        }
                    }
                    _ => {}
                }
                p += frame::HEADER_LEN + payload.len();
                continue;
            }
            let next = (p + 1..nonzero_end).find(|q| whole_frame(&data, *q).is_some()).unwrap_or(data.len());
            scan_records(&data[p..next], next == data.len(), report);
            p = next;
        }
    }
    Ok(())
}

/// The ids of the dictionary frames in the log from `start` to `end` (valid).
fn dict_ids(fs: &dyn FileSystem, gen_dir: &Path, start: LogPos, end: LogPos) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    crate::log::recovery::replay(fs, gen_dir, start, end, &mut |f| {
        if f.header.kind == FrameKind::Dict {
            // A frame that does not decode holds nothing: its copy (if any) goes back.
            if let Ok(d) = crate::codec::docz::decode_dict(f.payload) {
                ids.push(d.id);
            }
        }
        Ok(())
    })?;
    Ok(ids)
}

/// The frame at `p` when its header decodes and its checksum verifies.
fn whole_frame(data: &[u8], p: usize) -> Option<(FrameKind, &[u8])> {
    let h: &[u8; frame::HEADER_LEN] = data.get(p..p + frame::HEADER_LEN)?.try_into().ok()?;
    let hd = frame::decode_header(h).ok()?;
    let payload = data.get(p + frame::HEADER_LEN..p + frame::HEADER_LEN + hd.len as usize)?;
    frame::verify(h, &hd, payload).then_some((hd.kind, payload))
}

/// Count the records in `bytes` that pass their own checksum, trying each
/// offset where none starts; the rest is undecodable, except, at a segment's
/// `end`, the zeros after the last record (its preallocated space).
fn scan_records(bytes: &[u8], end: bool, report: &mut RepairReport) {
    // No record starts in trailing zeros (its length would be 0), though one
    // may end in them.
    let nonzero_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut r = 0;
    while r < nonzero_end {
        match record::decode_job(&bytes[r..]) {
            Ok((v, used)) => {
                report.dropped.push((v.key, v.state));
                r += used;
            }
            Err(_) => {
                report.undecoded_bytes += 1;
                r += 1;
            }
        }
    }
    if !end {
        report.undecoded_bytes += bytes.len().saturating_sub(r) as u64;
    }
}

/// Remove the index files that begin before the log's first frame: their docs
/// there may point into removed segments once nothing supersedes them; their names.
fn remove_indexes_before_log(fs: &dyn FileSystem, gen_dir: &Path) -> Result<Vec<String>> {
    let Some(&first) = segment::list(fs, gen_dir)?.first() else { return Ok(Vec::new()) };
    let (header, _) = FrameScanner::segment(fs, gen_dir, first)?;
    let mut removed = Vec::new();
    for name in fs.read_dir(gen_dir).map_err(|e| Error::io("list", gen_dir, e))? {
        if crate::index::format::parse_name(&name).is_some_and(|(lo, _)| lo < header.first_seq) {
            let p = gen_dir.join(&name);
            fs.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        // IMPORTANT: fsync folder, so the removals hold before the store opens.
        fs.sync_dir(gen_dir).map_err(|e| Error::io("fsync dir", gen_dir, e))?;
    }
    Ok(removed)
}
