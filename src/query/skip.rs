//! Skipping `start` matches of the merged order of the sources without walking
//! them. Each source counts its matches per 65,536-doc block once; then `rank`
//! (matches newer than a key) and `select` (the i-th match) each cost one block
//! fill. The first row after the skip is the match whose key `K` has exactly
//! `start` newer matches over all sources: for each source in turn, a binary search
//! over its matches `i` for `i + Σ other ranks(key of i) == start` finds it.
//! One section alone (the common case) needs no search: its blocks are counted
//! up to the one holding the match, that one a window at a time (`nth_match`).

use super::docset::{
    block_of, mask_block, mask_words, popcount, select_in_block, select_in_words, walk_blocks, Block, BlockBuf, DocId,
    DocSet, BLOCK_WORDS,
};
use super::exec::Source;

type Key = (u64, u64);

/// A section source with its per-block match counts, up to the first block that
/// takes them past `start` (the start-th row overall is at most the start-th of
/// its own source, so later blocks are never needed).
struct Counted {
    /// Blocks with matches: (block, matches before it in the source).
    blocks: Vec<(u32, u64)>,
    /// Matches in those blocks: all of the source's, or more than `start`.
    total: u64,
}

fn counted(set: &mut dyn DocSet, lo: DocId, hi: DocId, start: u64, buf: &mut Block) -> Counted {
    let (mut blocks, mut total) = (Vec::new(), 0);
    walk_blocks(set, lo, hi, buf, |bk, blk| {
        let c = popcount(blk);
        if c > 0 {
            blocks.push((bk, total));
            total += c;
        }
        total <= start
    });
    Counted { blocks, total }
}

/// Matches of a section (range `[lo, hi)`) before position `p`, or more than
/// `start` when they are past the counted blocks.
fn rank_before(set: &mut dyn DocSet, lo: DocId, hi: DocId, c: &Counted, p: DocId, buf: &mut Block) -> u64 {
    let p = p.clamp(lo, hi);
    let bp = block_of(p);
    let i = c.blocks.partition_point(|(b, _)| *b < bp);
    match c.blocks.get(i) {
        Some(&(b, before)) if b == bp => {
            set.fill_block(bp, buf);
            mask_block(bp, lo, p, buf);
            before + popcount(buf)
        }
        Some(&(_, before)) => before,
        None => c.total,
    }
}

/// Matches of a source newer than `k`.
fn rank(src: &mut Source<'_>, c: Option<&Counted>, k: Key, buf: &mut Block) -> u64 {
    match (src, c) {
        (Source::Tail { entries, .. }, _) => entries.partition_point(|e| e.order_key() > k) as u64,
        (Source::Section { set, sec, lo, hi }, Some(c)) => {
            rank_before(set.as_mut(), *lo, *hi, c, sec.first_older_than(k.0, k.1), buf)
        }
        (Source::Section { .. }, None) => unreachable!("sections are counted"),
    }
}

/// The key of the `i`-th match of a source, and where it is.
fn select(src: &mut Source<'_>, c: Option<&Counted>, i: u64, buf: &mut Block) -> (Key, DocId) {
    match (src, c) {
        (Source::Tail { entries, .. }, _) => (entries[i as usize].order_key(), i as DocId),
        (Source::Section { set, sec, lo, hi }, Some(c)) => {
            let j = c.blocks.partition_point(|(_, n)| *n <= i) - 1;
            let (bk, before) = c.blocks[j];
            set.fill_block(bk, buf);
            mask_block(bk, *lo, *hi, buf);
            let at = select_in_block(buf, i - before).expect("the block holds the match");
            let doc = (bk << 16) + at;
            ((sec.ts(doc), sec.seq(doc)), doc)
        }
        (Source::Section { .. }, None) => unreachable!("sections are counted"),
    }
}

