//! Index images: built from arbitrary docs, and checked through every accessor.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arbitrary::{Arbitrary, Result, Unstructured};
use jobq::codec::record::SpiderEntry;
use jobq::index::format::field;
use jobq::index::posting::Posting;
use jobq::index::{DeadSet, DocEntry, IndexSegment, SegmentMeta, Section};
use jobq::log::LogPos;
use jobq::model::JobState;
use jobq::query::docset::{count_in, new_block, DocId, DocSet, TERMINATED};
use jobq::query::exec::{self, Source};
use jobq::query::plan::Resolved;
use jobq::query::Filter;

use crate::gen::{state, Word};

const TAGS: [&str; 6] = ["a", "b", "c", "é", "ab", "a\u{0}"];
const REASONS: [&str; 4] = ["failed", "404", "", "é"];

/// One doc of an index image, in small domains so that keys, `ts` and terms collide.
#[derive(Debug, Clone)]
pub struct ArbDoc {
    pub project: u32,
    pub spider: u32,
    pub job: u32,
    pub ts: u64,
    pub order_seq: u64,
    pub state: JobState,
    pub priority: i64,
    pub tags: Vec<String>,
    pub unique: Option<String>,
    pub close_reason: Option<String>,
    pub loc: u64,
}

impl<'a> Arbitrary<'a> for ArbDoc {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let ntags = u.int_in_range(0..=3)?;
        let mut tags = Vec::new();
        for _ in 0..ntags {
            tags.push(if u.ratio(7, 8)? { u.choose(&TAGS)?.to_string() } else { Word::arbitrary(u)?.0 });
        }
        Ok(ArbDoc {
            project: if u.ratio(15, 16)? { u.int_in_range(1..=3)? } else { u.arbitrary::<u32>()?.max(1) },
            spider: if u.ratio(7, 8)? { u.int_in_range(1..=300)? } else { u.arbitrary()? },
            job: if u.ratio(7, 8)? { u.int_in_range(1..=20)? } else { u.arbitrary()? },
            ts: if u.ratio(3, 4)? { u.int_in_range(0..=8)? } else { u.arbitrary()? },
            order_seq: u.arbitrary()?,
            state: state(u.arbitrary()?),
            priority: if u.ratio(3, 4)? { u.int_in_range(-2..=3)? } else { u.arbitrary()? },
            tags,
            unique: if u.ratio(1, 3)? { Some(u.choose(&["u", "v", "", "ü"])?.to_string()) } else { None },
            close_reason: if u.ratio(1, 2)? { Some(u.choose(&REASONS)?.to_string()) } else { None },
            loc: u.arbitrary()?,
        })
    }
}

/// The inputs of `build`, made valid: one version per key, distinct order keys
/// within a project, valid catalog entries and header fields.
pub struct Built {
    pub docs: Vec<DocEntry>,
    pub meta: SegmentMeta,
    pub catalog: Vec<SpiderEntry>,
    pub bytes: Vec<u8>,
}

