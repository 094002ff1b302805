//! The query mix: every filter shape of the JobQ API (spider, state, time range,
//! has_tag OR, lacks_tag AND, key list) and of its extensions (close_reason,
//! has_tag_all) alone and combined, plus paging (deep `start`, `stop`, and a walk
//! of 100,000 jobs by `startafter`), each in a few seeded variants over a
//! generated dataset. Needs `dataset` as a sibling module.

use jobq::query::{Filter, Paging};
use jobq::{JobKey, JobState};

use super::dataset::{spider_name, tag_name, Dataset, Rng, BIG_PROJECT, PROJECTS, SPAN_MS, T0};

const DAY: u64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Count,
    /// A list of 100, rows rendered.
    List,
    /// A page of 1,000 of a walk by `startafter`, rows rendered.
    Page,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::List => "list100",
            Kind::Page => "page1000",
        }
    }
}

/// One concrete query.
#[derive(Clone, Debug)]
pub struct Case {
    pub shape: &'static str,
    pub kind: Kind,
    pub project: u32,
    pub filter: Filter,
    pub paging: Paging,
}

/// What the dataset holds, from a pass over its jobs (no JSON written).
pub struct Facts {
    /// Jobs per project (index project-1).
    pub per_project: Vec<u64>,
    /// Jobs per spider of the big project (index spider-1).
    pub big_spiders: Vec<u64>,
    /// (spider, job) of every job of the big project, in file order.
    pub big_keys: Vec<(u32, u32)>,
    /// (spider, job) of the big project's finished jobs in listing order (`ts`,
    /// then write order, descending).
    pub big_finished: Vec<(u32, u32)>,
}

