//! Running a planned query over the sources of a snapshot (index sections and the
//! tail): counts add up per source a block at a time; listings merge the sources
//! in `ts` order after skipping `start` rows by rank and select (skip.rs).

use super::docset::{count_in, skip_in, DocId, DocSet, TERMINATED};
use crate::index::{DocEntry, Section};

/// One listed job: where its record is and its place in the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub local: u64,
    pub ts: u64,
    pub seq: u64,
    pub loc: u64,
    /// When the listing was answered (ms, the store's clock): the row's `elapsed`
    /// counts to it (one clock read a listing, the same for all its rows).
    pub listed_ms: u64,
}

/// A source of matching docs in listing order.
pub enum Source<'a> {
    Section {
        set: Box<dyn DocSet + 'a>,
        sec: Section<'a>,
        lo: DocId,
        hi: DocId,
    },
    /// Matching tail entries, sorted newest first.
    Tail {
        entries: Vec<&'a DocEntry>,
        next: usize,
    },
}

impl<'a> Source<'a> {
    pub fn tail(mut entries: Vec<&'a DocEntry>) -> Source<'a> {
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.order_key()));
        Source::Tail { entries, next: 0 }
    }

    fn head(&self) -> Option<(u64, u64)> {
        match self {
            Source::Section { set, sec, .. } => {
                let d = set.doc();
                (d != TERMINATED).then(|| (sec.ts(d), sec.seq(d)))
            }
            Source::Tail { entries, next } => entries.get(*next).map(|e| e.order_key()),
        }
    }

    /// The current doc as a hit; `head` is its `(ts, seq)` (read once: the
    /// columns are packed).
    fn hit(&self, head: (u64, u64)) -> Hit {
        match self {
            Source::Section { set, sec, .. } => {
                let d = set.doc();
                Hit { local: sec.local(d), ts: head.0, seq: head.1, loc: sec.loc(d), listed_ms: 0 }
            }
            Source::Tail { entries, next } => {
                let e = entries[*next];
                Hit { local: e.local, ts: e.ts, seq: e.order_key().1, loc: e.loc, listed_ms: 0 }
            }
        }
    }

    fn advance(&mut self) {
        match self {
            Source::Section { set, .. } => {
                set.advance();
            }
            Source::Tail { next, .. } => *next += 1,
        }
    }

    /// Matching docs of this source.
    pub fn count(&mut self) -> u64 {
        match self {
            Source::Section { set, lo, hi, .. } => count_in(set.as_mut(), *lo, *hi),
            Source::Tail { entries, .. } => entries.len() as u64,
        }
    }
}

/// Matching docs over all sources.
pub fn count(sources: &mut [Source<'_>]) -> u64 {
    sources.iter_mut().map(Source::count).sum()
}

/// The index of the source with the newest head, and the newest head of the others.
fn leader(sources: &[Source<'_>]) -> Option<(usize, Option<(u64, u64)>)> {
    let mut best: Option<(usize, (u64, u64))> = None;
    let mut second = None;
    for (i, h) in sources.iter().enumerate().filter_map(|(i, s)| s.head().map(|h| (i, h))) {
        match best {
            Some((_, b)) if h < b => second = second.max(Some(h)),
            _ => {
                second = second.max(best.map(|(_, b)| b));
                best = Some((i, h));
            }
        }
    }
    best.map(|(a, _)| (a, second))
}

/// Skip `remaining` rows a run at a time: the source ahead skips, by block
/// popcounts, every match newer than the next source's head.
fn walk(sources: &mut [Source<'_>], mut remaining: u64) {
    while remaining > 0 {
        let Some((a, second)) = leader(sources) else {
            break;
        };
        match &mut sources[a] {
            Source::Tail { next, .. } => {
                *next += 1;
                remaining -= 1;
            }
            Source::Section { set, sec, hi, .. } => {
                let from = set.doc();
                let limit = second.map_or(*hi, |(ts, seq)| sec.first_older_than(ts, seq).min(*hi));
                let (n, pos) = skip_in(set.as_mut(), from, limit.max(from + 1), remaining);
                remaining -= n;
                set.seek(pos);
            }
        }
    }
}

/// Skip `start` rows, then return up to `count`, newest first.
pub fn list(sources: &mut [Source<'_>], start: u64, count: u64) -> Vec<Hit> {
    match super::skip::skip(sources, start) {
        Some(true) => {}
        Some(false) => return Vec::new(),
        None => walk(sources, start),
    }
    // Each source's head, read again only when that source moves.
    let mut heads: Vec<Option<(u64, u64)>> = sources.iter().map(Source::head).collect();
    if heads.iter().all(Option::is_none) {
        // Nothing to list (an absent term, a spent range): no allocation.
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count.min(4096) as usize);
    while (out.len() as u64) < count {
        // The newest head (the last of equal ones, as `leader`).
        let mut best: Option<(usize, (u64, u64))> = None;
        for (i, h) in heads.iter().enumerate() {
            if let Some(h) = *h {
                if best.is_none_or(|(_, b)| h >= b) {
                    best = Some((i, h));
                }
            }
        }
        let Some((a, head)) = best else { break };
        out.push(sources[a].hit(head));
        sources[a].advance();
        heads[a] = sources[a].head();
    }
    out
}