pub fn build(docs: &[ArbDoc], bulk: u16, catalog: &[(u32, u32, u32, Word)], meta: (u64, u64, u64, u32, u32)) -> Built {
    let mut seen = HashSet::new();
    let mut seqs = HashSet::new();
    let mut entries = Vec::new();
    let mut all: Vec<ArbDoc> = docs.to_vec();
    // Many docs (bitmap containers) on request: derived from the first doc.
    if let Some(first) = docs.first() {
        for i in 0..u32::from(bulk) * 4 {
            let mut d = first.clone();
            d.job = first.job.wrapping_add(i + 1).max(1);
            d.ts = first.ts.wrapping_add(u64::from(i % 7));
            d.state = state((i % 5) as u8);
            if i % 3 == 0 {
                d.tags = vec!["bulk".into()];
            }
            all.push(d);
        }
    }
    for (i, d) in all.iter().enumerate() {
        let local = (u64::from(d.spider.max(1)) << 32) | u64::from(d.job.max(1));
        if !seen.insert((d.project, local)) {
            continue;
        }
        // Order keys must be distinct: in a store each version has its own sequence number.
        let mut seq = if i < docs.len() { d.order_seq } else { u64::MAX / 2 + i as u64 };
        while !seqs.insert(seq) {
            seq = seq.wrapping_add(1);
        }
        entries.push(DocEntry {
            project: d.project.max(1),
            local,
            ts: d.ts,
            order_seq: seq,
            state: d.state,
            priority: d.priority,
            tags: d.tags.iter().map(|t| Arc::<str>::from(t.as_str())).collect::<Vec<_>>().into(),
            unique: d.unique.as_deref().map(Arc::<str>::from),
            close_reason: d.close_reason.as_deref().map(Arc::<str>::from),
            // A running doc's token: posted under field 7.
            token: d.unique.as_deref().map(Arc::<str>::from),
            loc: d.loc,
        });
    }
    let mut cat: Vec<SpiderEntry> = catalog
        .iter()
        .map(|(p, s, n, w)| SpiderEntry {
            project: p.max(&1).to_owned(),
            spider: s.max(&1).to_owned(),
            next_job: n.max(&1).to_owned(),
            name: if w.0.is_empty() { "s".into() } else { w.0.as_str().into() },
        })
        .collect();
    cat.sort_by_key(|e| (e.project, e.spider));
    cat.dedup_by_key(|e| (e.project, e.spider));
    let (generation, lo, span, seg, off) = meta;
    let lo = lo.max(1) % (u64::MAX / 4) + 1;
    let meta = SegmentMeta {
        generation,
        lo_seq: lo,
        hi_seq: lo + span % (u64::MAX / 4),
        // Packed positions keep 32 bits of offset.
        log_end: LogPos { segment: seg, offset: u64::from(off / 2) + 1 },
        last_frame: LogPos { segment: seg, offset: u64::from(off / 2) },
        docs: 0,
    };
    let bytes = jobq::index::build::build(entries.clone(), meta, &cat, &[]);
    Built { docs: entries, meta, catalog: cat, bytes }
}

/// The docs of a posting list, checked: strictly ascending, below `n`, as many as its length.
pub fn posting_docs(p: &Posting<'_>, n: u32) -> Vec<DocId> {
    let docs = p.docs();
    assert_eq!(docs.len() as u64, u64::from(p.len()), "posting length and docs disagree");
    assert!(docs.windows(2).all(|w| w[0] < w[1]), "posting docs not strictly ascending");
    assert!(docs.iter().all(|d| *d < n), "posting doc past the section");
    docs
}

/// Walk a posting's cursor the ways the planner does and compare with its docs.
pub fn check_cursor(p: &Posting<'_>, docs: &[DocId], probes: &[u32]) {
    // advance
    let mut c = p.cursor();
    for d in docs {
        assert_eq!(c.doc(), *d, "cursor walk");
        c.advance();
    }
    assert_eq!(c.doc(), TERMINATED);
    assert_eq!(c.advance(), TERMINATED);
    // seek: a fresh cursor, then ascending targets from the probes (and the docs around them)
    let mut targets: Vec<u32> = probes.iter().map(|x| if docs.is_empty() { *x } else { docs[*x as usize % docs.len()].wrapping_add(*x % 3).wrapping_sub(1) }).collect();
    targets.extend(probes.iter().copied());
    let mut sorted = targets.clone();
    sorted.sort_unstable();
    let mut c = p.cursor();
    for t in sorted {
        let cur = c.doc();
        let want = if cur >= t { cur } else { docs.iter().copied().find(|d| *d >= t).unwrap_or(TERMINATED) };
        assert_eq!(c.seek(t), want, "seek {t}");
        assert_eq!(p.contains(t), docs.binary_search(&t).is_ok(), "contains {t}");
    }
    // seek interleaved with advance in input order (never backwards)
    let mut c = p.cursor();
    for t in targets {
        let before = c.doc();
        let got = if t % 2 == 0 { c.seek(t) } else { c.advance() };
        assert!(got >= before || before == TERMINATED, "cursor moved backwards");
        if got != TERMINATED {
            assert!(docs.binary_search(&got).is_ok(), "cursor on a doc not in the list");
        }
    }
    // blocks
    let mut blk = new_block();
    let blocks: Vec<u32> = {
        let mut b: Vec<u32> = docs.iter().map(|d| d >> 16).collect();
        b.dedup();
        b
    };
    let mut c = p.cursor();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(c.next_block(*b), Some(*b));
        if i == 0 {
            assert_eq!(c.next_block(0), Some(*b));
        }
        c.fill_block(*b, &mut blk);
        let want: Vec<u32> = docs.iter().filter(|d| *d >> 16 == *b).map(|d| d & 0xFFFF).collect();
        let mut got = Vec::new();
        for (w, word) in blk.iter().enumerate() {
            let mut x = *word;
            while x != 0 {
                got.push(w as u32 * 64 + x.trailing_zeros());
                x &= x - 1;
            }
        }
        assert_eq!(got, want, "fill_block {b}");
    }
    for probe in probes.iter().take(4) {
        let b = probe >> 16;
        let want = blocks.iter().copied().find(|x| *x >= b);
        assert_eq!(c.next_block(b), want, "next_block {b}");
        if !blocks.contains(&b) {
            c.fill_block(b, &mut blk);
            assert!(blk.iter().all(|w| *w == 0), "fill_block of an absent block");
        }
    }
    let mut c = p.cursor();
    assert_eq!(count_in(&mut c, 0, u32::MAX), docs.len() as u64, "count_in");
}