impl Facts {
    pub fn gather(ds: &Dataset) -> Facts {
        let mut f = Facts {
            per_project: vec![0; PROJECTS as usize],
            big_spiders: Vec::new(),
            big_keys: Vec::new(),
            big_finished: Vec::new(),
        };
        let mut finished: Vec<(u64, u64, u32, u32)> = Vec::new();
        for j in ds.iter() {
            f.per_project[j.project as usize - 1] += 1;
            if j.project == BIG_PROJECT {
                let s = j.spider as usize;
                if f.big_spiders.len() < s {
                    f.big_spiders.resize(s, 0);
                }
                f.big_spiders[s - 1] += 1;
                f.big_keys.push((j.spider, j.job));
                if j.state == 2 {
                    finished.push((j.ts(), j.seq, j.spider, j.job));
                }
            }
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        f.big_finished = finished.into_iter().map(|(_, _, s, j)| (s, j)).collect();
        f
    }

    /// The big project's key that has about `newer` jobs after it in the file.
    fn key_from_end(&self, newer: usize) -> JobKey {
        let i = self.big_keys.len().saturating_sub(newer + 1);
        let (s, j) = self.big_keys[i];
        JobKey::new(BIG_PROJECT, s, j)
    }
}

fn fin() -> Vec<JobState> {
    vec![JobState::Finished]
}

fn fin_only() -> Filter {
    Filter { states: fin(), ..Filter::default() }
}

fn reasons(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn tags(ranks: &[u64]) -> Vec<String> {
    ranks.iter().map(|&r| tag_name(r as u32)).collect()
}

/// `n` distinct ranks below `below`.
fn distinct(r: &mut Rng, n: usize, below: u64) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let x = r.below(below);
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn window(r: &mut Rng, len: u64) -> (Option<u64>, Option<u64>) {
    let start = T0 + r.below(SPAN_MS - len);
    (Some(start), Some(start + len))
}

fn top_spider(r: &mut Rng, n: u64) -> Option<String> {
    Some(spider_name(1 + r.below(n) as u32))
}

type Make = fn(&mut Rng, &Facts) -> (u32, Filter, Paging);

fn big(filter: Filter) -> (u32, Filter, Paging) {
    (BIG_PROJECT, filter, Paging::default())
}

fn deep(filter: Filter, start: u64, stop: Option<JobKey>) -> (u32, Filter, Paging) {
    (BIG_PROJECT, filter, Paging { count: 100, start, stop, startafter: None })
}

/// Shapes answered as count and as list of 100.
const FILTERS: &[(&str, Make)] = &[
    ("finished", |_, _| big(Filter { states: fin(), ..Filter::default() })),
    ("pending+running", |_, _| big(Filter { states: vec![JobState::Pending, JobState::Running], ..Filter::default() })),
    ("any state", |_, _| big(Filter { states: JobState::ALL.to_vec(), ..Filter::default() })),
    ("spider", |r, _| big(Filter { spider: top_spider(r, 10), states: fin(), ..Filter::default() })),
    ("rare spider", |r, f| {
        let rare: Vec<usize> = (0..f.big_spiders.len()).filter(|&i| (20..500).contains(&f.big_spiders[i])).collect();
        let s = if rare.is_empty() { f.big_spiders.len() } else { 1 + rare[r.below(rare.len() as u64) as usize] };
        big(Filter { spider: Some(spider_name(s as u32)), states: fin(), ..Filter::default() })
    }),
    ("has_tag", |r, _| big(Filter { has_tags: tags(&[r.below(10)]), states: fin(), ..Filter::default() })),
    ("has_tag OR 3", |r, _| big(Filter { has_tags: tags(&distinct(r, 3, 20)), states: fin(), ..Filter::default() })),
    ("rare tag", |r, _| big(Filter { has_tags: tags(&[200 + r.below(300)]), states: fin(), ..Filter::default() })),
    ("absent tag", |_, _| big(Filter { has_tags: vec!["no-such-tag".into()], states: fin(), ..Filter::default() })),
    ("lacks_tag AND 2", |r, _| {
        big(Filter { lacks_tags: tags(&distinct(r, 2, 10)), states: fin(), ..Filter::default() })
    }),
    ("time 30d", |r, _| {
        let (startts, endts) = window(r, 30 * DAY);
        big(Filter { startts, endts, states: fin(), ..Filter::default() })
    }),
    ("time 1d", |r, _| {
        let (startts, endts) = window(r, DAY);
        big(Filter { startts, endts, states: fin(), ..Filter::default() })
    }),
    ("spider+tag", |r, _| {
        big(Filter { spider: top_spider(r, 10), has_tags: tags(&[r.below(5)]), states: fin(), ..Filter::default() })
    }),
    ("spider+2 states+90d", |r, _| {
        let (startts, endts) = window(r, 90 * DAY);
        let states = vec![JobState::Finished, JobState::Deleted];
        big(Filter { spider: top_spider(r, 10), states, startts, endts, ..Filter::default() })
    }),
    ("tags OR 2+30d", |r, _| {
        let (startts, endts) = window(r, 30 * DAY);
        big(Filter { has_tags: tags(&distinct(r, 2, 10)), startts, endts, states: fin(), ..Filter::default() })
    }),
    ("every filter", |r, _| {
        let (startts, endts) = window(r, 180 * DAY);
        let t = distinct(r, 3, 10);
        big(Filter {
            spider: top_spider(r, 5),
            states: vec![JobState::Finished, JobState::Deleted],
            startts,
            endts,
            has_tags: tags(&t[..2]),
            lacks_tags: tags(&t[2..]),
            ..Filter::default()
        })
    }),
    ("worst: has 3 common, lacks 1", |r, _| {
        let t = distinct(r, 4, 5);
        big(Filter { has_tags: tags(&t[..3]), lacks_tags: tags(&t[3..]), states: fin(), ..Filter::default() })
    }),
    ("close_reason", |_, _| big(Filter { close_reasons: reasons(&["closespider_timeout"]), ..fin_only() })),
    ("close_reason common", |_, _| big(Filter { close_reasons: reasons(&["finished"]), ..fin_only() })),
    ("close_reason OR 2, any state", |_, _| {
        let states = JobState::ALL.to_vec();
        big(Filter { close_reasons: reasons(&["finished", "closespider_timeout"]), states, ..Filter::default() })
    }),
    ("close_reason absent", |_, _| big(Filter { close_reasons: reasons(&["no-such-reason"]), ..fin_only() })),
    ("close_reason+spider+tag", |r, _| {
        let close_reasons = reasons(&["closespider_timeout"]);
        big(Filter { spider: top_spider(r, 10), has_tags: tags(&[r.below(5)]), close_reasons, ..fin_only() })
    }),
    ("has_tag_all 2 common", |r, _| big(Filter { has_tags_all: tags(&distinct(r, 2, 5)), ..fin_only() })),
    ("has OR 2, has_tag_all 1, lacks 1", |r, _| {
        let t = distinct(r, 4, 8);
        big(Filter { has_tags: tags(&t[..2]), has_tags_all: tags(&t[2..3]), lacks_tags: tags(&t[3..]), ..fin_only() })
    }),
    ("key list 20", |r, f| {
        let mut keys: Vec<JobKey> = (0..20)
            .map(|_| {
                let (s, j) = f.big_keys[r.below(f.big_keys.len() as u64) as usize];
                JobKey::new(BIG_PROJECT, s, j)
            })
            .collect();
        keys.push(JobKey::new(BIG_PROJECT, 1, u32::MAX - 1));
        big(Filter { keys: Some(keys), states: fin(), ..Filter::default() })
    }),
    ("small project", |r, f| {
        let p = 100 + r.below(u64::from(PROJECTS) - 100) as u32;
        let p = (p..=PROJECTS).find(|&p| f.per_project[p as usize - 1] > 0).unwrap_or(2);
        (p, Filter { states: fin(), ..Filter::default() }, Paging::default())
    }),
];

/// Paging shapes: lists only (a count ignores paging).
const PAGINGS: &[(&str, Make)] = &[
    ("finished start=20000", |_, _| deep(Filter { states: fin(), ..Filter::default() }, 20_000, None)),
    ("spider start=20000", |_, _| {
        deep(Filter { spider: top_spider(&mut Rng::new(0), 1), states: fin(), ..Filter::default() }, 20_000, None)
    }),
    ("worst start=20000", |r, _| {
        let t = distinct(r, 4, 5);
        deep(
            Filter { has_tags: tags(&t[..3]), lacks_tags: tags(&t[3..]), states: fin(), ..Filter::default() },
            20_000,
            None,
        )
    }),
    ("stop (5k newer)", |r, f| {
        let stop = f.key_from_end(3_000 + r.below(4_000) as usize);
        deep(Filter { states: fin(), ..Filter::default() }, 0, Some(stop))
    }),
    ("stop mid+tag start=5000", |r, f| {
        let stop = f.key_from_end(f.big_keys.len() / 2);
        deep(Filter { has_tags: tags(&[r.below(3)]), states: fin(), ..Filter::default() }, 5_000, Some(stop))
    }),
];

/// Pages in the `startafter` walk, and rows per page.
pub const WALK_PAGES: usize = 100;
pub const WALK_PAGE: usize = 1000;

/// The walk over the big project's finished jobs: page 0, then each page after
/// the last key of the one before, `WALK_PAGES` of them (fewer when the dataset
/// is small).
fn walk(facts: &Facts) -> Vec<Case> {
    let pages = WALK_PAGES.min(facts.big_finished.len() / WALK_PAGE).max(1);
    (0..pages)
        .map(|k| {
            let startafter = (k > 0).then(|| {
                let (s, j) = facts.big_finished[k * WALK_PAGE - 1];
                JobKey::new(BIG_PROJECT, s, j)
            });
            let paging = Paging { count: WALK_PAGE as u64, startafter, ..Paging::default() };
            Case { shape: "finished by startafter", kind: Kind::Page, project: BIG_PROJECT, filter: fin_only(), paging }
        })
        .collect()
}

/// The mix: `variants` concrete queries per shape and kind, shape by shape, then
/// the `startafter` walk (every page of it).
pub fn mix(ds: &Dataset, facts: &Facts, variants: usize) -> Vec<Case> {
    let mut out = Vec::new();
    let shapes = FILTERS.iter().map(|s| (s, true)).chain(PAGINGS.iter().map(|s| (s, false)));
    for (i, ((shape, make), counted)) in shapes.enumerate() {
        let kinds: &[Kind] = if counted { &[Kind::Count, Kind::List] } else { &[Kind::List] };
        for &kind in kinds {
            let mut r = Rng::new(ds.seed.wrapping_mul(31).wrapping_add(i as u64));
            for _ in 0..variants {
                let (project, filter, mut paging) = make(&mut r, facts);
                if paging.count == 0 {
                    paging.count = 100;
                }
                out.push(Case { shape, kind, project, filter, paging });
            }
        }
    }
    out.extend(walk(facts));
    out
}

/// Consecutive cases of one shape and kind.
pub fn groups(cases: &[Case]) -> Vec<&[Case]> {
    cases.chunk_by(|a, b| a.shape == b.shape && a.kind == b.kind).collect()
}

/// The query as a query string, for reports.
pub fn describe(c: &Case) -> String {
    let f = &c.filter;
    let mut p: Vec<String> = Vec::new();
    p.extend(f.spider.iter().map(|s| format!("spider={s}")));
    p.extend(f.states.iter().map(|s| format!("state={s}")));
    p.extend(f.startts.iter().map(|t| format!("startts={t}")));
    p.extend(f.endts.iter().map(|t| format!("endts={t}")));
    p.extend(f.has_tags.iter().map(|t| format!("has_tag={t}")));
    p.extend(f.has_tags_all.iter().map(|t| format!("has_tag_all={t}")));
    p.extend(f.lacks_tags.iter().map(|t| format!("lacks_tag={t}")));
    p.extend(f.close_reasons.iter().map(|t| format!("close_reason={t}")));
    p.extend(f.keys.iter().flatten().map(|k| format!("key={k}")));
    if c.kind != Kind::Count {
        p.push(format!("count={}", c.paging.count));
        if c.paging.start > 0 {
            p.push(format!("start={}", c.paging.start));
        }
        p.extend(c.paging.stop.iter().map(|k| format!("stop={k}")));
        p.extend(c.paging.startafter.iter().map(|k| format!("startafter={k}")));
    }
    format!("jobq/{}/{}?{}", c.project, if c.kind == Kind::Count { "count" } else { "list" }, p.join("&"))
}
