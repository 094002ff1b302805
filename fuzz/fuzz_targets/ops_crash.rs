//! Random operation sequences on a store on `SimFs`, cut by a simulated power
//! cut at an input-chosen file-system call, with an input-chosen `CrashMode`
//! (and optionally a second cut during recovery), then reopened.
//!
//! The same operations first run on a fault-free `SimFs` (the reference run),
//! recording the store's state after each operation: every job in listing order
//! with its state, priority, times, tags, unique, metadata (the random `auth`
//! token masked) and spider name. In the faulty run, the operations before the
//! first failure must answer exactly as in the reference; the reopened store must
//! then hold exactly the reference state after the acknowledged operations, or
//! after those and the one that failed (its frame may have become durable before
//! the failure was noticed), but nothing else: every acknowledged write is
//! present with its content, and no write is half there. No push, import or
//! start may be acknowledged after the cut. Reopening never panics and never
//! refuses (power cuts only tear the tail), and the reopened store takes writes.
//! Clean reopens in the reference run must preserve the state exactly.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use jobq::fs::{CrashMode, Fault, FaultKind, SimFs};
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{Filter, Paging};
use jobq::store::request::{parse_push, parse_update};
use jobq::store::{Changes, PushResult};
use jobq::{Error, Options, Store};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const TAGS: [&str; 4] = ["a", "b", "é", "c d"];
const VALUES: [&str; 6] = ["1", "\"x\"", "[1,2.50]", "{\"k\":null}", "123456789012345678901234567890", "\"\\u00e9\""];

#[derive(Debug, Arbitrary, Clone)]
struct ArbChanges {
    priority: Option<i8>,
    tags: Option<Vec<u8>>,
    add: Vec<u8>,
    remove: Vec<u8>,
    set: Vec<(u8, u8)>,
    delete: Vec<u8>,
}

/// A priority in the API's range (0 to 4).
fn priority(p: i8) -> i64 {
    i64::from(p).rem_euclid(5)
}

fn tag_list(v: &[u8]) -> Vec<&'static str> {
    v.iter().take(3).map(|t| TAGS[usize::from(*t) % TAGS.len()]).collect()
}

impl ArbChanges {
    fn json_fields(&self) -> String {
        let mut o = String::new();
        if let Some(p) = self.priority {
            o += &format!(",\"priority\":{}", priority(p));
        }
        if let Some(t) = &self.tags {
            o += &format!(",\"tags\":{}", serde_json::to_string(&tag_list(t)).unwrap());
        }
        if !self.add.is_empty() {
            o += &format!(",\"add_tag\":{}", serde_json::to_string(&tag_list(&self.add)).unwrap());
        }
        if !self.remove.is_empty() {
            o += &format!(",\"remove_tag\":{}", serde_json::to_string(&tag_list(&self.remove)).unwrap());
        }
        for (n, v) in self.set.iter().take(3) {
            o += &format!(",\"f{}\":{}", n % 3, VALUES[usize::from(*v) % VALUES.len()]);
        }
        o
    }

    fn engine(&self) -> Changes {
        Changes {
            priority: self.priority.map(priority),
            tags: self.tags.as_ref().map(|t| tag_list(t).into_iter().map(String::from).collect()),
            add_tags: tag_list(&self.add).into_iter().map(String::from).collect(),
            remove_tags: tag_list(&self.remove).into_iter().map(String::from).collect(),
            set: self
                .set
                .iter()
                .take(3)
                .map(|(n, v)| {
                    (format!("f{}", n % 3), RawValue::from_string(VALUES[usize::from(*v) % VALUES.len()].into()).unwrap())
                })
                .collect(),
            remove: self.delete.iter().take(2).map(|n| format!("f{}", n % 3)).collect(),
        }
    }
}

#[derive(Debug, Arbitrary, Clone)]
struct PushLine {
    spider: u8,
    state: u8,
    priority: Option<i8>,
    tags: Vec<u8>,
    unique: Option<u8>,
    field: Option<(u8, u8)>,
}

#[derive(Debug, Arbitrary, Clone)]
struct ImportLine {
    project: bool,
    spider: u8,
    job: u8,
    state: u8,
    ts: u16,
    tags: Vec<u8>,
    priority: Option<i8>,
}

fn state(c: u8) -> JobState {
    // Mostly pending: it keeps start and cancel busy.
    [JobState::Pending, JobState::Pending, JobState::Running, JobState::Finished, JobState::Deleted][usize::from(c % 5)]
}

fn project(p: bool) -> u32 {
    if p {
        2
    } else {
        1
    }
}

