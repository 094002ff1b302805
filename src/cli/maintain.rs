//! `jobq check`, `jobq compact`, `jobq repair` and `jobq backup`: the operator's tools.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{BackupArgs, CheckArgs, CompactArgs, RepairArgs};
use jobq::fs::RealFs;
use jobq::store::{backup as backup_store, check as check_store, compact as compact_store, repair as repair_store};
use jobq::{Error, Options};

/// Exit 0: clean; 1: damage found (each finding printed); 2: could not run.
pub fn check(a: CheckArgs) -> ExitCode {
    if !a.data.is_dir() {
        note!("jobq check: no store at {}: not a directory", a.data.display());
        return ExitCode::from(2);
    }
    match check_store(&a.data, Arc::new(RealFs)) {
        Err(e) => {
            note!("jobq check: could not check {}: {e}", a.data.display());
            ExitCode::from(2)
        }
        Ok(r) => {
            for f in &r.findings {
                say!("{f}");
            }
            for n in &r.notes {
                note!("note: {n}");
            }
            note!(
                "checked {} segments, {} frames, {} records, {} jobs, {} index files in {} ms: {}",
                r.segments,
                r.frames,
                r.records,
                r.jobs,
                r.index_files,
                r.millis,
                if r.is_clean() { "clean".to_string() } else { format!("{} problems", r.findings.len()) }
            );
            if r.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `30d`, `12h`, `90m`, `3600s`, `3600`: a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("expected a duration like 30d, 12h, 90m or 3600s, got {s:?}"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown duration unit {other:?} (use s, m, h, d or w)")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

pub fn compact(a: CompactArgs) -> Result<(), String> {
    if !a.data.is_dir() {
        return Err(format!("no store at {}: not a directory", a.data.display()));
    }
    let bar = if io::stderr().is_terminal() {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} jobs, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let opts = Options { keep_free: a.keep_free.0, ..Options::default() };
    let result = compact_store(&a.data, opts, a.retain_deleted, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let r = result.map_err(|e| match e {
        Error::Locked { .. } => format!("{e}: compaction runs offline; stop the server first"),
        e => format!("compaction of {} failed, the store is unchanged: {e}", a.data.display()),
    })?;
    note!(
        "compacted generation {} into {}: {} records -> {} ({} deleted jobs dropped), {} bytes -> {} bytes, in {} ms",
        r.generation_before,
        r.generation_after,
        r.records_before,
        r.records_after,
        r.dropped,
        r.bytes_before,
        r.bytes_after,
        r.millis
    );
    Ok(())
}

pub fn repair(a: RepairArgs) -> Result<(), String> {
    if !a.data.is_dir() {
        return Err(format!("no store at {}: not a directory", a.data.display()));
    }
    let r = repair_store(&a.data, Options::default()).map_err(|e| match e {
        Error::Locked { .. } => format!("{e}: repair runs offline; stop the server first"),
        e => format!("repair of {} failed: {e}", a.data.display()),
    })?;
    for h in &r.headers_rebuilt {
        note!(
            "rebuilt the damaged header of segment {} (version {}, first sequence number {}, from its file name, \
             directory and first frame); the old header bytes are in {}",
            h.segment,
            h.version,
            h.first_seq,
            r.saved_to.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        );
    }
    for (name, segment) in &r.beyond_log {
        note!(
            "set aside index file {name}: it covered the log up to segment {segment}, which is gone; \
             the jobs written there are lost"
        );
    }
    if let Some((from, to)) = r.missing_start {
        let (lost, verb) = (jobq::store::segments_named(from, to), if to - from > 1 { "were" } else { "was" });
        note!(
            "log {lost} {verb} missing (CURRENT said the log started at segment {from}): the jobs written there are \
             lost; the jobs after it were rewritten into a new generation (no job id given again)"
        );
    }
    if let Some((from, to)) = r.missing_end {
        let (lost, verb) = (jobq::store::segments_named(from, to), if to - from > 1 { "were" } else { "was" });
        note!(
            "log {lost} {verb} missing (REACH said the log reached segment {}): the jobs written there are lost, and \
             their job ids may be given again; the log now ends in segment {}",
            to - 1,
            from - 1
        );
    }
    if !r.began_before_log.is_empty() {
        note!(
            "rebuilt from the log the index files that began before it (online compaction removed the segments \
             under their start): {}",
            r.began_before_log.join(", ")
        );
    }
    if r.catalog_restored > 0 {
        note!(
            "wrote a catalog frame keeping {} spiders and job ids the cut bytes or the index files set aside knew \
             (no spider forgotten, no job id given again)",
            r.catalog_restored
        );
    }
    if !r.dicts_restored.is_empty() {
        note!(
            "wrote back into the log the dictionaries {:?}: records it keeps are packed with them, and their frames were lost or cut (copies from the index files or the cut bytes)",
            r.dicts_restored
        );
    }
    let Some(cut) = &r.cut else {
        let whole = r.headers_rebuilt.is_empty()
            && r.missing_start.is_none()
            && r.missing_end.is_none()
            && r.dicts_restored.is_empty();
        let what = if whole && r.beyond_log.is_empty() && r.began_before_log.is_empty() {
            "the log is whole: nothing to repair"
        } else {
            "the log is whole now"
        };
        note!("{}: {what} ({} ms)", a.data.display(), r.millis);
        return Ok(());
    };
    note!(
        "cut the log at segment {} offset {} ({}): {} bytes moved aside to {}{}",
        cut.at.segment,
        cut.at.offset,
        cut.reason,
        cut.bytes,
        r.saved_to.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        if cut.lost_durable { "; writes that had been acknowledged are among them" } else { "" }
    );
    for (key, state) in &r.dropped {
        say!("dropped version: {key} {state}");
    }
    note!(
        "{} job versions dropped, {} bytes undecodable; index files set aside: {}; {} ms",
        r.dropped.len(),
        r.undecoded_bytes,
        {
            let all: Vec<&str> = (r.beyond_log.iter().map(|(n, _)| n.as_str()))
                .chain(r.began_before_log.iter().map(String::as_str))
                .chain(r.indexes_set_aside.iter().map(String::as_str))
                .collect();
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        },
        r.millis
    );
    Ok(())
}

/// Prints the position on stdout as one JSON line; the rest on stderr.
/// `path` with its symlinks and `.`/`..` resolved; the part that does not exist
/// yet (a new destination) appended as given.
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    let mut missing: Vec<std::ffi::OsString> = Vec::new();
    let mut at = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    loop {
        match at.canonicalize() {
            Ok(mut real) => {
                // What does not exist has no symlinks: its `..` and `.` are lexical.
                for part in missing.into_iter().rev() {
                    match part.to_str() {
                        Some("..") => {
                            real.pop();
                        }
                        Some(".") => {}
                        _ => real.push(part),
                    }
                }
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Its last component, `..` included (which `file_name` does not give).
                let name = at.components().next_back().map(|c| c.as_os_str().to_os_string());
                match (name, at.parent()) {
                    (Some(name), Some(parent)) => {
                        missing.push(name);
                        at = parent.to_path_buf();
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn backup(a: BackupArgs) -> Result<(), String> {
    if !a.data.is_dir() {
        return Err(format!("no store at {}: not a directory", a.data.display()));
    }
    // Compared and named resolved: `./store/bk`, a symlink to the store and the
    // store itself all name one place.
    let data = a.data.canonicalize().map_err(|e| format!("{}: {e}", a.data.display()))?;
    let to = resolved(&a.to).map_err(|e| format!("{}: {e}", a.to.display()))?;
    let r = backup_store(&data, &to, Arc::new(RealFs)).map_err(|e| match e {
        Error::Locked { .. } => format!("{e}: a server or another backup is using {}", a.to.display()),
        e => format!("backup of {} to {} failed: {e}", a.data.display(), a.to.display()),
    })?;
    say!(
        "{{\"generation\":{},\"segment\":{},\"offset\":{},\"next_seq\":{}}}",
        r.generation,
        r.position.segment,
        r.position.offset,
        r.next_seq
    );
    note!(
        "backed up {} to {} as of segment {} offset {} (next sequence {}): {}, {} files linked, {} files and {} bytes copied, {} removed, {} ms",
        a.data.display(),
        a.to.display(),
        r.position.segment,
        r.position.offset,
        r.next_seq,
        if r.full { "full" } else { "incremental" },
        r.linked,
        r.copied_files,
        r.copied_bytes,
        r.removed,
        r.millis
    );
    Ok(())
}
