//! The log's start is durable (`CURRENT` version 2, format-spec/layout.md): a
//! log whose first segments were removed by hand is refused by every open, named
//! by `check`, and accepted as lost by `jobq repair` only, which keeps every job
//! id. Online compaction moves the start before it removes a segment, so the
//! store it leaves (also after a cut between the two) opens whole.

use std::path::Path;
use std::sync::Arc;

mod common;
mod pyenv;

use jobq::fs::{FileSystem, SimFs};
use jobq::model::{JobKey, ManualClock};
use jobq::store::layout::{read_current_file, Current};
use jobq::store::request::parse_push;
use jobq::store::{check, repair, PushResult};
use jobq::{Error, Options, Store};

const DIR: &str = "/db";
const GEN: &str = "/db/gen-0000000000000001";

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(1_000_000)),
        background: false,
        memtable_entries: 32,
        segment_bytes: 16 << 10,
        reclaim_segments: 2,
        ..Options::default()
    }
}

fn read_only(sim: &SimFs) -> Options {
    Options { read_only: true, create: false, ..opts(sim) }
}

fn push(store: &Store, project: u32, spider: &str, pad: usize) -> JobKey {
    let line = format!(r#"{{"spider":"{spider}","pad":"{}"}}"#, "p".repeat(pad));
    match &store.push(project, &[parse_push(&line).unwrap()], None).unwrap()[0] {
        PushResult::Pushed { key, .. } => *key,
        other => panic!("{other:?}"),
    }
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn segments(sim: &SimFs) -> Vec<String> {
    let mut names: Vec<String> =
        sim.read_dir(Path::new(GEN)).unwrap().into_iter().filter(|n| n.ends_with(".jql")).collect();
    names.sort();
    names
}

fn current(sim: &SimFs) -> Current {
    read_current_file(sim, Path::new(DIR)).unwrap().unwrap()
}

/// A store of several segments: spider `old` only in the first ones.
fn several_segments(sim: &SimFs) -> Vec<JobKey> {
    let store = Store::open(DIR, opts(sim)).unwrap();
    let keys: Vec<JobKey> = (0..300).map(|i| push(&store, 1, if i < 60 { "old" } else { "new" }, 300)).collect();
    store.close().unwrap();
    assert!(segments(sim).len() >= 4, "{:?}", segments(sim));
    assert_eq!(current(sim), Current { generation: 1, log_start: Some(1) });
    keys
}

fn assert_refused_naming(r: jobq::Result<Store>, segment: &str) {
    match r {
        Err(Error::Corrupt { path, what, .. }) => {
            assert!(path.ends_with(segment) && what.contains("missing"), "{}: {what}", path.display())
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a log without {segment} opened"),
    }
}

#[test]
fn a_removed_first_segment_is_refused_until_repair_accepts_the_loss() {
    let sim = SimFs::new();
    let keys = several_segments(&sim);
    let first = Path::new(GEN).join("log-0000000001.jql");
    sim.remove_file(&first).unwrap();
    // Before, every open took this for a log whose start online compaction removed.
    assert_refused_naming(Store::open(DIR, opts(&sim)), "log-0000000001.jql");
    assert_refused_naming(Store::open(DIR, read_only(&sim)), "log-0000000001.jql");
    let report = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(report.findings.iter().any(|f| f.to_string().contains("log-0000000001.jql")), "{:#?}", report.findings);
    // The refusals changed nothing; repair accepts the loss and rewrites the rest
    // into a generation whose log starts whole.
    assert_eq!(current(&sim).log_start, Some(1));
    let r = repair(Path::new(DIR), opts(&sim)).unwrap();
    assert_eq!(r.missing_start, Some((1, 2)), "{r:?}");
    assert_eq!(current(&sim), Current { generation: 2, log_start: Some(1) });
    assert!(!sim.exists(Path::new(GEN)).unwrap(), "the damaged generation is gone");
    let store = Store::open(DIR, opts(&sim)).unwrap();
    let out = export(&store);
    assert!(!out.contains(&format!("\"key\":\"{}\"", keys[0])), "a job of the removed segment is still served");
    assert!(out.contains(&format!("\"key\":\"{}\"", keys[299])), "the jobs after it stay");
    // No job id is given again, of a spider known only to the lost segment either.
    let old = push(&store, 1, "old", 0);
    let new = push(&store, 1, "new", 0);
    assert!(old.job > keys[59].job && new.job > keys[299].job, "ids given again: {old} {new}");
    assert_eq!(old.spider, keys[0].spider, "spider `old` kept its id");
    store.close().unwrap();
    let report = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // The claim holds in the new generation too.
    sim.remove_file(Path::new("/db/gen-0000000000000002/log-0000000001.jql")).unwrap();
    assert_refused_naming(Store::open(DIR, opts(&sim)), "log-0000000001.jql");
}

/// 1,200 jobs of project 7 in one import, enough to train a dictionary: in these
/// options segment 1 holds the dictionary, 2 the spiders, 3 the jobs, and the
/// import's commit frame begins segment 4.
fn import_1200(store: &Store) {
    let lines: String = (1..=1200u32)
        .map(|j| {
            format!(
                r#"{{"key":"7/{}/{j}","spider":"bulk-{}","state":"pending","pending_time":{},"version":"1.{}","spider_args":{{"url":"https://site-{}.example.com/c/{}"}},"scheduled_by":"user{}@example.org"}}"#,
                1 + j % 3,
                1 + j % 3,
                1_600_000_000_000u64 + u64::from(j),
                j % 7,
                j % 31,
                j * 7919 % 5000,
                j % 50
            ) + "\n"
        })
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
}

/// The same repair killed at every file-system call (a power cut), then run
/// again: the store ends as after one whole run (same jobs, same ids), and
/// checks clean. The dictionaries go into the log before the index files that
/// held their only copies, so a second run finds them there.
#[test]
fn a_repair_of_a_lost_start_killed_at_any_call_then_run_again_ends_as_one_whole_run() {
    use jobq::fs::{Fault, FaultKind};
    let sim = SimFs::new();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    import_1200(&store);
    for j in (1..=1200u32).step_by(97) {
        let key = format!("7/{}/{j}", 1 + j % 3);
        let u = jobq::store::request::parse_update(&format!(r#"{{"key":"{key}","state":"running"}}"#), 7).unwrap();
        store.update(7, &[u], None).unwrap();
    }
    store.close().unwrap();
    for name in &segments(&sim)[..3] {
        sim.remove_file(&Path::new(GEN).join(name)).unwrap();
    }
    let export_of = |s: &SimFs| export(&Store::open(DIR, read_only(s)).unwrap());
    let (want, calls) = {
        let s = sim.fork();
        repair(Path::new(DIR), opts(&s)).unwrap();
        (export_of(&s), s.mutations())
    };
    assert!(want.contains(r#""name":"bulk-1","next_job":1201"#), "the lost jobs' ids stay taken: {want}");
    assert!(calls > 30, "a repair of {calls} calls");
    for at in 0..calls + 2 {
        let s = sim.fork();
        s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
        let _ = repair(Path::new(DIR), opts(&s));
        s.kill();
        let context = format!("repair killed at call {at} of {calls}");
        repair(Path::new(DIR), opts(&s)).unwrap_or_else(|e| panic!("{context}: the second run: {e}"));
        assert_eq!(export_of(&s), want, "{context}: not the store one whole run leaves");
        let r = check(Path::new(DIR), Arc::new(s.clone())).unwrap();
        assert!(r.findings.is_empty(), "{context}: {:#?}", r.findings);
    }
}

/// Online compaction can leave a log that begins with an import's commit frame
/// (the import's frames all in the segments it removed). Validation from the
/// log's start took that commit for corruption ("closes no open transaction"):
/// `check` called the store damaged and `jobq repair` cut every frame from there.
#[test]
fn a_log_beginning_with_an_imports_commit_checks_clean_and_repair_keeps_it() {
    let sim = SimFs::new();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    import_1200(&store);
    let commit_segment = "log-0000000004.jql";
    let header = sim.read_file(&Path::new(GEN).join(commit_segment)).unwrap();
    let (first_seq, at) = (u64::from_le_bytes(header[24..32].try_into().unwrap()), 12288);
    assert_eq!(header[at + 8], 4, "segment 4 begins with the commit (frame kind 4)");
    assert!(first_seq > 1200);
    for i in 0..200 {
        push(&store, 8, "later", 200 + i % 7);
    }
    while segments(&sim)[0].as_str() < commit_segment {
        assert!(!store.reclaim().unwrap().segments.is_empty(), "compaction stopped before {commit_segment}");
    }
    assert_eq!(segments(&sim)[0], commit_segment, "the log begins with the commit");
    let want = export(&store);
    store.close().unwrap();
    let report = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    spec_reader_agrees(&sim, &want);
    let r = repair(Path::new(DIR), opts(&sim)).unwrap();
    assert!(r.cut.is_none() && r.dropped.is_empty(), "{r:?}");
    assert_eq!(export(&Store::open(DIR, read_only(&sim)).unwrap()), want);
}

/// The reader written from format-spec/ alone (tests/spec_reader) reads the
/// store on a real disk: `check` is clean and its export is jobq's.
fn spec_reader_agrees(sim: &SimFs, want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let gen = Path::new(GEN).file_name().unwrap();
    std::fs::create_dir(tmp.path().join(gen)).unwrap();
    std::fs::write(tmp.path().join("CURRENT"), sim.read_file(&Path::new(DIR).join("CURRENT")).unwrap()).unwrap();
    for name in sim.read_dir(Path::new(GEN)).unwrap() {
        std::fs::write(tmp.path().join(gen).join(&name), sim.read_file(&Path::new(GEN).join(&name)).unwrap()).unwrap();
    }
    let python = pyenv::python_with(&["zstandard"], &[pyenv::ZSTANDARD]);
    let reader = |cmd: &str| {
        let out = std::process::Command::new(&python)
            .args(["tests/spec_reader/reader.py", &tmp.path().to_string_lossy(), cmd])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "reader {cmd}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    assert!(reader("check").contains("check: ok"));
    let lines =
        |text: &str| -> Vec<serde_json::Value> { text.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    assert_eq!(lines(&reader("export")), lines(want), "the spec reader's export differs from jobq's");
}

/// The hostile pass's store: an import that trains a dictionary, then pushes and
/// updates of imported jobs in later segments. With the first segment gone, what
/// follows it updates jobs and uses a dictionary only it held: the log left is no
/// whole store (`check` found 1,801 problems in it). Repair keeps exactly the jobs
/// written after the lost segments, and leaves a store that checks clean.
#[test]
fn repair_of_a_lost_start_leaves_what_the_log_still_holds_and_checks_clean() {
    let sim = SimFs::new();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    import_1200(&store);
    // Jobs written after the import: an update rewrites a job whole.
    let mut later = Vec::new();
    for j in (1..=1200u32).step_by(7) {
        let key = format!("7/{}/{j}", 1 + j % 3);
        let u = jobq::store::request::parse_update(&format!(r#"{{"key":"{key}","state":"running"}}"#), 7).unwrap();
        store.update(7, &[u], Some("bob")).unwrap();
        later.push(format!(r#"{{"key":"{key}","#));
        later.push(format!(r#"{{"key":"{}","#, push(&store, 7, &format!("bulk-{}", 1 + j % 3), 100)));
    }
    let all = export(&store);
    let kept: String =
        all.lines().filter(|l| later.iter().any(|k| l.starts_with(k))).map(|l| format!("{l}\n")).collect();
    store.close().unwrap();
    // Segment 1 holds the dictionary, 2 the spiders, 3 the import: all go.
    for name in &segments(&sim)[..3] {
        sim.remove_file(&Path::new(GEN).join(name)).unwrap();
    }
    assert_refused_naming(Store::open(DIR, read_only(&sim)), "log-0000000001.jql");
    let r = repair(Path::new(DIR), opts(&sim)).unwrap();
    assert!(r.cut.is_none() && r.missing_start == Some((1, 4)), "{r:?}");
    let store = Store::open(DIR, opts(&sim)).unwrap();
    let out = export(&store);
    // The lost jobs' ids stay taken: the export says so in its catalog lines.
    let (catalog, jobs): (Vec<&str>, Vec<&str>) = out.lines().partition(|l| l.starts_with(r#"{"spider_catalog""#));
    assert_eq!(catalog.len(), 3, "{catalog:?}");
    let mut jobs = jobs;
    let mut want: Vec<&str> = kept.lines().collect();
    jobs.sort_unstable();
    want.sort_unstable();
    assert_eq!(jobs, want, "the jobs written after the lost segments");
    let late = push(&store, 7, "bulk-1", 0);
    assert!(late.job > 1200, "job id {late} given again");
    store.close().unwrap();
    let report = check(Path::new(DIR), Arc::new(sim.clone())).unwrap();
    assert!(report.findings.is_empty(), "{:#?}", &report.findings[..report.findings.len().min(5)]);
}

#[test]
fn online_compaction_moves_the_start_before_it_removes_a_segment() {
    let sim = SimFs::new();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    for i in 0..400 {
        // Each job pushed again and again: the oldest segments hold superseded versions only.
        push(&store, 1 + i % 2, "s", 200);
    }
    let want = export(&store);
    let mut removed = Vec::new();
    for _ in 0..10 {
        removed.extend(store.reclaim().unwrap().segments);
    }
    assert!(!removed.is_empty(), "nothing reclaimed");
    let start = *removed.iter().max().unwrap() + 1;
    assert_eq!(current(&sim).log_start, Some(start));
    assert_eq!(segments(&sim)[0], format!("log-{start:010}.jql"));
    assert_eq!(export(&store), want);
    store.close().unwrap();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    assert_eq!(export(&store), want);
    store.close().unwrap();
    sim.remove_file(&Path::new(GEN).join(format!("log-{start:010}.jql"))).unwrap();
    assert_refused_naming(Store::open(DIR, opts(&sim)), &format!("log-{start:010}.jql"));
}

/// A backup's copy carries the start: a first backup names its first segment, a
/// later one moves the start before it removes what the source's compaction did.
#[test]
fn a_backup_moves_its_copy_s_start_with_the_source_s() {
    let sim = SimFs::new();
    let store = Store::open(DIR, opts(&sim)).unwrap();
    for i in 0..400 {
        push(&store, 1 + i % 2, "s", 200);
    }
    let dest = Path::new("/copy");
    jobq::store::backup(Path::new(DIR), dest, Arc::new(sim.clone())).unwrap();
    let start = |d: &Path| read_current_file(&sim, d).unwrap().unwrap().log_start;
    assert_eq!(start(dest), Some(1));
    store.reclaim().unwrap();
    let moved = start(Path::new(DIR)).unwrap();
    assert!(moved > 1);
    jobq::store::backup(Path::new(DIR), dest, Arc::new(sim.clone())).unwrap();
    assert_eq!(start(dest), Some(moved));
    let copy = Store::open(dest, read_only(&sim)).unwrap();
    assert_eq!(export(&copy), export(&store));
    drop(copy);
    sim.remove_file(&dest.join("gen-0000000000000001").join(format!("log-{moved:010}.jql"))).unwrap();
    assert_refused_naming(Store::open(dest, read_only(&sim)), &format!("log-{moved:010}.jql"));
}

/// What a crash between the start's move and the removals leaves: segments
/// before the start. They are still read, as before (their records superseded).
#[test]
fn segments_before_the_start_are_a_compaction_cut_short() {
    let sim = SimFs::new();
    several_segments(&sim);
    let store = Store::open(DIR, opts(&sim)).unwrap();
    let want = export(&store);
    store.close().unwrap();
    jobq::store::layout::write_current(&sim, Path::new(DIR), 1, 3).unwrap();
    for o in [opts(&sim), read_only(&sim)] {
        let store = Store::open(DIR, o).unwrap();
        assert_eq!(export(&store), want);
    }
    assert_eq!(current(&sim).log_start, Some(3), "the start never goes back");
}

/// A version-1 `CURRENT` makes no claim: it opens as before, and the first
/// writable open writes version 2 naming the log's first segment.
#[test]
fn a_version_1_current_is_upgraded_by_a_writable_open() {
    let sim = SimFs::new();
    several_segments(&sim);
    let path = Path::new(DIR).join("CURRENT");
    let mut v1 = sim.read_file(&path).unwrap();
    v1[8] = 1;
    v1[24..28].fill(0);
    let crc = jobq::codec::frame::checksum(&[&v1[0..28]]);
    v1[28..32].copy_from_slice(&crc.to_le_bytes());
    jobq::fs::publish_file(&sim, Path::new(DIR), "CURRENT", &v1).unwrap();
    drop(Store::open(DIR, read_only(&sim)).unwrap());
    assert_eq!(current(&sim).log_start, None, "a read-only open writes nothing");
    Store::open(DIR, opts(&sim)).unwrap().close().unwrap();
    assert_eq!(current(&sim), Current { generation: 1, log_start: Some(1) });
}

/// The v9 fixture: a store written by format 9 whose online compaction moved its
/// log start past segment 1 (`CURRENT` version 2). Every build must read it.
mod fixture_v9 {
    use super::*;
    use common::copy_dir;

    const V9: &str = "tests/fixtures/v9";

    fn real_opts(clock: &Arc<ManualClock>) -> Options {
        Options {
            clock: clock.clone(),
            background: false,
            memtable_entries: 16,
            segment_bytes: 6000,
            reclaim_segments: 2,
            ..Options::default()
        }
    }

    #[test]
    #[ignore = "rewrites the committed fixture of format 9"]
    fn write_v9() {
        let dir = Path::new(V9).join("store");
        let _ = std::fs::remove_dir_all(&dir);
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store = Store::open(&dir, real_opts(&clock)).unwrap();
        for i in 0..60u32 {
            clock.advance(1000);
            let line =
                format!(r#"{{"spider":"s{}","tags":["t{}"],"i":{i},"pad":"{}"}}"#, i % 3, i % 2, "x".repeat(120));
            store.push(70 + i % 2, &[parse_push(&line).unwrap()], Some("alice")).unwrap();
        }
        let mut reclaimed = 0;
        for _ in 0..6 {
            reclaimed += store.reclaim().unwrap().segments.len();
        }
        assert!(reclaimed > 0, "nothing reclaimed");
        clock.advance(1000);
        store.push(70, &[parse_push(r#"{"spider":"after","note":"after the start moved"}"#).unwrap()], None).unwrap();
        std::fs::write(Path::new(V9).join("export.jsonl"), export(&store)).unwrap();
        store.close().unwrap();
    }

    #[test]
    fn v9_store_with_a_moved_log_start_reads_the_same_checks_clean_and_refuses_its_start_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        copy_dir(&Path::new(V9).join("store"), &dir);
        let want = std::fs::read_to_string(Path::new(V9).join("export.jsonl")).unwrap();
        let fs = jobq::fs::RealFs;
        let c = read_current_file(&fs, &dir).unwrap().unwrap();
        let gen = dir.join(format!("gen-{:016x}", c.generation));
        let mut first: Vec<u32> = std::fs::read_dir(&gen)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("log-")?.strip_suffix(".jql")?.parse().ok())
            .collect();
        first.sort_unstable();
        assert!(c.log_start.is_some_and(|s| s > 1 && s == first[0]), "{c:?} {first:?}");
        let o = Options { read_only: true, create: false, ..Options::default() };
        assert_eq!(export(&Store::open(&dir, o).unwrap()), want);
        let report = check(&dir, Arc::new(fs)).unwrap();
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        let store = Store::open(&dir, Options::default()).unwrap();
        assert_eq!(export(&store), want);
        store.push(70, &[parse_push(r#"{"spider":"s0"}"#).unwrap()], None).unwrap();
        store.close().unwrap();
        std::fs::remove_file(gen.join(format!("log-{:010}.jql", first[0]))).unwrap();
        assert_refused_naming(Store::open(&dir, Options::default()), &format!("log-{:010}.jql", first[0]));
    }
}
