//! Seed inputs for the fuzz targets, written by the engine itself: the frames of
//! real log segments, real index files, export lines. Run from `fuzz/`:
//!
//! ```text
//! cargo run --release --example seed_corpora
//! ```
//!
//! It writes `corpus/<target>/seed-*` (git-ignored), next to what the fuzzer adds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobq::codec::frame::{self, FrameKind, HEADER_LEN};
use jobq::codec::record::{encode_catalog, SpiderEntry};
use jobq::fs::{FileSystem, SimFs};
use jobq::model::ManualClock;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Options, Store};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from("corpus").join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(rest);
    v
}

/// A small store with pushes, updates, an import transaction and index files.
fn store() -> (SimFs, PathBuf, Vec<u8>) {
    let sim = SimFs::new();
    let opts = Options {
        fs: Arc::new(sim.clone()),
        clock: Arc::new(ManualClock::new(1_397_762_393_489)),
        background: false,
        memtable_entries: 6,
        bulk_entries: 8,
        merge_fanout: 2,
        segment_bytes: 4096,
        ..Options::default()
    };
    let store = Store::open("/db", opts).expect("open");
    let lines = [
        r#"{"spider":"spider1","tags":["a","ünï"],"units":1,"priority":3}"#,
        r#"{"spider":"spider2","unique":"u1","x":{"y":[1,2.50,1e400]},"state":"running"}"#,
        r#"{"spider":"spider1","big":123456789012345678901234567890,"s":"\u00e9\ud83d\ude00"}"#,
    ];
    for i in 0..4 {
        for p in [1, 53] {
            let specs: Vec<_> = lines.iter().map(|l| parse_push(l).unwrap()).collect();
            store.push(p, &specs, if i % 2 == 0 { Some("tester") } else { None }).expect("push");
        }
    }
    let upd = parse_update(r#"{"key":"53/1/1","state":"finished","close_reason":"ok","add_tag":"b"}"#, 53).unwrap();
    store.update(53, &[upd], None).expect("update");
    store.cancel(1, &[jobq::JobKey::new(1, 1, 2)], Some("op")).expect("cancel");
    let import = "{\"key\":\"7/1/5\",\"spider\":\"imp\",\"state\":\"finished\",\"finished_time\":1000,\"tags\":[\"z\"],\"units\":2}\n\
                  {\"key\":\"7/1/6\",\"spider\":\"imp\",\"state\":\"pending\",\"pending_time\":999,\"priority\":0}\n";
    store.import(&mut import.as_bytes(), &mut |_| {}).expect("import");
    store.flush_indexes().expect("flush");
    let mut export = Vec::new();
    store.export(None, &mut export).expect("export");
    store.close().expect("close");
    let gen = sim.read_dir(Path::new("/db")).unwrap().into_iter().find(|n| n.starts_with("gen-")).expect("a generation");
    (sim, PathBuf::from("/db").join(gen), export)
}

fn main() {
    let (sim, gen, export) = store();
    let names = sim.read_dir(&gen).expect("list the generation");
    let mut n_log = 0;
    let mut n_idx = 0;
    for name in &names {
        let bytes = sim.read_file(&gen.join(name)).expect("read");
        if name.starts_with("log-") {
            // Frames after the header pages; and the mark slots.
            let start = jobq::log::segment::decode_header(Path::new(name), &bytes)
                .map_or(bytes.len(), |h| h.data_start() as usize)
                .min(bytes.len());
            let frames = &bytes[start..];
            for (i, at) in jobq::log::mark::SLOT_OFFSETS.iter().enumerate() {
                let at = *at as usize;
                if let Some(slot) = bytes.get(at..at + jobq::log::mark::SLOT_LEN) {
                    write("frame", &format!("seed-log-{n_log}-mark-{i}"), &with_mode(2, slot));
                }
            }
            write("frame", &format!("seed-log-{n_log}-raw"), &with_mode(0, frames));
            write("frame", &format!("seed-log-{n_log}-reseal"), &with_mode(1, frames));
            // Each jobs payload for the record target.
            let mut pos = 0;
            while pos + HEADER_LEN <= frames.len() {
                let h: [u8; HEADER_LEN] = frames[pos..pos + HEADER_LEN].try_into().unwrap();
                let Ok(hd) = frame::decode_header(&h) else { break };
                let end = pos + hd.frame_len() as usize;
                if hd.kind == FrameKind::Jobs && end <= frames.len() {
                    let mut r = vec![0u8];
                    r.extend_from_slice(&hd.count.to_le_bytes());
                    r.extend_from_slice(&frames[pos + HEADER_LEN..end]);
                    write("record", &format!("seed-log-{n_log}-at-{pos}"), &r);
                }
                pos = end;
            }
            n_log += 1;
        } else if name.ends_with(".jqi") {
            let mut img = vec![0u8; 64];
            for (i, b) in img.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37);
            }
            img.extend_from_slice(&bytes);
            write("index_open", &format!("seed-idx-{n_idx}-raw"), &with_mode(0, &img));
            write("index_open", &format!("seed-idx-{n_idx}-reseal"), &with_mode(1, &img));
            n_idx += 1;
        }
    }
    // A catalog frame (written only by compaction) and a commit frame.
    let mut cat = Vec::new();
    encode_catalog(
        &[
            SpiderEntry { project: 1, spider: 1, next_job: 9, name: "spider1".into() },
            SpiderEntry { project: 53, spider: 7, next_job: 82, name: "s".into() },
        ],
        &mut cat,
    );
    let mut log = Vec::new();
    frame::encode(&mut log, FrameKind::Catalog, 0, 1, 1, 0, &cat);
    frame::encode(&mut log, FrameKind::Commit, 0, 2, 1, 1, &1u64.to_le_bytes());
    write("frame", "seed-catalog-commit", &with_mode(0, &log));
    // A snapshot's head and table (format-spec/snapshot.md), as received and resealed.
    let table = jobq::codec::snapshot::Table {
        last: (40, 3, 2),
        next_seq: 900,
        generation: 1,
        membership: br#"{"log_id":null,"membership":{"configs":[[1,2,3]],"nodes":{}}}"#.to_vec(),
        members: vec![
            jobq::codec::snapshot::Member { segment: 1, len: 20_000, crc: 7 },
            jobq::codec::snapshot::Member { segment: 2, len: 13_000, crc: 9 },
        ],
    };
    write("snapshot", "seed-table", &with_mode(0, &table.encode()));
    write("snapshot", "seed-table-reseal", &with_mode(3, &table.encode()));
    // Export lines for the JSON scanner, one per seed, and request bodies.
    for (i, line) in String::from_utf8(export).unwrap().lines().enumerate() {
        write("json_scan", &format!("seed-export-{i}"), line.as_bytes());
    }
    for (i, t) in [
        r#"{"spider":"s1","tags":["a","b"],"priority":4,"unique":"u","foo":[1,2]}"#,
        r#"{"key":"53/7/81","state":"finished","close_reason":"ok","add_tag":"x"}"#,
        r#"[{"key":"1/1/1"},{"key":"1/1/2"}]"#,
        r#" { "a" : 1 , "b\"c":[1, {"x":null}] ,"d":"\u00e9\ud83d\ude00", "e": -0.5e+3 } "#,
        r#"["a","b\u0063"]"#,
        r#""\ud83d\ude00""#,
    ]
    .iter()
    .enumerate()
    {
        write("json_scan", &format!("seed-text-{i}"), t.as_bytes());
    }
    // Structured targets read their input with `arbitrary`: longer inputs give
    // longer operation sequences and more requests than libFuzzer starts with.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for target in ["ops_crash", "query_params", "index_open", "frame", "record"] {
        for i in 0..12 {
            let len = 64 << (i % 6);
            let mut b = Vec::with_capacity(len);
            while b.len() < len {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                b.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
            }
            if matches!(target, "index_open" | "frame" | "record") {
                b[0] = 2; // the structured mode
            }
            write(target, &format!("seed-random-{i}"), &b);
        }
    }
    println!("seeds: {n_log} log segments, {n_idx} index files, corpus/ written");
}
