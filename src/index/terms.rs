//! A section's term dictionary hashed in memory (issue 11): built at open from
//! the sorted dictionary (format-spec/index.md "Term dictionary"), it finds a
//! term with one hash and, almost always, one entry read, and an absent term
//! with no entry read at all. The file format is unchanged.

use std::hash::BuildHasher;

/// Open addressing with linear probing over term numbers, at most half full.
/// A slot holds the term's number plus one in its low 32 bits (0: empty) and
/// the high 32 bits of the term's hash above, so that a probe reads an entry
/// only when those bits agree.
#[derive(Clone, Debug, Default)]
pub struct TermTable {
    slots: Box<[u64]>,
    seed: foldhash::fast::RandomState,
}

impl TermTable {
    /// The table of `n` terms; `term(t)` is term `t`'s field and bytes. Terms are
    /// distinct (the dictionary is strictly ascending, checked at open).
    pub fn build<'a>(n: u32, term: impl Fn(u32) -> (u8, &'a [u8])) -> TermTable {
        let seed = foldhash::fast::RandomState::default();
        if n == 0 {
            return TermTable { slots: Box::new([]), seed };
        }
        let size = (n as usize * 2).next_power_of_two();
        let mut slots = vec![0u64; size].into_boxed_slice();
        let mask = size - 1;
        for t in 0..n {
            let (f, bytes) = term(t);
            let h = hash(&seed, f, bytes);
            let mut i = h as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = (h & !0xFFFF_FFFF) | (u64::from(t) + 1);
        }
        TermTable { slots, seed }
    }

    /// True when the table was built (a section read while opening has none).
    pub fn is_built(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The number of the term `(f, bytes)`, or `None`; `term(t)` as for
    /// [`TermTable::build`]. Only for a built table.
    #[inline]
    pub fn find<'a>(&self, f: u8, bytes: &[u8], term: impl Fn(u32) -> (u8, &'a [u8])) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let h = hash(&self.seed, f, bytes);
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if (s ^ h) >> 32 == 0 {
                let t = (s as u32).wrapping_sub(1);
                if term(t) == (f, bytes) {
                    return Some(t);
                }
            }
            i = (i + 1) & mask;
        }
    }
}

#[inline]
fn hash(seed: &foldhash::fast::RandomState, f: u8, bytes: &[u8]) -> u64 {
    seed.hash_one((f, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_term_and_no_other() {
        let terms: Vec<(u8, Vec<u8>)> = (0..1000u32)
            .map(|i| ((1 + i % 7) as u8, format!("t{}", i / 7).into_bytes()))
            .chain([(3, Vec::new()), (4, vec![0; 3])])
            .collect();
        let get = |t: u32| (terms[t as usize].0, &terms[t as usize].1[..]);
        let table = TermTable::build(terms.len() as u32, get);
        assert!(table.is_built());
        for (t, (f, b)) in terms.iter().enumerate() {
            assert_eq!(table.find(*f, b, get), Some(t as u32), "term {t}");
        }
        for (f, b) in [(1u8, &b"t1000"[..]), (8, b"t1"), (3, b"\0"), (2, b"")] {
            assert_eq!(table.find(f, b, get), None, "{f} {b:?}");
        }
        assert!(!TermTable::build(0, get).is_built());
    }
}
