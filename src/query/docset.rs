//! The cursor every filter is built from. A [`DocSet`] walks doc ids (positions in
//! a project's `ts`-descending order) in increasing order, and can also fill the
//! bitmap of one 65,536-doc block at once, which is how counts, skips and dense
//! intersections run a word (64 docs) at a time instead of a doc at a time.

use std::cell::RefCell;

/// A position in one index segment's project order.
pub type DocId = u32;

/// `doc()` of an exhausted set.
pub const TERMINATED: DocId = u32::MAX;

/// Docs per block, and 64-bit words per block.
pub const BLOCK_DOCS: u32 = 1 << 16;
pub const BLOCK_WORDS: usize = (BLOCK_DOCS / 64) as usize;

/// The bits of one block.
pub type Block = [u64; BLOCK_WORDS];

/// A range of the words of a block (`0..BLOCK_WORDS` for all of it).
pub type Words = std::ops::Range<usize>;

/// Every word of a block.
pub const ALL_WORDS: Words = 0..BLOCK_WORDS;

pub fn block_of(doc: DocId) -> u32 {
    doc >> 16
}

/// A fresh zeroed block on the heap.
pub fn new_block() -> Box<Block> {
    Box::new([0u64; BLOCK_WORDS])
}

thread_local! {
    /// This thread's spare blocks, for the next query's cursors.
    static SPARE: RefCell<Vec<Box<Block>>> = const { RefCell::new(Vec::new()) };
}

/// Most spare blocks a thread keeps (8 KiB each).
const SPARE_MAX: usize = 16;

/// A block on the heap, taken from this thread's spares when it has one and
/// given back when dropped: a query needs a few blocks (a walk's bitmap, the
/// scratch of each set operation), and a fresh one costs an allocation and an
/// 8 KiB memset. Its bits are whatever its last user left: every block
/// operation writes the words it then reads.
pub struct BlockBuf(Option<Box<Block>>);

impl BlockBuf {
    pub fn new() -> BlockBuf {
        let spare = SPARE.try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop())).ok().flatten();
        #[allow(unused_mut)]
        let mut b = spare.unwrap_or_else(new_block);
        // Tests and debug builds: garbage, not zeroes, for whoever would rely on them.
        #[cfg(debug_assertions)]
        b.fill(0xA5A5_5A5A_0FF0_F00F);
        BlockBuf(Some(b))
    }
}

impl Default for BlockBuf {
    fn default() -> BlockBuf {
        BlockBuf::new()
    }
}

impl std::ops::Deref for BlockBuf {
    type Target = Block;
    fn deref(&self) -> &Block {
        self.0.as_deref().expect("a block until dropped")
    }
}

impl std::ops::DerefMut for BlockBuf {
    fn deref_mut(&mut self) -> &mut Block {
        self.0.as_deref_mut().expect("a block until dropped")
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            // Past SPARE_MAX, or while the thread ends, the block is freed.
            let _ = SPARE.try_with(|s| match s.try_borrow_mut() {
                Ok(mut s) if s.len() < SPARE_MAX => s.push(b),
                _ => drop(b),
            });
        }
    }
}

/// Spare blocks this thread keeps.
#[cfg(test)]
pub fn spare_blocks() -> usize {
    SPARE.with(|s| s.borrow().len())
}

/// A block of scratch space taken at its first use: counts use it, listings
/// (which only step through docs) never take it.
#[derive(Default)]
pub struct Scratch(Option<BlockBuf>);

impl Scratch {
    pub fn get(&mut self) -> &mut Block {
        self.0.get_or_insert_with(BlockBuf::new)
    }
}

