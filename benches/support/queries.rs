//! The query mix: every filter shape of the JobQ API (spider, state, time range,
//! has_tag OR, lacks_tag AND, key list) alone and combined, plus paging (deep
//! `start`, `stop`), each in a few seeded variants over a generated dataset.
//! Needs `dataset` as a sibling module.

use jobq::query::{Filter, Paging};
use jobq::{JobKey, JobState};

use super::dataset::{spider_name, tag_name, Dataset, Rng, BIG_PROJECT, PROJECTS, SPAN_MS, T0};

const DAY: u64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Count,
    /// A list of 100, rows rendered.
    List,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::List => "list100",
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
}

impl Facts {
    pub fn gather(ds: &Dataset) -> Facts {
        let mut f = Facts { per_project: vec![0; PROJECTS as usize], big_spiders: Vec::new(), big_keys: Vec::new() };
        for j in ds.iter() {
            f.per_project[j.project as usize - 1] += 1;
            if j.project == BIG_PROJECT {
                let s = j.spider as usize;
                if f.big_spiders.len() < s {
                    f.big_spiders.resize(s, 0);
                }
                f.big_spiders[s - 1] += 1;
                f.big_keys.push((j.spider, j.job));
            }
        }
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

/// The mix: `variants` concrete queries per shape and kind, shape by shape.
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
    p.extend(f.lacks_tags.iter().map(|t| format!("lacks_tag={t}")));
    p.extend(f.keys.iter().flatten().map(|k| format!("key={k}")));
    if c.kind == Kind::List {
        p.push(format!("count={}", c.paging.count));
        if c.paging.start > 0 {
            p.push(format!("start={}", c.paging.start));
        }
        p.extend(c.paging.stop.iter().map(|k| format!("stop={k}")));
    }
    format!("jobq/{}/{}?{}", c.project, if c.kind == Kind::Count { "count" } else { "list" }, p.join("&"))
}
