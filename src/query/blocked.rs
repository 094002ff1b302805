//! A set walked a block at a time: the bitmap of one 65,536-doc block is filled
//! by the set's block operations (64 docs a word: intersections AND, exclusions
//! AND NOT), then its docs are read bit by bit. A listing walks a filter this way
//! when its cheapest list is dense (many docs a block): doc at a time, each of
//! that list's docs would seek into every other list, most of them for nothing.
//! A block is filled in growing windows of words (a list of 100 rows reads the
//! first few hundred docs of a block, not all 65,536), each read before the next
//! is filled. The wrapped set's cursor is never moved (block operations do not use it).

use super::docset::{block_of, Block, BlockBuf, DocId, DocSet, Words, BLOCK_DOCS, BLOCK_WORDS, TERMINATED};

type Boxed<'a> = Box<dyn DocSet + 'a>;

/// Words of the first window; each next window is twice the last.
const FIRST_WINDOW: usize = 16;

/// `inner`'s docs in `[lo, hi)`, found a block at a time.
pub struct Blocked<'a> {
    inner: Boxed<'a>,
    /// The docs walked: no window is filled outside them.
    lo: DocId,
    hi: DocId,
    bits: BlockBuf,
    /// The block `bits` holds words of, if any: a block `inner` may have docs in.
    block: Option<u32>,
    /// The words of `bits` filled for `block` (the others are stale).
    span: Words,
    /// Words of the next window (at most `BLOCK_WORDS`).
    grow: usize,
    doc: DocId,
}

