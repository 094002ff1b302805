//! The planner: a JobQ filter, resolved against one snapshot, becomes for each
//! index section a cursor tree and a doc range, and for the tail a predicate.
//!
//! - `startts`/`endts`, `stop` and `startafter` are binary searches on the `ts`
//!   order: a range;
//! - one state, spider, tag or close_reason is its posting list; several states,
//!   `has_tag`s or close_reasons are a union; each `has_tag_all` tag is a list of
//!   its own; everything is intersected, cheapest first, with the range;
//! - `lacks_tag`s, superseded docs and (without a state list) purged jobs are
//!   excluded.

use super::blocked::Blocked;
use super::docset::{block_of, DocId, DocSet, Range};
use super::filter::Filter;
use super::ops::{Clipped, Exclusion, Intersection, Union};
use crate::index::posting::Posting;
use crate::index::{DeadSet, DocEntry, Section};
use crate::model::JobState;

type Boxed<'a> = Box<dyn DocSet + 'a>;

/// A filter of two lists or more (or with `lacks_tag`) is walked a block at a
/// time (blocked.rs) when its cheapest list holds at least this many docs a
/// block: about where filling a block's bitmaps costs less than seeking every
/// other list for each of those docs.
const BLOCKED_FROM: u64 = 64;

/// A filter with names resolved to ids for one snapshot.
#[derive(Clone, Debug)]
pub struct Resolved<'f> {
    pub filter: &'f Filter,
    /// The spider id asked for (`None` when no spider filter).
    pub spider: Option<u32>,
    /// A spider filter naming no spider of the project: nothing matches.
    pub nothing: bool,
    /// Order key `(ts, seq)` of the `stop` job: only strictly newer docs pass.
    pub stop: Option<(u64, u64)>,
    /// Order key of the `startafter` job: only strictly older docs pass.
    pub after: Option<(u64, u64)>,
}

