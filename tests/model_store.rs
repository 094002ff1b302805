//! Random sequences of every write (push with unique/priority/tags, update, spider-wide
//! update, reopening jobs that hold a `unique`, start, cancel, metadata edits,
//! imports), interleaved with index flushes, merges, clean reopens and simulated
//! power cuts, checked after every step against the naive model: counts and
//! listings for every filter shape (close_reason and has_tag_all included) and
//! paging (`startafter` too, with pagers that continue across the writes), every
//! job, and the holder of every `unique` (the model refuses what would give a value
//! two active holders; so must the store); `jobq check` finds nothing at the end.

mod common;

use std::sync::Arc;

use common::model::{MChanges, MPush, Model};
use common::push_json;
use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{Changes, PushResult};
use jobq::{Durability, Options, Store};
use proptest::prelude::*;
use serde_json::value::RawValue;

#[path = "model_store/gen.rs"]
mod gen;

use gen::{filter, op, Op, Target, TAGS};

/// The key an index `pick` names: an existing job of the model, or one that is not.
fn pick_key(m: &Model, pick: usize, project: Option<u32>) -> JobKey {
    let keys: Vec<JobKey> = m.jobs.keys().filter(|k| project.is_none_or(|p| k.project == p)).copied().collect();
    match keys.get(pick % (keys.len() + 1)) {
        Some(k) => *k,
        None => JobKey::new(project.unwrap_or(1), 1, 999),
    }
}

fn raw(v: &str) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

fn engine_changes(c: &MChanges) -> Changes {
    Changes {
        priority: c.priority,
        tags: c.tags.clone(),
        add_tags: c.add.clone(),
        remove_tags: c.remove.clone(),
        set: c.set.iter().map(|(n, v)| (n.clone(), raw(v))).collect(),
        remove: c.delete.clone(),
    }
}

fn update_json(key: &str, state: Option<JobState>, c: &MChanges) -> String {
    let mut o = format!("{{\"key\":{key:?}");
    if let Some(s) = state {
        o += &format!(",\"state\":\"{s}\"");
    }
    if let Some(p) = c.priority {
        o += &format!(",\"priority\":{p}");
    }
    if let Some(t) = &c.tags {
        o += &format!(",\"tags\":{}", serde_json::to_string(t).unwrap());
    }
    if !c.add.is_empty() {
        o += &format!(",\"add_tag\":{}", serde_json::to_string(&c.add).unwrap());
    }
    if !c.remove.is_empty() {
        o += &format!(",\"remove_tag\":{}", serde_json::to_string(&c.remove).unwrap());
    }
    for (n, v) in &c.set {
        o += &format!(",{n:?}:{v}");
    }
    o + "}"
}

struct World {
    sim: SimFs,
    clock: Arc<ManualClock>,
    opts: Options,
    store: Option<Store>,
    model: Model,
    /// Pagers in progress, by (project, active): the last key they were given.
    pagers: std::collections::HashMap<(u32, bool), JobKey>,
}

