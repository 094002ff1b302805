//! Posting lists: sorted doc ids. A list of at most [`FLAT_MAX`] docs is flat
//! (the doc ids as u32); a longer one is in 65,536-doc containers, as arrays of
//! 16-bit offsets when sparse and as bitmaps cut after their last non-zero word
//! when dense (roaring's layout, made to be read in place from a memory map).
//!
//! ```text
//! flat:      u32 cardinality (1..=8), cardinality × u32 doc, ascending
//! contained: u32 cardinality (> 8), u32 n_containers,
//!            n × (u16 block, u16 words [0 array, else bitmap words], u32 cardinality, u32 data offset)
//!            data: array = cardinality × u16, ascending; bitmap = words × u64
//! ```

use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE, WriteBytesExt};

use super::block_cache::{BlockCache, ADMIT_VALUES};
use crate::query::docset::{span, Block, DocId, DocSet, Words, ALL_WORDS, BLOCK_WORDS, TERMINATED};

/// Lists of at most this many docs are flat.
pub const FLAT_MAX: u32 = 8;
const ENTRY: usize = 12;

/// Words of the bitmap of a container whose highest offset is `last`.
fn words_for(last: u32) -> usize {
    (last / 64) as usize + 1
}

/// True when a container of `card` offsets up to `last` is a bitmap: when the
/// bitmap (to its last non-zero word) is smaller than the array.
fn is_bitmap(card: usize, last: u32) -> bool {
    card > 4 * words_for(last)
}

/// Append the posting list of `docs` (strictly increasing, at least one) to `out`.
pub fn encode(docs: &[DocId], out: &mut Vec<u8>) {
    let start = out.len();
    out.write_u32::<LE>(docs.len() as u32).unwrap();
    if docs.len() as u32 <= FLAT_MAX {
        for d in docs {
            out.write_u32::<LE>(*d).unwrap();
        }
        return;
    }
    let mut groups: Vec<(u16, &[DocId])> = Vec::new();
    let mut i = 0;
    while i < docs.len() {
        let hi = docs[i] >> 16;
        let j = i + docs[i..].partition_point(|d| d >> 16 == hi);
        groups.push((hi as u16, &docs[i..j]));
        i = j;
    }
    out.write_u32::<LE>(groups.len() as u32).unwrap();
    let mut data_at = 8 + groups.len() * ENTRY;
    for (hi, g) in &groups {
        let last = g[g.len() - 1] & 0xFFFF;
        let words = if is_bitmap(g.len(), last) { words_for(last) } else { 0 };
        out.write_u16::<LE>(*hi).unwrap();
        out.write_u16::<LE>(words as u16).unwrap();
        out.write_u32::<LE>(g.len() as u32).unwrap();
        out.write_u32::<LE>(data_at as u32).unwrap();
        data_at += if words > 0 { words * 8 } else { g.len() * 2 };
    }
    for (_, g) in &groups {
        let last = g[g.len() - 1] & 0xFFFF;
        if is_bitmap(g.len(), last) {
            let mut words = vec![0u64; words_for(last)];
            for d in *g {
                let lo = d & 0xFFFF;
                words[(lo / 64) as usize] |= 1 << (lo % 64);
            }
            for w in words {
                out.write_u64::<LE>(w).unwrap();
            }
        } else {
            for d in *g {
                out.write_u16::<LE>((d & 0xFFFF) as u16).unwrap();
            }
        }
    }
    debug_assert_eq!(out.len() - start, data_at);
}

