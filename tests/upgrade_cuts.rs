//! The first writable open of a store written by an older format upgrades it:
//! `CURRENT` rewritten as version 2, a log segment of an older version sealed and
//! a new one started, index files of older versions rebuilt from the log. A power
//! cut, or an I/O error or a full disk, at each file-system call of that open, on
//! a copy of each format fixture: the store then opens and answers as the fixture
//! does, and takes writes.

use std::path::Path;
use std::sync::Arc;

use jobq::fs::{self, CrashMode, Fault, FaultKind, FileSystem, OpenMode, SimFs};
use jobq::model::ManualClock;
use jobq::store::request::parse_push;
use jobq::{Options, Store};

const DIR: &str = "/db";

/// The fixture's files in a simulated file system, durable.
fn load(sim: &SimFs, from: &Path, to: &Path) {
    sim.create_dir(to).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            load(sim, &path, &dest);
        } else {
            let f = sim.open(&dest, OpenMode::CreateNew).unwrap();
            fs::write_all_at(&*f, &std::fs::read(&path).unwrap(), 0).unwrap();
            f.sync_data().unwrap();
        }
    }
    sim.sync_dir(to).unwrap();
}

fn opts(sim: &SimFs) -> Options {
    Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(1_800_000_000_000)),
        background: false,
        create: false,
        ..Options::default()
    }
}

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn an_upgrading_open_cut_at_any_call_leaves_the_fixture_whole() {
    // v8 is a cluster node's directory: only `jobq serve --node-id` opens it writable.
    for version in [1, 2, 3, 4, 5, 6, 7, 9] {
        let fixture = format!("tests/fixtures/v{version}/store");
        let base = SimFs::new();
        load(&base, Path::new(&fixture), Path::new(DIR));
        let (want, calls) = {
            let sim = base.fork();
            let before = sim.mutations();
            let store = Store::open(DIR, opts(&sim)).unwrap();
            (export(&store), sim.mutations() - before)
        };
        assert!(calls > 0, "v{version}: the open writes nothing");
        for at in 0..calls + 1 {
            for mode in [CrashMode::Drop, CrashMode::Garble] {
                let sim = base.fork();
                sim.set_fault(Some(Fault { at, kind: FaultKind::PowerCut, sticky: true }));
                let _ = Store::open(DIR, opts(&sim));
                sim.set_fault(None);
                sim.crash(mode, at);
                let context = format!("v{version}: power cut ({mode:?}) at call {at} of {calls} of the upgrading open");
                let store = Store::open(DIR, opts(&sim)).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(export(&store), want, "{context}");
                store.push(1, &[parse_push(r#"{"spider":"after"}"#).unwrap()], None).unwrap();
            }
        }
        // EIO or a full disk at one call: that open fails or not; the next opens whole.
        for at in 0..calls + 1 {
            for kind in [FaultKind::Eio, FaultKind::Enospc, FaultKind::DiskFull, FaultKind::ShortWrite] {
                let sim = base.fork();
                sim.set_fault(Some(Fault { at, kind, sticky: false }));
                drop(Store::open(DIR, opts(&sim)));
                sim.set_fault(None);
                let context = format!("v{version}: {kind:?} at call {at} of {calls} of the upgrading open");
                let store = Store::open(DIR, opts(&sim)).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(export(&store), want, "{context}");
            }
        }
        eprintln!("v{version}: {calls} calls");
    }
}
