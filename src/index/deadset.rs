//! The docs of an index segment that newer versions have superseded. A persistent
//! bitmap: 4,096-doc chunks shared between snapshots and copied only when written,
//! so a write that supersedes one doc copies 512 bytes, not the whole set.

use std::sync::Arc;

use crate::query::docset::{Block, DocId, DocSet, Words, BLOCK_WORDS, TERMINATED};

const CHUNK_WORDS: usize = 64;
const CHUNK_DOCS: u32 = (CHUNK_WORDS * 64) as u32;
const CHUNKS_PER_BLOCK: usize = BLOCK_WORDS / CHUNK_WORDS;

type Chunk = [u64; CHUNK_WORDS];

/// A set of doc ids, cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct DeadSet {
    chunks: Arc<Vec<Option<Arc<Chunk>>>>,
    len: u64,
}

impl DeadSet {
    pub fn new() -> DeadSet {
        DeadSet::default()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, doc: DocId) -> bool {
        let c = (doc / CHUNK_DOCS) as usize;
        let bit = doc % CHUNK_DOCS;
        match self.chunks.get(c) {
            Some(Some(chunk)) => chunk[(bit / 64) as usize] & (1 << (bit % 64)) != 0,
            _ => false,
        }
    }

    /// Add `doc`; false if it was there.
    pub fn insert(&mut self, doc: DocId) -> bool {
        if self.contains(doc) {
            return false;
        }
        let c = (doc / CHUNK_DOCS) as usize;
        let bit = doc % CHUNK_DOCS;
        let chunks = Arc::make_mut(&mut self.chunks);
        if chunks.len() <= c {
            chunks.resize(c + 1, None);
        }
        let chunk = Arc::make_mut(chunks[c].get_or_insert_with(|| Arc::new([0; CHUNK_WORDS])));
        chunk[(bit / 64) as usize] |= 1 << (bit % 64);
        self.len += 1;
        true
    }

    /// Every doc, ascending.
    pub fn docs(&self) -> Vec<DocId> {
        let mut out = Vec::with_capacity(self.len as usize);
        for (c, chunk) in self.chunks.iter().enumerate() {
            if let Some(chunk) = chunk {
                push_bits(chunk, c as u32 * CHUNK_DOCS, &mut out);
            }
        }
        out
    }

    /// Docs in `self` but not in `earlier` (an older state of the same set),
    /// skipping chunks the two still share.
    pub fn added_since(&self, earlier: &DeadSet) -> Vec<DocId> {
        let mut out = Vec::new();
        for (c, chunk) in self.chunks.iter().enumerate() {
            let Some(chunk) = chunk else { continue };
            let old = earlier.chunks.get(c).and_then(|o| o.as_ref());
            match old {
                Some(o) if Arc::ptr_eq(o, chunk) => {}
                Some(o) => {
                    let mut diff = [0u64; CHUNK_WORDS];
                    for i in 0..CHUNK_WORDS {
                        diff[i] = chunk[i] & !o[i];
                    }
                    push_bits(&diff, c as u32 * CHUNK_DOCS, &mut out);
                }
                None => push_bits(chunk, c as u32 * CHUNK_DOCS, &mut out),
            }
        }
        out
    }

    /// A cursor over the set.
    pub fn cursor(&self) -> DeadCursor<'_> {
        let mut c = DeadCursor { set: self, doc: 0 };
        c.doc = c.find_from(0);
        c
    }
}

fn push_bits(words: &Chunk, base: u32, out: &mut Vec<DocId>) {
    for (i, w) in words.iter().enumerate() {
        let mut w = *w;
        while w != 0 {
            out.push(base + i as u32 * 64 + w.trailing_zeros());
            w &= w - 1;
        }
    }
}

/// A [`DocSet`] over a [`DeadSet`].
pub struct DeadCursor<'a> {
    set: &'a DeadSet,
    doc: DocId,
}

