//! Block operations over a word range against the docs of the set, masked to
//! the range: every kind of set (flat lists, array and bitmap containers, dead
//! sets, ranges, and their compositions), ranges at a block's edges, empty ranges;
//! and the whole-block methods against the whole range.

use super::docset::{Block, DocId, DocSet, Empty, Range, Words, ALL_WORDS, BLOCK_WORDS, TERMINATED};
use super::ops::{Clipped, Exclusion, Intersection, Union};
use crate::index::block_cache::{BlockCache, ADMIT_VALUES};
use crate::index::deadset::DeadSet;
use crate::index::posting::{encode, Posting};

/// How an operation combines a word of `out` with the set's word.
type Op = fn(u64, u64) -> u64;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Docs of 3 blocks, each block sparse (array), dense (bitmap), empty or a few
/// docs; `flat` makes a list of at most 8 docs.
fn random_docs(r: &mut Rng, flat: bool) -> Vec<DocId> {
    if flat {
        let mut d: Vec<DocId> = (0..1 + r.below(8)).map(|_| r.below(3 << 16) as DocId).collect();
        d.sort_unstable();
        d.dedup();
        return d;
    }
    let mut out = Vec::new();
    for b in 0..3u32 {
        let (span, keep) = match r.below(4) {
            0 => (1 + r.below(65_536), 1 + r.below(40)),  // sparse: an array
            1 => (1 + r.below(65_536), 3 + r.below(200)), // dense over a span: a bitmap
            2 => (0, 1),
            _ => (65_536, 2000),
        };
        let start = r.below(65_536 - span + 1);
        let d = (start..start + span).filter(|_| r.below(1000) < keep * 5).map(|o| (b << 16) | o as u32);
        out.extend(d);
    }
    out
}

/// Two random doc lists of round `round` (flat ones now and then) and their
/// encoded postings.
fn two_lists(r: &mut Rng, round: u32) -> ([Vec<DocId>; 2], [Vec<u8>; 2]) {
    let a = random_docs(r, round.is_multiple_of(4));
    let c = random_docs(r, round % 5 == 1);
    let (mut pa, mut pc) = (Vec::new(), Vec::new());
    encode(&a, &mut pa);
    encode(&c, &mut pc);
    ([a, c], [pa, pc])
}

/// The bits of `docs` in block `b`.
fn bits_of(docs: &[DocId], b: u32) -> Box<Block> {
    let mut out = Box::new([0u64; BLOCK_WORDS]);
    for d in docs.iter().filter(|d| *d >> 16 == b) {
        out[(d & 0xFFFF) as usize / 64] |= 1 << (d % 64);
    }
    out
}

fn ranges(r: &mut Rng) -> Vec<Words> {
    let mut v = vec![ALL_WORDS, 0..0, 0..1, 0..16, 1023..1024, 1024..1024, 512..512, 1000..1024, 16..48];
    for _ in 0..6 {
        let a = r.below(1025) as usize;
        v.push(a..a + r.below(1025 - a as u64) as usize);
    }
    v
}

/// Every word-range operation of the sets `make` builds against `docs`.
fn check<'a>(r: &mut Rng, docs: &[DocId], make: &mut dyn FnMut() -> Box<dyn DocSet + 'a>) {
    let mut scratch = Box::new([0u64; BLOCK_WORDS]);
    for b in 0..4 {
        let want = bits_of(docs, b);
        for words in ranges(r) {
            let mut junk = Box::new([0u64; BLOCK_WORDS]);
            junk.iter_mut().for_each(|w| *w = r.next() ^ (r.next() << 31));
            let outside = |got: &Block, what: &str| {
                for (i, (g, j)) in got.iter().zip(junk.iter()).enumerate() {
                    if !words.contains(&i) {
                        assert_eq!(g, j, "{what} {words:?} wrote word {i} of block {b}");
                    }
                }
            };
            let ops: [(&str, Op); 4] =
                [("fill", |_, s| s), ("and", |o, s| o & s), ("or", |o, s| o | s), ("andnot", |o, s| o & !s)];
            for (what, f) in ops {
                let mut out = junk.clone();
                let mut set = make();
                match what {
                    "fill" => set.fill_words(b, words.clone(), &mut out),
                    "and" => set.and_words(b, words.clone(), &mut out, &mut scratch),
                    "or" => set.or_words(b, words.clone(), &mut out, &mut scratch),
                    _ => set.andnot_words(b, words.clone(), &mut out, &mut scratch),
                }
                for i in words.clone() {
                    assert_eq!(out[i], f(junk[i], want[i]), "{what} {words:?}: word {i} of block {b}");
                }
                outside(&out, what);
                if words == ALL_WORDS {
                    // The whole-block methods (their own fixed-length code).
                    let mut out = junk.clone();
                    let mut set = make();
                    match what {
                        "fill" => set.fill_block(b, &mut out),
                        "and" => set.and_block(b, &mut out, &mut scratch),
                        "or" => set.or_block(b, &mut out, &mut scratch),
                        _ => set.andnot_block(b, &mut out, &mut scratch),
                    }
                    for i in words.clone() {
                        assert_eq!(out[i], f(junk[i], want[i]), "{what}_block: word {i} of block {b}");
                    }
                }
            }
        }
    }
}

