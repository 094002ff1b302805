//! Reading index files back into entries, to merge several into one: per doc, the
//! state, priority, tags, `unique` and `close_reason` are recovered by inverting
//! the postings. A section is read a range of docs at a time, so that memory holds
//! one range's entries, never a whole file's.

use std::sync::Arc;

use super::format::field;
use super::{DeadSet, DocEntry, Section};
use crate::model::JobState;
use crate::query::docset::{DocId, DocSet, TERMINATED};

/// Docs read back at once by [`for_live_entries`].
pub const CHUNK_DOCS: u32 = 1 << 16;

/// Append the live docs of a section as entries.
pub fn live_entries(sec: &Section<'_>, dead: &DeadSet, out: &mut Vec<DocEntry>) {
    entries_in(sec, dead, 0, sec.len(), out);
}

/// Hand the live docs of a section to `sink` as entries, in doc order (listing
/// order), at most `chunk` docs at a time.
pub fn for_live_entries<E>(
    sec: &Section<'_>,
    dead: &DeadSet,
    chunk: u32,
    sink: &mut dyn FnMut(Vec<DocEntry>) -> Result<(), E>,
) -> Result<(), E> {
    let chunk = chunk.max(1);
    let mut lo = 0;
    while lo < sec.len() {
        let hi = sec.len().min(lo.saturating_add(chunk));
        let mut out = Vec::new();
        entries_in(sec, dead, lo, hi, &mut out);
        if !out.is_empty() {
            sink(out)?;
        }
        lo = hi;
    }
    Ok(())
}

/// The docs in `lo..hi` of every term of field `f`, with the term.
fn each_in<'a>(sec: &Section<'a>, f: u8, lo: DocId, hi: DocId, mut each: impl FnMut(&'a [u8], DocId)) {
    for (t, p) in sec.terms(f) {
        let mut c = p.cursor();
        let mut d = c.seek(lo);
        while d != TERMINATED && d < hi {
            each(t, d);
            d = c.advance();
        }
    }
}

/// The term as text, shared with the previous doc's when it is the same term.
fn text<'a>(last: &mut Option<(&'a [u8], Arc<str>)>, t: &'a [u8]) -> Arc<str> {
    match last {
        Some((lt, s)) if *lt == t => s.clone(),
        _ => {
            let s: Arc<str> = Arc::from(String::from_utf8_lossy(t).as_ref());
            *last = Some((t, s.clone()));
            s
        }
    }
}

/// Append the live docs in `lo..hi` of a section as entries.
fn entries_in(sec: &Section<'_>, dead: &DeadSet, lo: DocId, hi: DocId, out: &mut Vec<DocEntry>) {
    let n = hi.saturating_sub(lo) as usize;
    let at = |d: DocId| (d - lo) as usize;
    let mut state = vec![JobState::Pending; n];
    let mut priority = vec![0i64; n];
    let mut tags: Vec<Vec<Arc<str>>> = vec![Vec::new(); n];
    let mut unique: Vec<Option<Arc<str>>> = vec![None; n];
    let mut close_reason: Vec<Option<Arc<str>>> = vec![None; n];
    let mut token: Vec<Option<Arc<str>>> = vec![None; n];
    each_in(sec, field::STATE, lo, hi, |t, d| state[at(d)] = JobState::from_code(t[0]).unwrap_or(JobState::Pending));
    each_in(sec, field::PRIORITY, lo, hi, |t, d| {
        priority[at(d)] = t.try_into().map(i64::from_le_bytes).unwrap_or(0);
    });
    let mut last = None;
    each_in(sec, field::TAG, lo, hi, |t, d| tags[at(d)].push(text(&mut last, t)));
    let mut last = None;
    each_in(sec, field::UNIQUE, lo, hi, |t, d| unique[at(d)] = Some(text(&mut last, t)));
    let mut last = None;
    each_in(sec, field::CLOSE_REASON, lo, hi, |t, d| close_reason[at(d)] = Some(text(&mut last, t)));
    let mut last = None;
    each_in(sec, field::TOKEN, lo, hi, |t, d| token[at(d)] = Some(text(&mut last, t)));
    out.reserve(n);
    for d in lo..hi {
        if dead.contains(d) {
            continue;
        }
        let i = at(d);
        out.push(DocEntry {
            project: sec.project(),
            local: sec.local(d),
            ts: sec.ts(d),
            order_seq: sec.seq(d),
            state: state[i],
            priority: priority[i],
            tags: std::mem::take(&mut tags[i]).into(),
            unique: unique[i].take(),
            close_reason: close_reason[i].take(),
            token: token[i].take(),
            loc: sec.loc(d),
        });
    }
}