impl DeadCursor<'_> {
    fn find_from(&self, from: u64) -> DocId {
        let mut c = (from / u64::from(CHUNK_DOCS)) as usize;
        let mut bit = (from % u64::from(CHUNK_DOCS)) as u32;
        while c < self.set.chunks.len() {
            if let Some(chunk) = &self.set.chunks[c] {
                let mut w = (bit / 64) as usize;
                let mut bits = chunk[w] & (!0u64 << (bit % 64));
                loop {
                    if bits != 0 {
                        return c as u32 * CHUNK_DOCS + w as u32 * 64 + bits.trailing_zeros();
                    }
                    w += 1;
                    if w == CHUNK_WORDS {
                        break;
                    }
                    bits = chunk[w];
                }
            }
            c += 1;
            bit = 0;
        }
        TERMINATED
    }
}

impl DeadCursor<'_> {
    /// `f(out word, set word)` over `out[words]` of block `b` (a missing chunk: zeros).
    fn chunk_words(&self, b: u32, words: Words, out: &mut Block, f: impl Fn(&mut u64, u64)) {
        let first = b as usize * CHUNKS_PER_BLOCK;
        let mut w = words.start;
        while w < words.end {
            let c = w / CHUNK_WORDS;
            let end = words.end.min((c + 1) * CHUNK_WORDS);
            let part = &mut out[w..end];
            match self.set.chunks.get(first + c) {
                Some(Some(chunk)) => {
                    for (o, d) in part.iter_mut().zip(chunk[w % CHUNK_WORDS..].iter()) {
                        f(o, *d);
                    }
                }
                _ => part.iter_mut().for_each(|o| f(o, 0)),
            }
            w = end;
        }
    }
}

impl DocSet for DeadCursor<'_> {
    fn doc(&self) -> DocId {
        self.doc
    }
    fn advance(&mut self) -> DocId {
        if self.doc != TERMINATED {
            self.doc = self.find_from(u64::from(self.doc) + 1);
        }
        self.doc
    }
    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc < target {
            self.doc = self.find_from(u64::from(target));
        }
        self.doc
    }
    fn cost(&self) -> u64 {
        self.set.len
    }
    fn fill_words(&mut self, b: u32, words: Words, out: &mut Block) {
        self.chunk_words(b, words, out, |o, d| *o = d);
    }
    fn andnot_words(&mut self, b: u32, words: Words, out: &mut Block, _scratch: &mut Block) {
        self.chunk_words(b, words, out, |o, d| *o &= !d);
    }
    fn fill_block(&mut self, b: u32, out: &mut Block) {
        let first = b as usize * CHUNKS_PER_BLOCK;
        for (i, part) in out.chunks_mut(CHUNK_WORDS).enumerate() {
            match self.set.chunks.get(first + i) {
                Some(Some(chunk)) => part.copy_from_slice(&chunk[..]),
                _ => part.fill(0),
            }
        }
    }
    fn andnot_block(&mut self, b: u32, out: &mut Block, _scratch: &mut Block) {
        let first = b as usize * CHUNKS_PER_BLOCK;
        for (i, part) in out.chunks_mut(CHUNK_WORDS).enumerate() {
            if let Some(Some(chunk)) = self.set.chunks.get(first + i) {
                for (o, d) in part.iter_mut().zip(chunk.iter()) {
                    *o &= !d;
                }
            }
        }
    }
    fn next_block(&self, b: u32) -> Option<u32> {
        let first = b as usize * CHUNKS_PER_BLOCK;
        (first..self.set.chunks.len()).find(|c| self.set.chunks[*c].is_some()).map(|c| (c / CHUNKS_PER_BLOCK) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_share_and_diff() {
        let mut a = DeadSet::new();
        for d in [3, 4096, 70_000, 70_001] {
            assert!(a.insert(d));
        }
        assert!(!a.insert(3));
        let before = a.clone();
        a.insert(5);
        a.insert(200_000);
        assert_eq!(before.docs(), vec![3, 4096, 70_000, 70_001]);
        assert_eq!(a.added_since(&before), vec![5, 200_000]);
        let mut c = a.cursor();
        assert_eq!(c.doc(), 3);
        assert_eq!(c.seek(4097), 70_000);
        assert_eq!(c.advance(), 70_001);
        assert_eq!(c.advance(), 200_000);
        assert_eq!(c.advance(), TERMINATED);
        assert_eq!(crate::query::docset::count_in(&mut a.cursor(), 0, u32::MAX), 6);
    }
}