/// The cursor of the sets `make` builds (positioned) against `docs`: every doc
/// by `advance`, random forward `seek`s, and `next_block` never passing a block
/// that holds a doc.
fn steps_match<'a>(r: &mut Rng, docs: &[DocId], make: &mut dyn FnMut() -> Box<dyn DocSet + 'a>) {
    let mut set = make();
    let mut seen = vec![set.doc()];
    while *seen.last().unwrap() != TERMINATED {
        seen.push(set.advance());
    }
    assert_eq!(&seen[..seen.len() - 1], docs, "advance");
    for _ in 0..8 {
        let mut set = make();
        let mut target = 0;
        for _ in 0..6 {
            target += r.below(1 << 15) as DocId;
            let want = docs.iter().copied().find(|d| *d >= target).unwrap_or(TERMINATED);
            assert_eq!(set.seek(target), want, "seek {target}");
            assert_eq!(set.doc(), want, "doc after seek {target}");
        }
    }
    let set = make();
    for b in 0..5 {
        if let Some(d) = docs.iter().find(|d| *d >> 16 >= b) {
            assert!(set.next_block(b).is_some_and(|n| n >= b && n <= d >> 16), "next_block {b}");
        }
    }
}

#[test]
fn word_ranges_match_whole_blocks_masked() {
    let mut r = Rng(7);
    for round in 0..24 {
        let ([a, c], [pa, pc]) = two_lists(&mut r, round);
        let (qa, qc) = (Posting::new(&pa), Posting::new(&pc));
        assert_eq!(qa.docs(), a);
        check(&mut r, &a, &mut || Box::new(qa.cursor()));
        let mut dead = DeadSet::new();
        c.iter().for_each(|d| _ = dead.insert(*d));
        check(&mut r, &c, &mut || Box::new(dead.cursor()));
        let (lo, hi) = (r.below(3 << 16) as DocId, r.below(4 << 16) as DocId);
        let range: Vec<DocId> = (lo..hi).collect();
        check(&mut r, &range, &mut || Box::new(Range::new(lo, hi)));
        check(&mut r, &[], &mut || Box::new(Empty));
        let inside: Vec<DocId> = a.iter().copied().filter(|d| (lo..hi).contains(d)).collect();
        check(&mut r, &inside, &mut || Box::new(Clipped::new(Box::new(qa.cursor()), lo, hi)));
        steps_match(&mut r, &inside, &mut || Box::new(Clipped::new(Box::new(qa.cursor()), lo, hi)));
        let both: Vec<DocId> = a.iter().copied().filter(|d| c.contains(d) && (lo..hi).contains(d)).collect();
        check(&mut r, &both, &mut || {
            Box::new(Intersection::new(vec![
                Box::new(qa.cursor()),
                Box::new(qc.cursor()),
                Box::new(Range::new(lo, hi)),
            ]))
        });
        let mut either: Vec<DocId> = a.iter().chain(&c).copied().collect();
        either.sort_unstable();
        either.dedup();
        check(&mut r, &either, &mut || Box::new(Union::new(vec![Box::new(qa.cursor()), Box::new(qc.cursor())])));
        let only: Vec<DocId> = a.iter().copied().filter(|d| !c.contains(d)).collect();
        check(&mut r, &only, &mut || Box::new(Exclusion::new(Box::new(qa.cursor()), Box::new(dead.cursor()))));
        check(&mut r, &only, &mut || Box::new(Exclusion::new(Box::new(qa.cursor()), Box::new(qc.cursor()))));
    }
}

#[test]
fn cached_array_containers_answer_as_decoded_ones() {
    // Arrays large enough for the cache, next to a bitmap, a small array and an
    // empty block; each check makes fresh cursors over one cache, so operations
    // meet blocks missing (short windows: not kept), admitted and kept.
    let mut r = Rng(11);
    for round in 0..6u64 {
        let mut docs = Vec::new();
        for b in 0..3u32 {
            let n = match (b as u64 + round) % 3 {
                0 => ADMIT_VALUES as u64 + r.below(3500),
                1 => 20_000,
                _ => r.below(ADMIT_VALUES as u64),
            };
            let mut d: Vec<DocId> = (0..n).map(|_| (b << 16) | r.below(65_536) as u32).collect();
            d.sort_unstable();
            d.dedup();
            docs.extend(d);
        }
        let mut bytes = Vec::new();
        encode(&docs, &mut bytes);
        let cache = BlockCache::for_blocks(3);
        let p = Posting::new(&bytes).with_cache(&cache, 40 + round);
        assert_eq!(p.docs(), docs);
        check(&mut r, &docs, &mut || Box::new(p.cursor()));
        assert!(!cache.is_empty(), "round {round}: a large array block was kept");
        check(&mut r, &docs, &mut || Box::new(p.cursor()));
        let other: Vec<DocId> = docs.iter().copied().filter(|d| d % 3 != 0).collect();
        let (mut ob, lo, hi) = (Vec::new(), r.below(3 << 16) as DocId, r.below(4 << 16) as DocId);
        encode(&other, &mut ob);
        let q = Posting::new(&ob).with_cache(&cache, 90 + round);
        let both: Vec<DocId> = other.iter().copied().filter(|d| (lo..hi).contains(d)).collect();
        check(&mut r, &both, &mut || {
            Box::new(Intersection::new(vec![Box::new(p.cursor()), Box::new(q.cursor()), Box::new(Range::new(lo, hi))]))
        });
    }
}