/// A sorted set of docs with a cursor.
///
/// Like tantivy's DocSet, a set starts positioned on its first doc, except an
/// intersection or exclusion built unpositioned for block operations (see
/// [`super::ops::Intersection::unpositioned`]): its first seek positions it.
pub trait DocSet {
    /// The current doc, or [`TERMINATED`].
    fn doc(&self) -> DocId;
    /// Move to the next doc and return it.
    fn advance(&mut self) -> DocId;
    /// Move to the first doc `>= target` (never backwards) and return it.
    fn seek(&mut self, target: DocId) -> DocId {
        let mut d = self.doc();
        while d < target {
            d = self.advance();
        }
        d
    }
    /// An upper bound of the number of docs: what intersections order by.
    fn cost(&self) -> u64;
    /// Write into `out[words]` the bits of the docs of block `b` in those words
    /// (64 docs a word); the other words of `out` are left as they are. Does
    /// not move the cursor. Every block operation reads only its word range, so
    /// that a listing can fill a block a window at a time.
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block);
    /// The first block `>= b` that may hold docs, if any.
    fn next_block(&self, b: u32) -> Option<u32>;
    /// `out[words] &= ` this set's bits of block `b`. Sets override it to read
    /// only the words `out` still has bits in.
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.fill_words(b, words.clone(), scratch);
        merge::<false>(words, out, scratch, |o, s| o & s);
    }
    /// `out[words] |= ` this set's bits of block `b`.
    fn or_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.fill_words(b, words.clone(), scratch);
        merge::<false>(words, out, scratch, |o, s| o | s);
    }
    /// `out[words] &= !` this set's bits of block `b`.
    fn andnot_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.fill_words(b, words.clone(), scratch);
        merge::<false>(words, out, scratch, |o, s| o & !s);
    }
    /// [`DocSet::fill_words`] over every word. The whole-block operations are
    /// what counts call: sets override them with fixed-length loops (through
    /// a helper generic over `WHOLE`, see [`span`]).
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.fill_words(b, ALL_WORDS, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.fill_block(b, scratch);
        merge::<true>(ALL_WORDS, out, scratch, |o, s| o & s);
    }
    fn or_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.fill_block(b, scratch);
        merge::<true>(ALL_WORDS, out, scratch, |o, s| o | s);
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.fill_block(b, scratch);
        merge::<true>(ALL_WORDS, out, scratch, |o, s| o & !s);
    }
}

/// `words`, or with `WHOLE` the constant [`ALL_WORDS`]: a block operation
/// written once over `span::<WHOLE>(words)` compiles for the whole block to
/// loops of fixed length (unrolled, vectorised, no bounds checks).
#[inline(always)]
pub fn span<const WHOLE: bool>(words: Words) -> Words {
    if WHOLE {
        ALL_WORDS
    } else {
        words
    }
}

/// `out[w] = f(out[w], scratch[w])` over `span::<WHOLE>(words)`.
#[inline(always)]
fn merge<const WHOLE: bool>(words: Words, out: &mut Block, scratch: &Block, f: impl Fn(u64, u64) -> u64) {
    let words = span::<WHOLE>(words);
    for (o, s) in out[words.clone()].iter_mut().zip(scratch[words].iter()) {
        *o = f(*o, *s);
    }
}

/// A child's fill: the whole-block method with `WHOLE`, else the word-range one.
#[inline(always)]
pub fn fill_in<const WHOLE: bool, S: DocSet + ?Sized>(s: &mut S, b: u32, words: Words, out: &mut Block) {
    if WHOLE {
        s.fill_block(b, out)
    } else {
        s.fill_words(b, words, out)
    }
}

/// A child's `and`: the whole-block method with `WHOLE`, else the word-range one.
#[inline(always)]
pub fn and_in<const WHOLE: bool, S: DocSet + ?Sized>(
    s: &mut S,
    b: u32,
    words: Words,
    out: &mut Block,
    scratch: &mut Block,
) {
    if WHOLE {
        s.and_block(b, out, scratch)
    } else {
        s.and_words(b, words, out, scratch)
    }
}

/// A child's `or`: the whole-block method with `WHOLE`, else the word-range one.
#[inline(always)]
pub fn or_in<const WHOLE: bool, S: DocSet + ?Sized>(
    s: &mut S,
    b: u32,
    words: Words,
    out: &mut Block,
    scratch: &mut Block,
) {
    if WHOLE {
        s.or_block(b, out, scratch)
    } else {
        s.or_words(b, words, out, scratch)
    }
}

/// A child's `andnot`: the whole-block method with `WHOLE`, else the word-range one.
#[inline(always)]
pub fn andnot_in<const WHOLE: bool, S: DocSet + ?Sized>(
    s: &mut S,
    b: u32,
    words: Words,
    out: &mut Block,
    scratch: &mut Block,
) {
    if WHOLE {
        s.andnot_block(b, out, scratch)
    } else {
        s.andnot_words(b, words, out, scratch)
    }
}

impl<T: DocSet + ?Sized> DocSet for Box<T> {
    fn doc(&self) -> DocId {
        (**self).doc()
    }
    fn advance(&mut self) -> DocId {
        (**self).advance()
    }
    fn seek(&mut self, target: DocId) -> DocId {
        (**self).seek(target)
    }
    fn cost(&self) -> u64 {
        (**self).cost()
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        (**self).fill_words(b, words, out)
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        (**self).next_block(b)
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        (**self).and_words(b, words, out, scratch)
    }
    fn or_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        (**self).or_words(b, words, out, scratch)
    }
    fn andnot_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        (**self).andnot_words(b, words, out, scratch)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        (**self).fill_block(b, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        (**self).and_block(b, out, scratch)
    }
    fn or_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        (**self).or_block(b, out, scratch)
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        (**self).andnot_block(b, out, scratch)
    }
}

