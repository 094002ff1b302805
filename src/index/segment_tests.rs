//! Unit tests of index segments (kept apart: segment.rs is long enough).

use std::sync::Arc;

use super::*;
use crate::index::build::{build, DocEntry};
use crate::log::LogPos;

/// A finished doc of project 1, spider 1, job `i + 1`, listed `i`-th; tests
/// change the fields they are about.
fn doc(i: u64) -> DocEntry {
    DocEntry {
        project: 1,
        local: (1 << 32) | (i + 1),
        ts: 1000 - i,
        order_seq: i + 1,
        state: JobState::Finished,
        priority: 2,
        tags: Arc::new([]),
        unique: None,
        close_reason: None,
        token: None,
        loc: i * 100,
    }
}

/// What a file of `docs` docs built from sequence numbers `1..=docs` covers.
fn meta(docs: u64) -> SegmentMeta {
    SegmentMeta {
        generation: 1,
        lo_seq: 1,
        hi_seq: docs,
        log_end: LogPos { segment: 1, offset: 1 },
        last_frame: LogPos { segment: 1, offset: 0 },
        docs,
    }
}

fn image() -> Vec<u8> {
    let docs: Vec<DocEntry> = (0..600u64)
        .map(|i| DocEntry {
            project: 1 + (i % 7) as u32 * (1 + (i % 3) as u32),
            ts: 1000 + i * 37 % 500,
            state: JobState::ALL[i as usize % 4],
            tags: (0..i % 3).map(|t| Arc::<str>::from(format!("t{t}"))).collect(),
            close_reason: (i % 5 == 0).then(|| Arc::<str>::from("failed")),
            ..doc(i)
        })
        .collect();
    build(docs, meta(600), &[], &[])
}

fn dir_of(b: &[u8]) -> Vec<DirEntry> {
    let f = &b[b.len() - FOOTER_LEN..];
    let (off, len, cat) = (LE::read_u64(&f[0..8]) as usize, LE::read_u64(&f[8..16]) as usize, LE::read_u64(&f[16..24]));
    decode_dir(&b[off..off + len], off, cat as usize).unwrap()
}

#[test]
fn verify_order_finds_a_doc_in_two_close_reason_lists() {
    let with = |i: u64, reason: &str| DocEntry { close_reason: Some(Arc::from(reason)), ..doc(i) };
    let mut b = build(vec![with(0, "a"), with(1, "b")], meta(2), &[], &[]);
    let open = |b: &[u8]| IndexSegment::open(MappedBytes::from_vec(b.to_vec()), Path::new("x.jqi"), false);
    open(&b).unwrap().verify_order().unwrap();
    // The only one-doc list of doc 1 is close_reason "b": make it hold doc 0,
    // then seal the section and the file again.
    // (A flat list: cardinality 1, doc 1; the lists are the section's last bytes.)
    let list_of_doc_1 = [1u8, 0, 0, 0, 1, 0, 0, 0];
    let at = b.windows(8).rposition(|w| w == list_of_doc_1).unwrap();
    b[at + 4] = 0;
    let d = dir_of(&b)[0];
    let crc = checksum(&[&b[d.offset as usize..(d.offset + d.len) as usize]]);
    let foot = b.len() - FOOTER_LEN;
    let (dir_off, dir_len) = (LE::read_u64(&b[foot..]) as usize, LE::read_u64(&b[foot + 8..]) as usize);
    LE::write_u32(&mut b[dir_off + 8 + 24..], crc);
    let (cat_off, cat_len) = (LE::read_u64(&b[foot + 16..]) as usize, LE::read_u64(&b[foot + 24..]) as usize);
    let crc = checksum(&[
        &b[..HEADER_LEN],
        &b[dir_off..dir_off + dir_len],
        &b[cat_off..cat_off + cat_len],
        &b[foot..foot + 36],
    ]);
    LE::write_u32(&mut b[foot + 36..], crc);
    let (_, what) = open(&b).unwrap().verify_order().unwrap_err();
    assert_eq!(what, "doc 0 is in two close_reason lists");
}

#[test]
fn parallel_check_agrees_with_sequential() {
    let mut b = image();
    let dir = dir_of(&b);
    assert!(dir.len() > 3);
    let one = check_sections(&b, &dir, 1).unwrap();
    let many = check_sections(&b, &dir, 4).unwrap();
    assert_eq!(format!("{one:?}"), format!("{many:?}"));
    // Damage in two sections: both report the first in file order.
    for d in [&dir[3], &dir[1]] {
        b[d.offset as usize + d.len as usize / 2] ^= 0x10;
    }
    let first = check_sections(&b, &dir, 1).unwrap_err();
    assert_eq!(first.0, dir[1].offset as usize);
    assert_eq!(check_sections(&b, &dir, 4).unwrap_err(), first);
}

#[test]
fn key_lookups_agree_with_a_scan() {
    // One project of 1,000 docs over several spiders: key_rank and find through
    // the in-memory samples and the packed by_key column. Keys sparse (job ids
    // 3 apart), dense (a spider's ids in sequence, where the samples' bounds
    // meet), dense with gaps, and ids far apart across spiders.
    let sets: [fn(u64) -> u64; 4] = [
        |i| (1 + i * 7 % 5) << 32 | (1 + i * 3),
        |i| (1 + i / 300) << 32 | (1 + i % 300),
        |i| (1 + i / 300) << 32 | (1 + i % 300 + i % 300 / 50 + u64::from(i % 300 >= 97)),
        |i| (1 + i % 3) << 32 | (1 + i * 1_000_003 % 4_000_000_000),
    ];
    for (set, key) in sets.iter().enumerate() {
        let docs: Vec<DocEntry> = (0..1000u64).map(|i| DocEntry { local: key(i), ts: 5000 - i, ..doc(i) }).collect();
        let mut keys: Vec<u64> = docs.iter().map(|d| d.local).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 1000, "set {set}: distinct keys");
        let seg =
            IndexSegment::open(MappedBytes::from_vec(build(docs, meta(1000), &[], &[])), Path::new("x.jqi"), false)
                .unwrap();
        seg.verify_order().unwrap();
        let sec = seg.section(1).unwrap();
        for probe in keys.iter().flat_map(|k| [k - 1, *k, k + 1, k + 200]).chain([0, u64::MAX]) {
            let want = keys.partition_point(|k| *k < probe) as u32;
            assert_eq!(sec.key_rank(probe), want, "set {set}: rank of {probe:#x}");
            let found = sec.find(probe).map(|d| sec.local(d));
            assert_eq!(found, keys.binary_search(&probe).ok().map(|_| probe), "set {set}: find {probe:#x}");
        }
    }
}

#[test]
fn only_a_running_docs_token_is_posted_and_verifies() {
    let with = |i: u64, state: JobState| DocEntry { state, token: Some(Arc::from(format!("tok{i}"))), ..doc(i) };
    let b = build(vec![with(0, JobState::Running), with(1, JobState::Finished)], meta(2), &[], &[]);
    let seg = IndexSegment::open(MappedBytes::from_vec(b), Path::new("x.jqi"), false).unwrap();
    seg.verify_order().unwrap();
    let sec = seg.section(1).unwrap();
    let tokens: Vec<(Vec<u8>, Vec<u32>)> = sec.terms(field::TOKEN).map(|(t, p)| (t.to_vec(), p.docs())).collect();
    assert_eq!(tokens, vec![(b"tok0".to_vec(), vec![0])], "only the running doc's token is posted");
}
