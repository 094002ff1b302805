//! The keys an import has written so far, and the `unique` rule across it.
//!
//! Imported keys are the import's one structure that grows with every line. Job
//! ids of a spider mostly come dense and ascending, so each spider keeps a byte a
//! job id (the newest imported state) over the range it has seen; ids that would
//! make that range sparse go to a hash map instead. Memory: at most about
//! [`DENSE_SLACK`] bytes a job in a spider's range plus its map entry, against
//! ~40 bytes a job for a hash map of every key (and its growth copies). A
//! spider's range starts at the first id seen and grows down only within that
//! bound: after a first id far above the others, they are kept sparse (correct,
//! only no smaller).

use std::sync::Arc;

use super::writer::Writer;
use crate::codec::record::Prev;
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::index::spill::Repeats;
use crate::index::DocEntry;
use crate::model::{JobKey, JobState};

/// A spider's range may span this many bytes per key of it imported (plus
/// [`DENSE_FREE`]); an id beyond goes to the sparse map.
const DENSE_SLACK: usize = 4;
const DENSE_FREE: usize = 64;

/// One spider's imported job ids from `base` on: 0 for none, else state code + 1.
#[derive(Default)]
struct Dense {
    base: u32,
    states: Vec<u8>,
    /// Keys of the spider imported (in `states` or in the sparse map).
    keys: usize,
}

/// The newest imported state of every imported key.
#[derive(Default)]
pub(crate) struct Imported {
    dense: FastMap<(u32, u32), Dense>,
    sparse: FastMap<(u32, u64), JobState>,
}

fn split(local: u64) -> (u32, u32) {
    ((local >> 32) as u32, local as u32)
}

impl Imported {
    pub fn get(&self, project: u32, local: u64) -> Option<JobState> {
        let (spider, job) = split(local);
        if let Some(d) = self.dense.get(&(project, spider)) {
            let code = job.checked_sub(d.base).and_then(|i| d.states.get(i as usize)).copied().unwrap_or(0);
            if code > 0 {
                return JobState::from_code(code - 1);
            }
        }
        // Not in a dense range (or in one only grown over it later).
        self.sparse.get(&(project, local)).copied()
    }

    /// Note the newest imported state of a key; true when it was imported before.
    pub fn insert(&mut self, project: u32, local: u64, state: JobState) -> bool {
        let (spider, job) = split(local);
        let d = self.dense.entry((project, spider)).or_insert_with(|| Dense { base: job, ..Dense::default() });
        let room = DENSE_SLACK * (d.keys + 1) + DENSE_FREE;
        if job < d.base {
            // Grow the range down, at least doubling it (ids that come descending).
            let down = ((d.base - job) as usize).max(d.states.len()).min(d.base as usize);
            if d.states.len() + down <= room {
                d.states.splice(0..0, std::iter::repeat_n(0, down));
                d.base -= down as u32;
            }
        }
        let in_sparse =
            |sparse: &FastMap<(u32, u64), JobState>| !sparse.is_empty() && sparse.contains_key(&(project, local));
        if let Some(i) = job.checked_sub(d.base).map(|i| i as usize) {
            let was = d.states.get(i).copied().unwrap_or(0);
            if (i < d.states.len() || i < room) && (was > 0 || !in_sparse(&self.sparse)) {
                if i >= d.states.len() {
                    d.states.resize(i + 1, 0);
                }
                d.states[i] = state as u8 + 1;
                d.keys += usize::from(was == 0);
                return was > 0;
            }
        }
        let again = self.sparse.insert((project, local), state).is_some();
        d.keys += usize::from(!again);
        again
    }

    pub fn contains(&self, project: u32, local: u64) -> bool {
        self.get(project, local).is_some()
    }
}

/// The `unique` rule across an import: an imported version may not be active
/// with a value another active job holds, stored before or imported earlier.
#[derive(Default)]
pub(crate) struct Uniques {
    /// Imported keys, with the state of their newest imported version.
    imported: Imported,
    /// The `unique` values newest imported versions hold (when active).
    holds: FastMap<(u32, u64), Arc<str>>,
    /// Imported active versions by the value they hold.
    held: FastMap<(u32, Arc<str>), u64>,
    /// Keys imported more than once: only the newest version is indexed.
    pub repeats: Repeats,
}

