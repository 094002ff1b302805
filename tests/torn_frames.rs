//! Frame boundaries that payload bytes cannot imitate, whatever the records hold.
//!
//! Property: a log whose frames carry valid job records stuffed with images of valid
//! frames (right sequence numbers, `durable_seq` claiming everything durable, correct
//! checksums, at every alignment), then cut by a power cut in any damage mode, is
//! always recovered: a strict validation never calls the torn tail corruption, every
//! synced frame survives, and every frame recovery reports starts where the writer
//! put a frame, never inside another frame's payload.
//!
//! Plus the case of the original report, at the engine level: batches of records
//! whose layout collides with a frame header (project 83, `{"spider":"s"}` pushes
//! by an unnamed key), torn at every byte.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use jobq::codec::frame::{self, FrameKind};
use jobq::codec::record;
use jobq::fs::{CrashMode, FileSystem, SimFs};
use jobq::log::recovery::{self, RecoveryPolicy};
use jobq::log::segment::DATA_START_V2;
use jobq::log::writer::LogWriter;
use jobq::log::LogPos;
use jobq::model::{Job, JobKey, JobState, ManualClock, MetaDoc};
use jobq::store::request::parse_push;
use jobq::{Options, Store};
use proptest::prelude::*;

const DIR: &str = "/g";

/// A jobs payload of `n` valid records, each carrying, in its 48 bytes of
/// arbitrary-valued fields (priority, order_seq, times), the image of a whole valid
/// commit frame: header with its checksum, claiming sequence `seq` and everything
/// durable, and its 8-byte payload. Tags pad the records to varied lengths, so the
/// forged frames sit at every alignment. A byte-by-byte search for evidence would
/// find them; recovery must not look.
fn forged_payload(n: usize, seq: u64, pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut img = Vec::new();
        frame::encode(&mut img, FrameKind::Commit, 0, seq + i as u64, 1, u64::MAX >> 1, &(seq - 1).to_le_bytes());
        let word = |k: usize| u64::from_le_bytes(img[k * 8..k * 8 + 8].try_into().unwrap());
        let job = Job {
            key: JobKey::new(83, 1, 1 + i as u32),
            state: JobState::Pending,
            priority: word(0) as i64,
            order_seq: word(1),
            times: [Some(word(2)), Some(word(3)), Some(word(4)), Some(i as u64)],
            tags: vec!["x".repeat(1 + (pad + i * 7) % 61)],
            unique: None,
            meta: MetaDoc::new(),
        };
        record::encode_job(&job, record::Prev::Created, &mut out);
    }
    out
}

fn validate_strict(sim: &SimFs) -> Result<(LogPos, u64), jobq::Error> {
    let start = LogPos { segment: 1, offset: DATA_START_V2 };
    let v =
        recovery::validate(sim, Path::new(DIR), 1, start, 1, recovery::StartTxn::None, RecoveryPolicy::Strict, true)?;
    Ok((v.end, v.next_seq))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_frame_is_found_inside_another_frames_payload(
        frames in prop::collection::vec((1usize..60, 0usize..61, any::<bool>()), 1..10),
        mode in 0usize..4,
        seed in any::<u64>(),
    ) {
        let sim = SimFs::new();
        sim.create_dir(Path::new(DIR)).unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let mut w = LogWriter::create(fs, Path::new(DIR), 1, 1, 64 << 20).unwrap();
        let mut genuine = BTreeSet::new();
        let mut synced_end = DATA_START_V2;
        for (n, pad, sync) in &frames {
            // Forged frames claim the sequence numbers after this one: what a scan for evidence accepts.
            let payload = forged_payload(*n, w.next_seq() + 1, *pad);
            let a = w.append(FrameKind::Jobs, 0, *n as u32, 0, &payload).unwrap();
            genuine.insert(a.pos.offset);
            if *sync {
                w.sync().unwrap();
                synced_end = w.end().offset;
            }
        }
        drop(w);
        sim.crash(CrashMode::ALL[mode], seed);
        let (end, _) = validate_strict(&sim).map_err(|e| TestCaseError::fail(format!("refused after a power cut: {e}")))?;
        prop_assert!(end.offset >= synced_end, "synced frames lost: end {} < synced {}", end.offset, synced_end);
        let mut found = Vec::new();
        recovery::replay(&sim, Path::new(DIR), LogPos { segment: 1, offset: DATA_START_V2 }, end, &mut |f| {
            found.push(f.pos.offset);
            Ok(())
        }).unwrap();
        for off in found {
            prop_assert!(genuine.contains(&off), "a frame at {off}, where the writer wrote none");
        }
    }
}

/// The original report: kill -9 (the torn frame a prefix of itself) or a power cut
/// in the middle of a batch of records laid out like frame headers.
#[test]
fn colliding_records_torn_at_every_byte() {
    let sim = SimFs::new();
    let opts = || Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(1_397_762_393_489)),
        background: false,
        ..Options::default()
    };
    let store = Store::open("/db", opts()).unwrap();
    let line = parse_push(r#"{"spider":"s"}"#).unwrap();
    // An unnamed key's actor: `key-` and 8 hex digits, as the server records it.
    let actor = Some("key-1a2b3c4d");
    for _ in 0..3 {
        store.push(83, &vec![line.clone(); 40], actor).unwrap();
    }
    let log = Path::new("/db/gen-0000000000000001/log-0000000001.jql");
    let synced = sim.read_file(log).unwrap();
    // The torn write: one more batch, unsynced.
    store.push(83, &vec![line.clone(); 60], actor).unwrap();
    let full = sim.read_file(log).unwrap();
    std::mem::forget(store);
    for cut in synced.len()..full.len() {
        let s = sim.fork();
        s.write_file(log, full[..cut].to_vec()).unwrap();
        let o = Options { fs: Arc::new(s.clone()), ..opts() };
        let store = Store::open("/db", o).unwrap_or_else(|e| panic!("torn at {cut}: {e}"));
        assert_eq!(store.snapshot().count(83, &Default::default()).unwrap(), 120, "torn at {cut}");
    }
}

/// A payload over a frame's limit (1 GiB, log.md) is refused as input before
/// anything is written: no panic, no partial frame, and the writer goes on.
#[test]
fn a_payload_over_the_frame_limit_is_refused_not_a_panic() {
    let sim = SimFs::new();
    sim.create_dir(Path::new(DIR)).unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let mut w = LogWriter::create(fs, Path::new(DIR), 1, 1, 64 << 20).unwrap();
    // Zeroed pages the check never touches (calloc'd, not written).
    let huge = vec![0u8; (jobq::codec::frame::MAX_PAYLOAD as usize) + 1];
    let end = w.end();
    let e = w.append(FrameKind::Jobs, 0, 1, 0, &huge).unwrap_err();
    assert!(e.is_input() && e.to_string().contains("over a log frame's limit"), "{e}");
    assert_eq!(w.end(), end, "nothing written");
    drop(huge);
    w.append(FrameKind::Jobs, 0, 1, 0, b"after").unwrap();
}