/// A key named by a pick, independent of the store's state (both runs agree).
fn key(project: u32, pick: u8) -> JobKey {
    JobKey::new(project, u32::from(pick % 3) + 1, u32::from(pick / 3 % 8) + 1)
}

#[derive(Debug, Arbitrary, Clone)]
enum Op {
    Push { project: bool, lines: Vec<PushLine>, actor: bool },
    Update { project: bool, lines: Vec<(u8, bool, Option<u8>, ArbChanges)> },
    Start { project: bool, field: Option<(u8, u8)> },
    Cancel { project: bool, picks: Vec<u8> },
    Edit { project: bool, pick: u8, changes: ArbChanges },
    Import { lines: Vec<ImportLine>, bad: Option<u8> },
    SpiderId { project: bool, name: u8 },
    Tick(u8),
    Flush,
    Reopen,
}

/// The input: the power cut's parameters first, then operations until the bytes run out.
#[derive(Debug)]
struct Input {
    /// The mutating file-system call (counted from after the first open) that loses power.
    cut_at: u16,
    mode: u8,
    seed: u64,
    /// A second power cut during recovery, at this call of the reopen.
    second: Option<u8>,
    ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut input =
            Input { cut_at: u.arbitrary()?, mode: u.arbitrary()?, seed: u.arbitrary()?, second: u.arbitrary()?, ops: Vec::new() };
        while !u.is_empty() && input.ops.len() < MAX_OPS {
            input.ops.push(u.arbitrary()?);
        }
        Ok(input)
    }
}

const MAX_OPS: usize = 24;

struct World {
    sim: SimFs,
    clock: Arc<ManualClock>,
    opts: Options,
    store: Option<Store>,
}

/// What an operation answered, comparable between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Skipped,
    Ok(String),
    Input(String),
    Failed(String),
}

impl Answer {
    fn failed(&self) -> bool {
        matches!(self, Answer::Failed(_))
    }
}

/// Whether an answer acknowledges a write that always writes a frame.
fn writes_for_sure(op: &Op, a: &Answer) -> bool {
    let Answer::Ok(s) = a else { return false };
    match op {
        Op::Push { .. } => s.contains("Pushed"),
        Op::Start { .. } => s.starts_with("Some"),
        Op::Import { .. } => !s.contains("jobs: 0,"),
        _ => false,
    }
}

fn answer<T: std::fmt::Debug>(r: Result<T, Error>) -> Answer {
    match r {
        Ok(v) => Answer::Ok(format!("{v:?}")),
        Err(e) if e.is_input() => Answer::Input(e.to_string()),
        Err(e) => {
            assert!(
                matches!(e, Error::Io { .. } | Error::Poisoned { .. } | Error::Closed),
                "a failure that is neither an I/O error nor poisoning: {e}"
            );
            Answer::Failed(e.to_string())
        }
    }
}

impl World {
    fn new() -> World {
        let sim = SimFs::new();
        let clock = Arc::new(ManualClock::new(1000));
        let opts = Options {
            fs: Arc::new(sim.clone()),
            clock: clock.clone(),
            background: false,
            memtable_entries: 4,
            bulk_entries: 5,
            merge_fanout: 2,
            segment_bytes: 2048,
            ..Options::default()
        };
        let store = Some(Store::open("/db", opts.clone()).expect("a store opens on an empty SimFs"));
        World { sim, clock, opts, store }
    }

