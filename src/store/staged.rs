//! The jobs one write changes, held until the write's single frame is appended.
//! A job's tags and metadata become editable sets on its first change, so that
//! each change costs its own size, never the job's, however many lines of a
//! request touch the job; they are written back once. The write also keeps the
//! `unique` rule: no two active (pending or running) jobs of a project hold the
//! same value, whatever order its lines take jobs in and out of the active states.

use std::collections::HashMap;

use super::fields::{is_maintained, MAX_DOC, MAX_META_FIELDS};
use super::request::check_doc_limits;
use super::writer::Writer;
use crate::codec::record::Prev;
use crate::error::{Error, Result};
use crate::hash::FastSet;
use crate::model::edit::{DocEdit, TagEdit};
use crate::model::{Job, JobKey, JobState};
use serde_json::value::RawValue;

/// A job as one write changes it.
pub(crate) struct Staged {
    /// The job; its `tags` and `meta` are stale while `tags`/`doc` below are set.
    pub job: Job,
    /// Its state as stored before this write (what its record names as previous).
    before: JobState,
    tags: Option<TagEdit>,
    doc: Option<DocEdit>,
    /// Entered a new state (its `order_seq` becomes its record's sequence number).
    pub moved: bool,
    /// Differs from the stored version.
    pub changed: bool,
    /// A client set metadata fields: the metadata limits apply.
    client_fields: bool,
    /// What the limits count of the document before this write.
    counted_before: (usize, usize),
}

/// What the metadata limits count: the fields a client may write (all but `*_by`
/// and `auth`, which only the service writes, each once and small), and their bytes.
fn counted<'a>(fields: impl Iterator<Item = (&'a str, &'a RawValue)>) -> (usize, usize) {
    fields
        .filter(|(n, _)| !is_maintained(n))
        .fold((0, 0), |(count, bytes), (n, v)| (count + 1, bytes + n.len() + v.get().len() + 4))
}

impl Staged {
    pub fn new(job: Job) -> Staged {
        Staged {
            before: job.state,
            job,
            tags: None,
            doc: None,
            moved: false,
            changed: false,
            client_fields: false,
            counted_before: (0, 0),
        }
    }

    pub fn doc(&mut self) -> &mut DocEdit {
        if self.doc.is_none() {
            let d = DocEdit::of_doc(&self.job.meta);
            self.counted_before = counted(d.iter().map(|(n, v)| (n, &**v)));
            self.doc = Some(d);
        }
        self.doc.as_mut().expect("just set")
    }

    /// Tags the job has now.
    pub fn tag_count(&self) -> usize {
        self.tags.as_ref().map_or(self.job.tags.len(), |t| t.len())
    }

    pub fn tags(&mut self) -> &mut TagEdit {
        self.tags.get_or_insert_with(|| TagEdit::of_tags(&self.job.tags))
    }

    /// Replace the tags (when `replace`), then add, then remove. `changed` only
    /// when the list differs from the one found: which write first changed a job
    /// orders the jobs a write moves (ties of `ts`), so a line that adds and
    /// removes the same tag changes nothing. Costs the line's size (and once per
    /// write the job's tags).
    pub fn edit_tags(&mut self, replace: Option<&[String]>, add: &[String], remove: &[String]) {
        let mut before: Option<Vec<String>> = None;
        let mut changed = false;
        if let Some(t) = replace {
            let tags = self.tags();
            let same = tags.len() == t.len() && tags.iter().zip(t).all(|((a, _), b)| a == b);
            if !same {
                // Adds and removes may bring the list back: compare at the end.
                if !add.is_empty() || !remove.is_empty() {
                    before = Some(tags.to_tags());
                }
                tags.clear();
                for tag in t {
                    tags.set(tag, ());
                }
                changed = true;
            }
        }
        let tags = self.tags();
        let mut inserted: FastSet<&str> = FastSet::default();
        for t in add {
            if tags.set(t, ()) {
                inserted.insert(t);
            }
        }
        for t in remove {
            // A tag this line inserted and removes again leaves no trace.
            if tags.remove(t) && !inserted.remove(t.as_str()) {
                changed = true;
            }
        }
        changed |= !inserted.is_empty();
        if let Some(before) = before {
            changed = tags.len() != before.len() || !tags.iter().zip(&before).all(|((a, _), b)| a == b);
        }
        self.changed |= changed;
    }

    /// Set a metadata field; `client` when the value came from the request.
    pub fn set_field(&mut self, name: &str, value: Box<RawValue>, client: bool) {
        self.client_fields |= client;
        self.changed |= self.doc().set(name, value);
    }

    pub fn remove_field(&mut self, name: &str) {
        self.changed |= self.doc().remove(name);
    }

