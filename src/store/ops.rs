//! The write operations, run under the writer lock: each turns its request into
//! new job versions, appends them as one frame, and applies them.

use std::collections::HashSet;

use serde_json::value::RawValue;

use super::request::{Changes, PushSpec, Target, UpdateSpec, MAX_TAGS};
use super::staged::{Batch, Staged};
use super::version::SegmentSlot;
use super::writer::Writer;
use crate::codec::docz::{self, Dicts, Prepacked};
use crate::codec::record::Prev;
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::model::doc::write_json_str;
use crate::model::{Job, JobKey, JobState, MetaDoc, Millis, SpiderKey};
use crate::query::docset::{last_in, DocSet};
use crate::query::ops::{Exclusion, Intersection};

/// Who writes and when.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub now: Millis,
    /// The name behind the API key, for `*_by` fields.
    pub actor: Option<&'a str>,
    pub durable_seq: u64,
}

/// What one push line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushResult {
    Pushed {
        key: JobKey,
        auth: Option<String>,
    },
    /// An active job already holds the line's `unique`.
    Conflict {
        unique: String,
    },
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).expect("built as valid JSON")
}

fn json_str(s: &str) -> Box<RawValue> {
    let mut out = Vec::new();
    write_json_str(&mut out, s);
    raw(String::from_utf8(out).expect("JSON is UTF-8"))
}

/// A fresh job token: 128 bits from a keyed hash seeded by the OS.
pub fn new_token(key: JobKey, now: Millis) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(key.local());
        h.write_u32(key.project);
        h.write_u64(now);
        h.write_u64(n);
        h.write_usize(i);
        *p = h.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// Apply a state change and field changes to a staged job. Removals come first,
/// then the client's fields, then the service's (`*_by`, `auth`).
pub(crate) fn apply_changes(st: &mut Staged, state: Option<JobState>, c: &Changes, ctx: &Ctx<'_>) -> Result<()> {
    for name in &c.remove {
        st.remove_field(name);
    }
    for (name, value) in &c.set {
        st.set_field(name, value.clone(), true);
    }
    if let Some(s) = state.filter(|s| *s != st.job.state) {
        st.job.state = s;
        st.job.times[s as usize] = Some(ctx.now);
        st.moved = true;
        st.changed = true;
        if let Some(a) = ctx.actor {
            st.set_field(s.actor_field(), json_str(a), false);
        }
        // Every run gets a new token: the previous run's one stays dead.
        if s == JobState::Running {
            let token_raw = json_str(&new_token(st.job.key, ctx.now));
            st.set_field("auth", token_raw, false);
        }
    }
    if let Some(p) = c.priority.filter(|p| *p != st.job.priority) {
        st.job.priority = p;
        st.changed = true;
    }
    if c.tags.is_some() || !c.add_tags.is_empty() || !c.remove_tags.is_empty() {
        st.edit_tags(c.tags.as_deref(), &c.add_tags, &c.remove_tags);
    }
    if st.tag_count() > MAX_TAGS {
        return Err(Error::field("tags", format!("job {} would have more than {MAX_TAGS} tags", st.job.key)));
    }
    Ok(())
}

/// A push line's document built before the writer lock, and packed there with
/// the store's newest dictionary: a line's document is final before the lock
/// unless the job starts running (its token needs its key).
pub(crate) struct PushDoc {
    meta: MetaDoc,
    pre: Option<Prepacked>,
}

/// The documents of `specs` that [`push`] can take ready-made (see [`PushDoc`]);
/// `actor` must be the one the push runs with.
pub(crate) fn push_docs(specs: &[PushSpec], actor: Option<&str>, dicts: &Dicts) -> Vec<Option<PushDoc>> {
    let dict = dicts.latest();
    let actor = actor.map(json_str);
    let doc = |s: &PushSpec| {
        let meta = push_doc(s, actor.as_deref(), None);
        let pre = dict.as_ref().and_then(|d| docz::prepack(d, meta.as_str().as_bytes()));
        PushDoc { meta, pre }
    };
    specs.iter().map(|s| (s.state != JobState::Running).then(|| doc(s))).collect()
}

/// A push line's document: its fields, then the service's (`*_by`, `auth`).
fn push_doc(s: &PushSpec, actor: Option<&RawValue>, token: Option<&RawValue>) -> MetaDoc {
    let mut fields: Vec<(&str, &RawValue)> = s.meta.iter().map(|(n, v)| (n.as_str(), &**v)).collect();
    if let Some(a) = actor {
        fields.push((s.state.actor_field(), a));
    }
    if let Some(t) = token {
        fields.push(("auth", t));
    }
    MetaDoc::from_fields(fields)
}