/// The mask of the docs `[lo, hi)` (offsets in a block, `lo <= hi <= BLOCK_DOCS`)
/// within word `w`.
fn word_mask(lo: u64, hi: u64, w: usize) -> u64 {
    let start = w as u64 * 64;
    if hi <= start || lo >= start + 64 {
        return 0;
    }
    let low = if lo > start { !0u64 << (lo - start) } else { !0 };
    let high = if hi < start + 64 { !0u64 >> (start + 64 - hi) } else { !0 };
    low & high
}

/// Keep only bits of docs in `[lo, hi)` within block `b`, in `out[words]`.
pub fn mask_words(b: u32, lo: DocId, hi: DocId, words: Words, out: &mut Block) {
    let base = u64::from(b) << 16;
    let lo = u64::from(lo).saturating_sub(base).min(u64::from(BLOCK_DOCS));
    let hi = u64::from(hi).saturating_sub(base).min(u64::from(BLOCK_DOCS));
    // Words wholly inside [lo, hi) keep their bits: only the others are masked.
    let (first_full, end_full) = (lo.div_ceil(64) as usize, (hi / 64) as usize);
    let edges = [words.start..words.end.min(first_full), words.start.max(first_full.max(end_full))..words.end];
    for w in edges.into_iter().flatten() {
        out[w] &= word_mask(lo, hi, w);
    }
}

/// Keep only bits of docs in `[lo, hi)` within block `b`.
pub fn mask_block(b: u32, lo: DocId, hi: DocId, out: &mut Block) {
    let base = u64::from(b) << 16;
    let lo = u64::from(lo).saturating_sub(base).min(u64::from(BLOCK_DOCS));
    let hi = u64::from(hi).saturating_sub(base).min(u64::from(BLOCK_DOCS));
    if lo >= hi {
        out.fill(0);
        return;
    }
    let (lw, hw) = ((lo / 64) as usize, (hi / 64) as usize);
    out[..lw].fill(0);
    out[lw] &= !0u64 << (lo % 64);
    if hw < BLOCK_WORDS {
        out[hw] &= if hi % 64 == 0 { 0 } else { !0u64 >> (64 - hi % 64) };
        out[hw + 1..].fill(0);
    }
}

/// Set the bits of docs `[lo, hi)` within block `b` (others cleared).
pub fn fill_range(b: u32, lo: DocId, hi: DocId, out: &mut Block) {
    out.fill(!0);
    mask_block(b, lo, hi, out);
}

/// The position of the `n`-th (0-based) set bit of `block`, if it has that many.
pub fn select_in_block(block: &Block, n: u64) -> Option<u32> {
    select_in_words(block, ALL_WORDS, n)
}

/// The position in the block of the `n`-th (0-based) set bit of `words`, if
/// they have that many.
pub fn select_in_words(block: &Block, words: Words, mut n: u64) -> Option<u32> {
    let first = words.start;
    for (i, w) in block[words].iter().enumerate() {
        let c = u64::from(w.count_ones());
        if n < c {
            let mut w = *w;
            for _ in 0..n {
                w &= w - 1;
            }
            return Some((first + i) as u32 * 64 + w.trailing_zeros());
        }
        n -= c;
    }
    None
}

/// The highest set bit of `block`, if any.
pub fn last_in_block(block: &Block) -> Option<u32> {
    block.iter().enumerate().rev().find(|(_, w)| **w != 0).map(|(i, w)| i as u32 * 64 + 63 - w.leading_zeros())
}

