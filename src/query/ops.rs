//! Set algebra on cursors: intersection (cheapest first), union, exclusion.

use super::docset::{
    and_in, andnot_in, block_of, fill_in, mask_block, mask_words, or_in, span, Block, DocId, DocSet, Scratch, Words,
    ALL_WORDS, TERMINATED,
};

type Boxed<'a> = Box<dyn DocSet + 'a>;

/// Docs in every child. Children are kept cheapest first: the cheapest one leads
/// the leapfrog, and its block is filled first so that empty blocks end early.
pub struct Intersection<'a> {
    children: Vec<Boxed<'a>>,
    scratch: Scratch,
    /// The children are aligned on a common doc (see [`Intersection::unpositioned`]).
    positioned: bool,
}

impl<'a> Intersection<'a> {
    pub fn new(children: Vec<Boxed<'a>>) -> Intersection<'a> {
        let mut me = Intersection::unpositioned(children);
        me.seek(0);
        me
    }

    /// An intersection not yet on its first doc, for block operations (a count,
    /// a walk a block at a time), which never use the cursor: aligning the
    /// children costs seeks. Its first `seek` positions it; `doc` and `advance`
    /// before that are a bug.
    pub fn unpositioned(mut children: Vec<Boxed<'a>>) -> Intersection<'a> {
        assert!(!children.is_empty(), "an intersection needs a child");
        children.sort_by_key(|c| c.cost());
        Intersection { children, scratch: Scratch::default(), positioned: false }
    }

    /// Move every child to the first doc `>= target` they all hold.
    fn align(&mut self, mut target: DocId) -> DocId {
        'outer: loop {
            if target == TERMINATED {
                for c in &mut self.children {
                    c.seek(TERMINATED);
                }
                return TERMINATED;
            }
            for c in &mut self.children {
                let d = c.seek(target);
                if d != target {
                    target = d;
                    continue 'outer;
                }
            }
            return target;
        }
    }
}

impl Intersection<'_> {
    #[inline(always)]
    fn fill<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block) {
        let words = span::<WHOLE>(words);
        let (first, rest) = self.children.split_first_mut().expect("an intersection has a child");
        fill_in::<WHOLE, _>(first, b, words.clone(), out);
        for c in rest {
            if out[words.clone()].iter().all(|w| *w == 0) {
                return;
            }
            and_in::<WHOLE, _>(c, b, words.clone(), out, self.scratch.get());
        }
    }
    #[inline(always)]
    fn and<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        for c in &mut self.children {
            and_in::<WHOLE, _>(c, b, words.clone(), out, scratch);
        }
    }
}

impl DocSet for Intersection<'_> {
    fn doc(&self) -> DocId {
        debug_assert!(self.positioned, "doc of an unpositioned intersection");
        self.children[0].doc()
    }
    fn advance(&mut self) -> DocId {
        debug_assert!(self.positioned, "advance of an unpositioned intersection");
        let next = self.children[0].advance();
        self.align(next)
    }
    fn seek(&mut self, target: DocId) -> DocId {
        if self.positioned && self.doc() >= target {
            return self.doc();
        }
        // Unpositioned, each child is on its own first doc: seeking them all
        // to `target` and aligning finds the first common doc `>= target`.
        self.positioned = true;
        let d = self.children[0].seek(target);
        self.align(d)
    }
    fn cost(&self) -> u64 {
        self.children[0].cost()
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.fill::<false>(b, words, out)
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.and::<false>(b, words, out, scratch)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.fill::<true>(b, ALL_WORDS, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.and::<true>(b, ALL_WORDS, out, scratch)
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        let mut b = b;
        'outer: loop {
            for c in &self.children {
                let n = c.next_block(b)?;
                if n != b {
                    b = n;
                    continue 'outer;
                }
            }
            return Some(b);
        }
    }
}

/// The docs of one set within `[lo, hi)`: what intersecting it with a range
/// gives, the range kept as two bounds, so that a listing of one list steps
/// through its docs without aligning a second cursor at each. Positioned (on
/// its first doc) when made.
pub struct Clipped<'a> {
    set: Boxed<'a>,
    lo: DocId,
    hi: DocId,
}

impl<'a> Clipped<'a> {
    pub fn new(mut set: Boxed<'a>, lo: DocId, hi: DocId) -> Clipped<'a> {
        set.seek(lo);
        Clipped { set, lo, hi }
    }

    #[inline]
    fn clip(&self, d: DocId) -> DocId {
        if d < self.hi {
            d
        } else {
            TERMINATED
        }
    }
}

impl DocSet for Clipped<'_> {
    fn doc(&self) -> DocId {
        self.clip(self.set.doc())
    }
    fn advance(&mut self) -> DocId {
        let d = self.set.advance();
        self.clip(d)
    }
    fn seek(&mut self, target: DocId) -> DocId {
        let d = self.set.seek(target);
        self.clip(d)
    }
    fn cost(&self) -> u64 {
        self.set.cost().min(u64::from(self.hi.saturating_sub(self.lo)))
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.set.fill_words(b, words.clone(), out);
        mask_words(b, self.lo, self.hi, words, out);
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.set.and_words(b, words.clone(), out, scratch);
        mask_words(b, self.lo, self.hi, words, out);
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.set.fill_block(b, out);
        mask_block(b, self.lo, self.hi, out);
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.set.and_block(b, out, scratch);
        mask_block(b, self.lo, self.hi, out);
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        if self.lo >= self.hi {
            return None;
        }
        let n = self.set.next_block(b.max(block_of(self.lo)))?;
        (n <= block_of(self.hi - 1)).then_some(n)
    }
}

