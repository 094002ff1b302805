//! Format fixtures: a small store written by format version 1, committed under
//! tests/fixtures/v1/store with its export. Every build must read it and answer
//! the same. `cargo test --test fixtures -- --ignored write_v1` rewrites it
//! (only when the format version changes: then add v2, keep v1).

use std::path::Path;
use std::sync::Arc;

use jobq::model::ManualClock;
use jobq::store::request::{parse_push, parse_update};
use jobq::{Options, Store};

const V1: &str = "tests/fixtures/v1";

fn export(store: &Store) -> String {
    let mut out = Vec::new();
    store.export(None, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
#[ignore = "rewrites the committed fixture"]
fn write_v1() {
    let dir = Path::new(V1).join("store");
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let opts =
        Options { clock: clock.clone(), background: false, memtable_entries: 8, merge_fanout: 3, ..Options::default() };
    let store = Store::open(&dir, opts).unwrap();
    for i in 0..30u32 {
        clock.advance(1000);
        let line = format!(
            r#"{{"spider":"spider-{}","tags":["t{}","é"],"priority":{},"unique":{},"args":{{"n":{i},"big":123456789012345678901234567890,"f":1.50}}}}"#,
            i % 4,
            i % 3,
            i % 5,
            if i % 7 == 0 { format!("\"u{i}\"") } else { "null".into() }
        );
        store.push(53 + i % 2, &[parse_push(&line).unwrap()], Some("alice")).unwrap();
        if i % 2 == 1 {
            let key = format!("{}/{}/{}", 53 + i % 2, 1 + (i / 2) % 4, 1 + i / 8);
            let state = ["running", "finished", "deleted"][(i as usize / 2) % 3];
            let u = parse_update(&format!(r#"{{"key":"{key}","state":"{state}","close_reason":"ok"}}"#), 53 + i % 2)
                .unwrap();
            store.update(53 + i % 2, &[u], Some("bob")).unwrap();
        }
    }
    let import = r#"{"key":"60/1/5","spider":"imported","state":"finished","finished_time":1600000000000,"pending_time":1599999999000,"tags":["old"],"x":"y"}
{"key":"60/1/9","spider":"imported","state":"pending","pending_time":1600000001000,"priority":4}
"#;
    store.import(&mut import.as_bytes(), &mut |_| {}).unwrap();
    clock.advance(1000);
    store.push(53, &[parse_push(r#"{"spider":"tail","note":"not indexed"}"#).unwrap()], None).unwrap();
    std::fs::write(Path::new(V1).join("export.jsonl"), export(&store)).unwrap();
    // Leave the last write unindexed, as after a crash.
    std::mem::forget(store);
}

#[test]
fn v1_store_reads_the_same() {
    let dir = Path::new(V1).join("store");
    let opts = Options { read_only: true, create: false, ..Options::default() };
    let store = Store::open(&dir, opts).unwrap();
    assert!(!store.report().indexes.is_empty(), "the fixture has index files");
    assert!(store.report().replayed_frames > 0, "the fixture has an unindexed tail");
    let want = std::fs::read_to_string(Path::new(V1).join("export.jsonl")).unwrap();
    assert_eq!(export(&store), want);
}