pub fn popcount(block: &Block) -> u64 {
    block.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// Visit in order each block of `[lo, hi)` where `set` may have docs, with its
/// bits (masked to the range) in `buf`, until `f` answers false.
pub fn walk_blocks(
    set: &mut dyn DocSet,
    lo: DocId,
    hi: DocId,
    buf: &mut Block,
    mut f: impl FnMut(u32, &Block) -> bool,
) {
    let mut b = if lo < hi { set.next_block(block_of(lo)) } else { None };
    while let Some(bk) = b {
        if u64::from(bk) << 16 >= u64::from(hi) {
            break;
        }
        set.fill_block(bk, buf);
        mask_block(bk, lo, hi, buf);
        if !f(bk, buf) {
            break;
        }
        b = bk.checked_add(1).and_then(|n| set.next_block(n));
    }
}

/// Below this many docs a block of the range (by the set's cost), a count steps
/// through the docs instead of filling whole blocks: filling and intersecting a
/// block's bitmaps costs about what stepping through that many docs does.
const STEP_COUNT_BELOW: u64 = 64;

/// Docs `[lo, hi)` matching `set` (a set not moved yet): stepped through one by
/// one when the set is sparse over the range (a rare spider or tag over many
/// blocks), else counted a block at a time. Moves the cursor.
pub fn count_in(set: &mut dyn DocSet, lo: DocId, hi: DocId) -> u64 {
    if lo >= hi {
        return 0;
    }
    let blocks = u64::from(block_of(hi - 1) - block_of(lo)) + 1;
    match set.cost() < STEP_COUNT_BELOW * blocks {
        true => count_steps(set, lo, hi),
        false => count_blocks(set, lo, hi),
    }
}

/// [`count_in`] a doc at a time.
pub fn count_steps(set: &mut dyn DocSet, lo: DocId, hi: DocId) -> u64 {
    let (mut n, mut d) = (0, set.seek(lo));
    while d < hi {
        n += 1;
        d = set.advance();
    }
    n
}

/// [`count_in`] a block at a time (does not move the cursor).
pub fn count_blocks(set: &mut dyn DocSet, lo: DocId, hi: DocId) -> u64 {
    let mut total = 0;
    walk_blocks(set, lo, hi, &mut BlockBuf::new(), |_, blk| {
        total += popcount(blk);
        true
    });
    total
}

/// Skip up to `n` matching docs of `[lo, hi)` from `lo`: returns how many were
/// skipped and the position after the last one skipped.
pub fn skip_in(set: &mut dyn DocSet, lo: DocId, hi: DocId, n: u64) -> (u64, DocId) {
    if n == 0 {
        return (0, lo);
    }
    let (mut done, mut end) = (0, hi);
    walk_blocks(set, lo, hi, &mut BlockBuf::new(), |bk, blk| {
        let c = popcount(blk);
        if done + c < n {
            done += c;
            return true;
        }
        end = (bk << 16) + select_in_block(blk, n - done - 1).expect("block holds enough bits") + 1;
        done = n;
        false
    });
    (done, end)
}

/// The last matching doc of `[lo, hi)`, scanning blocks from the end.
pub fn last_in(set: &mut dyn DocSet, lo: DocId, hi: DocId) -> Option<DocId> {
    if lo >= hi {
        return None;
    }
    let mut buf = BlockBuf::new();
    let first = block_of(lo);
    let mut bk = block_of(hi - 1);
    loop {
        if set.next_block(bk) == Some(bk) {
            set.fill_block(bk, &mut buf);
            mask_block(bk, lo, hi, &mut buf);
            if let Some(at) = last_in_block(&buf) {
                return Some((bk << 16) + at);
            }
        }
        if bk == first {
            return None;
        }
        bk -= 1;
    }
}

/// The empty set.
pub struct Empty;

impl DocSet for Empty {
    fn doc(&self) -> DocId {
        TERMINATED
    }
    fn advance(&mut self) -> DocId {
        TERMINATED
    }
    fn cost(&self) -> u64 {
        0
    }
    fn fill_words(&mut self, _b: u32, words: Words, out: &mut Block) {
        out[words].fill(0);
    }
    fn fill_block(&mut self, _b: u32, out: &mut Block) {
        out.fill(0);
    }
    fn next_block(&self, _b: u32) -> Option<u32> {
        None
    }
}

/// Every doc of `[lo, hi)`: a time range, or a whole project.
pub struct Range {
    lo: DocId,
    hi: DocId,
    cur: DocId,
}

impl Range {
    pub fn new(lo: DocId, hi: DocId) -> Range {
        let cur = if lo < hi { lo } else { TERMINATED };
        Range { lo, hi, cur }
    }
}

impl DocSet for Range {
    fn doc(&self) -> DocId {
        self.cur
    }
    fn advance(&mut self) -> DocId {
        self.seek(self.cur.saturating_add(1))
    }
    fn seek(&mut self, target: DocId) -> DocId {
        if self.cur != TERMINATED {
            self.cur = if target.max(self.cur) < self.hi { target.max(self.cur) } else { TERMINATED };
        }
        self.cur
    }
    fn cost(&self) -> u64 {
        u64::from(self.hi.saturating_sub(self.lo))
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        out[words.clone()].fill(!0);
        mask_words(b, self.lo, self.hi, words, out);
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, _scratch: &mut Block) {
        mask_words(b, self.lo, self.hi, words, out);
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        fill_range(b, self.lo, self.hi, out);
    }
    fn and_block(&mut self, b: u32, out: &mut Block, _scratch: &mut Block) {
        mask_block(b, self.lo, self.hi, out);
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        if self.lo >= self.hi {
            return None;
        }
        let b = b.max(block_of(self.lo));
        (b <= block_of(self.hi - 1)).then_some(b)
    }
}
