//! The write operations, run under the writer lock: each turns its request into
//! new job versions, appends them as one frame, and applies them.

use std::collections::{HashMap, HashSet};

use serde_json::value::RawValue;

use super::request::{Changes, PushSpec, Target, UpdateSpec, MAX_TAGS};
use super::version::SegmentSlot;
use super::writer::Writer;
use crate::error::{Error, Result};
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

/// Apply a state change and field changes to a job; returns the new version and
/// whether it entered a new state (then its `order_seq` must be set by the caller).
pub fn apply_changes(job: &Job, state: Option<JobState>, c: &Changes, ctx: &Ctx<'_>) -> Result<(Job, bool)> {
    let mut j = job.clone();
    let mut set: Vec<(&str, &RawValue)> = c.set.iter().map(|(n, v)| (n.as_str(), &**v)).collect();
    let remove: Vec<&str> = c.remove.iter().map(String::as_str).collect();
    let mut moved = false;
    let actor_raw;
    let token_raw;
    if let Some(s) = state.filter(|s| *s != job.state) {
        j.state = s;
        j.times[s as usize] = Some(ctx.now);
        moved = true;
        if let Some(a) = ctx.actor {
            actor_raw = json_str(a);
            set.push((s.actor_field(), &actor_raw));
        }
        // Every run gets a new token: the previous run's one stays dead.
        if s == JobState::Running {
            token_raw = json_str(&new_token(job.key, ctx.now));
            set.push(("auth", &token_raw));
        }
    }
    if let Some(p) = c.priority {
        j.priority = p;
    }
    if let Some(t) = &c.tags {
        j.tags = t.clone();
    }
    for t in &c.add_tags {
        if !j.tags.contains(t) {
            j.tags.push(t.clone());
        }
    }
    j.tags.retain(|t| !c.remove_tags.contains(t));
    if j.tags.len() > MAX_TAGS {
        return Err(Error::field("tags", format!("a job has at most {MAX_TAGS} tags")));
    }
    if !set.is_empty() || !remove.is_empty() {
        j.meta = j.meta.merged(&set, &remove);
    }
    Ok((j, moved))
}

/// Staged versions of one write, in first-touch order.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    moved: Vec<bool>,
    at: HashMap<JobKey, usize>,
}

impl Batch {
    fn current(&self, w: &Writer, key: JobKey) -> Result<Option<Job>> {
        match self.at.get(&key) {
            Some(&i) => Ok(Some(self.jobs[i].clone())),
            None => w.load(key),
        }
    }

    fn stage(&mut self, job: Job, moved: bool) {
        match self.at.get(&job.key) {
            Some(&i) => {
                self.moved[i] |= moved;
                self.jobs[i] = job;
            }
            None => {
                self.at.insert(job.key, self.jobs.len());
                self.jobs.push(job);
                self.moved.push(moved);
            }
        }
    }

    /// Give jobs that entered a state their record's sequence number, and write.
    fn write(mut self, w: &mut Writer, ctx: &Ctx<'_>) -> Result<Vec<Job>> {
        let first = w.next_seq;
        for (i, j) in self.jobs.iter_mut().enumerate() {
            if self.moved[i] {
                j.order_seq = first + i as u64;
            }
        }
        w.append_jobs(&self.jobs, 0, ctx.durable_seq)?;
        Ok(self.jobs)
    }
}

pub(crate) fn push(w: &mut Writer, project: u32, specs: &[PushSpec], ctx: &Ctx<'_>) -> Result<Vec<PushResult>> {
    let mut ids = Vec::with_capacity(specs.len());
    for s in specs {
        ids.push(w.spider_id(project, &s.spider, ctx.durable_seq)?);
    }
    let first = w.next_seq;
    let mut jobs: Vec<Job> = Vec::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    let mut held: HashSet<&str> = HashSet::new();
    for (s, spider) in specs.iter().zip(ids) {
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
        let mut fields: Vec<(&str, &RawValue)> = s.meta.iter().map(|(n, v)| (n.as_str(), &**v)).collect();
        let actor = ctx.actor.map(json_str);
        if let Some(a) = &actor {
            fields.push((s.state.actor_field(), a));
        }
        let token = (s.state == JobState::Running).then(|| new_token(key, ctx.now));
        let token_raw = token.as_deref().map(json_str);
        if let Some(t) = &token_raw {
            fields.push(("auth", t));
        }
        jobs.push(Job {
            key,
            state: s.state,
            priority: s.priority,
            times,
            order_seq: first + jobs.len() as u64,
            tags: s.tags.clone(),
            unique: s.unique.clone(),
            meta: MetaDoc::from_fields(fields),
        });
        out.push(PushResult::Pushed { key, auth: token });
    }
    w.append_jobs(&jobs, 0, ctx.durable_seq)?;
    Ok(out)
}

