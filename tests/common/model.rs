//! A naive in-memory model of a jobq store: every job in a map, every query a
//! filter over all jobs and a sort. The property tests hold the engine to it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use jobq::model::{JobKey, JobState};
use jobq::query::{Filter, Paging};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MJob {
    pub key: JobKey,
    pub state: JobState,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    /// Relative order of the write that moved the job into its state.
    pub order: u64,
    pub tags: Vec<String>,
    pub unique: Option<String>,
    /// Metadata fields in order, values as raw JSON.
    pub meta: Vec<(String, String)>,
}

impl MJob {
    pub fn ts(&self) -> u64 {
        self.times[self.state as usize].unwrap()
    }
    fn set(&mut self, name: &str, raw: &str) {
        match self.meta.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = raw.to_string(),
            None => self.meta.push((name.to_string(), raw.to_string())),
        }
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.meta.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// The `close_reason` term: a string's text, another value's JSON text; none
    /// above 1,024 bytes.
    pub fn close_reason(&self) -> Option<String> {
        let raw = self.get("close_reason")?;
        let term = if raw.starts_with('"') { serde_json::from_str::<String>(raw).unwrap() } else { raw.to_string() };
        (term.len() <= 1024).then_some(term)
    }
    fn place(&self) -> (u64, u64) {
        (self.ts(), self.order)
    }
}

/// One line of a push.
#[derive(Clone, Debug)]
pub struct MPush {
    pub spider: String,
    pub state: JobState,
    pub priority: Option<i64>,
    pub tags: Vec<String>,
    pub unique: Option<String>,
    pub field: Option<(String, String)>,
}

/// One line of an import.
#[derive(Clone, Debug)]
pub struct MImport {
    pub project: u32,
    pub spider: String,
    pub job: u32,
    pub state: JobState,
    pub ts: u64,
    pub tags: Vec<String>,
    pub priority: Option<i64>,
    pub unique: Option<String>,
    /// A `close_reason` (raw JSON) after the metadata field `x`.
    pub reason: Option<&'static str>,
}

/// One line of an update: a job key, or `(project, spider)` for every job of a
/// spider; a new state; field changes.
pub type UpdateLine = (Result<JobKey, (u32, u32)>, Option<JobState>, MChanges);

/// Field changes.
#[derive(Clone, Debug, Default)]
pub struct MChanges {
    pub priority: Option<i64>,
    pub tags: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub delete: Vec<String>,
}

