//! Key lookups in a section (issue 11): the in-memory samples (the key of every
//! 128th rank) bound a key's rank to one block of `by_key`; within it, because
//! keys are distinct integers in ascending order, the key `d` above a sample
//! stands at most `d` ranks above it, and the key `e` below the next sample at
//! least `e` ranks below that. Job ids of a spider are given in sequence, so the
//! two bounds usually meet and one probe of the key table finds the key; a
//! binary search closes any gap left.

use super::{packed, Section};
use crate::query::docset::DocId;

impl Section<'_> {
    /// The rank of the first key `>= local` in key order, and the doc holding
    /// `local` when it is there.
    fn locate(&self, local: u64) -> (u32, Option<DocId>) {
        let n = self.info.n;
        let (mut lo, mut hi) = (0, n);
        // `probe(r)`: the doc at rank r and its key (three packed reads).
        let probe = |r: u32| {
            let doc = self.by_key(r);
            (doc, self.local(doc))
        };
        if !self.samples.is_empty() {
            // samples[k] is rank 128k: the rank is 0, or in (128(k-1), 128k].
            let s = self.samples;
            let k = s.partition_point(|x| *x < local);
            if k == 0 {
                return (0, (s[0] == local).then(|| self.by_key(0)));
            }
            let below = ((k - 1) * packed::BLOCK) as u32;
            lo = below + 1;
            hi = hi.min((k * packed::BLOCK) as u32);
            // The key `d` above rank `below`'s stands at rank `below + d` or lower.
            hi = hi.min(below.saturating_add(u32::try_from(local - s[k - 1]).unwrap_or(u32::MAX)));
            if let Some(&above) = s.get(k) {
                // ... and the key `e` below rank 128k's at rank `128k - e` or higher.
                let e = u32::try_from(above - local).unwrap_or(u32::MAX);
                lo = lo.max(((k * packed::BLOCK) as u32).saturating_sub(e));
            }
            // The bounds usually meet here: the key is at `hi` if anywhere.
            if hi < n {
                let (doc, key) = probe(hi);
                if key == local {
                    return (hi, Some(doc));
                }
                if lo >= hi {
                    return (hi, None);
                }
            }
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.sorted_key(mid) < local {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo < n {
            let (doc, key) = probe(lo);
            if key == local {
                return (lo, Some(doc));
            }
        }
        (lo, None)
    }

    /// Rank of the first key `>= local` in key order.
    pub fn key_rank(&self, local: u64) -> u32 {
        self.locate(local).0
    }

    /// The doc of a key.
    pub fn find(&self, local: u64) -> Option<DocId> {
        self.locate(local).1
    }
}
