//! Posting lists: sorted doc ids in 65,536-doc containers, as arrays of 16-bit
//! offsets when sparse and as 8 KiB bitmaps when dense (roaring's layout, made to
//! be read in place from a memory map).
//!
//! ```text
//! u32 cardinality, u32 n_containers
//! n × (u16 block, u16 kind [0 array, 1 bitmap], u32 cardinality, u32 data offset)
//! data: array = cardinality × u16, ascending; bitmap = 1024 × u64
//! ```

use byteorder::{ByteOrder, LittleEndian as LE, WriteBytesExt};

use crate::query::docset::{Block, DocId, DocSet, BLOCK_WORDS, TERMINATED};

const ARRAY: u16 = 0;
const BITMAP: u16 = 1;
/// Above this many docs a container is a bitmap (smaller than the array).
pub const ARRAY_MAX: u32 = 4096;
const ENTRY: usize = 12;

/// Append the posting list of `docs` (strictly increasing) to `out`.
pub fn encode(docs: &[DocId], out: &mut Vec<u8>) {
    let start = out.len();
    let mut groups: Vec<(u16, &[DocId])> = Vec::new();
    let mut i = 0;
    while i < docs.len() {
        let hi = docs[i] >> 16;
        let j = i + docs[i..].partition_point(|d| d >> 16 == hi);
        groups.push((hi as u16, &docs[i..j]));
        i = j;
    }
    out.write_u32::<LE>(docs.len() as u32).unwrap();
    out.write_u32::<LE>(groups.len() as u32).unwrap();
    let mut data_at = 8 + groups.len() * ENTRY;
    for (hi, g) in &groups {
        let kind = if g.len() as u32 > ARRAY_MAX { BITMAP } else { ARRAY };
        out.write_u16::<LE>(*hi).unwrap();
        out.write_u16::<LE>(kind).unwrap();
        out.write_u32::<LE>(g.len() as u32).unwrap();
        out.write_u32::<LE>(data_at as u32).unwrap();
        data_at += if kind == BITMAP { BLOCK_WORDS * 8 } else { g.len() * 2 };
    }
    for (_, g) in &groups {
        if g.len() as u32 > ARRAY_MAX {
            let mut words = [0u64; BLOCK_WORDS];
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
    if bytes.len() < 8 {
        return Err("posting list header runs past the section".into());
    }
    let card = LE::read_u32(&bytes[0..4]);
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
        let kind = LE::read_u16(&e[2..4]);
        let c = LE::read_u32(&e[4..8]);
        let at = LE::read_u32(&e[8..12]) as usize;
        if i64::from(block) <= prev_block {
            return Err("posting containers out of order".into());
        }
        prev_block = i64::from(block);
        if at != expect_at || c == 0 || c > 65536 {
            return Err("posting container offset or size is wrong".into());
        }
        let len = match kind {
            ARRAY if c <= ARRAY_MAX => c as usize * 2,
            BITMAP if c > ARRAY_MAX => BLOCK_WORDS * 8,
            _ => return Err("unknown posting container kind".into()),
        };
        let data = bytes.get(at..at + len).ok_or("posting container runs past the section")?;
        let base = u64::from(block) << 16;
        if kind == ARRAY {
            let v = |p: &[u8]| u16::from_le_bytes([p[0], p[1]]);
            // Branch-free over the container, so that the loop vectorizes.
            let increasing =
                data.chunks_exact(2).zip(data[2..].chunks_exact(2)).fold(true, |ok, (a, b)| ok & (v(a) < v(b)));
            if !increasing {
                return Err("posting array not strictly increasing".into());
            }
            if base + u64::from(v(&data[len - 2..])) >= u64::from(max_doc) {
                return Err("posting refers to a doc past the end".into());
            }
        } else {
            let word = |k: usize| u64::from_le_bytes(data[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
            let ones: u32 = (0..BLOCK_WORDS).map(|k| word(k).count_ones()).sum();
            let last = (0..BLOCK_WORDS)
                .rev()
                .find(|&k| word(k) != 0)
                .map_or(0, |k| k as u64 * 64 + 63 - u64::from(word(k).leading_zeros()));
            if ones != c || base + last >= u64::from(max_doc) {
                return Err("posting bitmap cardinality or range is wrong".into());
            }
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
    n: usize,
    card: u32,
}

impl<'a> Posting<'a> {
    pub fn new(bytes: &'a [u8]) -> Posting<'a> {
        Posting { bytes, card: LE::read_u32(&bytes[0..4]), n: LE::read_u32(&bytes[4..8]) as usize }
    }

    pub fn len(&self) -> u32 {
        self.card
    }

    pub fn is_empty(&self) -> bool {
        self.card == 0
    }

    fn entry(&self, i: usize) -> (u32, u16, u32, usize) {
        let e = &self.bytes[8 + i * ENTRY..8 + (i + 1) * ENTRY];
        (
            u32::from(LE::read_u16(&e[0..2])),
            LE::read_u16(&e[2..4]),
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

    /// The container of block `b`, if the list has one: kind, cardinality, offset.
    fn container(&self, b: u32) -> Option<(u16, u32, usize)> {
        let ci = self.container_from(0, b);
        (ci < self.n).then(|| self.entry(ci)).filter(|e| e.0 == b).map(|(_, kind, card, at)| (kind, card, at))
    }

    /// The values of an array container.
    fn values(&self, at: usize, card: u32) -> impl Iterator<Item = u32> + 'a {
        let bytes: &'a [u8] = self.bytes;
        bytes[at..at + card as usize * 2].chunks_exact(2).map(|v| u32::from(u16::from_le_bytes([v[0], v[1]])))
    }

    /// `out[i] = f(out[i], word i)` over a bitmap container: one bounds check, no
    /// branch, so the loop vectorizes.
    fn combine_bitmap(&self, at: usize, out: &mut Block, f: impl Fn(u64, u64) -> u64) {
        let words = &self.bytes[at..at + BLOCK_WORDS * 8];
        for (o, w) in out.iter_mut().zip(words.chunks_exact(8)) {
            *o = f(*o, u64::from_le_bytes(w.try_into().expect("8 bytes")));
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
    /// Index in an array container, or bit offset (0..65536) in a bitmap.
    pos: u32,
    doc: DocId,
}

impl PostingCursor<'_> {
    /// Position on the first doc at or after `pos` in container `ci`, moving on
    /// to later containers as needed.
    fn settle_from(&mut self, mut ci: usize, mut pos: u32) {
        while ci < self.p.n {
            let (block, kind, card, at) = self.p.entry(ci);
            if kind == ARRAY {
                if pos < card {
                    self.ci = ci;
                    self.pos = pos;
                    self.doc = (block << 16) | self.p.array(at, pos as usize);
                    return;
                }
            } else {
                let mut w = (pos / 64) as usize;
                if w < BLOCK_WORDS {
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
                        if w == BLOCK_WORDS {
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
        let tb = target >> 16;
        let (block, ..) = self.p.entry(self.ci);
        let ci = if block >= tb { self.ci } else { self.p.container_from(self.ci, tb) };
        if ci >= self.p.n {
            self.ci = self.p.n;
            self.doc = TERMINATED;
            return TERMINATED;
        }
        let (block, kind, card, at) = self.p.entry(ci);
        if block > tb {
            self.settle_from(ci, 0);
        } else if kind == ARRAY {
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

    fn fill_block(&mut self, b: u32, out: &mut Block) {
        match self.p.container(b) {
            Some((BITMAP, _, at)) => self.p.combine_bitmap(at, out, |_, w| w),
            Some((_, card, at)) => {
                out.fill(0);
                set_bits(out, self.p.values(at, card));
            }
            None => out.fill(0),
        }
    }

    fn next_block(&self, b: u32) -> Option<u32> {
        let ci = self.p.container_from(0, b);
        (ci < self.p.n).then(|| self.p.entry(ci).0)
    }
    fn and_block(&mut self, b: u32, out: &mut Block, scratch: &mut Block) {
        match self.p.container(b) {
            Some((BITMAP, _, at)) => self.p.combine_bitmap(at, out, |o, w| o & w),
            Some((_, card, at)) => {
                scratch.fill(0);
                set_bits(scratch, self.p.values(at, card));
                for (o, s) in out.iter_mut().zip(scratch.iter()) {
                    *o &= s;
                }
            }
            None => out.fill(0),
        }
    }
    fn or_block(&mut self, b: u32, out: &mut Block, _scratch: &mut Block) {
        match self.p.container(b) {
            Some((BITMAP, _, at)) => self.p.combine_bitmap(at, out, |o, w| o | w),
            Some((_, card, at)) => set_bits(out, self.p.values(at, card)),
            None => {}
        }
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, _scratch: &mut Block) {
        match self.p.container(b) {
            Some((BITMAP, _, at)) => self.p.combine_bitmap(at, out, |o, w| o & !w),
            Some((_, card, at)) => {
                for v in self.p.values(at, card) {
                    out[(v / 64) as usize] &= !(1 << (v % 64));
                }
            }
            None => {}
        }
    }
}

/// Set the bits of `values` (offsets within a block).
fn set_bits(out: &mut Block, values: impl Iterator<Item = u32>) {
    for v in values {
        out[(v / 64) as usize] |= 1 << (v % 64);
    }
}

#[cfg(test)]
mod tests {
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
}