    fn step(&mut self, op: &Op) -> Answer {
        if let Op::Tick(ms) = op {
            self.clock.advance([0, 1, 2, 1000][usize::from(*ms % 4)]);
            return Answer::Ok(String::new());
        }
        if let Op::Reopen = op {
            let Some(store) = self.store.take() else { return Answer::Skipped };
            if let Err(e) = store.close() {
                return answer::<()>(Err(e));
            }
            return match Store::open("/db", self.opts.clone()) {
                Ok(s) => {
                    self.store = Some(s);
                    Answer::Ok(String::new())
                }
                Err(e) => answer::<()>(Err(e)),
            };
        }
        let Some(store) = self.store.as_ref() else { return Answer::Skipped };
        match op {
            Op::Push { project: p, lines, actor } => {
                let mut specs = Vec::new();
                for l in lines.iter().take(4) {
                    let mut o = format!("{{\"spider\":\"s{}\",\"state\":\"{}\"", l.spider % 3, state(l.state));
                    if let Some(p) = l.priority {
                        o += &format!(",\"priority\":{}", priority(p));
                    }
                    if !l.tags.is_empty() {
                        o += &format!(",\"tags\":{}", serde_json::to_string(&tag_list(&l.tags)).unwrap());
                    }
                    if let Some(u) = l.unique {
                        o += &format!(",\"unique\":\"u{}\"", u % 3);
                    }
                    if let Some((n, v)) = l.field {
                        o += &format!(",\"f{}\":{}", n % 3, VALUES[usize::from(v) % VALUES.len()]);
                    }
                    o += "}";
                    specs.push(parse_push(&o).unwrap_or_else(|e| panic!("push line {o}: {e}")));
                }
                if specs.is_empty() {
                    return Answer::Skipped;
                }
                let r = store.push(project(*p), &specs, actor.then_some("tester"));
                // Tokens are random: keep the keys only.
                answer(r.map(|v| {
                    v.into_iter()
                        .map(|x| match x {
                            PushResult::Pushed { key, .. } => format!("Pushed {key}"),
                            PushResult::Conflict { unique } => format!("Conflict {unique}"),
                        })
                        .collect::<Vec<_>>()
                }))
            }
            Op::Update { project: p, lines } => {
                let p = project(*p);
                let mut specs = Vec::new();
                for (pick, spider_wide, st, c) in lines.iter().take(3) {
                    let k = key(p, *pick);
                    let target = if *spider_wide { format!("{}/{}", k.project, k.spider) } else { k.to_string() };
                    let mut o = format!("{{\"key\":\"{target}\"");
                    if let Some(s) = st {
                        o += &format!(",\"state\":\"{}\"", state(*s));
                    }
                    o += &c.json_fields();
                    o += "}";
                    specs.push(parse_update(&o, p).unwrap_or_else(|e| panic!("update line {o}: {e}")));
                }
                if specs.is_empty() {
                    return Answer::Skipped;
                }
                answer(store.update(p, &specs, None))
            }
            Op::Start { project: p, field } => {
                let c = ArbChanges {
                    priority: None,
                    tags: None,
                    add: vec![],
                    remove: vec![],
                    set: field.iter().copied().collect(),
                    delete: vec![],
                };
                answer(store.start_next(project(*p), &c.engine(), Some("runner")).map(|j| j.map(|j| j.key)))
            }
            Op::Cancel { project: p, picks } => {
                let keys: Vec<JobKey> = picks.iter().take(4).map(|x| key(project(*p), *x)).collect();
                answer(store.cancel(project(*p), &keys, None))
            }
            Op::Edit { project: p, pick, changes } => answer(store.edit(key(project(*p), *pick), &changes.engine(), None)),
            Op::Import { lines, bad } => {
                let mut text = String::new();
                for (i, l) in lines.iter().take(6).enumerate() {
                    if bad.is_some_and(|b| usize::from(b % 8) == i) {
                        text += "{\"key\":\"1/1/1\",\"spider\":\"s0\",\"state\":\"bogus\"}\n";
                    }
                    let st = state(l.state);
                    text += &format!(
                        "{{\"key\":\"{}/{}/{}\",\"spider\":\"s{}\",\"state\":\"{st}\",\"{}\":{},\"tags\":{}",
                        project(l.project),
                        l.spider % 3 + 1,
                        l.job % 12 + 1,
                        l.spider % 3,
                        st.time_field(),
                        990 + u64::from(l.ts % 40),
                        serde_json::to_string(&tag_list(&l.tags)).unwrap()
                    );
                    if let Some(p) = l.priority {
                        text += &format!(",\"priority\":{}", priority(p));
                    }
                    text += ",\"x\":1}\n";
                }
                if text.is_empty() {
                    return Answer::Skipped;
                }
                answer(store.import(&mut text.as_bytes(), &mut |_| {}).map(|r| format!("jobs: {},", r.jobs)))
            }
            Op::SpiderId { project: p, name } => answer(store.spider_id(project(*p), &format!("s{}", name % 4), true)),
            Op::Flush => answer(store.flush_indexes()),
            Op::Tick(_) | Op::Reopen => unreachable!("handled above"),
        }
    }
}

/// One job as the store shows it.
type JobView = (JobKey, JobState, i64, [Option<u64>; 4], Vec<String>, Option<String>, Vec<(String, String)>, String);

/// Every job of projects 1 and 2, in listing order.
fn capture(store: &Store) -> BTreeMap<u32, Vec<JobView>> {
    let snap = store.snapshot();
    let all = Paging { count: 1_000_000, start: 0, stop: None, startafter: None };
    let mut out = BTreeMap::new();
    for p in 1..=2u32 {
        let hits = snap.list(p, &Filter::default(), &all).expect("list");
        let n = snap.count(p, &Filter::default()).expect("count");
        assert_eq!(n, hits.len() as u64, "count and list disagree in project {p}");
        let mut jobs = Vec::new();
        for h in hits {
            let k = JobKey::from_local(p, h.local);
            let j = snap.get(k).expect("get").unwrap_or_else(|| panic!("listed job {k} is missing"));
            let meta = j
                .meta
                .fields()
                .expect("metadata parses")
                .iter()
                .map(|(n, v)| (n.to_string(), if n == "auth" { "?".to_string() } else { v.get().to_string() }))
                .collect();
            let spider = snap.spider_name(p, k.spider).map(|s| s.to_string()).unwrap_or_default();
            jobs.push((k, j.state, j.priority, j.times, j.tags.clone(), j.unique.clone(), meta, spider));
        }
        out.insert(p, jobs);
    }
    out
}

