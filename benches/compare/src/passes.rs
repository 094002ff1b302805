//! Sampling every query shape in passes: the whole list of shapes is timed once,
//! then again, `passes` times, and a shape's p50 and p99 are the medians of its
//! passes' (its mean the mean of all its runs). On a shared 2-core machine a
//! slow phase of several seconds doubled whichever shapes it fell on (stop 32);
//! passes a minute apart let it touch one pass of a shape, not its figure.

use crate::proto::{Answer, GroupOut};
use crate::queries::Case;
use crate::timing::{self, Budget, Summary};

/// One shape's figures over its passes.
struct Stats {
    runs: usize,
    p50_ns: u64,
    p99_ns: u64,
    mean_ns: u64,
}

/// Each pass gets `1/passes` of the budget's time and of its caps on runs (at
/// least one run a variant).
fn pass_budget(b: Budget, passes: usize, variants: usize) -> Budget {
    Budget {
        min_runs: b.min_runs.div_ceil(passes).max(variants),
        max_runs: (b.max_runs / passes).max(variants),
        time: b.time / passes as u32,
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// Time `run(g, i)` (variant `i` of group `g`; `variants[g]` of them) in
/// `passes` passes over all groups. Only each pass's figures are kept, not its
/// samples (the phase's peak memory is measured).
fn sample(variants: &[usize], passes: usize, budget: Budget, mut run: impl FnMut(usize, usize)) -> Vec<Stats> {
    let passes = passes.max(1);
    // Per group and pass: p50, p99, the runs' total and their number.
    let mut per: Vec<Vec<(u64, u64, u64, usize)>> = variants.iter().map(|_| Vec::with_capacity(passes)).collect();
    for _ in 0..passes {
        for (g, &n) in variants.iter().enumerate() {
            let s: Summary = timing::sample(n, pass_budget(budget, passes, n), |i| run(g, i));
            per[g].push((s.p50(), s.p99(), s.ns.iter().sum(), s.ns.len()));
        }
    }
    per.into_iter()
        .map(|ps| {
            let runs: usize = ps.iter().map(|p| p.3).sum();
            let total: u64 = ps.iter().map(|p| p.2).sum();
            Stats {
                runs,
                p50_ns: median(ps.iter().map(|p| p.0).collect()),
                p99_ns: median(ps.iter().map(|p| p.1).collect()),
                mean_ns: total / runs.max(1) as u64,
            }
        })
        .collect()
}

/// Time the cases of every group with `run` in passes, and give each group's
/// figures with its `answers` (untimed, one per case) and `plans`.
pub fn time_groups(
    gs: &[&[Case]],
    passes: usize,
    budget: Budget,
    answers: Vec<Vec<Answer>>,
    plans: Vec<Option<String>>,
    mut run: impl FnMut(&Case),
) -> Vec<GroupOut> {
    let variants: Vec<usize> = gs.iter().map(|g| g.len()).collect();
    let stats = sample(&variants, passes, budget, |g, i| run(&gs[g][i]));
    gs.iter()
        .zip(stats)
        .zip(answers)
        .zip(plans)
        .map(|(((g, s), answers), plan)| GroupOut {
            shape: g[0].shape.to_string(),
            kind: g[0].kind.name().to_string(),
            runs: s.runs,
            p50_ns: s.p50_ns,
            p99_ns: s.p99_ns,
            mean_ns: s.mean_ns,
            answers,
            plan,
        })
        .collect()
}