impl<'a> Blocked<'a> {
    /// `inner`'s docs in `[lo, hi)` (a plan's range: its windows start at `lo`,
    /// not at `lo`'s block's first word).
    pub fn new(inner: Boxed<'a>, lo: DocId, hi: DocId) -> Blocked<'a> {
        let bits = BlockBuf::new();
        let mut me = Blocked { inner, lo, hi, bits, block: None, span: 0..0, grow: FIRST_WINDOW, doc: 0 };
        me.doc = me.first_from(lo);
        me
    }

    /// The first doc `>= target`.
    fn first_from(&mut self, target: DocId) -> DocId {
        let target = target.max(self.lo);
        if target >= self.hi {
            return TERMINATED;
        }
        let last = block_of(self.hi - 1);
        let mut b = block_of(target);
        let mut low = target & 0xFFFF;
        loop {
            if self.block != Some(b) {
                let Some(next) = self.inner.next_block(b).filter(|n| *n <= last) else {
                    return TERMINATED;
                };
                if next != b {
                    (b, low) = (next, 0);
                }
                // `grow` carries over: a walk that read all of the last block
                // (sparse matches) fills the next one in one or two windows.
                (self.block, self.span) = (Some(b), 0..0);
            }
            // The block's words up to `hi`.
            let stop = if b == last { (self.hi - 1) as usize % BLOCK_DOCS as usize / 64 + 1 } else { BLOCK_WORDS };
            loop {
                let w = (low / 64) as usize;
                if !self.span.contains(&w) {
                    let mut end = (w + self.grow).min(stop);
                    if stop - end < 2 * self.grow {
                        end = stop; // no short window left over at the end
                    }
                    if w == 0 && end == BLOCK_WORDS {
                        // A whole block: the block operations' fixed-length code.
                        self.inner.fill_block(b, &mut self.bits);
                    } else {
                        self.inner.fill_words(b, w..end, &mut self.bits);
                    }
                    (self.span, self.grow) = (w..end, (self.grow * 2).min(BLOCK_WORDS));
                }
                if let Some(d) = next_bit(&self.bits, low, self.span.end) {
                    let doc = (b << 16) | d;
                    return if doc < self.hi { doc } else { TERMINATED };
                }
                if self.span.end == stop {
                    break;
                }
                low = self.span.end as u32 * 64;
            }
            if b == last {
                return TERMINATED;
            }
            (b, low) = (b + 1, 0);
        }
    }
}

/// The first set bit at or after `from` in the words of a block before `end`.
fn next_bit(bits: &Block, from: u32, end: usize) -> Option<u32> {
    let mut w = (from / 64) as usize;
    let mut word = bits[w] & (!0u64 << (from % 64));
    loop {
        if word != 0 {
            return Some(w as u32 * 64 + word.trailing_zeros());
        }
        w += 1;
        if w == end {
            return None;
        }
        word = bits[w];
    }
}

impl DocSet for Blocked<'_> {
    fn doc(&self) -> DocId {
        self.doc
    }
    fn advance(&mut self) -> DocId {
        if self.doc != TERMINATED {
            self.doc = self.first_from(self.doc + 1);
        }
        self.doc
    }
    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc < target {
            self.doc = self.first_from(target);
        }
        self.doc
    }
    fn cost(&self) -> u64 {
        self.inner.cost()
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.inner.fill_words(b, words, out)
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        self.inner.next_block(b)
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.inner.and_words(b, words, out, scratch)
    }
    fn or_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.inner.or_words(b, words, out, scratch)
    }
    fn andnot_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.inner.andnot_words(b, words, out, scratch)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.inner.fill_block(b, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.inner.and_block(b, out, scratch)
    }
    fn or_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.inner.or_block(b, out, scratch)
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.inner.andnot_block(b, out, scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::docset::Range;
    use crate::query::ops::{Exclusion, Intersection};

    /// A sorted list of docs as a set (block operations by the defaults).
    struct List(Vec<DocId>, usize);

    impl DocSet for List {
        fn doc(&self) -> DocId {
            self.0.get(self.1).copied().unwrap_or(TERMINATED)
        }
        fn advance(&mut self) -> DocId {
            self.1 += 1;
            self.doc()
        }
        fn cost(&self) -> u64 {
            self.0.len() as u64
        }
        fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
            out[words.clone()].fill(0);
            for &d in self.0.iter().filter(|d| block_of(**d) == b && words.contains(&((**d as usize & 0xFFFF) / 64))) {
                out[(d as usize & 0xFFFF) / 64] |= 1 << (d % 64);
            }
        }
        fn next_block(&self, b: u32) -> Option<u32> {
            self.0.iter().map(|d| block_of(*d)).find(|x| *x >= b)
        }
    }

    fn walk(mut s: impl DocSet) -> Vec<DocId> {
        let mut out = Vec::new();
        while s.doc() != TERMINATED {
            out.push(s.doc());
            s.advance();
        }
        out
    }

    #[test]
    fn walks_and_seeks_as_the_doc_at_a_time_set() {
        let a: Vec<DocId> = (0..400_000).filter(|d| d % 3 == 0 || d % 7 == 1).collect();
        let b: Vec<DocId> = (0..400_000).filter(|d| d % 5 != 2 && !(70_000..140_000).contains(d)).collect();
        let x: Vec<DocId> = (0..400_000).filter(|d| d % 11 == 0).chain([TERMINATED - 1]).collect();
        let make = || -> Boxed<'static> {
            let both = Intersection::new(vec![
                Box::new(List(a.clone(), 0)),
                Box::new(List(b.clone(), 0)),
                Box::new(Range::new(5, 390_000)),
            ]);
            Box::new(Exclusion::new(Box::new(both), Box::new(List(x.clone(), 0))))
        };
        let want = walk(make());
        assert!(want.len() > 10_000);
        assert_eq!(walk(Blocked::new(make(), 0, TERMINATED)), want);
        // Targets at and across window edges (16, 32, 64... words from a fill).
        let targets = [0, 1, 64, 1_023, 1_024, 3_071, 3_072, 65_535, BLOCK_DOCS, BLOCK_DOCS + 1_100, 100_000];
        for target in targets.into_iter().chain([131_072 + 40_000, 389_999, 390_000, TERMINATED]) {
            let (mut s, mut t) = (Blocked::new(make(), 0, TERMINATED), make());
            assert_eq!(s.seek(target), t.seek(target), "seek {target}");
            for _ in 0..300 {
                assert_eq!(s.advance(), t.advance(), "after seek {target}");
            }
            assert_eq!(
                s.seek(target.saturating_add(5_000)),
                t.seek(target.saturating_add(5_000)),
                "second seek {target}"
            );
            assert_eq!(s.advance(), t.advance(), "after second seek {target}");
        }
        // One doc a window apart, and docs at a block's last word only.
        let mut sparse: Vec<DocId> = (0..20).map(|i| 1_000 * i * i + 7).chain([BLOCK_DOCS + 65_535]).collect();
        sparse.sort_unstable();
        assert_eq!(walk(Blocked::new(Box::new(List(sparse.clone(), 0)), 0, TERMINATED)), sparse);
        let last = walk(Blocked::new(Box::new(List(vec![3, TERMINATED - 1], 0)), 0, TERMINATED));
        assert_eq!(last, vec![3, TERMINATED - 1]);
        assert_eq!(walk(Blocked::new(Box::new(List(vec![], 0)), 0, TERMINATED)), Vec::<DocId>::new());
        // Walked within a range (ends mid-word, mid-block, at block edges), a
        // seek before it or past it included.
        for (lo, hi) in [(5, 390_000), (70_001, 140_123), (65_536, 131_072), (131_071, 131_073), (200_000, 200_000)] {
            let inside: Vec<DocId> = want.iter().copied().filter(|d| (lo..hi).contains(d)).collect();
            assert_eq!(walk(Blocked::new(make(), lo, hi)), inside, "[{lo}, {hi})");
            let mut s = Blocked::new(make(), lo, hi);
            assert_eq!(s.seek(lo / 2), inside.first().copied().unwrap_or(TERMINATED), "[{lo}, {hi})");
            assert_eq!(s.seek(hi), TERMINATED, "[{lo}, {hi})");
        }
    }
}