/// Check a posting list at the start of `bytes` against docs `< max_doc`; returns
/// its length in bytes.
pub fn validate(bytes: &[u8], max_doc: u32) -> Result<usize, String> {
    if bytes.len() < 4 {
        return Err("posting list header runs past the section".into());
    }
    let card = LE::read_u32(&bytes[0..4]);
    if card == 0 {
        return Err("empty posting list".into());
    }
    if card <= FLAT_MAX {
        let len = 4 + 4 * card as usize;
        let docs = bytes.get(4..len).ok_or("flat posting list runs past the section")?;
        let v = |i: usize| LE::read_u32(&docs[i * 4..i * 4 + 4]);
        if (1..card as usize).any(|i| v(i) <= v(i - 1)) {
            return Err("flat posting list not strictly increasing".into());
        }
        if v(card as usize - 1) >= max_doc {
            return Err("posting refers to a doc past the end".into());
        }
        return Ok(len);
    }
    if bytes.len() < 8 {
        return Err("posting list header runs past the section".into());
    }
    let n = LE::read_u32(&bytes[4..8]) as usize;
    let dir_end = 8usize.checked_add(n.checked_mul(ENTRY).ok_or("container count overflows")?).ok_or("overflow")?;
    if dir_end > bytes.len() {
        return Err("posting directory runs past the section".into());
    }
    let mut expect_at = dir_end;
    let mut total: u64 = 0;
    let mut prev_block: i64 = -1;
    for i in 0..n {
        let e = &bytes[8 + i * ENTRY..8 + (i + 1) * ENTRY];
        let block = LE::read_u16(&e[0..2]);
        let words = LE::read_u16(&e[2..4]) as usize;
        let c = LE::read_u32(&e[4..8]);
        let at = LE::read_u32(&e[8..12]) as usize;
        if i64::from(block) <= prev_block {
            return Err("posting containers out of order".into());
        }
        prev_block = i64::from(block);
        if at != expect_at || c == 0 || c > 65536 || words > BLOCK_WORDS {
            return Err("posting container offset or size is wrong".into());
        }
        let len = if words == 0 { c as usize * 2 } else { words * 8 };
        let data = bytes.get(at..at + len).ok_or("posting container runs past the section")?;
        let base = u64::from(block) << 16;
        let last = if words == 0 {
            let v = |p: &[u8]| u16::from_le_bytes([p[0], p[1]]);
            // Branch-free over the container, so that the loop vectorizes.
            let increasing =
                data.chunks_exact(2).zip(data[2..].chunks_exact(2)).fold(true, |ok, (a, b)| ok & (v(a) < v(b)));
            if !increasing {
                return Err("posting array not strictly increasing".into());
            }
            u32::from(v(&data[len - 2..]))
        } else {
            let word = |k: usize| u64::from_le_bytes(data[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            let ones: u32 = (0..words).map(|k| word(k).count_ones()).sum();
            if ones != c || word(words - 1) == 0 {
                return Err("posting bitmap cardinality or length is wrong".into());
            }
            (words as u32 - 1) * 64 + 63 - word(words - 1).leading_zeros()
        };
        if is_bitmap(c as usize, last) != (words > 0) {
            return Err("posting container kind does not match its size".into());
        }
        if base + u64::from(last) >= u64::from(max_doc) {
            return Err("posting refers to a doc past the end".into());
        }
        total += u64::from(c);
        expect_at = at + len;
    }
    if total != u64::from(card) {
        return Err("posting cardinality does not match its containers".into());
    }
    Ok(expect_at)
}

/// A posting list read in place. The bytes passed [`validate`].
#[derive(Clone, Copy, Debug)]
pub struct Posting<'a> {
    bytes: &'a [u8],
    /// Containers (0 for a flat list).
    n: usize,
    card: u32,
    /// Its file's cache of decoded array containers, and its key there.
    cache: Option<(&'a BlockCache, u64)>,
}

impl<'a> Posting<'a> {
    pub fn new(bytes: &'a [u8]) -> Posting<'a> {
        let card = LE::read_u32(&bytes[0..4]);
        let n = if card <= FLAT_MAX { 0 } else { LE::read_u32(&bytes[4..8]) as usize };
        Posting { bytes, card, n, cache: None }
    }

    /// The same list, its large array containers decoded through `cache` (its
    /// file's) under `key` (the list's offset in the file).
    pub fn with_cache(self, cache: &'a BlockCache, key: u64) -> Posting<'a> {
        Posting { cache: Some((cache, key)), ..self }
    }

    pub fn len(&self) -> u32 {
        self.card
    }

    pub fn is_empty(&self) -> bool {
        self.card == 0
    }

    fn is_flat(&self) -> bool {
        self.card <= FLAT_MAX
    }

    /// Doc `i` of a flat list.
    fn flat(&self, i: usize) -> u32 {
        LE::read_u32(&self.bytes[4 + i * 4..8 + i * 4])
    }

    /// The offsets of a flat list's docs in `words` of block `b`.
    #[inline(always)]
    fn flat_in(&self, b: u32, words: Words) -> impl Iterator<Item = u32> + '_ {
        let (lo, hi) = ((b << 16) as u64 + words.start as u64 * 64, (b << 16) as u64 + words.end as u64 * 64);
        (0..self.card as usize)
            .map(|i| self.flat(i))
            .filter(move |d| (lo..hi).contains(&u64::from(*d)))
            .map(|d| d & 0xFFFF)
    }

    fn entry(&self, i: usize) -> (u32, usize, u32, usize) {
        let e = &self.bytes[8 + i * ENTRY..8 + (i + 1) * ENTRY];
        (
            u32::from(LE::read_u16(&e[0..2])),
            usize::from(LE::read_u16(&e[2..4])),
            LE::read_u32(&e[4..8]),
            LE::read_u32(&e[8..12]) as usize,
        )
    }

    /// Index of the first container at or after `from` whose block is `>= b`.
    fn container_from(&self, from: usize, b: u32) -> usize {
        let (mut lo, mut hi) = (from, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 < b {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn array(&self, at: usize, i: usize) -> u32 {
        u32::from(LE::read_u16(&self.bytes[at + i * 2..at + i * 2 + 2]))
    }

    fn word(&self, at: usize, i: usize) -> u64 {
        LE::read_u64(&self.bytes[at + i * 8..at + i * 8 + 8])
    }

    /// The container of block `b`, if the list has one: bitmap words (0: an
    /// array), cardinality, offset.
    fn container(&self, b: u32) -> Option<(usize, u32, usize)> {
        let ci = self.container_from(0, b);
        (ci < self.n).then(|| self.entry(ci)).filter(|e| e.0 == b).map(|(_, words, card, at)| (words, card, at))
    }

    /// Index of the first value `>= v` of an array container.
    fn array_rank(&self, at: usize, card: u32, v: u32) -> usize {
        let (mut lo, mut hi) = (0, card as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.array(at, mid) < v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The values of an array container within `words` (found by binary search).
    #[inline(always)]
    fn values(&self, at: usize, card: u32, words: Words) -> impl Iterator<Item = u32> + 'a {
        let bytes: &'a [u8] = self.bytes;
        let (i, j) = if words.start == 0 && words.end == BLOCK_WORDS {
            (0, card as usize)
        } else {
            let i = self.array_rank(at, card, words.start as u32 * 64);
            (i, i.max(self.array_rank(at, card, words.end as u32 * 64)))
        };
        bytes[at + i * 2..at + j * 2].chunks_exact(2).map(|v| u32::from(u16::from_le_bytes([v[0], v[1]])))
    }

    /// `out[i] = f(out[i], word i)` for `i` in `range` over a bitmap container of
    /// `words` words (the words after them are zero): one bounds check, no
    /// branch, so the loops vectorize.
    #[inline(always)]
    fn combine_bitmap(&self, at: usize, words: usize, range: Words, out: &mut Block, f: impl Fn(u64, u64) -> u64) {
        let lo = range.start.min(words);
        let hi = range.end.min(words).max(lo);
        let data = &self.bytes[at + lo * 8..at + hi * 8];
        let (head, tail) = out[range].split_at_mut(hi - lo);
        for (o, w) in head.iter_mut().zip(data.chunks_exact(8)) {
            *o = f(*o, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        for o in tail {
            *o = f(*o, 0);
        }
    }

    /// Every doc, in order.
    pub fn docs(&self) -> Vec<DocId> {
        let mut c = self.cursor();
        let mut out = Vec::with_capacity(self.card as usize);
        while c.doc() != TERMINATED {
            out.push(c.doc());
            c.advance();
        }
        out
    }

    pub fn contains(&self, doc: DocId) -> bool {
        // TERMINATED is what an exhausted cursor answers, never a member.
        doc != TERMINATED && self.cursor().seek(doc) == doc
    }

    pub fn cursor(&self) -> PostingCursor<'a> {
        let mut c = PostingCursor { p: *self, ci: 0, pos: 0, doc: TERMINATED };
        c.settle_from(0, 0);
        c
    }
}

/// A cursor over a [`Posting`].
pub struct PostingCursor<'a> {
    p: Posting<'a>,
    /// Current container.
    ci: usize,
    /// Index in a flat list or an array container, or bit offset (0..65536) in a bitmap.
    pos: u32,
    doc: DocId,
}

impl PostingCursor<'_> {
    /// Position on the first doc at or after `pos` in container `ci` (of a flat
    /// list: at index `pos`), moving on to later containers as needed.
    fn settle_from(&mut self, mut ci: usize, mut pos: u32) {
        if self.p.is_flat() {
            self.pos = pos;
            self.doc = if pos < self.p.card { self.p.flat(pos as usize) } else { TERMINATED };
            return;
        }
        while ci < self.p.n {
            let (block, words, card, at) = self.p.entry(ci);
            if words == 0 {
                if pos < card {
                    self.ci = ci;
                    self.pos = pos;
                    self.doc = (block << 16) | self.p.array(at, pos as usize);
                    return;
                }
            } else {
                let mut w = (pos / 64) as usize;
                if w < words {
                    let mut bits = self.p.word(at, w) & (!0u64 << (pos % 64));
                    loop {
                        if bits != 0 {
                            let bit = w as u32 * 64 + bits.trailing_zeros();
                            self.ci = ci;
                            self.pos = bit;
                            self.doc = (block << 16) | bit;
                            return;
                        }
                        w += 1;
                        if w == words {
                            break;
                        }
                        bits = self.p.word(at, w);
                    }
                }
            }
            ci += 1;
            pos = 0;
        }
        self.ci = self.p.n;
        self.doc = TERMINATED;
    }
}

impl DocSet for PostingCursor<'_> {
    fn doc(&self) -> DocId {
        self.doc
    }

    fn advance(&mut self) -> DocId {
        if self.doc != TERMINATED {
            self.settle_from(self.ci, self.pos + 1);
        }
        self.doc
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        if self.p.is_flat() {
            let mut pos = self.pos;
            while pos < self.p.card && self.p.flat(pos as usize) < target {
                pos += 1;
            }
            self.settle_from(0, pos);
            return self.doc;
        }
        let tb = target >> 16;
        let (block, ..) = self.p.entry(self.ci);
        let ci = if block >= tb { self.ci } else { self.p.container_from(self.ci, tb) };
        if ci >= self.p.n {
            self.ci = self.p.n;
            self.doc = TERMINATED;
            return TERMINATED;
        }
        let (block, words, card, at) = self.p.entry(ci);
        if block > tb {
            self.settle_from(ci, 0);
        } else if words == 0 {
            let low = target & 0xFFFF;
            let start = if ci == self.ci { self.pos as usize } else { 0 };
            let (mut lo, mut hi) = (start, card as usize);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.p.array(at, mid) < low {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            self.settle_from(ci, lo as u32);
        } else {
            self.settle_from(ci, target & 0xFFFF);
        }
        self.doc
    }

    fn cost(&self) -> u64 {
        u64::from(self.p.card)
    }

    fn next_block(&self, b: u32) -> Option<u32> {
        if self.p.is_flat() {
            return (0..self.p.card as usize).map(|i| self.p.flat(i) >> 16).find(|x| *x >= b);
        }
        let ci = self.p.container_from(0, b);
        (ci < self.p.n).then(|| self.p.entry(ci).0)
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.fill::<false>(b, words, out)
    }
    fn and_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.and::<false>(b, words, out, scratch)
    }
    fn or_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.or::<false>(b, words, out, scratch)
    }
    fn andnot_words(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        self.andnot::<false>(b, words, out, scratch)
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        self.fill::<true>(b, ALL_WORDS, out)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.and::<true>(b, ALL_WORDS, out, scratch)
    }
    fn or_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.or::<true>(b, ALL_WORDS, out, scratch)
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        self.andnot::<true>(b, ALL_WORDS, out, scratch)
    }
}

/// Block operations over `span::<WHOLE>(words)` (see [`span`]).
impl PostingCursor<'_> {
    /// The bits of array container `(card, at)` of block `b` from the file's
    /// cache; decoded whole and kept when the operation covers a quarter of the
    /// container's words or more (a short window decodes only its own values).
    #[inline]
    fn cached_array(&self, b: u32, card: u32, at: usize, words: &Words) -> Option<Arc<Block>> {
        let (cache, key) = self.p.cache.filter(|_| card >= ADMIT_VALUES)?;
        if let Some(bits) = cache.get(key, b) {
            return Some(bits);
        }
        let used = self.p.array(at, card as usize - 1) as usize / 64 + 1;
        if words.len() * 4 < used {
            return None;
        }
        let mut bits: Block = [0; BLOCK_WORDS];
        set_bits(&mut bits, self.p.values(at, card, ALL_WORDS));
        let bits = Arc::new(bits);
        cache.put(key, b, bits.clone());
        Some(bits)
    }

    #[inline(always)]
    fn fill<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block) {
        let words = span::<WHOLE>(words);
        if self.p.is_flat() {
            out[words.clone()].fill(0);
            return set_bits(out, self.p.flat_in(b, words));
        }
        match self.p.container(b) {
            Some((0, card, at)) => match self.cached_array(b, card, at, &words) {
                Some(bits) => out[words.clone()].copy_from_slice(&bits[words]),
                None => {
                    out[words.clone()].fill(0);
                    set_bits(out, self.p.values(at, card, words));
                }
            },
            Some((n, _, at)) => self.p.combine_bitmap(at, n, words, out, |_, w| w),
            None => out[words].fill(0),
        }
    }

    #[inline(always)]
    fn and<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block, scratch: &mut Block) {
        let words = span::<WHOLE>(words);
        if self.p.is_flat() {
            return and_values(out, scratch, words.clone(), self.p.flat_in(b, words));
        }
        match self.p.container(b) {
            Some((0, card, at)) => match self.cached_array(b, card, at, &words) {
                Some(bits) => combine_words(&bits, words, out, |o, w| o & w),
                None => and_values(out, scratch, words.clone(), self.p.values(at, card, words)),
            },
            Some((n, _, at)) => self.p.combine_bitmap(at, n, words, out, |o, w| o & w),
            None => out[words].fill(0),
        }
    }
    #[inline(always)]
    fn or<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block, _scratch: &mut Block) {
        let words = span::<WHOLE>(words);
        if self.p.is_flat() {
            return set_bits(out, self.p.flat_in(b, words));
        }
        match self.p.container(b) {
            Some((0, card, at)) => match self.cached_array(b, card, at, &words) {
                Some(bits) => combine_words(&bits, words, out, |o, w| o | w),
                None => set_bits(out, self.p.values(at, card, words)),
            },
            Some((n, _, at)) => self.p.combine_bitmap(at, n, words, out, |o, w| o | w),
            None => {}
        }
    }
    #[inline(always)]
    fn andnot<const WHOLE: bool>(&mut self, b: u32, words: Words, out: &mut Block, _scratch: &mut Block) {
        let words = span::<WHOLE>(words);
        let clear = |out: &mut Block, vals: &mut dyn Iterator<Item = u32>| {
            for v in vals {
                out[(v / 64) as usize] &= !(1 << (v % 64));
            }
        };
        if self.p.is_flat() {
            return clear(out, &mut self.p.flat_in(b, words));
        }
        match self.p.container(b) {
            Some((0, card, at)) => match self.cached_array(b, card, at, &words) {
                Some(bits) => combine_words(&bits, words, out, |o, w| o & !w),
                None => clear(out, &mut self.p.values(at, card, words)),
            },
            Some((n, _, at)) => self.p.combine_bitmap(at, n, words, out, |o, w| o & !w),
            None => {}
        }
    }
}

/// `out[i] = f(out[i], bits[i])` for `i` in `words`.
#[inline(always)]
fn combine_words(bits: &Block, words: Words, out: &mut Block, f: impl Fn(u64, u64) -> u64) {
    for (o, w) in out[words.clone()].iter_mut().zip(&bits[words]) {
        *o = f(*o, *w);
    }
}

/// `out[words] &=` the bits of `values` (offsets within those words).
#[inline(always)]
fn and_values(out: &mut Block, scratch: &mut Block, words: Words, values: impl Iterator<Item = u32>) {
    scratch[words.clone()].fill(0);
    set_bits(scratch, values);
    for (o, s) in out[words.clone()].iter_mut().zip(scratch[words].iter()) {
        *o &= s;
    }
}

/// Set the bits of `values` (offsets within a block).
fn set_bits(out: &mut Block, values: impl Iterator<Item = u32>) {
    for v in values {
        out[(v / 64) as usize] |= 1 << (v % 64);
    }
}

#[cfg(test)]
#[path = "posting_tests.rs"]
mod tests;