/// What a section's postings say about each doc (from the postings themselves).
struct DocFacts {
    state: Vec<Option<u8>>,
    spider: Vec<Vec<u32>>,
    tags: Vec<Vec<Vec<u8>>>,
    close_reason: Vec<Option<Vec<u8>>>,
}

/// Exercise every accessor of an open segment; `probes` drive lookups.
/// Returns the number of docs visited.
pub fn exercise(seg: &IndexSegment, probes: &[u32], filters: &[Filter]) -> u64 {
    let meta = *seg.meta();
    assert!(meta.lo_seq >= 1 && meta.lo_seq <= meta.hi_seq, "open accepted an impossible range");
    let _ = seg.catalog();
    let _ = (seg.size(), seg.bytes().len(), seg.path(), seg.is_persisted());
    let projects: Vec<u32> = seg.projects().collect();
    assert!(projects.windows(2).all(|w| w[0] < w[1]), "projects not ascending");
    // Open checks bounds and checksums, not orders (`jobq check` does): a resealed
    // file may open with its docs or keys out of order. Then lookups may answer
    // wrong but must not panic, and only that is checked.
    let ordered = seg.verify_order().is_ok();
    let mut total = 0u64;
    for (i, p) in projects.iter().enumerate() {
        assert_eq!(seg.section_index(*p), Some(i));
        let sec = seg.section(*p).expect("listed project has a section");
        assert_eq!(sec.project(), *p);
        total += u64::from(sec.len());
        exercise_section(&sec, probes, filters, ordered);
    }
    assert_eq!(total, meta.docs, "open accepted a doc count that does not match");
    for x in probes.iter().take(4) {
        if !projects.contains(x) {
            assert!(seg.section(*x).is_none());
        }
    }
    total
}

