//! Where the last row of each recent listing stood, so that `startafter` pages on
//! from there even when that job has moved since (a job changing state moves to
//! the top of the `ts` order: continuing after its new place would list again
//! everything the pager has seen).
//!
//! In memory only, bounded: two generations of at most [`PLACES`]` / 2` entries;
//! when the young one fills, it becomes the old one and the old one is dropped.

use parking_lot::Mutex;

use crate::hash::FastMap;

/// Most places remembered (listings answered recently, by their last row).
pub const PLACES: usize = 65_536;

type Key = (u32, u64);
type Place = (u64, u64);

#[derive(Default, Debug)]
struct Generations {
    young: FastMap<Key, Place>,
    old: FastMap<Key, Place>,
}

/// The places of the last rows of recent listings, per job.
#[derive(Default, Debug)]
pub struct Places(Mutex<Generations>);

impl Places {
    /// A listing of `project` ended with job `local`, standing at `place`
    /// (its order key `(ts, order_seq)`).
    pub fn remember(&self, project: u32, local: u64, place: Place) {
        let mut g = self.0.lock();
        if g.young.len() >= PLACES / 2 && !g.young.contains_key(&(project, local)) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert((project, local), place);
    }

    /// Where the last listing that ended with this job saw it, if remembered.
    pub fn recall(&self, project: u32, local: u64) -> Option<Place> {
        let g = self.0.lock();
        g.young.get(&(project, local)).or_else(|| g.old.get(&(project, local))).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_place_and_stays_bounded() {
        let p = Places::default();
        p.remember(1, 7, (10, 1));
        p.remember(1, 7, (20, 2));
        assert_eq!(p.recall(1, 7), Some((20, 2)));
        assert_eq!(p.recall(2, 7), None);
        for i in 0..PLACES as u64 * 3 {
            p.remember(3, i, (i, i));
        }
        let g = p.0.lock();
        assert!(g.young.len() + g.old.len() <= PLACES);
        drop(g);
        let last = PLACES as u64 * 3 - 1;
        assert_eq!(p.recall(3, last), Some((last, last)));
        assert_eq!(p.recall(3, last - PLACES as u64 / 2), Some((last - PLACES as u64 / 2, last - PLACES as u64 / 2)));
        assert_eq!(p.recall(1, 7), None, "the oldest places are forgotten");
    }
}
