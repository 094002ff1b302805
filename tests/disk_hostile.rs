//! What a hostile operator can do to a data directory with the store's files
//! themselves (found by the hostile pass on on-disk state, `hostile/` scripts).

use jobq::store::request::parse_push;
use jobq::{Error, Options, Store};

fn push(store: &Store, spider: &str) -> String {
    match &store.push(5, &[parse_push(&format!(r#"{{"spider":"{spider}"}}"#)).unwrap()], None).unwrap()[0] {
        jobq::store::PushResult::Pushed { key, .. } => key.to_string(),
        other => panic!("{other:?}"),
    }
}

/// `LOCK` removed while a writer holds it (a cleanup of "stale lock files"): a
/// second writer must still be refused. It was not: it created a new `LOCK`,
/// locked that, and both appended to the same log, one overwriting the other's
/// acknowledged writes (two pushes answered with the same key, one lost).
#[test]
fn a_removed_lock_file_does_not_let_a_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), Options::default()).unwrap();
    push(&first, "one");
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::Locked { .. }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(second) => {
            let (a, b) = (push(&first, "one"), push(&second, "two"));
            panic!("a second writer opened the store: both pushed, as {a} and {b}");
        }
    }
    // The writer goes on; once it closed, the directory opens again.
    push(&first, "one");
    first.close().unwrap();
    let again = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(push(&again, "one"), "5/1/3");
    again.close().unwrap();
}

/// Options over the simulated file system: a manual clock at `now_ms`, no
/// background threads, an index file every `memtable_entries` jobs.
fn sim_opts(sim: &jobq::fs::SimFs, now_ms: u64, memtable_entries: usize) -> Options {
    Options {
        fs: std::sync::Arc::new(sim.clone()),
        clock: std::sync::Arc::new(jobq::model::ManualClock::new(now_ms)),
        background: false,
        memtable_entries,
        ..Options::default()
    }
}

