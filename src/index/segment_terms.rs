//! Term lookups in a section: through the section's hashed term table (index/terms.rs),
//! or, while the file is being opened, by binary search of the sorted dictionary
//! (format-spec/index.md "Term dictionary").

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{field, Section, DICT, TERM_ENTRY};
use crate::index::posting::Posting;
use crate::model::JobState;

impl<'a> Section<'a> {
    /// Term `t`'s field and bytes (its posting list not read).
    pub(super) fn term_key(&self, t: u32) -> (u8, &'a [u8]) {
        let e = &self.b[self.info.cols[DICT] + t as usize * TERM_ENTRY..][..TERM_ENTRY];
        let blob = self.info.cols[DICT] + self.info.n_terms as usize * TERM_ENTRY;
        let (len, off) = (usize::from(LE::read_u16(&e[2..4])), LE::read_u32(&e[4..8]) as usize);
        (e[0], &self.b[blob + off..blob + off + len])
    }

    fn posting(&self, t: u32) -> Posting<'a> {
        let e = &self.b[self.info.cols[DICT] + t as usize * TERM_ENTRY..][..TERM_ENTRY];
        let at = LE::read_u32(&e[8..12]) as usize;
        let p = Posting::new(&self.b[at..]);
        match self.cache {
            Some((cache, section_at)) => p.with_cache(cache, section_at + at as u64),
            None => p,
        }
    }

    fn term_entry(&self, t: u32) -> (u8, &'a [u8], Posting<'a>) {
        let (f, term) = self.term_key(t);
        (f, term, self.posting(t))
    }

    /// The posting list of a term: hashed, or (while opening) by binary search
    /// of the sorted dictionary.
    pub fn term(&self, f: u8, term: &[u8]) -> Option<Posting<'a>> {
        if let Some(table) = self.terms.filter(|t| t.is_built()) {
            return table.find(f, term, |t| self.term_key(t)).map(|t| self.posting(t));
        }
        let (mut lo, mut hi) = (0, self.info.n_terms);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.term_key(mid).cmp(&(f, term)) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.posting(mid)),
            }
        }
        None
    }

    /// Every term of a field with its posting list, in term byte order.
    pub fn terms(&self, f: u8) -> impl Iterator<Item = (&'a [u8], Posting<'a>)> + '_ {
        (0..self.info.n_terms).map(|t| self.term_entry(t)).filter(move |(tf, ..)| *tf == f).map(|(_, t, p)| (t, p))
    }

    pub fn state(&self, s: JobState) -> Option<Posting<'a>> {
        self.term(field::STATE, &[s.code()])
    }

    pub fn spider(&self, id: u32) -> Option<Posting<'a>> {
        self.term(field::SPIDER, &id.to_le_bytes())
    }

    pub fn tag(&self, tag: &str) -> Option<Posting<'a>> {
        self.term(field::TAG, tag.as_bytes())
    }

    pub fn unique(&self, u: &str) -> Option<Posting<'a>> {
        self.term(field::UNIQUE, u.as_bytes())
    }

    pub fn close_reason(&self, term: &str) -> Option<Posting<'a>> {
        self.term(field::CLOSE_REASON, term.as_bytes())
    }
}