fn exercise_section(sec: &Section<'_>, probes: &[u32], filters: &[Filter], ordered: bool) {
    let n = sec.len();
    assert!(!sec.is_empty(), "open accepted an empty section");
    // Columns, order and key lookups (bounded work per input).
    let visit = n.min(5000);
    for doc in 0..visit {
        let (ts, seq, local, _loc) = (sec.ts(doc), sec.seq(doc), sec.local(doc), sec.loc(doc));
        if !ordered {
            let _ = (sec.find(local), sec.first_older_than(ts, seq), sec.first_ts_below(ts));
            let _ = (sec.by_key(doc), sec.key_rank(sec.sorted_key(doc)));
            continue;
        }
        if doc > 0 {
            assert!((ts, seq) < (sec.ts(doc - 1), sec.seq(doc - 1)), "docs not in listing order");
        }
        assert_eq!(sec.find(local), Some(doc), "find(local(doc)) != doc");
        // The docs before it are strictly newer: a doc's own key gives the doc.
        assert_eq!(sec.first_older_than(ts, seq), doc, "first_older_than of a doc's own key");
        let below = sec.first_ts_below(ts);
        assert!(below > doc && (below == n || sec.ts(below) < ts), "first_ts_below");
        let k = sec.sorted_key(doc);
        assert_eq!(sec.local(sec.by_key(doc)), k, "by_key");
        assert_eq!(sec.key_rank(k), doc, "key_rank");
    }
    for x in probes {
        let local = (u64::from(*x) << 32) | u64::from(x.rotate_left(7));
        if let Some(d) = sec.find(local) {
            assert!(!ordered || sec.local(d) == local, "find");
        }
        let r = sec.key_rank(local);
        assert!(r <= n);
        let t = u64::from(*x) % 16;
        let f = sec.first_ts_below(t);
        assert!(f <= n && (!ordered || ((f == 0 || sec.ts(f - 1) >= t) && (f == n || sec.ts(f) < t))));
        let o = sec.first_older_than(t, u64::from(*x));
        assert!(o <= n);
    }
    // Every term of every field, with its posting list; lookups by term.
    let mut facts = DocFacts {
        state: vec![None; visit as usize],
        spider: vec![Vec::new(); visit as usize],
        tags: vec![Vec::new(); visit as usize],
        close_reason: vec![None; visit as usize],
    };
    let mut prev: Option<(u8, Vec<u8>)> = None;
    for f in 0..=field::LAST {
        for (term, p) in sec.terms(f) {
            assert!((field::STATE..=field::LAST).contains(&f), "a term of unknown field {f}");
            let key = (f, term.to_vec());
            assert!(prev.as_ref().is_none_or(|q| *q < key), "terms not in dictionary order");
            prev = Some(key);
            let docs = posting_docs(&p, n);
            let found = sec.term(f, term).expect("a listed term is found");
            assert_eq!(found.docs(), docs, "term() returned another posting");
            check_cursor(&p, &docs, &probes[..probes.len().min(12)]);
            for d in docs.iter().copied().filter(|d| *d < visit) {
                let d = d as usize;
                match f {
                    field::STATE if term.len() == 1 => facts.state[d] = Some(term[0]),
                    field::SPIDER => facts.spider[d].push(u32::from_le_bytes(term.try_into().unwrap_or([0; 4]))),
                    field::TAG => facts.tags[d].push(term.to_vec()),
                    field::CLOSE_REASON => facts.close_reason[d] = Some(term.to_vec()),
                    _ => {}
                }
            }
        }
    }
    for s in JobState::ALL {
        let _ = sec.state(s).map(|p| p.len());
    }
    for x in probes.iter().take(6) {
        let _ = sec.spider(*x).map(|p| p.docs());
        let _ = sec.tag(TAGS[*x as usize % TAGS.len()]).map(|p| p.len());
        let _ = sec.unique(["u", "v", "ü"][*x as usize % 3]).map(|p| p.len());
        let _ = sec.term((*x % 8) as u8, &x.to_le_bytes());
    }
    // The planner and executor over this section, against a naive evaluation
    // from the section's own postings.
    if n <= 5000 {
        let mut dead = DeadSet::new();
        for x in probes.iter().skip(1).step_by(3) {
            dead.insert(x % n);
        }
        for (fi, f) in filters.iter().enumerate() {
            let spider = probes.get(fi).map(|x| x % 300 + 1);
            let r = Resolved {
                filter: f,
                spider: if f.spider.is_some() { spider } else { None },
                nothing: false,
                stop: probes.get(fi + 1).filter(|x| *x % 2 == 0).map(|x| (u64::from(*x % 10), u64::from(*x))),
                after: probes.get(fi + 2).filter(|x| *x % 3 == 0).map(|x| (u64::from(*x % 10), u64::from(*x))),
            };
            let naive: Vec<DocId> = (0..n).filter(|d| naive_match(sec, *d, &r, &facts, &dead)).collect();
            let planned = r.plan(sec, &dead);
            let (count, listed) = match planned {
                None => (0, Vec::new()),
                Some((set, lo, hi)) => {
                    let mut src = [Source::Section { set, sec: *sec, lo, hi }];
                    let c = exec::count(&mut src);
                    let r2 = r.plan(sec, &dead).expect("planned once");
                    let mut src = [Source::Section { set: r2.0, sec: *sec, lo: r2.1, hi: r2.2 }];
                    let start = probes.get(fi + 2).map_or(0, |x| u64::from(*x % 8));
                    let count = probes.get(fi + 3).map_or(1000, |x| u64::from(*x % 50));
                    let hits = exec::list(&mut src, start, count);
                    let want: Vec<u64> = naive.iter().skip(start as usize).take(count as usize).map(|d| sec.local(*d)).collect();
                    let got: Vec<u64> = hits.iter().map(|h| h.local).collect();
                    if ordered {
                        assert_eq!(got, want, "list over the section disagrees with the naive filter {f:?} start {start} count {count}");
                    }
                    (c, got)
                }
            };
            let _ = listed;
            if ordered {
                assert_eq!(count, naive.len() as u64, "count over the section disagrees with the naive filter {f:?}");
            }
        }
    }
}