#[derive(Default, Debug, Clone)]
pub struct Model {
    pub jobs: BTreeMap<JobKey, MJob>,
    spiders: HashMap<(u32, String), u32>,
    spider_names: HashMap<(u32, u32), String>,
    next_job: HashMap<(u32, u32), u32>,
    order: u64,
    /// Where the last row of each listing stood (`startafter`), by job: the
    /// store remembers the same while it stays open.
    places: RefCell<HashMap<JobKey, (u64, u64)>>,
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Model {
    pub fn spider_id(&mut self, project: u32, name: &str) -> u32 {
        if let Some(id) = self.spiders.get(&(project, name.to_string())) {
            return *id;
        }
        let id = 1 + self.spiders.keys().filter(|(p, _)| *p == project).count() as u32;
        self.spiders.insert((project, name.to_string()), id);
        self.spider_names.insert((project, id), name.to_string());
        id
    }

    pub fn spider_name(&self, project: u32, id: u32) -> &str {
        &self.spider_names[&(project, id)]
    }

    fn holder(&self, project: u32, unique: &str) -> bool {
        self.unique_holder(project, unique).is_some()
    }

    /// The active job holding `unique` (the rule allows at most one).
    pub fn unique_holder(&self, project: u32, unique: &str) -> Option<JobKey> {
        let holders: Vec<JobKey> = self
            .jobs
            .values()
            .filter(|j| j.key.project == project && j.state.is_active() && j.unique.as_deref() == Some(unique))
            .map(|j| j.key)
            .collect();
        assert!(holders.len() <= 1, "the model let {holders:?} all hold {unique}");
        holders.first().copied()
    }

    /// Would `job` (a new version) break the unique rule, with `staged` versions
    /// standing in for the stored ones?
    fn conflicts(&self, job: &MJob, staged: &[&MJob]) -> bool {
        let Some(u) = job.unique.as_deref().filter(|_| job.state.is_active()) else { return false };
        let current = |k: &JobKey| staged.iter().rev().find(|j| j.key == *k).copied().or_else(|| self.jobs.get(k));
        let keys = self.jobs.keys().chain(staged.iter().map(|j| &j.key));
        keys.filter(|k| **k != job.key && k.project == job.key.project)
            .filter_map(current)
            .any(|j| j.state.is_active() && j.unique.as_deref() == Some(u))
    }

    /// Returns, per line, the key pushed or `None` for a unique conflict.
    pub fn push(&mut self, project: u32, lines: &[MPush], now: u64, actor: Option<&str>) -> Vec<Option<JobKey>> {
        let ids: Vec<u32> = lines.iter().map(|l| self.spider_id(project, &l.spider)).collect();
        let mut held: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let mut new = Vec::new();
        for (l, sid) in lines.iter().zip(ids) {
            if let Some(u) = &l.unique {
                if held.contains(u) || self.holder(project, u) {
                    out.push(None);
                    continue;
                }
                if l.state.is_active() {
                    held.push(u.clone());
                }
            }
            let next = self.next_job.entry((project, sid)).or_insert(1);
            let key = JobKey::new(project, sid, *next);
            *next += 1;
            let mut times = [None; 4];
            times[l.state as usize] = Some(now);
            self.order += 1;
            let mut job = MJob {
                key,
                state: l.state,
                priority: l.priority.unwrap_or(2),
                times,
                order: self.order,
                tags: l.tags.clone(),
                unique: l.unique.clone(),
                meta: Vec::new(),
            };
            if let Some((n, v)) = &l.field {
                job.set(n, v);
            }
            job.set("units", "1");
            if let Some(a) = actor {
                job.set(l.state.actor_field(), &json(a));
            }
            if l.state == JobState::Running {
                job.set("auth", "\"?\"");
            }
            new.push(job);
            out.push(Some(key));
        }
        for j in new {
            self.jobs.insert(j.key, j);
        }
        out
    }

    fn apply(job: &MJob, state: Option<JobState>, c: &MChanges, now: u64, actor: Option<&str>) -> (MJob, bool) {
        let mut j = job.clone();
        let mut set: Vec<(String, String)> = c.set.clone();
        let mut moved = false;
        if let Some(s) = state.filter(|s| *s != job.state) {
            j.state = s;
            j.times[s as usize] = Some(now);
            moved = true;
            if let Some(a) = actor {
                set.push((s.actor_field().to_string(), json(a)));
            }
            if s == JobState::Running && job.get("auth").is_none() {
                set.push(("auth".into(), "\"?\"".into()));
            }
        }
        if let Some(p) = c.priority {
            j.priority = p;
        }
        if let Some(t) = &c.tags {
            j.tags = t.clone();
        }
        for t in &c.add {
            if !j.tags.contains(t) {
                j.tags.push(t.clone());
            }
        }
        j.tags.retain(|t| !c.remove.contains(t));
        j.meta.retain(|(n, _)| !c.delete.contains(n));
        for (n, v) in set {
            j.set(&n, &v);
        }
        (j, moved)
    }

    /// Stage versions in first-touch order, give moved ones increasing orders.
    fn commit(&mut self, staged: Vec<(MJob, bool)>) {
        for (mut j, moved) in staged {
            if moved {
                self.order += 1;
                j.order = self.order;
            }
            self.jobs.insert(j.key, j);
        }
    }

    /// `targets`: a job key, or `(project, spider)` for every job of a spider.
    /// Refused (nothing changes) when a line would make a job active while another
    /// active job holds its `unique`.
    pub fn update(
        &mut self,
        lines: &[UpdateLine],
        now: u64,
        actor: Option<&str>,
    ) -> Result<Vec<(JobKey, JobState)>, JobKey> {
        let mut staged: Vec<(MJob, bool)> = Vec::new();
        let mut out = Vec::new();
        for (target, state, c) in lines {
            let (keys, whole): (Vec<JobKey>, bool) = match target {
                Ok(k) => (vec![*k], false),
                Err((p, s)) => (
                    self.jobs
                        .values()
                        .filter(|j| j.key.project == *p && j.key.spider == *s && j.state != JobState::Deleted)
                        .map(|j| j.key)
                        .collect(),
                    true,
                ),
            };
            for key in keys {
                let cur = match staged.iter().find(|(j, _)| j.key == key) {
                    Some((j, _)) => j.clone(),
                    None => match self.jobs.get(&key) {
                        Some(j) => j.clone(),
                        None => continue,
                    },
                };
                if whole && cur.state == JobState::Deleted {
                    continue;
                }
                let (new, moved) = Model::apply(&cur, *state, c, now, actor);
                if !cur.state.is_active() && self.conflicts(&new, &staged.iter().map(|(j, _)| j).collect::<Vec<_>>()) {
                    return Err(key);
                }
                out.push((key, cur.state));
                if new != cur {
                    match staged.iter_mut().find(|(j, _)| j.key == key) {
                        Some(slot) => {
                            slot.0 = new;
                            slot.1 |= moved;
                        }
                        None => staged.push((new, moved)),
                    }
                }
            }
        }
        self.commit(staged);
        Ok(out)
    }

    pub fn start_next(&mut self, project: u32, c: &MChanges, now: u64, actor: Option<&str>) -> Option<JobKey> {
        let best = self
            .jobs
            .values()
            .filter(|j| j.key.project == project && j.state == JobState::Pending)
            .max_by_key(|j| (j.priority, std::cmp::Reverse((j.ts(), j.order))))?
            .clone();
        let (new, moved) = Model::apply(&best, Some(JobState::Running), c, now, actor);
        self.commit(vec![(new, moved)]);
        Some(best.key)
    }

    pub fn cancel(&mut self, keys: &[JobKey], now: u64, actor: Option<&str>) -> u64 {
        let mut staged: Vec<(MJob, bool)> = Vec::new();
        let mut counted: Vec<JobKey> = Vec::new();
        for k in keys {
            let cur = match staged.iter().find(|(j, _)| j.key == *k) {
                Some((j, _)) => j.clone(),
                None => match self.jobs.get(k) {
                    Some(j) => j.clone(),
                    None => continue,
                },
            };
            let mut c = MChanges::default();
            c.set.push(("cancelled_by".into(), json(actor.unwrap_or("jobq"))));
            c.set.push(("cancel_time".into(), now.to_string()));
            let (new, moved) = match cur.state {
                JobState::Pending => {
                    c.set.push(("close_reason".into(), json("cancelled")));
                    Model::apply(&cur, Some(JobState::Finished), &c, now, actor)
                }
                JobState::Running => Model::apply(&cur, None, &c, now, actor),
                _ => continue,
            };
            if !counted.contains(k) {
                counted.push(*k);
            }
            match staged.iter_mut().find(|(j, _)| j.key == *k) {
                Some(slot) => {
                    slot.0 = new;
                    slot.1 |= moved;
                }
                None => staged.push((new, moved)),
            }
        }
        self.commit(staged);
        counted.len() as u64
    }

    pub fn edit(&mut self, key: JobKey, c: &MChanges, now: u64) -> bool {
        let Some(cur) = self.jobs.get(&key).cloned() else { return false };
        let (new, _) = Model::apply(&cur, None, c, now, None);
        self.jobs.insert(key, new);
        true
    }

    /// Import jobs: each line replaces the version of its key. Refused (the index
    /// of the line) when a line would be active with a `unique` another active job
    /// holds.
    pub fn import(&mut self, lines: &[MImport]) -> Result<(), usize> {
        let mut ids = self.clone();
        let mut staged: Vec<MJob> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let sid = ids.spider_id(l.project, &l.spider);
            let key = JobKey::new(l.project, sid, l.job);
            let mut times = [None; 4];
            times[l.state as usize] = Some(l.ts);
            let job = MJob {
                key,
                state: l.state,
                priority: l.priority.unwrap_or(2),
                times,
                order: 0,
                tags: l.tags.clone(),
                unique: l.unique.clone(),
                // The line has no `units`: import gives 1, last.
                meta: [("x", Some("1")), ("close_reason", l.reason), ("units", Some("1"))]
                    .into_iter()
                    .filter_map(|(n, v)| Some((n.to_string(), v?.to_string())))
                    .collect(),
            };
            if self.conflicts(&job, &staged.iter().collect::<Vec<_>>()) {
                return Err(i);
            }
            staged.push(job);
        }
        for mut job in staged {
            let (p, s) = (job.key.project, job.key.spider);
            self.spider_id(p, ids.spider_name(p, s));
            let next = self.next_job.entry((p, s)).or_insert(1);
            *next = (*next).max(job.key.job + 1);
            self.order += 1;
            job.order = self.order;
            self.jobs.insert(job.key, job);
        }
        Ok(())
    }