/// Docs in any child.
pub struct Union<'a> {
    children: Vec<Boxed<'a>>,
    cur: DocId,
    scratch: Scratch,
}

impl<'a> Union<'a> {
    pub fn new(children: Vec<Boxed<'a>>) -> Union<'a> {
        let cur = children.iter().map(|c| c.doc()).min().unwrap_or(TERMINATED);
        Union { children, cur, scratch: Scratch::default() }
    }
}

impl Union<'_> {
    #[inline(always)]
    fn fill<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block) {
        let words = span::<WHOLE>(words);
        // The first child with docs in the block fills it, the others OR in.
        let mut filled = false;
        for c in &mut self.children {
            if c.next_block(b) == Some(b) {
                if filled {
                    or_in::<WHOLE, _>(c, b, words.clone(), out, self.scratch.get());
                } else {
                    fill_in::<WHOLE, _>(c, b, words.clone(), out);
                    filled = true;
                }
            }
        }
        if !filled {
            out[words].fill(0);
        }
    }
}

impl DocSet for Union<'_> {
    fn doc(&self) -> DocId {
        self.cur
    }
    fn advance(&mut self) -> DocId {
        if self.cur == TERMINATED {
            return TERMINATED;
        }
        let next = self.cur + 1;
        self.seek(next)
    }
    fn seek(&mut self, target: DocId) -> DocId {
        if self.cur >= target {
            return self.cur;
        }
        let mut min = TERMINATED;
        for c in &mut self.children {
            min = min.min(c.seek(target));
        }
        self.cur = min;
        min
    }
    fn cost(&self) -> u64 {
        self.children.iter().map(|c| c.cost()).sum()
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.fill::<false>(b, words, out)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.fill::<true>(b, ALL_WORDS, out)
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        self.children.iter().filter_map(|c| c.next_block(b)).min()
    }
}

/// Docs of `include` that are not in `exclude`.
pub struct Exclusion<'a> {
    include: Boxed<'a>,
    exclude: Boxed<'a>,
    scratch: Scratch,
    /// On a doc of `include` not excluded (see [`Exclusion::unpositioned`]).
    positioned: bool,
}

impl<'a> Exclusion<'a> {
    pub fn new(include: Boxed<'a>, exclude: Boxed<'a>) -> Exclusion<'a> {
        let mut me = Exclusion::unpositioned(include, exclude);
        me.seek(0);
        me
    }

    /// An exclusion not yet on its first doc, for block operations (as
    /// [`Intersection::unpositioned`]; `include` may be unpositioned too). Its
    /// first `seek` positions it; `doc` and `advance` before that are a bug.
    pub fn unpositioned(include: Boxed<'a>, exclude: Boxed<'a>) -> Exclusion<'a> {
        Exclusion { include, exclude, scratch: Scratch::default(), positioned: false }
    }

    fn settle(&mut self, mut d: DocId) -> DocId {
        while d != TERMINATED && self.exclude.seek(d) == d {
            d = self.include.advance();
        }
        d
    }
}

impl Exclusion<'_> {
    #[inline(always)]
    fn fill<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block) {
        fill_in::<WHOLE, _>(&mut self.include, b, words.clone(), out);
        if self.exclude.next_block(b) == Some(b) {
            andnot_in::<WHOLE, _>(&mut self.exclude, b, words, out, self.scratch.get());
        }
    }
    #[inline(always)]
    fn and<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        and_in::<WHOLE, _>(&mut self.include, b, words.clone(), out, scratch);
        if self.exclude.next_block(b) == Some(b) {
            andnot_in::<WHOLE, _>(&mut self.exclude, b, words, out, scratch);
        }
    }
}

impl DocSet for Exclusion<'_> {
    fn doc(&self) -> DocId {
        debug_assert!(self.positioned, "doc of an unpositioned exclusion");
        self.include.doc()
    }
    fn advance(&mut self) -> DocId {
        debug_assert!(self.positioned, "advance of an unpositioned exclusion");
        let d = self.include.advance();
        self.settle(d)
    }
    fn seek(&mut self, target: DocId) -> DocId {
        self.positioned = true;
        let d = self.include.seek(target);
        self.settle(d)
    }
    fn cost(&self) -> u64 {
        self.include.cost()
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.fill::<false>(b, words, out)
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.and::<false>(b, words, out, scratch)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.fill::<true>(b, ALL_WORDS, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.and::<true>(b, ALL_WORDS, out, scratch)
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        self.include.next_block(b)
    }
}
