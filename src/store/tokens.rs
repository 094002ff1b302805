//! The auth tokens of running jobs, kept in memory so that checking a job's
//! credential reads no record and costs the same whatever the job holds.
//!
//! Invariant: the map holds exactly the jobs whose current version is running and
//! has a string `auth` field, each with that token and the `order_seq` of the
//! version that entered running. A job's token changes only when it enters
//! running (`auth` is maintained: clients cannot set it), and entering a state
//! gives a new `order_seq`, so a version with the `order_seq` already recorded
//! carries the recorded token and need not be parsed again.
//!
//! The writer updates the map when it applies a version, before the write is
//! durable: a token is only ever revealed by the acknowledged answer, and a write
//! that fails poisons the store (the map is rebuilt at the next open).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::version::SegmentSlot;
use crate::error::Result;
use crate::hash::FastMap;
use crate::index::format::field;
use crate::model::{Job, JobKey, JobState};

#[derive(Default)]
pub(crate) struct JobTokens {
    map: RwLock<FastMap<JobKey, Entry>>,
}

struct Entry {
    order_seq: u64,
    token: Arc<str>,
}

/// The `auth` token of a job version, if it has a string one (the last `auth`
/// field, as for every repeated name). One pass over the document, whatever its
/// number of fields.
fn token_of(job: &Job) -> Option<Arc<str>> {
    token_in(job.meta.as_str())
}

/// [`token_of`] a metadata document.
pub(crate) fn token_in(doc: &str) -> Option<Arc<str>> {
    struct AuthField;

    impl<'de> Visitor<'de> for AuthField {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut token = None;
            while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                if name == "auth" {
                    let raw: &'de RawValue = map.next_value()?;
                    token = serde_json::from_str::<String>(raw.get()).ok();
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(token)
        }
    }

    let mut de = serde_json::Deserializer::from_str(doc);
    de.deserialize_map(AuthField).ok().flatten().map(Arc::from)
}

impl JobTokens {
    /// The token of a running job (`None` for any other key).
    pub fn get(&self, key: JobKey) -> Option<Arc<str>> {
        self.map.read().get(&key).map(|e| e.token.clone())
    }

    /// Forget every token (the writer's state is rebuilt: store/rebuild.rs).
    pub fn clear(&self) {
        self.map.write().clear();
    }

    /// Running jobs with a token.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// `job` became the current version of its key.
    pub fn note(&self, job: &Job) {
        if job.state != JobState::Running {
            if self.map.read().contains_key(&job.key) {
                self.map.write().remove(&job.key);
            }
            return;
        }
        let known = self.map.read().get(&job.key).is_some_and(|e| e.order_seq == job.order_seq);
        if known {
            return;
        }
        let mut map = self.map.write();
        match token_of(job) {
            Some(token) => {
                map.insert(job.key, Entry { order_seq: job.order_seq, token });
            }
            None => {
                map.remove(&job.key);
            }
        }
    }

    /// Learn the tokens of an index file's current (not superseded) running jobs
    /// from its token postings (field 7): no record is read.
    pub fn learn_segment(&self, slot: &SegmentSlot) {
        let mut map = self.map.write();
        for project in slot.seg.projects() {
            let Some((sec, dead)) = slot.project(project) else {
                continue;
            };
            for (term, posting) in sec.terms(field::TOKEN) {
                let token: Arc<str> = Arc::from(String::from_utf8_lossy(term).as_ref());
                for doc in posting.docs() {
                    if dead.contains(doc) {
                        continue;
                    }
                    let key = JobKey::from_local(project, sec.local(doc));
                    map.insert(key, Entry { order_seq: sec.seq(doc), token: token.clone() });
                }
            }
        }
    }

    /// Forget every job of an index file.
    pub fn forget_segment(&self, slot: &SegmentSlot) {
        let mut map = self.map.write();
        if map.is_empty() {
            return;
        }
        for project in slot.seg.projects() {
            if let Some((sec, _)) = slot.project(project) {
                for doc in 0..sec.len() {
                    map.remove(&JobKey::from_local(project, sec.local(doc)));
                }
            }
        }
    }