    pub fn matches(&self, j: &MJob, f: &Filter) -> bool {
        let ts = j.ts();
        f.spider.as_ref().is_none_or(|s| self.spider_names.get(&(j.key.project, j.key.spider)) == Some(s))
            && (f.states.is_empty() || f.states.contains(&j.state))
            && f.startts.is_none_or(|t| ts >= t)
            && f.endts.is_none_or(|t| ts < t)
            && (f.has_tags.is_empty() || f.has_tags.iter().any(|t| j.tags.contains(t)))
            && f.has_tags_all.iter().all(|t| j.tags.contains(t))
            && !f.lacks_tags.iter().any(|t| j.tags.contains(t))
            && (f.close_reasons.is_empty() || j.close_reason().is_some_and(|c| f.close_reasons.contains(&c)))
            && f.keys.as_ref().is_none_or(|k| k.contains(&j.key))
    }

    pub fn count(&self, project: u32, f: &Filter) -> u64 {
        self.jobs.values().filter(|j| j.key.project == project && self.matches(j, f)).count() as u64
    }

    /// A listing without `startafter`.
    pub fn list(&self, project: u32, f: &Filter, p: &Paging) -> Vec<JobKey> {
        assert!(p.startafter.is_none(), "a listing with startafter may be refused: use page()");
        self.page(project, f, p).unwrap()
    }