impl Uniques {
    /// What the record of the imported version `e` names as the job's previous
    /// version: an earlier line of this import, else the stored job, else none.
    /// (Asked before `e` is admitted.)
    pub fn previous(&self, w: &Writer, e: &DocEntry) -> Result<Prev> {
        if let Some(s) = self.imported.get(e.project, e.local) {
            return Ok(Prev::State(s));
        }
        Ok(match w.load(JobKey::from_local(e.project, e.local))? {
            Some(stored) => Prev::State(stored.state),
            None => Prev::Created,
        })
    }

    pub fn admit(&mut self, w: &Writer, e: &DocEntry) -> Result<()> {
        let p = e.project;
        if !self.holds.is_empty() {
            if let Some(old) = self.holds.remove(&(p, e.local)) {
                let old = (p, old);
                if self.held.get(&old) == Some(&e.local) {
                    self.held.remove(&old);
                }
            }
        }
        let unique = e.unique.clone().filter(|_| e.state.is_active());
        if let Some(u) = &unique {
            let holder = match self.held.get(&(p, u.clone())) {
                Some(local) => Some(*local),
                // A stored holder counts unless the import gave it a new version.
                None => w.unique_holder(p, u).map(|k| k.local()).filter(|l| !self.imported.contains(p, *l)),
            };
            if let Some(h) = holder.filter(|h| *h != e.local) {
                return Err(Error::input(format!(
                    "Active job exists with key {u}: job {} cannot be imported as {} while job {} holds it",
                    JobKey::from_local(p, e.local),
                    e.state,
                    JobKey::from_local(p, h)
                )));
            }
            self.held.insert((p, u.clone()), e.local);
            self.holds.insert((p, e.local), u.clone());
        }
        if self.imported.insert(p, e.local, e.state) {
            self.repeats.entry((p, e.local)).or_insert((0, 1)).1 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense ranges and the sparse map answer as one map of every key would.
    #[test]
    fn imported_keys_match_a_plain_map() {
        let mut got = Imported::default();
        let mut want: FastMap<(u32, u64), JobState> = FastMap::default();
        let mut next = [0u64; 8];
        let mut x = 7u64;
        for i in 0..50_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let s = (x >> 61) as usize;
            // Mostly ascending ids per spider; some repeats, some far ahead or below.
            let job = match (x >> 40) % 20 {
                0 => (x >> 20) % 1_000_000,
                1 => next[s] / 2,
                2 => u64::from(u32::MAX) - (x >> 50) % 3,
                3 if s == 7 => 100_000 - i.min(99_999),
                _ => {
                    next[s] += 1 + (x >> 30) % 2;
                    next[s]
                }
            };
            let (project, local) = (1 + (s as u32 % 2), (s as u64 + 1) << 32 | job);
            let state = JobState::ALL[(x >> 30) as usize % JobState::ALL.len()];
            assert_eq!(got.insert(project, local, state), want.insert((project, local), state).is_some(), "{i}");
            let probe = (s as u64 + 1) << 32 | ((x >> 10) % 30_000);
            assert_eq!(got.get(project, probe), want.get(&(project, probe)).copied(), "{i}");
        }
        for ((project, local), state) in &want {
            assert_eq!(got.get(*project, *local), Some(*state));
        }
        assert!(!got.dense.is_empty() && !got.sparse.is_empty());
    }

    /// An export's order (ids per spider ascending, a little shuffled by the
    /// order jobs entered their states) keeps the keys dense.
    #[test]
    fn export_order_is_dense() {
        let mut m = Imported::default();
        let mut x = 3u64;
        for i in 0..100_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let spider = 1 + (x >> 62);
            let job = (i / 4 + (x >> 20) % 300).max(1);
            m.insert(7, spider << 32 | job, JobState::Finished);
        }
        // Only the first few ids, below a first one up to 300 ahead, are sparse.
        assert!(m.sparse.len() < 500, "{} sparse", m.sparse.len());
        assert!(m.dense.values().all(|d| d.states.len() < 26_000));
    }
}