impl World {
    fn new(durability: Durability) -> World {
        let sim = SimFs::new();
        let clock = Arc::new(ManualClock::new(1000));
        let opts = Options {
            fs: Arc::new(sim.clone()),
            clock: clock.clone(),
            durability,
            background: false,
            memtable_entries: 5,
            bulk_entries: 7,
            merge_fanout: 2,
            segment_bytes: 4096,
            ..Options::default()
        };
        let store = Some(Store::open("/db", opts.clone()).unwrap());
        World { sim, clock, opts, store, model: Model::default(), pagers: Default::default() }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn step(&mut self, op: &Op) {
        let now = jobq::model::Clock::now_ms(&*self.clock);
        let actor = |a: bool| a.then_some("tester");
        match op {
            Op::Push { project, lines, actor: a } => {
                let specs: Vec<_> = lines.iter().map(|l| parse_push(&push_json(l)).unwrap()).collect();
                let got = self.store().push(*project, &specs, actor(*a)).unwrap();
                let want = self.model.push(*project, lines, now, actor(*a));
                let got: Vec<Option<JobKey>> = got
                    .iter()
                    .map(|r| match r {
                        PushResult::Pushed { key, .. } => Some(*key),
                        PushResult::Conflict { .. } => None,
                    })
                    .collect();
                assert_eq!(got, want, "push answers");
            }
            Op::Update { project, lines, actor: a } => {
                let mut specs = Vec::new();
                let mut mlines = Vec::new();
                for (t, state, c) in lines {
                    let (key, target) = match t {
                        Target::Job(pick) => {
                            let k = pick_key(&self.model, *pick, Some(*project));
                            (k.to_string(), Ok(k))
                        }
                        Target::Spider(s) => (format!("{project}/{s}"), Err((*project, *s))),
                    };
                    specs.push(parse_update(&update_json(&key, *state, c), *project).unwrap());
                    mlines.push((target, *state, c.clone()));
                }
                self.update(*project, &specs, &mlines, now, actor(*a));
            }
            Op::Revive { project, pick, running } => {
                let holders: Vec<JobKey> = self
                    .model
                    .jobs
                    .values()
                    .filter(|j| j.key.project == *project && j.unique.is_some())
                    .map(|j| j.key)
                    .collect();
                let Some(key) = holders.get(pick % holders.len().max(1)) else { return };
                let state = if *running { JobState::Running } else { JobState::Pending };
                let spec =
                    parse_update(&update_json(&key.to_string(), Some(state), &MChanges::default()), *project).unwrap();
                self.update(*project, &[spec], &[(Ok(*key), Some(state), MChanges::default())], now, None);
            }
            Op::Start { project, field } => {
                let c = MChanges { set: field.iter().cloned().collect(), ..MChanges::default() };
                let got =
                    self.store().start_next(*project, &engine_changes(&c), Some("runner")).unwrap().map(|j| j.key);
                let want = self.model.start_next(*project, &c, now, Some("runner"));
                assert_eq!(got, want, "started job");
            }
            Op::Cancel { project, picks } => {
                let keys: Vec<JobKey> = picks.iter().map(|p| pick_key(&self.model, *p, Some(*project))).collect();
                let got = self.store().cancel(*project, &keys, None).unwrap();
                assert_eq!(got, self.model.cancel(&keys, now, None), "cancel count");
            }
            Op::Edit { pick, changes } => {
                let key = pick_key(&self.model, *pick, None);
                let got = self.store().edit(key, &engine_changes(changes), None).unwrap();
                assert_eq!(got, self.model.edit(key, changes, now), "edit found the job");
            }
            Op::Import { lines, bad } => {
                let mut text = String::new();
                let mut ids = self.model.clone();
                for (i, l) in lines.iter().enumerate() {
                    if *bad == Some(i) {
                        text += "{\"key\":\"1/1/1\",\"spider\":\"s0\",\"state\":\"bogus\"}\n";
                    }
                    let sid = ids.spider_id(l.project, &l.spider);
                    let unique = l.unique.as_ref().map_or("null".to_string(), |u| format!("{u:?}"));
                    let mut line = format!(
                        r#"{{"key":"{}/{sid}/{}","spider":"{}","state":"{}","{}":{},"unique":{unique},"tags":{}"#,
                        l.project,
                        l.job,
                        l.spider,
                        l.state,
                        l.state.time_field(),
                        l.ts,
                        serde_json::to_string(&l.tags).unwrap()
                    );
                    if let Some(p) = l.priority {
                        line += &format!(r#","priority":{p}"#);
                    }
                    text += &line;
                    text += ",\"x\":1";
                    if let Some(r) = l.reason {
                        text += &format!(",\"close_reason\":{r}");
                    }
                    text += "}\n";
                }
                let got = self.store().import(&mut text.as_bytes(), &mut |_| {});
                match bad.filter(|b| *b < lines.len()) {
                    Some(b) => {
                        let e = got.expect_err("a bad line refuses the import");
                        // The first bad line of the input: a unique conflict before it comes first.
                        let first = self.model.clone().import(&lines[..b]).err().unwrap_or(b);
                        assert!(e.to_string().contains(&format!("line {}:", first + 1)), "{e}");
                    }
                    None => match self.model.clone().import(lines) {
                        Err(i) => {
                            let e = got.expect_err("a unique conflict refuses the import").to_string();
                            assert!(e.contains(&format!("line {}: Active job exists", i + 1)), "{e}");
                        }
                        Ok(()) => {
                            assert_eq!(got.unwrap().versions, lines.len() as u64);
                            self.model.import(lines).unwrap();
                        }
                    },
                }
            }
            Op::Page { project, count, active } => {
                let states = if *active { vec![JobState::Pending, JobState::Running] } else { vec![] };
                let f = Filter { states, ..Filter::default() };
                let startafter = self.pagers.get(&(*project, *active)).copied();
                let p = Paging { count: *count, startafter, ..Paging::default() };
                let page = self.page(*project, &f, &p).expect("a pager's key was listed");
                match page.last() {
                    Some(last) => self.pagers.insert((*project, *active), *last),
                    None => self.pagers.remove(&(*project, *active)),
                };
            }
            Op::Tick(ms) => self.clock.advance(*ms),
            Op::Flush => self.store().flush_indexes().unwrap(),
            Op::Reopen => {
                self.store.take().unwrap().close().unwrap();
                self.store = Some(Store::open("/db", self.opts.clone()).unwrap());
                self.model.reopened();
            }
            Op::PowerCut(mode, seed) => {
                if self.opts.durability == Durability::Buffered {
                    self.store().sync().unwrap();
                }
                self.sim.set_fault(Some(Fault { at: 0, kind: FaultKind::PowerCut, sticky: true }));
                drop(self.store.take());
                self.sim.crash(*mode, *seed);
                self.store = Some(Store::open("/db", self.opts.clone()).unwrap());
                self.model.reopened();
            }
        }
    }

    /// An update through the store and the model: the same answers, or both refused.
    fn update(
        &mut self,
        project: u32,
        specs: &[jobq::store::UpdateSpec],
        lines: &[common::model::UpdateLine],
        now: u64,
        actor: Option<&str>,
    ) {
        let got = self.store().update(project, specs, actor);
        match self.model.update(lines, now, actor) {
            Ok(want) => assert_eq!(got.unwrap(), want, "update answers"),
            Err(key) => {
                let e = got.expect_err("the model refused the update").to_string();
                assert!(e.starts_with("Active job exists with key") && e.contains(&format!("job {key} ")), "{e}");
            }
        }
    }

    /// A listing of the store and of the model: the same keys, or both refused
    /// (an unknown `startafter`).
    fn page(&self, project: u32, f: &Filter, p: &Paging) -> Option<Vec<JobKey>> {
        let got = self.store().snapshot().list(project, f, p);
        let want = self.model.page(project, f, p);
        match (got, want) {
            (Ok(got), Some(want)) => {
                let got: Vec<JobKey> = got.iter().map(|h| JobKey::from_local(project, h.local)).collect();
                assert_eq!(got, want, "list {project} {f:?} {p:?}");
                Some(want)
            }
            (Err(e), None) => {
                let k = p.startafter.expect("only startafter refuses a listing");
                assert!(
                    e.to_string().contains(&format!("\"startafter\": {k} is not a job of project {project}")),
                    "{e}"
                );
                None
            }
            (got, want) => panic!("list {project} {f:?} {p:?}: store {got:?}, model {want:?}"),
        }
    }

    fn check(&self, filters: &[Filter]) {
        // The writer's holder of each `unique` (what push consults) is the model's.
        for project in 1..=2u32 {
            for u in ["u0", "u1", "u2"] {
                let want = self.model.unique_holder(project, u);
                assert_eq!(self.store().unique_holder(project, u), want, "holder of {u} in project {project}");
            }
        }
        let snap = self.store().snapshot();
        for project in 1..=2u32 {
            for f in filters {
                assert_eq!(snap.count(project, f).unwrap(), self.model.count(project, f), "count {project} {f:?}");
                let all = Paging { count: 1000, start: 0, stop: None, startafter: None };
                let want = self.page(project, f, &all).unwrap();
                let everything = Filter::default();
                let order = self.model.peek(project, &everything, &all).unwrap();
                // Deep starts land anywhere in the merged order of sections and tail.
                let (half, last) = (want.len() as u64 / 2, (want.len() as u64).saturating_sub(1));
                for (start, count, stop) in [
                    (1, 2, None),
                    (3, 100, None),
                    (0, 3, order.get(2)),
                    (2, 1000, order.get(5)),
                    (half, 4, None),
                    (last, 10, None),
                    (last + 2, 5, None),
                    (half, 3, order.get(order.len() * 3 / 4)),
                ] {
                    let p = Paging { count, start, stop: stop.copied(), startafter: None };
                    self.page(project, f, &p);
                }
                // startafter: any job (matching or not, moved since a listing ended
                // with it or not), with start and stop; a key of no job is refused.
                let unknown = JobKey::new(project, 9, 9);
                for (start, count, stop, after) in [
                    (0, 3, None, order.get(1)),
                    (0, 1000, None, order.get(order.len() / 2)),
                    (1, 2, order.get(order.len() * 3 / 4), order.get(2)),
                    (0, 5, None, want.first()),
                    (0, 5, None, want.last()),
                    (0, 5, None, Some(&unknown)),
                ] {
                    let p = Paging { count, start, stop: stop.copied(), startafter: after.copied() };
                    self.page(project, f, &p);
                }
                // Paging by startafter from the top visits every match once, in order.
                let (mut seen, mut after) = (Vec::new(), None);
                while let Some(page) = self.page(project, f, &Paging { count: 2, startafter: after, ..all.clone() }) {
                    let Some(last) = page.last() else { break };
                    after = Some(*last);
                    seen.extend(page);
                }
                assert_eq!(seen, want, "paged by startafter: {project} {f:?}");
                if !want.is_empty() {
                    let keys = Filter { keys: Some(vec![want[0], JobKey::new(project, 9, 9)]), ..f.clone() };
                    assert_eq!(snap.count(project, &keys).unwrap(), 1);
                }
                // A key list (every other job, newest last, one twice, one of no
                // job) under the same filter: answered by the indexes like a count.
                let mut picked: Vec<JobKey> = order.iter().rev().step_by(2).copied().collect();
                picked.extend(order.first().copied());
                picked.push(unknown);
                let kf = Filter { keys: Some(picked), ..f.clone() };
                assert_eq!(snap.count(project, &kf).unwrap(), self.model.count(project, &kf), "count {project} {kf:?}");
                let listed = self.page(project, &kf, &all).unwrap_or_default();
                for (start, count, stop, after) in
                    [(1, 2, None, None), (0, 3, order.get(order.len() / 2), None), (0, 1000, None, listed.get(1))]
                {
                    self.page(project, &kf, &Paging { count, start, stop: stop.copied(), startafter: after.copied() });
                }
            }
        }
        for (key, m) in &self.model.jobs {
            let j = snap.get(*key).unwrap().unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(
                (j.state, j.priority, j.times, &j.tags, &j.unique),
                (m.state, m.priority, m.times, &m.tags, &m.unique),
                "{key}"
            );
            let fields: Vec<(String, String)> = j
                .meta
                .fields()
                .unwrap()
                .iter()
                .map(|(n, v)| (n.to_string(), if n == "auth" { "\"?\"".to_string() } else { v.get().to_string() }))
                .collect();
            assert_eq!(fields, m.meta, "{key} metadata");
        }
        assert!(snap.get(JobKey::new(1, 1, 12345)).unwrap().is_none());
    }
}

fn run(ops: &[Op], filters: &[Filter], durability: Durability) {
    let mut w = World::new(durability);
    let mut filters = filters.to_vec();
    filters.push(Filter { states: vec![JobState::Finished], ..Filter::default() });
    filters.push(Filter::default());
    for op in ops {
        w.step(op);
        w.check(&filters);
    }
    // Written only through the engine's API: `jobq check` finds nothing.
    w.store.take().unwrap().close().unwrap();
    let report = jobq::store::check(std::path::Path::new("/db"), Arc::new(w.sim.clone())).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40), filters in proptest::collection::vec(filter(), 4)) {
        run(&ops, &filters, Durability::Sync);
    }