/// Position every source so that the next row of the merged order is the
/// `start`-th (0-based) match: `Some(false)` when there are not that many, `None`
/// (sources not moved) when the sections' keys are out of order, which only a
/// damaged index can cause (the caller then walks).
pub fn skip(sources: &mut [Source<'_>], start: u64) -> Option<bool> {
    if start == 0 {
        return Some(true);
    }
    let mut buf = BlockBuf::new();
    if let [Source::Section { set, lo, hi, .. }] = sources {
        let found = nth_match(set.as_mut(), *lo, *hi, start, &mut buf);
        position(&mut sources[0], found.map(Target::At));
        return Some(found.is_some());
    }
    let counts: Vec<Option<Counted>> = sources
        .iter_mut()
        .map(|s| match s {
            Source::Section { set, lo, hi, .. } => Some(counted(set.as_mut(), *lo, *hi, start, &mut buf)),
            Source::Tail { .. } => None,
        })
        .collect();
    let total = |s: &Source<'_>, c: &Option<Counted>| match (s, c) {
        (Source::Tail { entries, .. }, _) => entries.len() as u64,
        (_, Some(c)) => c.total,
        _ => 0,
    };
    let all: u64 = sources.iter().zip(&counts).map(|(s, c)| total(s, c)).sum();
    if start >= all {
        for s in sources.iter_mut() {
            position(s, None);
        }
        return Some(false);
    }
    if let [only @ Source::Tail { .. }] = sources {
        position(only, Some(Target::At(start as DocId)));
        return Some(true);
    }
    for a in 0..sources.len() {
        let n = total(&sources[a], &counts[a]);
        // h(i) = i + matches of the other sources newer than match i: increasing.
        let mut h = |i: u64, sources: &mut [Source<'_>]| -> (u64, Key, DocId) {
            let (k, doc) = select(&mut sources[a], counts[a].as_ref(), i, &mut buf);
            let mut v = i;
            for (t, src) in sources.iter_mut().enumerate() {
                if t != a {
                    v += rank(src, counts[t].as_ref(), k, &mut buf);
                }
            }
            (v, k, doc)
        };
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (v, k, doc) = h(mid, sources);
            if v == start {
                for (t, src) in sources.iter_mut().enumerate() {
                    if t == a {
                        position(src, Some(Target::At(doc)));
                    } else {
                        position(src, Some(Target::OlderThan(k)));
                    }
                }
                return Some(true);
            }
            if v < start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
    }
    None
}

/// The `n`-th (0-based) match of one section in `[lo, hi)`, if it has that many.
/// Blocks are counted whole until one is expected to hold the match (the block
/// before it had more matches than are left to skip); that one is filled a
/// window at a time, the first window sized by that guess, so that a deep
/// `start` does not fill the whole of its last block.
fn nth_match(set: &mut dyn DocSet, lo: DocId, hi: DocId, n: u64, buf: &mut Block) -> Option<DocId> {
    let (mut done, mut last_count) = (0u64, None);
    let mut b = if lo < hi { set.next_block(block_of(lo)) } else { None };
    while let Some(bk) = b.filter(|bk| u64::from(*bk) << 16 < u64::from(hi)) {
        let left = n - done;
        let Some(per_block) = last_count.filter(|c| *c > left) else {
            set.fill_block(bk, buf);
            mask_block(bk, lo, hi, buf);
            let c = popcount(buf);
            if left < c {
                return select_in_block(buf, left).map(|at| (bk << 16) + at);
            }
            (done, last_count) = (done + c, Some(c));
            b = bk.checked_add(1).and_then(|next| set.next_block(next));
            continue;
        };
        let from = if bk == block_of(lo) { (lo & 0xFFFF) as usize / 64 } else { 0 };
        // The words that should hold `left + 1` matches at the last block's
        // density, and a quarter more; then the rest of the block.
        let guess = ((left + 1) * BLOCK_WORDS as u64 * 5 / 4 / per_block) as usize;
        let cut = (from + guess.max(16)).min(BLOCK_WORDS);
        let mut block_count = 0;
        for words in [from..cut, cut..BLOCK_WORDS] {
            if words.is_empty() {
                continue;
            }
            set.fill_words(bk, words.clone(), buf);
            mask_words(bk, lo, hi, words.clone(), buf);
            let c: u64 = buf[words.clone()].iter().map(|w| u64::from(w.count_ones())).sum();
            if n - done < c {
                return select_in_words(buf, words, n - done).map(|at| (bk << 16) + at);
            }
            done += c;
            block_count += c;
        }
        last_count = Some(block_count);
        b = bk.checked_add(1).and_then(|next| set.next_block(next));
    }
    None
}