/// Push `specs`; `docs` are [`push_docs`] of them, or empty.
pub(crate) fn push(
    w: &mut Writer,
    project: u32,
    specs: &[PushSpec],
    docs: Vec<Option<PushDoc>>,
    ctx: &Ctx<'_>,
) -> Result<Vec<PushResult>> {
    // Ids past the last are refused before a new spider's frame is written.
    let mut wanted: FastMap<&str, u64> = FastMap::default();
    for s in specs {
        *wanted.entry(s.spider.as_str()).or_default() += 1;
    }
    let known: Vec<(u32, u64)> = wanted.iter().filter_map(|(n, k)| Some((w.catalog.id(project, n)?, *k))).collect();
    w.check_ids_left(project, (wanted.len() - known.len()) as u64, &known)?;
    let mut ids = Vec::with_capacity(specs.len());
    for s in specs {
        ids.push(w.spider_id(project, &s.spider, ctx.durable_seq)?);
    }
    let first = w.next_seq;
    let mut jobs: Vec<Job> = Vec::with_capacity(specs.len());
    let mut pre = Vec::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    let mut held: HashSet<&str> = HashSet::new();
    let actor = ctx.actor.map(json_str);
    let mut docs = docs.into_iter();
    for (s, spider) in specs.iter().zip(ids) {
        let ready = docs.next().flatten();
        if let Some(u) = &s.unique {
            // An active job holds `u`: one stored before, or an earlier line of this push.
            if held.contains(u.as_str()) || w.unique_holder(project, u).is_some() {
                out.push(PushResult::Conflict { unique: u.clone() });
                continue;
            }
            if s.state.is_active() {
                held.insert(u);
            }
        }
        let job_id = w.job_ids.next(project, spider);
        let key = JobKey::new(project, spider, job_id);
        w.job_ids.note(project, spider, job_id);
        let mut times = [None; 4];
        times[s.state as usize] = Some(ctx.now);
        let token = (s.state == JobState::Running).then(|| new_token(key, ctx.now));
        let (meta, packed) = match ready {
            Some(d) => (d.meta, d.pre),
            None => (push_doc(s, actor.as_deref(), token.as_deref().map(json_str).as_deref()), None),
        };
        pre.push(packed);
        jobs.push(Job {
            key,
            state: s.state,
            priority: s.priority,
            times,
            order_seq: first + jobs.len() as u64,
            tags: s.tags.clone(),
            unique: s.unique.clone(),
            meta,
        });
        out.push(PushResult::Pushed { key, auth: token });
    }
    w.append_prepacked(&jobs, &vec![Prev::Created; jobs.len()], &pre, 0, ctx.durable_seq)?;
    Ok(out)
}

/// Keys of the current, not deleted, jobs of a spider.
pub(crate) fn spider_jobs(w: &Writer, s: SpiderKey) -> Vec<JobKey> {
    let mut keys: Vec<JobKey> = Vec::new();
    let v = w.version();
    if let Some(p) = v.mem.project(s.project) {
        keys.extend(
            p.iter()
                .filter(|e| {
                    (e.local >> 32) as u32 == s.spider && !matches!(e.state, JobState::Deleted | JobState::Purged)
                })
                .map(|e| JobKey::from_local(s.project, e.local)),
        );
    }
    for slot in v.segments.iter() {
        let Some((sec, dead)) = slot.project(s.project) else {
            continue;
        };
        let Some(posting) = sec.spider(s.spider) else {
            continue;
        };
        let mut set: Box<dyn DocSet> = Box::new(Exclusion::new(Box::new(posting.cursor()), Box::new(dead.cursor())));
        for gone in [JobState::Deleted, JobState::Purged].into_iter().filter_map(|st| sec.state(st)) {
            set = Box::new(Exclusion::new(set, Box::new(gone.cursor())));
        }
        while set.doc() != crate::query::docset::TERMINATED {
            keys.push(JobKey::from_local(s.project, sec.local(set.doc())));
            set.advance();
        }
    }
    keys.sort_unstable();
    keys
}

pub(crate) fn update(w: &mut Writer, specs: &[UpdateSpec], ctx: &Ctx<'_>) -> Result<Vec<(JobKey, JobState)>> {
    let mut batch = Batch::default();
    let mut out = Vec::new();
    for spec in specs {
        let (keys, whole_spider) = match spec.target {
            Target::Job(k) => (vec![k], false),
            Target::Spider(s) => (spider_jobs(w, s), true),
        };
        for key in keys {
            if whole_spider && batch.get(w, key)?.is_some_and(|st| st.job.state == JobState::Deleted) {
                continue;
            }
            if let Some(prev) = batch.change(w, key, |st| apply_changes(st, spec.state, &spec.changes, ctx))? {
                out.push((key, prev));
            }
        }
    }
    batch.write(w, ctx.durable_seq)?;
    Ok(out)
}

/// A pending job's claim to run next: the largest wins (priority, then oldest).
type Candidate = (i64, std::cmp::Reverse<(u64, u64)>, JobKey);

