//! Reading index files back into entries, to merge several into one: per doc, the
//! state, priority, tags, `unique` and `close_reason` are recovered by inverting
//! the postings.

use std::sync::Arc;

use super::format::field;
use super::{DeadSet, DocEntry, Section};
use crate::model::JobState;

/// Append the live docs of a section as entries.
pub fn live_entries(sec: &Section<'_>, dead: &DeadSet, out: &mut Vec<DocEntry>) {
    let n = sec.len() as usize;
    let mut state = vec![JobState::Pending; n];
    let mut priority = vec![0i64; n];
    let mut tags: Vec<Vec<Arc<str>>> = vec![Vec::new(); n];
    let mut unique: Vec<Option<Arc<str>>> = vec![None; n];
    let mut close_reason: Vec<Option<Arc<str>>> = vec![None; n];
    let mut token: Vec<Option<Arc<str>>> = vec![None; n];
    for (t, p) in sec.terms(field::STATE) {
        let s = JobState::from_code(t[0]).unwrap_or(JobState::Pending);
        for d in p.docs() {
            state[d as usize] = s;
        }
    }
    for (t, p) in sec.terms(field::PRIORITY) {
        let v = t.try_into().map(i64::from_le_bytes).unwrap_or(0);
        for d in p.docs() {
            priority[d as usize] = v;
        }
    }
    for (t, p) in sec.terms(field::TAG) {
        let tag: Arc<str> = Arc::from(String::from_utf8_lossy(t).as_ref());
        for d in p.docs() {
            tags[d as usize].push(tag.clone());
        }
    }
    for (t, p) in sec.terms(field::UNIQUE) {
        let u: Arc<str> = Arc::from(String::from_utf8_lossy(t).as_ref());
        for d in p.docs() {
            unique[d as usize] = Some(u.clone());
        }
    }
    for (t, p) in sec.terms(field::CLOSE_REASON) {
        let c: Arc<str> = Arc::from(String::from_utf8_lossy(t).as_ref());
        for d in p.docs() {
            close_reason[d as usize] = Some(c.clone());
        }
    }
    for (t, p) in sec.terms(field::TOKEN) {
        let k: Arc<str> = Arc::from(String::from_utf8_lossy(t).as_ref());
        for d in p.docs() {
            token[d as usize] = Some(k.clone());
        }
    }
    out.reserve(n);
    for d in 0..n {
        if dead.contains(d as u32) {
            continue;
        }
        out.push(DocEntry {
            project: sec.project(),
            local: sec.local(d as u32),
            ts: sec.ts(d as u32),
            order_seq: sec.seq(d as u32),
            state: state[d],
            priority: priority[d],
            tags: std::mem::take(&mut tags[d]).into(),
            unique: unique[d].take(),
            close_reason: close_reason[d].take(),
            token: token[d].take(),
            loc: sec.loc(d as u32),
        });
    }
}
