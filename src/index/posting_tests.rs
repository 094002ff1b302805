use super::*;
use crate::query::docset::{count_in, new_block};

fn build(docs: &[DocId]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(docs, &mut out);
    out
}

#[test]
fn round_trip_sparse_and_dense() {
    let mut docs: Vec<DocId> = (0..10_000).map(|i| i * 3).collect();
    docs.extend((200_000..200_100).map(|i| i * 2));
    docs.push(5_000_000);
    let bytes = build(&docs);
    assert_eq!(validate(&bytes, 5_000_001), Ok(bytes.len()));
    assert!(validate(&bytes, 5_000_000).is_err());
    let p = Posting::new(&bytes);
    assert_eq!(p.docs(), docs);
    assert_eq!(count_in(&mut p.cursor(), 0, u32::MAX), docs.len() as u64);
    for t in [0, 1, 2, 3, 29_998, 29_999, 30_000, 65_535, 65_536, 399_999, 400_000, 5_000_000, 5_000_001] {
        let mut c = p.cursor();
        let want = docs.iter().copied().find(|d| *d >= t).unwrap_or(TERMINATED);
        assert_eq!(c.seek(t), want, "seek {t}");
        assert_eq!(p.contains(t), docs.contains(&t));
    }
    assert!(!p.contains(TERMINATED), "the end marker is no member");
    let mut blk = new_block();
    p.cursor().fill_block(0, &mut blk);
    assert_eq!(blk.iter().map(|w| w.count_ones()).sum::<u32>(), docs.iter().filter(|d| **d < 65536).count() as u32);
}

#[test]
fn flat_lists_and_short_bitmaps() {
    let check = |docs: &[DocId], max: u32| {
        let bytes = build(docs);
        assert_eq!(validate(&bytes, max), Ok(bytes.len()), "{docs:?}");
        let p = Posting::new(&bytes);
        assert_eq!(p.docs(), docs);
        assert_eq!(count_in(&mut p.cursor(), 0, u32::MAX), docs.len() as u64);
        for t in [0, 1, 2, 3, 64, 65, 200, 65_535, 65_536, 70_000, 70_001, max] {
            let want = docs.iter().copied().find(|d| *d >= t).unwrap_or(TERMINATED);
            assert_eq!(p.cursor().seek(t), want, "seek {t} in {docs:?}");
        }
        for b in 0..3 {
            let want: Vec<u32> = docs.iter().filter(|d| *d >> 16 == b).map(|d| d & 0xFFFF).collect();
            let (mut blk, mut all, mut scratch) = (new_block(), new_block(), new_block());
            p.cursor().fill_block(b, &mut blk);
            let got: Vec<u32> = (0..65_536).filter(|v| blk[(v / 64) as usize] >> (v % 64) & 1 == 1).collect();
            assert_eq!(got, want, "block {b}");
            all.fill(!0);
            p.cursor().and_block(b, &mut all, &mut scratch);
            assert_eq!(*all, *blk);
            p.cursor().andnot_block(b, &mut all, &mut scratch);
            assert!(all.iter().all(|w| *w == 0));
            p.cursor().or_block(b, &mut all, &mut scratch);
            assert_eq!(*all, *blk);
        }
        bytes.len()
    };
    assert_eq!(check(&[3], 4), 8, "one doc: a flat list of 8 bytes");
    assert_eq!(check(&[0, 9, 70_000, 70_001, 130_000, 130_001, 130_002, 131_000], 131_001), 36);
    // Dense in a short section: a bitmap up to its last word, not 8 KiB.
    let dense: Vec<DocId> = (0..600).filter(|d| d % 3 != 0).collect();
    assert_eq!(check(&dense, 600), 8 + 12 + 10 * 8);
    // Sparse after a dense block: an array.
    let mixed: Vec<DocId> = (0..100).chain([65_536 + 5, 65_536 + 9000]).collect();
    assert_eq!(check(&mixed, 80_000), 8 + 24 + 2 * 8 + 2 * 2);
    let bytes = build(&dense);
    let mut bad = bytes.clone();
    bad[10] = 11; // words: one too many
    assert!(validate(&bad, 600).is_err());
}

#[test]
fn validate_refuses_damage() {
    let bytes = build(&[1, 5, 9, 70_000]);
    for cut in 0..bytes.len() {
        assert!(validate(&bytes[..cut], 100_000).is_err(), "cut {cut}");
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        let _ = validate(&bad, 100_000);
    }
}
