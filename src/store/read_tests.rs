use std::cell::Cell;
use std::sync::Arc;

use crate::fs::SimFs;
use crate::model::JobState;
use crate::query::{Filter, Paging};
use crate::store::request::parse_push;
use crate::{Durability, Options, Store};

#[test]
fn records_are_read_through_maps_and_past_their_ends() {
    let sim = SimFs::new();
    let opts = Options {
        fs: Arc::new(sim.clone()),
        durability: Durability::Buffered,
        background: false,
        segment_bytes: 16 << 10,
        memtable_entries: 100_000,
        clock: Arc::new(crate::model::ManualClock::new(1_000)),
        ..Options::default()
    };
    let store = Store::open("/db", opts).unwrap();
    let pad = "p".repeat(300);
    let push = |n: usize| {
        let specs: Vec<_> =
            (0..n).map(|i| parse_push(&format!(r#"{{"spider":"s","i":{i},"pad":"{pad}"}}"#)).unwrap()).collect();
        store.push(1, &specs, None).unwrap();
    };
    for _ in 0..30 {
        push(5);
    }
    let all = Paging { count: 10_000, ..Paging::default() };
    let render = |store: &Store| {
        let snap = store.snapshot();
        let hits = snap.list(1, &Filter::default(), &all).unwrap();
        let mut out = Vec::new();
        for h in &hits {
            snap.render_row(1, h, Some(&["i".to_string()]), &mut out).unwrap();
            out.push(b'\n');
        }
        (hits.len(), String::from_utf8(out).unwrap())
    };
    let (n, rows) = render(&store);
    assert_eq!(n, 150);
    let mapped = store.inner().reader.mapped_segments();
    assert!(mapped.len() > 3, "every segment read is mapped: {mapped:?}");
    // Appended after the newest segment was mapped (the simulated map is a
    // copy of the bytes then): read past the map's end.
    push(3);
    let (n, again) = render(&store);
    assert_eq!(n, 153);
    assert!(again.ends_with(&rows), "the older rows are read the same");
    assert_eq!(again.lines().take(3).filter(|l| l.contains("\"i\":")).count(), 3);
}

/// A read-only opener maps its last segment only as far as an fsync made it
/// durable (a server beside it may cut the unsynced rest after a failed write):
/// a closed store's whole, none of a tail written without a sync. Rows read the
/// same either way.
#[test]
fn a_read_only_opener_maps_its_last_segment_up_to_the_durable_mark() {
    let sim = SimFs::new();
    let opts = |durability| Options {
        fs: Arc::new(sim.clone()),
        durability,
        background: false,
        segment_bytes: 16 << 10,
        memtable_entries: 100_000,
        clock: Arc::new(crate::model::ManualClock::new(1_000)),
        ..Options::default()
    };
    let read_only = Options { read_only: true, create: false, ..opts(Durability::Sync) };
    let pad = "p".repeat(300);
    let push = |store: &Store, n: usize| {
        let specs: Vec<_> =
            (0..n).map(|i| parse_push(&format!(r#"{{"spider":"s","i":{i},"pad":"{pad}"}}"#)).unwrap()).collect();
        store.push(1, &specs, None).unwrap();
    };
    let rows = |store: &Store| {
        let snap = store.snapshot();
        let hits = snap.list(1, &Filter::default(), &Paging { count: 10_000, ..Paging::default() }).unwrap();
        let mut out = Vec::new();
        snap.render_rows(1, &hits, None, &mut out).unwrap();
        (hits.len(), out)
    };
    let store = Store::open("/db", opts(Durability::Sync)).unwrap();
    for _ in 0..12 {
        push(&store, 5);
    }
    let last = crate::log::segment::list(&sim, std::path::Path::new("/db/gen-0000000000000001")).unwrap();
    let last = *last.last().unwrap();
    let want = rows(&store);
    let ro = Store::open("/db", read_only.clone()).unwrap();
    assert_eq!(rows(&ro), want);
    assert!(ro.inner().reader.mapped_segments().contains(&last), "the synced last segment is mapped");
    drop(ro);
    // Written, never synced: read positionally by a read-only opener.
    drop(store);
    let store = Store::open("/db", opts(Durability::Buffered)).unwrap();
    for _ in 0..4 {
        push(&store, 1);
    }
    let want = rows(&store);
    let ro = Store::open("/db", read_only).unwrap();
    assert_eq!(rows(&ro), want);
    assert_eq!(ro.snapshot().count(1, &Filter::default()).unwrap(), 64);
    let gen = std::path::Path::new("/db/gen-0000000000000001");
    let last = *crate::log::segment::list(&sim, gen).unwrap().last().unwrap();
    let path = gen.join(crate::log::segment::file_name(last));
    let file = crate::fs::FileSystem::open(&sim, &path, crate::fs::OpenMode::Read).unwrap();
    let mark = crate::log::mark::read(&*file, &path, last, 1).unwrap().map_or(0, |m| m.durable_end);
    let end = ro.report().log_end;
    assert!(end.segment == last && end.offset > mark, "the tail was written past the mark");
    let mapped = ro.inner().reader.mapped_len(last).unwrap_or(0) as u64;
    assert!(mapped <= mark, "mapped {mapped} bytes of the last segment, past its durable mark {mark}");
    drop(store);
}

#[test]
fn a_summary_line_stops_between_rows_once_cancelled() {
    let opts = Options {
        fs: Arc::new(SimFs::new()),
        durability: Durability::Buffered,
        background: false,
        ..Options::default()
    };
    let store = Store::open("/db", opts).unwrap();
    let specs: Vec<_> = (0..5).map(|_| parse_push(r#"{"spider":"s"}"#).unwrap()).collect();
    store.push(1, &specs, None).unwrap();
    let snap = store.snapshot();
    let paging = Paging { count: 5, ..Paging::default() };
    let line = |cancel_after: usize| {
        let asked = Cell::new(0);
        let cancelled = || {
            asked.set(asked.get() + 1);
            asked.get() > cancel_after
        };
        let mut out = Vec::new();
        snap.summary_line(1, &Filter::default(), JobState::Pending, &paging, None, &cancelled, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(line(usize::MAX).matches("\"key\"").count(), 5);
    assert_eq!(line(2).matches("\"key\"").count(), 2, "no row rendered after the cancel");
}
