//! The model test's inputs: the operations and filters proptest draws.

use jobq::fs::CrashMode;
use jobq::model::JobState;
use jobq::query::Filter;
use proptest::prelude::*;

use crate::common::model::{MChanges, MImport, MPush};

#[derive(Clone, Debug)]
pub enum Target {
    Job(usize),
    /// Every job of a spider (by id) of the update's project.
    Spider(u32),
}

#[derive(Clone, Debug)]
pub enum Op {
    Push {
        project: u32,
        lines: Vec<MPush>,
        actor: bool,
    },
    Update {
        project: u32,
        lines: Vec<(Target, Option<JobState>, MChanges)>,
        actor: bool,
    },
    Start {
        project: u32,
        field: Option<(String, String)>,
    },
    Cancel {
        project: u32,
        picks: Vec<usize>,
    },
    Edit {
        pick: usize,
        changes: MChanges,
    },
    /// Take a job holding a `unique` (the `pick`th such job of the project) back
    /// to pending or running.
    Revive {
        project: u32,
        pick: usize,
        running: bool,
    },
    /// Import lines; with `bad`, a malformed line at that index refuses the file.
    Import {
        lines: Vec<MImport>,
        bad: Option<usize>,
    },
    /// The next page of a pager that continues across writes by `startafter`
    /// (over every job, or the pending and running ones); it starts over once a
    /// page comes back empty.
    Page {
        project: u32,
        count: u64,
        active: bool,
    },
    Tick(u64),
    Flush,
    Reopen,
    PowerCut(CrashMode, u64),
}

pub const TAGS: [&str; 5] = ["a", "b", "c", "d", "é"];
pub const VALUES: [&str; 5] = ["1", "\"x\"", "[1,2.50]", "{\"k\":null}", "123456789012345678901234567890"];
/// `close_reason` values as stored (raw JSON): `"404"` and `404` share a term.
pub const REASONS: [&str; 7] = ["\"failed\"", "\"ok\"", "404", "\"404\"", "null", "\"\"", "\"\\u00e9\""];
/// `close_reason` filter values: every term above, "cancelled" (cancel's), and one no job has.
pub const REASON_TERMS: [&str; 8] = ["failed", "ok", "404", "null", "", "é", "cancelled", "nope"];

pub fn state() -> impl Strategy<Value = JobState> {
    prop_oneof![6 => Just(JobState::Pending), 2 => Just(JobState::Running), 2 => Just(JobState::Finished), 1 => Just(JobState::Deleted)]
}

pub fn tags(max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(TAGS.to_vec(), 0..=max).prop_map(|v| v.into_iter().map(String::from).collect())
}

pub fn field() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        3 => (0..3u32, 0..VALUES.len()).prop_map(|(f, v)| (format!("f{f}"), VALUES[v].to_string())),
        1 => proptest::sample::select(REASONS.to_vec()).prop_map(|v| ("close_reason".to_string(), v.to_string())),
    ]
}

pub fn changes() -> impl Strategy<Value = MChanges> {
    (
        proptest::option::weighted(0.2, 0..5i64),
        proptest::option::weighted(0.2, tags(2)),
        tags(2),
        tags(1),
        proptest::collection::vec(field(), 0..2),
    )
        .prop_map(|(priority, tags, add, remove, set)| MChanges {
            priority,
            tags,
            add,
            remove,
            set,
            delete: vec![],
        })
}

pub fn push_line() -> impl Strategy<Value = MPush> {
    (
        0..4u32,
        state(),
        proptest::option::weighted(0.3, 0..5i64),
        tags(3),
        proptest::option::weighted(0.3, 0..3u32),
        proptest::option::of(field()),
    )
        .prop_map(|(s, state, priority, tags, u, field)| MPush {
            spider: format!("s{s}"),
            state,
            priority,
            tags,
            unique: u.map(|u| format!("u{u}")),
            field,
        })
}

pub fn import_line() -> impl Strategy<Value = MImport> {
    (
        (1..3u32, 0..4u32, 1..12u32),
        state(),
        990..1010u64,
        tags(2),
        proptest::option::of(0..5i64),
        proptest::option::weighted(0.3, 0..3u32),
        proptest::option::weighted(0.3, proptest::sample::select(REASONS.to_vec())),
    )
        .prop_map(|((project, s, job), state, ts, tags, priority, u, reason)| MImport {
            project,
            spider: format!("s{s}"),
            job,
            state,
            ts,
            tags,
            priority,
            unique: u.map(|u| format!("u{u}")),
            reason,
        })
}

pub fn op() -> impl Strategy<Value = Op> {
    let target = prop_oneof![4 => any::<usize>().prop_map(Target::Job), 1 => (1..5u32).prop_map(Target::Spider)];
    prop_oneof![
        6 => (1..3u32, proptest::collection::vec(push_line(), 1..5), any::<bool>()).prop_map(|(project, lines, actor)| Op::Push { project, lines, actor }),
        5 => (1..3u32, proptest::collection::vec((target, proptest::option::weighted(0.6, state()), changes()), 1..4), any::<bool>())
            .prop_map(|(project, lines, actor)| Op::Update { project, lines, actor }),
        2 => (1..3u32, proptest::option::of(field())).prop_map(|(project, field)| Op::Start { project, field }),
        1 => (1..3u32, proptest::collection::vec(any::<usize>(), 1..4)).prop_map(|(project, picks)| Op::Cancel { project, picks }),
        2 => (any::<usize>(), changes()).prop_map(|(pick, mut changes)| {
            if pick % 3 == 0 {
                changes.delete.push(format!("f{}", pick % 3));
            }
            if pick % 5 == 1 {
                changes.delete.push("close_reason".into());
            }
            Op::Edit { pick, changes }
        }),
        2 => (1..3u32, any::<usize>(), any::<bool>()).prop_map(|(project, pick, running)| Op::Revive { project, pick, running }),
        1 => (proptest::collection::vec(import_line(), 1..6), proptest::option::weighted(0.2, 0..6usize))
            .prop_map(|(lines, bad)| Op::Import { lines, bad }),
        2 => (1..3u32, 1..4u64, any::<bool>()).prop_map(|(project, count, active)| Op::Page { project, count, active }),
        3 => prop_oneof![Just(0u64), 1..3u64, Just(1000u64)].prop_map(Op::Tick),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => (proptest::sample::select(CrashMode::ALL.to_vec()), any::<u64>()).prop_map(|(m, s)| Op::PowerCut(m, s)),
    ]
}

pub fn filter() -> impl Strategy<Value = Filter> {
    (
        proptest::option::weighted(0.3, 0..5u32),
        proptest::sample::subsequence(JobState::ALL.to_vec(), 0..=3),
        proptest::option::weighted(0.2, 990..1020u64),
        proptest::option::weighted(0.2, 995..3030u64),
        tags(2),
        tags(2),
        prop_oneof![2 => Just(vec![]), 1 => tags(2)],
        prop_oneof![2 => Just(vec![]), 1 => proptest::sample::subsequence(REASON_TERMS.to_vec(), 1..=2)],
    )
        .prop_map(|(spider, states, startts, endts, has_tags, lacks_tags, has_tags_all, reasons)| Filter {
            spider: spider.map(|s| format!("s{s}")),
            states,
            startts,
            endts,
            has_tags,
            has_tags_all,
            lacks_tags,
            close_reasons: reasons.into_iter().map(String::from).collect(),
            keys: None,
        })
}