fn naive_match(sec: &Section<'_>, d: DocId, r: &Resolved<'_>, facts: &DocFacts, dead: &DeadSet) -> bool {
    let f = r.filter;
    let i = d as usize;
    let ts = sec.ts(d);
    let all_states = JobState::ALL.iter().all(|s| f.states.contains(s));
    !dead.contains(d)
        && (f.states.is_empty() || all_states || facts.state[i].is_some_and(|c| f.states.iter().any(|s| s.code() == c)))
        && r.spider.is_none_or(|id| facts.spider[i].contains(&id))
        && f.startts.is_none_or(|t| ts >= t)
        && f.endts.is_none_or(|t| ts < t)
        && r.stop.is_none_or(|k| (ts, sec.seq(d)) > k)
        && r.after.is_none_or(|k| (ts, sec.seq(d)) < k)
        && (f.has_tags.is_empty() || f.has_tags.iter().any(|t| facts.tags[i].iter().any(|x| x == t.as_bytes())))
        && f.has_tags_all.iter().all(|t| facts.tags[i].iter().any(|x| x == t.as_bytes()))
        && !f.lacks_tags.iter().any(|t| facts.tags[i].iter().any(|x| x == t.as_bytes()))
        && (f.close_reasons.is_empty()
            || facts.close_reason[i].as_ref().is_some_and(|c| f.close_reasons.iter().any(|r| r.as_bytes() == c)))
}

/// A filter in the small domains of [`ArbDoc`].
pub fn arb_filter(u: &mut Unstructured<'_>) -> Result<Filter> {
    let mut f = Filter::default();
    if u.ratio(1, 4)? {
        f.spider = Some("any".into());
    }
    for s in JobState::ALL {
        if u.ratio(1, 3)? {
            f.states.push(s);
        }
    }
    if u.ratio(1, 4)? {
        f.startts = Some(u.int_in_range(0..=9)?);
    }
    if u.ratio(1, 4)? {
        f.endts = Some(u.int_in_range(0..=10)?);
    }
    for _ in 0..u.int_in_range(0..=2)? {
        f.has_tags.push(u.choose(&TAGS)?.to_string());
    }
    for _ in 0..u.int_in_range(0..=1)? {
        f.lacks_tags.push(u.choose(&TAGS)?.to_string());
    }
    for _ in 0..u.int_in_range(0..=1)? {
        f.has_tags_all.push(u.choose(&TAGS)?.to_string());
    }
    for _ in 0..u.int_in_range(0..=1)? {
        f.close_reasons.push(u.choose(&REASONS)?.to_string());
    }
    Ok(f)
}

/// Compare a segment built from `built` with what went in.
pub fn check_against_docs(seg: &IndexSegment, built: &Built) {
    assert_eq!(seg.meta().lo_seq, built.meta.lo_seq);
    assert_eq!(seg.meta().hi_seq, built.meta.hi_seq);
    assert_eq!(seg.meta().docs, built.docs.len() as u64);
    assert_eq!(seg.catalog(), built.catalog, "catalog round trip");
    let mut by_project: BTreeMap<u32, Vec<&DocEntry>> = BTreeMap::new();
    for d in &built.docs {
        by_project.entry(d.project).or_default().push(d);
    }
    assert_eq!(seg.projects().collect::<Vec<_>>(), by_project.keys().copied().collect::<Vec<_>>());
    for (p, docs) in by_project {
        let sec = seg.section(p).expect("a section per project");
        assert_eq!(sec.len() as usize, docs.len());
        for d in docs {
            let doc = sec.find(d.local).expect("every doc is found by its key");
            assert_eq!((sec.ts(doc), sec.seq(doc), sec.loc(doc)), (d.ts, d.order_seq, d.loc), "columns of {d:?}");
            assert!(sec.state(d.state).expect("state posting").contains(doc), "state posting of {d:?}");
            for s in JobState::ALL {
                if s != d.state {
                    assert!(!sec.state(s).is_some_and(|p| p.contains(doc)), "doc in another state's posting");
                }
            }
            assert!(sec.spider((d.local >> 32) as u32).expect("spider posting").contains(doc));
            assert!(sec.term(field::PRIORITY, &d.priority.to_le_bytes()).expect("priority posting").contains(doc));
            for t in d.tags.iter() {
                assert!(sec.tag(t).expect("tag posting").contains(doc), "tag {t:?} of {d:?}");
            }
            match &d.unique {
                Some(u) if d.state.is_active() => assert!(sec.unique(u).expect("unique posting").contains(doc)),
                Some(u) => assert!(!sec.unique(u).is_some_and(|p| p.contains(doc)), "inactive doc posted by unique"),
                None => {}
            }
        }
    }
}