/// Keys of the current, not deleted, jobs of a spider.
pub(crate) fn spider_jobs(w: &Writer, s: SpiderKey) -> Vec<JobKey> {
    let mut keys: Vec<JobKey> = Vec::new();
    let v = w.version();
    if let Some(p) = v.mem.project(s.project) {
        keys.extend(
            p.iter()
                .filter(|e| (e.local >> 32) as u32 == s.spider && e.state != JobState::Deleted)
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
        if let Some(del) = sec.state(JobState::Deleted) {
            set = Box::new(Exclusion::new(set, Box::new(del.cursor())));
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
            let Some(cur) = batch.current(w, key)? else {
                continue;
            };
            if whole_spider && cur.state == JobState::Deleted {
                continue;
            }
            let (new, moved) = apply_changes(&cur, spec.state, &spec.changes, ctx)?;
            out.push((key, cur.state));
            if new != cur {
                batch.stage(new, moved);
            }
        }
    }
    batch.write(w, ctx)?;
    Ok(out)
}

/// A pending job's claim to run next: the largest wins (priority, then oldest).
type Candidate = (i64, std::cmp::Reverse<(u64, u64)>, JobKey);

/// The next pending job of a project: highest priority, then oldest.
fn next_pending(w: &Writer, project: u32) -> Option<JobKey> {
    let mut best: Option<Candidate> = None;
    let mut offer = |c: Candidate| {
        if best.as_ref().is_none_or(|b| (c.0, c.1) > (b.0, b.1)) {
            best = Some(c);
        }
    };
    let v = w.version();
    if let Some(p) = v.mem.project(project) {
        for e in p.iter().filter(|e| e.state == JobState::Pending) {
            offer((e.priority, std::cmp::Reverse((e.ts, e.order_seq)), JobKey::from_local(project, e.local)));
        }
    }
    for slot in v.segments.iter() {
        if let Some(c) = oldest_pending(slot, project) {
            offer(c);
        }
    }
    best.map(|b| b.2)
}

fn oldest_pending(slot: &SegmentSlot, project: u32) -> Option<Candidate> {
    let (sec, dead) = slot.project(project)?;
    let pending = sec.state(JobState::Pending)?;
    let mut prios: Vec<(i64, crate::index::posting::Posting<'_>)> = sec
        .terms(crate::index::format::field::PRIORITY)
        .filter_map(|(t, p)| Some((i64::from_le_bytes(t.try_into().ok()?), p)))
        .collect();
    prios.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    for (prio, posting) in prios {
        let both = Intersection::new(vec![Box::new(pending.cursor()), Box::new(posting.cursor())]);
        let mut live = Exclusion::new(Box::new(both), Box::new(dead.cursor()));
        if let Some(doc) = last_in(&mut live, 0, sec.len()) {
            let key = JobKey::from_local(project, sec.local(doc));
            return Some((prio, std::cmp::Reverse((sec.ts(doc), sec.seq(doc))), key));
        }
    }
    None
}

pub(crate) fn start_next(w: &mut Writer, project: u32, changes: &Changes, ctx: &Ctx<'_>) -> Result<Option<Job>> {
    let Some(key) = next_pending(w, project) else {
        return Ok(None);
    };
    let cur = w.load(key)?.expect("an indexed job has a record");
    let (new, moved) = apply_changes(&cur, Some(JobState::Running), changes, ctx)?;
    let mut batch = Batch::default();
    batch.stage(new, moved);
    Ok(batch.write(w, ctx)?.pop())
}

pub(crate) fn cancel(w: &mut Writer, keys: &[JobKey], ctx: &Ctx<'_>) -> Result<u64> {
    let mut batch = Batch::default();
    let mut count = 0;
    let by = json_str(ctx.actor.unwrap_or("jobq"));
    let at = raw(ctx.now.to_string());
    let cancelled = json_str("cancelled");
    for &key in keys {
        let Some(cur) = batch.current(w, key)? else {
            continue;
        };
        let marks = Changes {
            set: vec![("cancelled_by".into(), by.clone()), ("cancel_time".into(), at.clone())],
            ..Changes::default()
        };
        let (new, moved) = match cur.state {
            JobState::Pending => {
                let mut c = marks;
                c.set.push(("close_reason".into(), cancelled.clone()));
                apply_changes(&cur, Some(JobState::Finished), &c, ctx)?
            }
            JobState::Running => apply_changes(&cur, None, &marks, ctx)?,
            _ => continue,
        };
        count += 1;
        batch.stage(new, moved);
    }
    batch.write(w, ctx)?;
    Ok(count)
}

/// Apply field changes to one job; false when the job does not exist.
pub(crate) fn edit(w: &mut Writer, key: JobKey, changes: &Changes, ctx: &Ctx<'_>) -> Result<bool> {
    let Some(cur) = w.load(key)? else {
        return Ok(false);
    };
    let (new, moved) = apply_changes(&cur, None, changes, ctx)?;
    if new != cur {
        let mut batch = Batch::default();
        batch.stage(new, moved);
        batch.write(w, ctx)?;
    }
    Ok(true)
}