/// Every job of the store in `dir`, as `jobq export` writes them (read-only).
fn export_of(sim: &jobq::fs::SimFs, dir: &str) -> String {
    let o = Options { read_only: true, create: false, ..sim_opts(sim, 0, 16) };
    let store = Store::open(dir, o).unwrap_or_else(|e| panic!("{dir} does not open: {e}"));
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

mod sim {
    use std::path::Path;
    use std::sync::Arc;

    use jobq::fs::{Fault, FaultKind, FileSystem, SimFs};
    use jobq::log::scan::{FrameScanner, Step};
    use jobq::store::request::parse_push;
    use jobq::store::{backup, check, compact};
    use jobq::{Options, Store};

    pub fn opts(sim: &SimFs) -> Options {
        super::sim_opts(sim, 7000, 16)
    }

    use super::export_of;

    fn fill(sim: &SimFs, dir: &str, spider: &str, n: u32) {
        let store = Store::open(dir, opts(sim)).unwrap();
        for i in 0..n {
            let line = format!(r#"{{"spider":"{spider}","i":{i}}}"#);
            store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
        }
        store.close().unwrap();
    }

    /// `jobq backup --to` naming another store (a typo, a swapped argument): a
    /// store whose generation is newer than the source's is no earlier copy of the
    /// source (generations only grow), so it must be refused and left as it is. It
    /// was replaced: its generation removed, the source's copied in.
    #[test]
    fn a_backup_refuses_a_destination_of_a_newer_generation() {
        let sim = SimFs::new();
        fill(&sim, "/src", "s", 30);
        fill(&sim, "/other", "precious", 10);
        for _ in 0..2 {
            compact(Path::new("/other"), opts(&sim), None, &mut |_, _| {}).unwrap();
        }
        let before = export_of(&sim, "/other");
        let e = backup(Path::new("/src"), Path::new("/other"), Arc::new(sim.clone()))
            .expect_err("a store of generation 3 was replaced by a backup of generation 1");
        assert!(e.to_string().contains("generation 3"), "{e}");
        assert_eq!(export_of(&sim, "/other"), before, "the other store is untouched");
        // A copy that is older than the source (the source compacted since) is
        // still replaced by the new generation.
        backup(Path::new("/src"), Path::new("/dest"), Arc::new(sim.clone())).unwrap();
        compact(Path::new("/src"), opts(&sim), None, &mut |_, _| {}).unwrap();
        let r = backup(Path::new("/src"), Path::new("/dest"), Arc::new(sim.clone())).unwrap();
        assert!(r.full && r.generation == 2, "{r:?}");
        assert_eq!(export_of(&sim, "/dest"), export_of(&sim, "/src"));
    }

    /// `CURRENT` lost beside a generation that holds data: a writable open refuses
    /// the store as damage (naming `CURRENT`); `check` must say the same (exit 1,
    /// a finding), not "no jobq store here" (exit 2, could not run). A backup cut
    /// off before its first `CURRENT` leaves exactly this.
    #[test]
    fn check_calls_a_lost_current_damage_as_open_does() {
        let sim = SimFs::new();
        fill(&sim, "/db", "s", 30);
        sim.remove_file(Path::new("/db/CURRENT")).unwrap();
        let open = Store::open("/db", opts(&sim)).err().expect("a writable open refuses a store without CURRENT");
        assert!(open.to_string().contains("CURRENT"), "{open}");
        let ro = Options { read_only: true, create: false, ..opts(&sim) };
        let e = Store::open("/db", ro).err().expect("a read-only open refuses it");
        assert!(matches!(e, jobq::Error::Corrupt { .. }), "read-only open: {e}");
        let r = check(Path::new("/db"), Arc::new(sim.clone())).unwrap_or_else(|e| panic!("check could not run: {e}"));
        assert!(!r.is_clean() && r.findings.iter().any(|f| f.to_string().contains("CURRENT")), "{:#?}", r.findings);
        // A directory that never held a store is still no store, not damage.
        sim.create_dir(Path::new("/empty")).unwrap();
        assert!(check(Path::new("/empty"), Arc::new(sim.clone())).is_err());
        // And a directory that is not there: no store, said as such.
        let e = check(Path::new("/nowhere"), Arc::new(sim.clone())).expect_err("no store there");
        assert!(matches!(e, jobq::Error::Unsupported { .. }), "check of no directory: {e}");
    }

    /// Where a segment's last frame ends (the log's bytes in it).
    fn frames_end(sim: &SimFs, gen: &str, n: u32) -> u64 {
        let (h, sc) = FrameScanner::segment(sim, Path::new(gen), n).unwrap();
        let mut sc = sc.accept_zero_tail(true);
        let mut end = h.data_start();
        while let Step::Frame { offset, header, .. } = sc.next_step().unwrap() {
            end = offset + header.frame_len();
        }
        end
    }

    /// Bytes of the files of a generation.
    /// Bytes of a generation's log segments and index files (what compact reports).
    fn files_bytes(sim: &SimFs, gen: &str) -> u64 {
        sim.read_dir(Path::new(gen))
            .unwrap()
            .iter()
            .filter(|n| n.ends_with(".jql") || n.ends_with(".jqi"))
            .map(|n| sim.read_file(&Path::new(gen).join(n)).unwrap().len() as u64)
            .sum()
    }

    /// Offline `jobq compact` left its last segment with a MiB of preallocated
    /// zeros (legal, format 5), and reported them as the store's bytes ("481,071
    /// -> 1,141,904 bytes"). It now seals the new log as a clean close does
    /// (the zeros cut before `CURRENT` switches), and reports the log's bytes to
    /// its end (a crashed store's zeros not counted before either).
    #[test]
    fn compact_leaves_no_preallocated_zeros_and_reports_the_log_bytes() {
        let sim = SimFs::new();
        fill(&sim, "/db", "s", 200);
        // Left as a crash leaves it: the last segment ends in preallocated zeros.
        let store = Store::open("/db", opts(&sim)).unwrap();
        store.push(1, &[parse_push(r#"{"spider":"s"}"#).unwrap()], None).unwrap();
        std::mem::forget(store);
        sim.kill();
        const OLD: &str = "/db/gen-0000000000000001";
        let old_log = sim.read_file(Path::new(&format!("{OLD}/log-0000000001.jql"))).unwrap().len() as u64;
        let old_zeros = old_log - frames_end(&sim, OLD, 1);
        assert!(old_zeros > 0, "the crashed store ends in zeros");
        let before = files_bytes(&sim, OLD) - old_zeros;
        let want = export_of(&sim, "/db");
        let r = compact(Path::new("/db"), opts(&sim), None, &mut |_, _| {}).unwrap();
        const NEW: &str = "/db/gen-0000000000000002";
        let segs = jobq::log::segment::list(&sim, Path::new(NEW)).unwrap();
        let last = *segs.last().unwrap();
        let len = sim.read_file(&Path::new(NEW).join(jobq::log::segment::file_name(last))).unwrap().len() as u64;
        assert_eq!(len, frames_end(&sim, NEW, last), "the new log ends at its last frame");
        assert_eq!((r.bytes_before, r.bytes_after), (before, files_bytes(&sim, NEW)), "{r:?}");
        let c = check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
        assert!(c.is_clean() && c.notes.is_empty(), "{c:#?}");
        assert_eq!(export_of(&sim, "/db"), want);
    }

    /// An offline `jobq compact` that fails (a full disk, an I/O error) at any
    /// call before `CURRENT` switched removes its partial new generation, and
    /// leaves the live one as it was. It left the partial directory until the
    /// next writable open.
    #[test]
    fn a_failed_compact_removes_its_partial_generation() {
        let sim = SimFs::new();
        fill(&sim, "/db", "s", 60);
        let want = export_of(&sim, "/db");
        let calls = {
            let s = sim.fork();
            compact(Path::new("/db"), opts(&s), None, &mut |_, _| {}).unwrap();
            s.mutations()
        };
        let new = Path::new("/db/gen-0000000000000002");
        let mut failed = 0;
        for kind in [FaultKind::Enospc, FaultKind::DiskFull, FaultKind::Eio] {
            for at in 0..calls {
                let s = sim.fork();
                s.set_fault(Some(Fault { at, kind, sticky: false }));
                let r = compact(Path::new("/db"), opts(&s), None, &mut |_, _| {});
                s.set_fault(None);
                let context = format!("{kind:?} at call {at} of {calls}: {r:?}");
                let current = jobq::store::layout::read_current(&s, Path::new("/db")).unwrap();
                if r.is_err() {
                    failed += 1;
                    if current == Some(1) {
                        assert!(!s.exists(new).unwrap(), "{context}: the partial generation is left");
                    }
                }
                assert_eq!(export_of(&s, "/db"), want, "{context}");
                let c = check(Path::new("/db"), Arc::new(s.clone())).unwrap();
                assert!(c.is_clean(), "{context}: {:#?}", c.findings);
            }
        }
        assert!(failed > calls, "{failed} of {calls} runs failed");
    }

    /// A non-zero byte in a segment's header padding (bytes 64..4096): no checksum
    /// covers it and nothing reads it. `check` called it damage, while open
    /// ignored it and `repair` left it, so only `compact` cleared it. Now all
    /// agree (format-spec/log.md): check notes it, open and repair leave it.
    #[test]
    fn a_flipped_byte_in_the_segment_header_padding_is_judged_alike() {
        let sim = SimFs::new();
        fill(&sim, "/db", "s", 30);
        let log = Path::new("/db/gen-0000000000000001/log-0000000001.jql");
        let mut bytes = sim.read_file(log).unwrap();
        bytes[1000] ^= 0x10;
        sim.write_file(log, bytes.clone()).unwrap();
        let want = export_of(&sim, "/db");
        let c = check(Path::new("/db"), Arc::new(sim.clone())).unwrap();
        assert!(c.is_clean(), "{:#?}", c.findings);
        assert!(c.notes.iter().any(|n| n.contains("offset 1000") && n.contains("padding")), "{:#?}", c.notes);
        Store::open("/db", opts(&sim)).unwrap().close().unwrap();
        let r = jobq::store::repair(Path::new("/db"), opts(&sim)).unwrap();
        assert!(r.cut.is_none() && r.headers_rebuilt.is_empty() && r.saved_to.is_none(), "{r:?}");
        assert_eq!(sim.read_file(log).unwrap()[..12288], bytes[..12288], "repair leaves the header pages");
        assert_eq!(export_of(&sim, "/db"), want);
    }
}

mod repair_cut {
    use std::path::Path;
    use std::sync::Arc;

    use jobq::fs::{Fault, FaultKind, FsOp, SimFs};
    use jobq::log::scan::{FrameScanner, Step};
    use jobq::model::ManualClock;
    use jobq::store::request::{parse_push, parse_update};
    use jobq::store::{check, repair};
    use jobq::{Options, Store};

    const LOG: &str = "/db/gen-0000000000000001/log-0000000001.jql";

    fn opts(sim: &SimFs) -> Options {
        super::sim_opts(sim, 5000, 8)
    }

    fn export(sim: &SimFs) -> String {
        super::export_of(sim, "/db")
    }

    /// A `REPAIR` file that is not what repair writes (a line that is no JSON, an
    /// id past u32, binary bytes) is refused, naming the file, before the run
    /// changes anything.
    #[test]
    fn a_damaged_repair_file_is_refused_before_anything_changes() {
        let sim = SimFs::new();
        let store = Store::open("/db", opts(&sim)).unwrap();
        store.push(1, &[parse_push(r#"{"spider":"s"}"#).unwrap()], None).unwrap();
        store.close().unwrap();
        let log = sim.read_file(Path::new(LOG)).unwrap();
        let good = r#"{"project":1,"spider":1,"next_job":2,"name":"s"}"#;
        for bad in [
            format!("{good}\nnot json\n"),
            r#"{"project":1,"spider":1,"next_job":4294967296,"name":null}"#.to_string(),
            "\u{0}\u{ff}".to_string(),
        ] {
            jobq::fs::publish_file(&sim, Path::new("/db"), "REPAIR", bad.as_bytes()).unwrap();
            let e = repair(Path::new("/db"), opts(&sim)).expect_err(&bad);
            assert!(matches!(e, jobq::Error::Corrupt { .. }) && e.to_string().contains("REPAIR"), "{bad:?}: {e}");
            assert_eq!(sim.read_file(Path::new(LOG)).unwrap(), log, "{bad:?}: the log changed");
        }
    }

    /// `jobq repair` let go of `LOCK` between its cut and its reopen of the
    /// store, where another writer (a server, an import) could open it and write
    /// before repair's catalog frame. The simulated disk logs each lock taken
    /// and released: repair now takes it once, before its first change, and
    /// releases it once, after its last.
    #[test]
    fn repair_holds_the_lock_from_before_its_cut_until_it_is_done() {
        let sim = SimFs::new();
        let store = Store::open("/db", opts(&sim)).unwrap();
        for i in 0..20u32 {
            store.push(1, &[parse_push(&format!(r#"{{"spider":"s","i":{i}}}"#)).unwrap()], None).unwrap();
        }
        store.close().unwrap();
        let (_, mut sc) = FrameScanner::segment(&sim, Path::new("/db/gen-0000000000000001"), 1).unwrap();
        let mut offsets = Vec::new();
        while let Step::Frame { offset, .. } = sc.next_step().unwrap() {
            offsets.push(offset);
        }
        let mut log = sim.read_file(Path::new(LOG)).unwrap();
        log[offsets[offsets.len() / 2] as usize + 40] ^= 0x40;
        sim.write_file(Path::new(LOG), log).unwrap();
        sim.record();
        let r = repair(Path::new("/db"), opts(&sim)).unwrap();
        assert!(r.cut.is_some() && r.catalog_restored > 0, "{r:?}");
        let ops = sim.take_log();
        let locks: Vec<(usize, &str)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                FsOp::Mark(m) if m == "lock /db/LOCK" || m == "unlock /db/LOCK" => Some((i, m.as_str())),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = locks.iter().map(|(_, m)| *m).collect();
        assert_eq!(names, ["lock /db/LOCK", "unlock /db/LOCK"], "{ops:#?}");
        let (first, last) = (locks[0].0, locks[1].0);
        let cut = ops.iter().position(|op| matches!(op, FsOp::SetLen(p, _) if p == Path::new(LOG))).unwrap();
        let catalog = ops.iter().rposition(|op| matches!(op, FsOp::Write { path, .. } if path == Path::new(LOG)));
        let removed = ops.iter().rposition(|op| matches!(op, FsOp::Remove(p) if p == Path::new("/db/REPAIR")));
        assert!(first < cut && catalog.is_some_and(|c| cut < c && c < last), "{ops:#?}");
        assert!(removed.is_some_and(|r| r < last), "REPAIR is removed under the lock: {ops:#?}");
    }

    /// `jobq repair` killed at every file-system call, then run again: the store
    /// ends as after one whole run, the catalog frame included (no job id the cut
    /// dropped is given again).
    #[test]
    fn a_repair_killed_at_any_call_then_run_again_ends_as_one_whole_run() {
        let sim = SimFs::new();
        let store = Store::open("/db", opts(&sim)).unwrap();
        for i in 0..30u32 {
            let line = format!(r#"{{"spider":"s{}","i":{i}}}"#, i % 2);
            store.push(1, &[parse_push(&line).unwrap()], None).unwrap();
            if i % 3 == 0 {
                let key = format!("1/{}/{}", 1 + i % 2, 1 + i / 2);
                let u = parse_update(&format!(r#"{{"key":"{key}","state":"finished"}}"#), 1).unwrap();
                store.update(1, &[u], None).unwrap();
            }
        }
        store.close().unwrap();
        let (_, mut sc) = FrameScanner::segment(&sim, Path::new("/db/gen-0000000000000001"), 1).unwrap();
        let mut offsets = Vec::new();
        while let Step::Frame { offset, .. } = sc.next_step().unwrap() {
            offsets.push(offset);
        }
        let victim = offsets[offsets.len() / 3];
        let mut log = sim.read_file(Path::new(LOG)).unwrap();
        log[victim as usize + 40] ^= 0x40;
        sim.write_file(Path::new(LOG), log).unwrap();
        let (want, calls) = {
            let s = sim.fork();
            repair(Path::new("/db"), opts(&s)).unwrap();
            (export(&s), s.mutations())
        };
        assert!(want.contains("\"next_job\":16"), "the catalog keeps the dropped ids: {want}");
        for at in 0..calls + 2 {
            let s = sim.fork();
            s.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
            let _ = repair(Path::new("/db"), opts(&s));
            s.kill();
            let context = format!("repair killed at call {at} of {calls}");
            // Run again later (its own `salvaged-<ms>/`).
            let later = Options { clock: Arc::new(ManualClock::new(6000)), ..opts(&s) };
            repair(Path::new("/db"), later).unwrap_or_else(|e| panic!("{context}: the second run: {e}"));
            assert_eq!(export(&s), want, "{context}: not the store one whole run leaves");
            let r = check(Path::new("/db"), Arc::new(s.clone())).unwrap();
            assert!(r.is_clean(), "{context}: {:#?}", r.findings);
        }
    }
}

/// A directory where an index file should be: open sets it aside (an index
/// file is a cache) and serves from the log; `check` must report it as the
/// damaged index file it is, not fail to run ("could not check: map ...: No
/// such device", exit 2).
#[test]
fn check_names_a_directory_in_place_of_an_index_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    push(&store, "one");
    push(&store, "two");
    store.close().unwrap();
    let gen = dir.path().join("gen-0000000000000001");
    let idx = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jqi"))
        .expect("an index file");
    std::fs::remove_file(&idx).unwrap();
    std::fs::create_dir(&idx).unwrap();
    let ro = Options { read_only: true, create: false, ..Options::default() };
    assert!(Store::open(dir.path(), ro).is_ok(), "open sets it aside");
    let fs: std::sync::Arc<dyn jobq::fs::FileSystem> = std::sync::Arc::new(jobq::fs::RealFs);
    let r = jobq::store::check(dir.path(), fs).unwrap_or_else(|e| panic!("check could not run: {e}"));
    assert!(r.findings.iter().any(|f| f.path == idx), "{:#?}", r.findings);
}

/// The entries of `gen` whose names start with `prefix` and hold `.set-aside-`.
fn set_aside(gen: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(gen)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{prefix}.set-aside-")))
        .collect()
}

/// A directory where an index file should be, after an import of 3,000 jobs:
/// a writable open, once it succeeded, renames it aside
/// (`<name>.set-aside-<ms>`), so that the index file rebuilt over that range
/// can be published under its name. It was left in place: `jobq repair` failed
/// ("publish index ...: Is a directory") and a server could not close the
/// store. A directory named like a temp file stopped every writable open
/// ("remove ...: Is a directory"). A read-only open changes nothing.
#[test]
fn a_directory_in_place_of_an_index_file_is_moved_aside_by_a_writable_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options { background: false, ..Options::default() };
    let store = Store::open(dir.path(), opts()).unwrap();
    let lines: String = (1..=3000)
        .map(|j| format!("{{\"key\":\"1/1/{j}\",\"spider\":\"s\",\"state\":\"finished\",\"finished_time\":{j}}}\n"))
        .collect();
    store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    store.close().unwrap();
    let gen = dir.path().join("gen-0000000000000001");
    let idx: Vec<_> = std::fs::read_dir(&gen)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jqi"))
        .collect();
    assert_eq!(idx.len(), 1, "{idx:?}");
    let (idx, name) = (&idx[0], idx[0].file_name().unwrap().to_string_lossy().into_owned());
    let fs: std::sync::Arc<dyn jobq::fs::FileSystem> = std::sync::Arc::new(jobq::fs::RealFs);
    let replace = || {
        std::fs::remove_file(idx).unwrap();
        std::fs::create_dir(idx).unwrap();
    };
    replace();
    std::fs::create_dir(gen.join("junk.tmp")).unwrap();
    let ro = Options { read_only: true, create: false, ..opts() };
    drop(Store::open(dir.path(), ro).unwrap());
    assert!(idx.is_dir() && set_aside(&gen, &name).is_empty(), "a read-only open moved it");
    let r = jobq::store::check(dir.path(), fs.clone()).unwrap();
    assert!(r.findings.iter().any(|f| f.path == *idx), "{:#?}", r.findings);

    jobq::store::repair(dir.path(), opts()).unwrap_or_else(|e| panic!("repair: {e}"));
    assert!(idx.is_file(), "the index file is published under its name again");
    assert_eq!(set_aside(&gen, &name).len(), 1);
    assert!(!gen.join("junk.tmp").exists() && set_aside(&gen, "junk.tmp").len() == 1);
    let r = jobq::store::check(dir.path(), fs.clone()).unwrap();
    assert!(r.is_clean(), "{:#?}", r.findings);

    // A server's path: open, a push, then a close that indexes the tail and merges.
    replace();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(push(&store, "s"), "5/1/1");
    store.close().unwrap_or_else(|e| panic!("close: {e}"));
    assert_eq!(set_aside(&gen, &name).len(), 2, "each one kept under its own name");
    let r = jobq::store::check(dir.path(), fs).unwrap();
    assert!(r.is_clean(), "{:#?}", r.findings);
    let store = Store::open(dir.path(), Options { read_only: true, create: false, ..opts() }).unwrap();
    assert_eq!(store.snapshot().count(1, &Default::default()).unwrap(), 3000);
}