#[test]
fn range_masks_touch_only_the_words_outside_the_range() {
    // mask_words against the bit-by-bit definition, for ranges at and across word
    // and block edges, on windows anywhere in the block.
    let mut r = Rng(7);
    for _ in 0..3000 {
        let b = r.below(3) as u32;
        let edge = |r: &mut Rng| -> DocId {
            let base = r.below(4) as u32 * (1 << 16);
            match r.below(4) {
                0 => base,
                1 => base + 64 * r.below(1024) as u32,
                2 => base + 64 * r.below(1024) as u32 + 1 + r.below(63) as u32,
                _ => base + r.below(1 << 16) as u32,
            }
        };
        let (x, y) = (edge(&mut r), edge(&mut r));
        let (lo, hi) = (x.min(y), x.max(y) + r.below(2) as u32);
        let start = r.below(BLOCK_WORDS as u64) as usize;
        let end = start + r.below((BLOCK_WORDS - start) as u64 + 1) as usize;
        let mut out = crate::query::docset::new_block();
        for w in out.iter_mut() {
            *w = r.next() << 31 ^ r.next();
        }
        let mut want = out.clone();
        for w in start..end {
            for bit in 0..64 {
                let doc = (b << 16) + (w as u32) * 64 + bit;
                if !(lo..hi).contains(&doc) {
                    want[w] &= !(1u64 << bit);
                }
            }
        }
        crate::query::docset::mask_words(b, lo, hi, start..end, &mut out);
        assert!(out[..] == want[..], "block {b}, [{lo}, {hi}), words {start}..{end}");
    }
}

#[test]
fn blocks_are_reused_within_a_thread() {
    use crate::query::docset::BlockBuf;
    let first = BlockBuf::new();
    let at = first.as_ptr();
    drop(first);
    let again = BlockBuf::new();
    assert_eq!(again.as_ptr(), at, "the spare block is taken again");
    // Debug builds hand out garbage, not zeroes: a user relying on zeroes fails its tests.
    if cfg!(debug_assertions) {
        assert!(again.iter().all(|w| *w != 0));
    }
    let held: Vec<BlockBuf> = (0..40).map(|_| BlockBuf::new()).collect();
    drop(held);
    let kept = crate::query::docset::spare_blocks();
    assert!((1..=16).contains(&kept), "{kept} spare blocks kept");
}

/// A count steps through a sparse set and fills blocks of a dense one: both ways,
/// and the choice, give the docs in the range, for each kind of tree a count
/// builds (unpositioned intersections and exclusions).
#[test]
fn counts_by_steps_and_by_blocks_agree() {
    use super::docset::{count_blocks, count_in, count_steps};
    let mut r = Rng(11);
    for round in 0..24 {
        let ([a, c], [pa, pc]) = two_lists(&mut r, round);
        let (qa, qc) = (Posting::new(&pa), Posting::new(&pc));
        let mut either: Vec<DocId> = a.iter().chain(&c).copied().collect();
        either.sort_unstable();
        either.dedup();
        type Make<'a> = Box<dyn Fn() -> Box<dyn DocSet + 'a> + 'a>;
        let sets: [(Vec<DocId>, Make<'_>); 4] = [
            (a.clone(), Box::new(|| Box::new(qa.cursor()))),
            (
                a.iter().copied().filter(|d| c.contains(d)).collect(),
                Box::new(|| Box::new(Intersection::unpositioned(vec![Box::new(qa.cursor()), Box::new(qc.cursor())]))),
            ),
            (
                a.iter().copied().filter(|d| !c.contains(d)).collect(),
                Box::new(|| Box::new(Exclusion::unpositioned(Box::new(qa.cursor()), Box::new(qc.cursor())))),
            ),
            (either, Box::new(|| Box::new(Union::new(vec![Box::new(qa.cursor()), Box::new(qc.cursor())])))),
        ];
        for _ in 0..4 {
            let (lo, hi) = (r.below(3 << 16) as DocId, r.below(4 << 16) as DocId);
            for (docs, make) in &sets {
                let want = docs.iter().filter(|d| (lo..hi).contains(d)).count() as u64;
                assert_eq!(count_steps(&mut *make(), lo, hi), want, "steps [{lo}, {hi})");
                assert_eq!(count_blocks(&mut *make(), lo, hi), want, "blocks [{lo}, {hi})");
                assert_eq!(count_in(&mut *make(), lo, hi), want, "count [{lo}, {hi})");
            }
        }
    }
}