    /// Learn the tokens of current running versions: key, `order_seq`, token.
    pub fn learn(&self, tokens: impl Iterator<Item = (JobKey, u64, Arc<str>)>) {
        let mut map = self.map.write();
        for (key, order_seq, token) in tokens {
            map.insert(key, Entry { order_seq, token });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::fs::SimFs;
    use crate::index::format::field;
    use crate::model::{Job, JobKey, JobState, ManualClock, MetaDoc};
    use crate::store::request::{parse_push, parse_update, Changes};
    use crate::store::PushResult;
    use crate::{Durability, Options, Store};

    fn options(sim: &SimFs) -> Options {
        Options {
            fs: Arc::new(sim.clone()),
            clock: Arc::new(ManualClock::new(5000)),
            durability: Durability::Buffered,
            background: false,
            ..Options::default()
        }
    }

    fn push(store: &Store, line: &str) -> (JobKey, Option<String>) {
        match store.push(1, &[parse_push(line).unwrap()], None).unwrap().remove(0) {
            PushResult::Pushed { key, auth } => (key, auth),
            other => panic!("{other:?}"),
        }
    }

    fn set_state(store: &Store, key: JobKey, state: &str) {
        let line = format!(r#"{{"key":"{key}","state":"{state}"}}"#);
        store.update(1, &[parse_update(&line, 1).unwrap()], None).unwrap();
    }

    fn token(store: &Store, key: JobKey) -> Option<String> {
        store.running_job_token(key).map(|t| t.to_string())
    }

    #[test]
    fn each_run_has_its_own_token_known_only_while_it_runs() {
        let sim = SimFs::new();
        let store = Store::open("/db", options(&sim)).unwrap();
        let (a, auth) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let first = auth.expect("a job pushed running gets a token");
        assert_eq!(token(&store, a), Some(first.clone()));
        let (b, none) = push(&store, r#"{"spider":"s"}"#);
        assert_eq!((none, token(&store, b)), (None, None), "a pending job has no token");
        let started = store.start_next(1, &Changes::default(), None).unwrap().unwrap();
        assert_eq!(started.key, b);
        let b_token = token(&store, b).expect("started");
        assert_eq!(started.meta.get("auth").unwrap().get(), format!("\"{b_token}\""));
        let progress = parse_update(r#"{"key":"1/1/1","progress":5}"#, 1).unwrap();
        store.update(1, &[progress], None).unwrap();
        assert_eq!(token(&store, a), Some(first.clone()), "edits keep the run's token");
        set_state(&store, a, "finished");
        assert_eq!(token(&store, a), None);
        set_state(&store, a, "running");
        let second = token(&store, a).expect("running again");
        assert_ne!(second, first, "a new run gets a new token");
        set_state(&store, a, "pending");
        set_state(&store, a, "running");
        assert_ne!(token(&store, a).unwrap(), second);
        assert_eq!(token(&store, JobKey::new(1, 1, 99)), None);
        assert_eq!(token(&store, JobKey::new(2, 1, 1)), None);
    }

    #[test]
    fn the_token_is_found_in_one_pass_whatever_the_fields() {
        let fields: String = (0..80_000).map(|i| format!(r#""f{i}":{i},"#)).collect();
        let doc = format!(r#"{{{fields}"auth":"first","g":{{"auth":1}},"auth":"last"}}"#);
        let job = Job {
            key: JobKey::new(1, 1, 1),
            state: JobState::Running,
            priority: 2,
            times: [None; 4],
            order_seq: 1,
            tags: Vec::new(),
            unique: None,
            meta: MetaDoc::from_trusted(doc),
        };
        let started = std::time::Instant::now();
        assert_eq!(super::token_of(&job).as_deref(), Some("last"), "the last top-level `auth`");
        // A pairwise scan of 80,000 names takes seconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
        let no_string = Job { meta: MetaDoc::from_trusted(r#"{"auth":null}"#.into()), ..job };
        assert_eq!(super::token_of(&no_string), None);
    }

    #[test]
    fn tokens_are_rebuilt_at_open_from_the_tail_and_the_index_files() {
        let sim = SimFs::new();
        let store = Store::open("/db", options(&sim)).unwrap();
        let (a, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let (b, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let (c, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        set_state(&store, c, "finished");
        store.flush_indexes().unwrap();
        // After the index files: one job finishes, one new one runs (tail only).
        set_state(&store, b, "finished");
        let (d, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let before: Vec<_> = [a, b, c, d].iter().map(|&k| token(&store, k)).collect();
        store.close().unwrap();
        let store = Store::open("/db", options(&sim)).unwrap();
        let after: Vec<_> = [a, b, c, d].iter().map(|&k| token(&store, k)).collect();
        assert_eq!(after, before);
        assert!(after[0].is_some() && after[1].is_none() && after[2].is_none() && after[3].is_some());
        assert_eq!(store.inner().tokens.len(), 2);
    }

    #[test]
    fn an_import_replaces_the_tokens_of_the_jobs_it_writes() {
        let sim = SimFs::new();
        let store = Store::open("/db", options(&sim)).unwrap();
        let (a, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let (b, _) = push(&store, r#"{"spider":"s","state":"running"}"#);
        let lines = format!(
            "{}\n{}\n",
            format_args!(r#"{{"key":"{a}","spider":"s","state":"finished","finished_time":9000}}"#),
            r#"{"key":"1/1/7","spider":"s","state":"running","running_time":9000,"auth":"imported-token"}"#,
        );
        store.import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
        assert_eq!(token(&store, a), None, "imported as finished");
        assert!(token(&store, b).is_some(), "not in the import");
        assert_eq!(token(&store, JobKey::new(1, 1, 7)).as_deref(), Some("imported-token"));
        // Reopened: the import's index file names the token (field 7); no record is read.
        store.flush_indexes().unwrap();
        store.close().unwrap();
        let store = Store::open("/db", options(&sim)).unwrap();
        assert_eq!(store.report().replayed_frames, 0, "{:?}", store.report());
        assert_eq!(token(&store, JobKey::new(1, 1, 7)).as_deref(), Some("imported-token"));
        assert!(token(&store, b).is_some() && token(&store, a).is_none());
        let v = store.inner().writer.lock().version();
        let posted: Vec<String> = v
            .segments
            .iter()
            .filter_map(|s| s.project(1))
            .flat_map(|(sec, _)| {
                sec.terms(field::TOKEN).map(|(t, _)| String::from_utf8_lossy(t).into_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert!(posted.contains(&"imported-token".to_string()), "{posted:?}");
    }
}