    /// A listing, remembering where its last row stands. `None`: refused, for a
    /// `startafter` key of no job that no listing ended with.
    pub fn page(&self, project: u32, f: &Filter, p: &Paging) -> Option<Vec<JobKey>> {
        let out = self.peek(project, f, p)?;
        if let Some(last) = out.last() {
            self.places.borrow_mut().insert(*last, self.jobs[last].place());
        }
        Some(out)
    }

    /// [`Model::page`] without remembering anything.
    pub fn peek(&self, project: u32, f: &Filter, p: &Paging) -> Option<Vec<JobKey>> {
        let mut all: Vec<&MJob> =
            self.jobs.values().filter(|j| j.key.project == project && self.matches(j, f)).collect();
        all.sort_by_key(|j| std::cmp::Reverse(j.place()));
        if let Some(stop) = p.stop.and_then(|k| self.jobs.get(&k)) {
            all.retain(|j| j.place() > stop.place());
        }
        if let Some(k) = p.startafter {
            if k.project != project {
                return None;
            }
            let remembered = self.places.borrow().get(&k).copied();
            let cut = remembered.or_else(|| self.jobs.get(&k).map(MJob::place))?;
            all.retain(|j| j.place() < cut);
        }
        Some(all.into_iter().skip(p.start as usize).take(p.count as usize).map(|j| j.key).collect())
    }

    /// The store was opened again: it remembers no listing.
    pub fn reopened(&mut self) {
        self.places.borrow_mut().clear();
    }
}