fn crash_mode(m: u8) -> CrashMode {
    CrashMode::ALL[usize::from(m % 4)]
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else { return };

    // The reference run: no fault.
    let mut reference = World::new();
    reference.sim.set_fault(None); // counts calls from here, as the faulty run's fault does
    let mut states = vec![capture(reference.store.as_ref().unwrap())];
    let mut ref_answers = Vec::new();
    for op in &input.ops {
        let a = reference.step(op);
        assert!(!a.failed(), "{op:?} failed without a fault: {a:?}");
        let now = capture(reference.store.as_ref().expect("the reference store stays open"));
        if matches!(op, Op::Reopen | Op::Flush | Op::SpiderId { .. } | Op::Tick(_)) {
            assert_eq!(&now, states.last().unwrap(), "{op:?} changed the jobs");
        }
        states.push(now);
        ref_answers.push(a);
    }
    // Cut somewhere in the workload (or in the close that follows it).
    let calls = reference.sim.mutations();
    drop(reference);
    let cut_at = u64::from(input.cut_at) % (calls + 4);

    // The faulty run.
    let mut w = World::new();
    w.sim.set_fault(Some(Fault { at: cut_at, kind: FaultKind::PowerCut, sticky: true }));
    let mut cut: Option<usize> = None;
    for (i, op) in input.ops.iter().enumerate() {
        let a = w.step(op);
        match cut {
            None if a.failed() => cut = Some(i),
            None => assert_eq!(a, ref_answers[i], "{op:?} answered otherwise before any failure"),
            Some(c) => assert!(
                !writes_for_sure(op, &a),
                "{op:?} was acknowledged ({a:?}) after the power cut during op {c} ({:?})",
                input.ops[c]
            ),
        }
    }
    let acked = cut.unwrap_or(input.ops.len());
    drop(w.store.take());
    let mode = crash_mode(input.mode);
    w.sim.crash(mode, input.seed);
    if let Some(at) = input.second {
        w.sim.set_fault(Some(Fault { at: u64::from(at % 64), kind: FaultKind::PowerCut, sticky: true }));
        drop(Store::open("/db", w.opts.clone()));
        w.sim.crash(mode, input.seed.wrapping_add(1));
    }
    let context = format!("cut at call {cut_at} of {calls} ({mode:?}), first failure at op {cut:?}");
    let store = Store::open("/db", w.opts.clone()).unwrap_or_else(|e| panic!("reopen after the power cut refused ({context}): {e}"));
    let got = capture(&store);
    if jobq_fuzz::verbose() {
        let jobs: usize = got.values().map(Vec::len).sum();
        let same = if &got == &states[acked] { "acknowledged state" } else { "acknowledged + failed op" };
        eprintln!("ops {} | {context} | recovered {jobs} jobs = {same}", input.ops.len());
    }
    let before = &states[acked];
    let with_failed = states.get(acked + 1);
    if &got != before && Some(&got) != with_failed {
        // Name the first difference for the report.
        let mut msg = String::new();
        for p in 1..=2u32 {
            let (g, b) = (&got[&p], &before[&p]);
            let gk: Vec<JobKey> = g.iter().map(|j| j.0).collect();
            let bk: Vec<JobKey> = b.iter().map(|j| j.0).collect();
            msg += &format!("\nproject {p}: recovered {gk:?}\n   acknowledged state {bk:?}");
            for j in b {
                if let Some(x) = g.iter().find(|x| x.0 == j.0) {
                    if x != j {
                        msg += &format!("\n   {} differs: recovered {x:?}\n      acknowledged {j:?}", j.0);
                    }
                } else {
                    msg += &format!("\n   acknowledged {} lost: {j:?}", j.0);
                }
            }
        }
        panic!("the reopened store holds neither the acknowledged state nor that plus the failed op ({context}):{msg}");
    }
    // The recovered store takes writes again.
    let spec = parse_push("{\"spider\":\"after\"}").unwrap();
    store.push(1, &[spec], None).unwrap_or_else(|e| panic!("a push after recovery failed ({context}): {e}"));
});