enum Target {
    /// This source's next match is this doc (or tail index).
    At(DocId),
    /// This source continues with its first match older than this key.
    OlderThan(Key),
}

fn position(src: &mut Source<'_>, t: Option<Target>) {
    match (src, t) {
        (Source::Tail { entries, next }, None) => *next = entries.len(),
        (Source::Tail { next, .. }, Some(Target::At(i))) => *next = i as usize,
        (Source::Tail { entries, next }, Some(Target::OlderThan(k))) => {
            *next = entries.partition_point(|e| e.order_key() > k)
        }
        (Source::Section { set, hi, .. }, None) => {
            set.seek(*hi);
        }
        (Source::Section { set, .. }, Some(Target::At(doc))) => {
            set.seek(doc);
        }
        (Source::Section { set, sec, .. }, Some(Target::OlderThan(k))) => {
            set.seek(sec.first_older_than(k.0, k.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::exec::{list, Source};
    use crate::fs::MappedBytes;
    use crate::index::build::{build, DocEntry};
    use crate::index::{DeadSet, IndexSegment, SegmentMeta};
    use crate::log::LogPos;
    use crate::model::JobState;
    use crate::query::plan::Resolved;
    use crate::query::Filter;

    #[test]
    fn deep_starts_land_on_the_right_row_in_every_block() {
        // One section of four blocks; the tag is dense, sparse or absent by
        // block, so that the start-th match is counted in each of them.
        let n = 3 * 65_536 + 20_000;
        let tagged = |i: u64| match i >> 16 {
            0 => !i.is_multiple_of(3),
            1 => i % 50 == 7,
            2 => false,
            _ => i.is_multiple_of(2),
        };
        let docs: Vec<DocEntry> = (0..n)
            .map(|i| DocEntry {
                project: 1,
                local: (1 << 32) | (i + 1),
                ts: 10_000_000 - i,
                order_seq: i + 1,
                state: JobState::Finished,
                priority: 2,
                tags: if tagged(i) { Arc::new([Arc::from("t")]) } else { Arc::new([]) },
                unique: None,
                close_reason: None,
                token: None,
                loc: i * 100,
            })
            .collect();
        let meta = SegmentMeta {
            generation: 1,
            lo_seq: 1,
            hi_seq: n,
            log_end: LogPos { segment: 1, offset: 1 },
            last_frame: LogPos { segment: 1, offset: 0 },
            docs: n,
        };
        let seg =
            IndexSegment::open(MappedBytes::from_vec(build(docs, meta, &[], &[])), Path::new("x.jqi"), false).unwrap();
        let sec = seg.section(1).unwrap();
        let want: Vec<u64> = (0..n).filter(|i| tagged(*i)).map(|i| (1 << 32) | (i + 1)).collect();
        let dead = DeadSet::new();
        for with_range in [false, true] {
            let filter = Filter {
                has_tags: vec!["t".into()],
                states: vec![JobState::Finished],
                startts: with_range.then_some(10_000_000 - n + 5),
                ..Filter::default()
            };
            let r = Resolved { filter: &filter, spider: None, nothing: false, stop: None, after: None };
            let (lo, hi) = r.range(&sec);
            let want: Vec<u64> = want.iter().copied().filter(|l| ((l & 0xFFFF_FFFF) - 1) < u64::from(hi)).collect();
            let firsts = [0, 1, 21_844, 21_845, 43_690, 43_691, 44_000, 45_000, 45_001];
            // And starts all over: the last block of a skip is filled a window at
            // a time from a guess, which these land before, at and past.
            let spread = (0..want.len() as u64).step_by(509);
            for start in firsts.into_iter().chain(spread).chain([want.len() as u64 - 3, want.len() as u64]) {
                let (set, lo2, hi2) = r.plan_listing(&sec, &dead).unwrap();
                assert_eq!((lo, hi), (lo2, hi2));
                let got: Vec<u64> =
                    list(&mut [Source::Section { set, sec, lo, hi }], start, 5).iter().map(|h| h.local).collect();
                let expect: Vec<u64> = want.iter().copied().skip(start as usize).take(5).collect();
                assert_eq!(got, expect, "start {start}, range {with_range}");
            }
        }
    }
}