impl Resolved<'_> {
    fn states(&self) -> Option<&[JobState]> {
        let s = &self.filter.states;
        (!s.is_empty() && !JobState::ALL.iter().all(|x| s.contains(x))).then_some(s.as_slice())
    }

    /// Does a tail entry pass?
    pub fn matches_entry(&self, e: &DocEntry) -> bool {
        let f = self.filter;
        !self.nothing
            && e.state != JobState::Purged
            && self.states().is_none_or(|s| s.contains(&e.state))
            && self.spider.is_none_or(|id| (e.local >> 32) as u32 == id)
            && f.startts.is_none_or(|t| e.ts >= t)
            && f.endts.is_none_or(|t| e.ts < t)
            && self.stop.is_none_or(|k| e.order_key() > k)
            && self.after.is_none_or(|k| e.order_key() < k)
            && (f.has_tags.is_empty() || f.has_tags.iter().any(|t| e.tags.iter().any(|x| **x == **t)))
            && f.has_tags_all.iter().all(|t| e.tags.iter().any(|x| **x == **t))
            && !f.lacks_tags.iter().any(|t| e.tags.iter().any(|x| **x == **t))
            && f.matches_close_reason(e.close_reason.as_deref())
    }

    /// The doc range of a section the time filters, `stop` and `startafter` leave.
    pub fn range(&self, sec: &Section<'_>) -> (DocId, DocId) {
        let f = self.filter;
        let mut lo = f.endts.map_or(0, |e| sec.first_ts_below(e));
        if let Some(after) = self.after {
            // Past the docs at `after` itself: only strictly older ones pass.
            let mut first = sec.first_older_than(after.0, after.1);
            while first < sec.len() && (sec.ts(first), sec.seq(first)) == after {
                first += 1;
            }
            lo = lo.max(first);
        }
        let mut hi = f.startts.map_or(sec.len(), |s| sec.first_ts_below(s));
        if let Some((ts, seq)) = self.stop {
            hi = hi.min(sec.first_older_than(ts, seq));
        }
        (lo, hi)
    }

    /// The cursor of the section's matching live docs with its range, or `None`
    /// when nothing can match, for a count or seeks (for a count: a block at a
    /// time already). The cursor is positioned by its first seek.
    pub fn plan<'a>(&self, sec: &Section<'a>, dead: &'a DeadSet) -> Option<(Boxed<'a>, DocId, DocId)> {
        self.tree(sec, dead, false)
    }

    /// [`Resolved::plan`] for a listing, which steps through docs from the
    /// first: a filter of several lists whose cheapest is dense is walked a
    /// block at a time.
    pub fn plan_listing<'a>(&self, sec: &Section<'a>, dead: &'a DeadSet) -> Option<(Boxed<'a>, DocId, DocId)> {
        self.tree(sec, dead, true)
    }

    /// The cursor tree and its range. Only a listing not walked a block at a
    /// time uses `doc` and `advance` before a seek: the other trees are built
    /// unpositioned (no seeks to align intersections on a first doc).
    fn tree<'a>(&self, sec: &Section<'a>, dead: &'a DeadSet, listing: bool) -> Option<(Boxed<'a>, DocId, DocId)> {
        if self.nothing {
            return None;
        }
        let (lo, hi) = self.range(sec);
        if lo >= hi {
            return None;
        }
        let f = self.filter;
        // Every list that must match is looked up before anything is built: a
        // term the section lacks ends the plan without an allocation.
        let spider = match self.spider {
            Some(id) => Some(sec.spider(id)?),
            None => None,
        };
        let every_tag: Vec<Posting<'a>> = f.has_tags_all.iter().map(|t| sec.tag(t)).collect::<Option<_>>()?;
        // `None`: no such filter; `Some`: the lists of which a doc needs one.
        let any_tags = match f.has_tags.is_empty() {
            true => None,
            false => Some(non_empty(f.has_tags.iter().filter_map(|t| sec.tag(t)).collect())?),
        };
        let reasons = match f.close_reasons.is_empty() {
            true => None,
            false => Some(non_empty(f.close_reasons.iter().filter_map(|c| sec.close_reason(c)).collect())?),
        };
        let states = match self.states() {
            Some(states) => Some(non_empty(states.iter().filter_map(|s| sec.state(*s)).collect())?),
            None => None,
        };
        let cursors = |ps: Vec<Posting<'a>>| ps.into_iter().map(|p| Box::new(p.cursor()) as Boxed<'a>).collect();
        let mut all: Vec<Boxed<'a>> = vec![Box::new(Range::new(lo, hi))];
        if let Some(states) = states {
            all.push(any_of(cursors(states))?);
        }
        if let Some(p) = spider {
            all.push(Box::new(p.cursor()));
        }
        if let Some(tags) = any_tags {
            all.push(any_of(cursors(tags))?);
        }
        all.extend(every_tag.into_iter().map(|p| Box::new(p.cursor()) as Boxed<'a>));
        if let Some(reasons) = reasons {
            all.push(any_of(cursors(reasons))?);
        }
        // Compound: several lists, or lists excluded. The tree's cost is its
        // cheapest child's (an intersection's, and an exclusion's include's).
        let compound = all.len() > 2 || !f.lacks_tags.is_empty();
        let cost = all.iter().map(|c| c.cost()).min().expect("the range at least");
        let blocks = u64::from(block_of(hi - 1) - block_of(lo) + 1);
        let blocked = listing && compound && cost >= BLOCKED_FROM * blocks;
        let positioned = listing && !blocked;
        let mut set: Boxed<'a> = match all.len() {
            1 => all.pop().expect("one child"),
            // The range and one list: the list within the range's bounds.
            2 if positioned => Box::new(Clipped::new(all.pop().expect("a list"), lo, hi)),
            _ if positioned => Box::new(Intersection::new(all)),
            _ => Box::new(Intersection::unpositioned(all)),
        };
        let exclude = |set: Boxed<'a>, out: Boxed<'a>| -> Boxed<'a> {
            match positioned {
                true => Box::new(Exclusion::new(set, out)),
                false => Box::new(Exclusion::unpositioned(set, out)),
            }
        };
        let lacks: Vec<Boxed<'a>> =
            f.lacks_tags.iter().filter_map(|t| sec.tag(t)).map(|p| Box::new(p.cursor()) as Boxed<'a>).collect();
        // Without a state list, purged jobs (in no API state) are taken out.
        let purged = self.states().is_none().then(|| sec.state(JobState::Purged)).flatten();
        let lacks: Vec<Boxed<'a>> =
            lacks.into_iter().chain(purged.map(|p| Box::new(p.cursor()) as Boxed<'a>)).collect();
        if let Some(l) = any_of(lacks) {
            set = exclude(set, l);
        }
        if !dead.is_empty() {
            set = exclude(set, Box::new(dead.cursor()));
        }
        if blocked {
            set = Box::new(Blocked::new(set, lo, hi));
        }
        Some((set, lo, hi))
    }
}

/// `lists`, `None` when empty.
fn non_empty<T>(lists: Vec<T>) -> Option<Vec<T>> {
    (!lists.is_empty()).then_some(lists)
}

/// The union of `sets`, `None` when there are none.
fn any_of(mut sets: Vec<Boxed<'_>>) -> Option<Boxed<'_>> {
    match sets.len() {
        0 => None,
        1 => sets.pop(),
        _ => Some(Box::new(Union::new(sets))),
    }
}