    /// The job as it is written. A write that set client fields may not take the
    /// metadata over the limits, nor further over (what the service writes itself,
    /// and edits that do not grow the metadata, are never refused).
    pub fn finish(mut self) -> Result<Job> {
        if let Some(t) = self.tags.take() {
            self.job.tags = t.to_tags();
        }
        if let Some(d) = self.doc.take() {
            if self.client_fields {
                let (fields, bytes) = counted(d.iter().map(|(n, v)| (n, &**v)));
                let (fields_before, bytes_before) = self.counted_before;
                let grown = |now: usize, was: usize, max: usize| if now > max && now > was { now } else { 0 };
                check_doc_limits(grown(fields, fields_before, MAX_META_FIELDS), grown(bytes, bytes_before, MAX_DOC))
                    .map_err(|e| Error::input(format!("job {}: {e}", self.job.key)))?;
            }
            self.job.meta = d.to_doc();
        }
        Ok(self.job)
    }
}

/// Staged jobs of one write.
#[derive(Default)]
pub(crate) struct Batch {
    jobs: Vec<Staged>,
    /// The changed ones, in the order of their first change: the records' order
    /// (it breaks ties of `ts` in listings).
    changed: Vec<usize>,
    at: HashMap<JobKey, usize>,
    /// `unique` values this write took (`Some(holder)`) or released (`None`).
    uniques: HashMap<(u32, String), Option<JobKey>>,
}

impl Batch {
    /// A job staged, read on first touch; `None` for a job that does not exist.
    pub fn get(&mut self, w: &Writer, key: JobKey) -> Result<Option<&mut Staged>> {
        Ok(self.index(w, key)?.map(|i| &mut self.jobs[i]))
    }

    fn index(&mut self, w: &Writer, key: JobKey) -> Result<Option<usize>> {
        if let Some(&i) = self.at.get(&key) {
            return Ok(Some(i));
        }
        let Some(job) = w.load(key)? else { return Ok(None) };
        self.at.insert(key, self.jobs.len());
        self.jobs.push(Staged::new(job));
        Ok(Some(self.jobs.len() - 1))
    }

    /// Change a job with `f`, then hold its `unique` to the rule. `None` for a job
    /// that does not exist, else the state it had before.
    pub fn change(
        &mut self,
        w: &Writer,
        key: JobKey,
        f: impl FnOnce(&mut Staged) -> Result<()>,
    ) -> Result<Option<JobState>> {
        let Some(i) = self.index(w, key)? else { return Ok(None) };
        let st = &mut self.jobs[i];
        let (before, was_changed) = (st.job.state, st.changed);
        f(st)?;
        if st.changed && !was_changed {
            self.changed.push(i);
        }
        let after = st.job.state;
        let unique = st.job.unique.clone();
        if let (Some(u), true) = (unique, before.is_active() != after.is_active()) {
            self.keep_unique(w, key, u, after)?;
        }
        Ok(Some(before))
    }

    /// The active job holding `unique` as this write leaves it so far.
    fn holder(&self, w: &Writer, project: u32, unique: &str) -> Option<JobKey> {
        match self.uniques.get(&(project, unique.to_string())) {
            Some(h) => *h,
            None => w.unique_holder(project, unique),
        }
    }

    fn keep_unique(&mut self, w: &Writer, key: JobKey, unique: String, state: JobState) -> Result<()> {
        let holder = self.holder(w, key.project, &unique);
        if state.is_active() {
            if let Some(h) = holder.filter(|h| *h != key) {
                return Err(Error::input(format!(
                    "Active job exists with key {unique}: job {key} cannot become {state} while job {h} holds it"
                )));
            }
            self.uniques.insert((key.project, unique), Some(key));
        } else if holder == Some(key) {
            self.uniques.insert((key.project, unique), None);
        }
        Ok(())
    }

    /// Give jobs that entered a state their record's sequence number, and write
    /// the changed ones as one frame.
    pub fn write(self, w: &mut Writer, durable_seq: u64) -> Result<Vec<Job>> {
        let first = w.next_seq;
        let mut staged: Vec<Option<Staged>> = self.jobs.into_iter().map(Some).collect();
        let mut jobs = Vec::with_capacity(self.changed.len());
        let mut prevs = Vec::with_capacity(self.changed.len());
        for st in self.changed.iter().filter_map(|&i| staged[i].take()) {
            let (moved, before) = (st.moved, st.before);
            let mut job = st.finish()?;
            if moved {
                job.order_seq = first + jobs.len() as u64;
            }
            jobs.push(job);
            prevs.push(Prev::State(before));
        }
        w.append_jobs(&jobs, &prevs, 0, durable_seq)?;
        Ok(jobs)
    }
}

impl super::Store {
    /// The active job of `project` holding `unique`, as the writer's index (the one
    /// push consults) names it.
    pub fn unique_holder(&self, project: u32, unique: &str) -> Option<JobKey> {
        self.inner().writer.lock().unique_holder(project, unique)
    }
}