/// The next pending job of a project but those of `skip`: highest priority, then oldest.
fn next_pending(w: &Writer, project: u32, skip: &[JobKey]) -> Option<JobKey> {
    let mut best: Option<Candidate> = None;
    let mut offer = |c: Candidate| {
        if best.as_ref().is_none_or(|b| (c.0, c.1) > (b.0, b.1)) {
            best = Some(c);
        }
    };
    let v = w.version();
    if let Some(p) = v.mem.project(project) {
        for e in p.iter().filter(|e| e.state == JobState::Pending) {
            let key = JobKey::from_local(project, e.local);
            if !skip.contains(&key) {
                offer((e.priority, std::cmp::Reverse((e.ts, e.order_seq)), key));
            }
        }
    }
    for slot in v.segments.iter() {
        if let Some(c) = oldest_pending(slot, project, skip) {
            offer(c);
        }
    }
    best.map(|b| b.2)
}

fn oldest_pending(slot: &SegmentSlot, project: u32, skip: &[JobKey]) -> Option<Candidate> {
    let (sec, dead) = slot.project(project)?;
    let pending = sec.state(JobState::Pending)?;
    let mut prios: Vec<(i64, crate::index::posting::Posting<'_>)> = sec
        .terms(crate::index::format::field::PRIORITY)
        .filter_map(|(t, p)| Some((i64::from_le_bytes(t.try_into().ok()?), p)))
        .collect();
    prios.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    for (prio, posting) in prios {
        // The oldest live doc of the range, then older ones while skipped.
        let mut hi = sec.len();
        loop {
            let both = Intersection::new(vec![Box::new(pending.cursor()), Box::new(posting.cursor())]);
            let mut live = Exclusion::new(Box::new(both), Box::new(dead.cursor()));
            let Some(doc) = last_in(&mut live, 0, hi) else { break };
            let key = JobKey::from_local(project, sec.local(doc));
            if !skip.contains(&key) {
                return Some((prio, std::cmp::Reverse((sec.ts(doc), sec.seq(doc))), key));
            }
            hi = doc;
        }
    }
    None
}

/// Pending jobs a start may pass over because they cannot take the start's
/// fields (one at its metadata limits); past that many, the start is refused.
const MAX_PASSED: usize = 16;

/// Start the next pending job with `changes`. A job that cannot take them (its
/// metadata at the limits) stays pending and the next one starts: one such job
/// does not hold up a project's queue.
pub(crate) fn start_next(w: &mut Writer, project: u32, changes: &Changes, ctx: &Ctx<'_>) -> Result<Option<Job>> {
    let (mut passed, mut refused) = (Vec::new(), None);
    loop {
        let Some(key) = next_pending(w, project, &passed) else {
            // No job could take them: why the first could not.
            return refused.map_or(Ok(None), Err);
        };
        let mut batch = Batch::default();
        if batch.change(w, key, |st| apply_changes(st, Some(JobState::Running), changes, ctx))?.is_none() {
            return Err(Error::corrupt(w.gen_dir.clone(), 0, format!("the indexed pending job {key} has no record")));
        }
        let before = w.next_seq;
        match batch.write(w, ctx.durable_seq) {
            Ok(mut started) => return Ok(started.pop()),
            // Refused before anything was written: the next job.
            Err(e) if e.is_input() && w.next_seq == before && passed.len() < MAX_PASSED => {
                passed.push(key);
                refused.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Cancel jobs: a pending job finishes as cancelled, a running one is marked.
/// Returns how many distinct jobs were pending or running.
pub(crate) fn cancel(w: &mut Writer, keys: &[JobKey], ctx: &Ctx<'_>) -> Result<u64> {
    let mut batch = Batch::default();
    let mut counted: HashSet<JobKey> = HashSet::new();
    let by = json_str(ctx.actor.unwrap_or("jobq"));
    let at = raw(ctx.now.to_string());
    let cancelled = json_str("cancelled");
    for &key in keys {
        // The marks are the service's, set before the state's own fields.
        let mark = |st: &mut Staged, close: bool| {
            st.set_field("cancelled_by", by.clone(), false);
            st.set_field("cancel_time", at.clone(), false);
            if close {
                st.set_field("close_reason", cancelled.clone(), false);
            }
        };
        batch.change(w, key, |st| match st.job.state {
            JobState::Pending => {
                counted.insert(key);
                mark(st, true);
                apply_changes(st, Some(JobState::Finished), &Changes::default(), ctx)
            }
            JobState::Running => {
                counted.insert(key);
                mark(st, false);
                Ok(())
            }
            _ => Ok(()),
        })?;
    }
    batch.write(w, ctx.durable_seq)?;
    Ok(counted.len() as u64)
}

/// Apply field changes to one job; false when the job does not exist.
pub(crate) fn edit(w: &mut Writer, key: JobKey, changes: &Changes, ctx: &Ctx<'_>) -> Result<bool> {
    let mut batch = Batch::default();
    if batch.change(w, key, |st| apply_changes(st, None, changes, ctx))?.is_none() {
        return Ok(false);
    }
    batch.write(w, ctx.durable_seq)?;
    Ok(true)
}