    #[test]
    fn buffered_store_matches_model(ops in proptest::collection::vec(op(), 1..30), filters in proptest::collection::vec(filter(), 3)) {
        run(&ops, &filters, Durability::Buffered);
    }
}

#[test]
fn the_model_test_reaches_merges_and_crashes() {
    // A fixed sequence that must freeze, merge, reopen and cut power.
    let push = |n: usize| Op::Push {
        project: 1,
        lines: (0..n)
            .map(|i| MPush {
                spider: format!("s{}", i % 3),
                state: JobState::Pending,
                priority: Some((i % 5) as i64),
                tags: vec![TAGS[i % 5].to_string()],
                unique: None,
                field: None,
            })
            .collect(),
        actor: true,
    };
    let finish = |p: usize| Op::Update {
        project: 1,
        lines: vec![(Target::Job(p), Some(JobState::Finished), MChanges::default())],
        actor: false,
    };
    let mut ops = vec![push(4), push(4), Op::Tick(1), push(4), finish(1), finish(2), Op::Tick(0), push(4), push(4)];
    ops.extend([
        Op::Flush,
        Op::PowerCut(CrashMode::Garble, 7),
        push(3),
        finish(5),
        Op::Reopen,
        Op::Start { project: 1, field: None },
    ]);
    let mut w = World::new(Durability::Sync);
    let filters = vec![Filter::default(), Filter { states: vec![JobState::Finished], ..Filter::default() }];
    for op in &ops {
        w.step(op);
        w.check(&filters);
    }
    let stats = w.store().stats();
    assert!(stats.snapshot.index_files >= 1, "{stats:?}");
    assert!(!w.store().report().indexes.is_empty());
}

#[test]
fn lines_that_change_nothing_do_not_order_the_jobs_a_write_moves() {
    // The first change of a job in a write orders the jobs it moves (their `ts`
    // ties): adding and removing one tag in a line is no change.
    let push = |state| Op::Push {
        project: 2,
        lines: vec![MPush { spider: "s0".into(), state, priority: None, tags: vec![], unique: None, field: None }],
        actor: false,
    };
    let noop = MChanges { add: vec!["a".into()], remove: vec!["a".into()], ..MChanges::default() };
    let ops = [
        push(JobState::Running),
        push(JobState::Pending),
        Op::Update {
            project: 2,
            lines: vec![
                (Target::Spider(1), Some(JobState::Running), noop),
                (Target::Spider(1), Some(JobState::Pending), MChanges::default()),
            ],
            actor: false,
        },
    ];
    run(&ops, &[], Durability::Sync);
}
