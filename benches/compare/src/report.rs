//! The markdown report: setup, per-shape latencies side by side with ratios,
//! load/open/disk/memory/write figures, and every answer that differs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::dataset::Dataset;
use crate::proto::{Answer, GroupOut};
use crate::queries::{self, describe, Case};
use crate::timing::fmt_ns;
use crate::SideRun;

pub struct Context<'a> {
    pub cfg: &'a Config,
    pub data: &'a Path,
    pub data_bytes: u64,
    /// (appends, overwrites) + fdatasync per second, per write round.
    pub raw_fsync: Vec<(f64, f64)>,
    pub load_before: String,
    pub load_after: String,
    /// [`crate::machine::speed_probes`] before and after the run.
    pub speed_probes: ((f64, f64), (f64, f64)),
    pub machine: String,
    pub elapsed: Duration,
}

fn ratio(sqlite: f64, jobq: f64) -> String {
    if jobq <= 0.0 || sqlite <= 0.0 {
        "–".into()
    } else if sqlite / jobq >= 100.0 {
        format!("{:.0}x", sqlite / jobq)
    } else {
        format!("{:.1}x", sqlite / jobq)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / (1u64 << 20) as f64)
}

fn result_size(a: Option<&Answer>) -> String {
    match a {
        Some(Answer::Count(n)) => n.to_string(),
        Some(Answer::Keys(k)) => format!("{} rows", k.len()),
        None => "–".into(),
    }
}

/// The first difference between two answers, said plainly.
fn difference(j: &Answer, s: &Answer) -> Option<String> {
    match (j, s) {
        (Answer::Count(a), Answer::Count(b)) if a != b => Some(format!("count: jobq {a}, SQLite {b}")),
        (Answer::Keys(a), Answer::Keys(b)) if a != b => {
            let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            Some(format!(
                "{} vs {} rows; first difference at row {i}: jobq {:?}, SQLite {:?}",
                a.len(),
                b.len(),
                a.get(i),
                b.get(i)
            ))
        }
        (Answer::Count(_), Answer::Keys(_)) | (Answer::Keys(_), Answer::Count(_)) => Some("different kinds".into()),
        _ => None,
    }
}

fn queries_table(out: &mut String, jobq: &[GroupOut], sqlite: &[GroupOut]) {
    out.push_str("| shape | kind | result (variant 1) | jobq p50 | jobq p99 | SQLite p50 | SQLite p99 | p50 ratio | p99 ratio | runs (jobq/SQLite) |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (j, s) in jobq.iter().zip(sqlite) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            j.shape,
            j.kind,
            result_size(j.answers.first()),
            fmt_ns(j.p50_ns),
            fmt_ns(j.p99_ns),
            fmt_ns(s.p50_ns),
            fmt_ns(s.p99_ns),
            ratio(s.p50_ns as f64, j.p50_ns as f64),
            ratio(s.p99_ns as f64, j.p99_ns as f64),
            j.runs,
            s.runs
        );
    }
}

fn mismatches(out: &mut String, cases: &[Case], jobq: &[GroupOut], sqlite: &[GroupOut]) {
    let groups = queries::groups(cases);
    let mut checked = 0;
    let mut bad = Vec::new();
    for ((g, j), s) in groups.iter().zip(jobq).zip(sqlite) {
        for ((c, a), b) in g.iter().zip(&j.answers).zip(&s.answers) {
            checked += 1;
            if let Some(d) = difference(a, b) {
                bad.push(format!("- `{}`: {d}", describe(c)));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n### Same answers\n\n{checked} queries compared (counts; listed keys in order): {} mismatches.",
        bad.len()
    );
    for b in bad {
        let _ = writeln!(out, "{b}");
    }
}

pub fn write(out: &mut String, ctx: &Context<'_>, jobq: &SideRun, sqlite: &SideRun) {
    let cfg = ctx.cfg;
    let _ = writeln!(out, "## jobq vs SQLite, {} jobs\n", cfg.jobs);
    let _ = writeln!(out, "- machine: {}", ctx.machine);
    let _ = writeln!(
        out,
        "- load average (1/5/15 min): {} before, {} after; run took {:.0} s",
        ctx.load_before,
        ctx.load_after,
        ctx.elapsed.as_secs_f64()
    );
    let ((alu0, load0), (alu1, load1)) = ctx.speed_probes;
    let _ = writeln!(
        out,
        "- speed probes (best of 3; lower is faster): a fixed ALU chain {alu0:.0} ms before, {alu1:.0} ms after; a dependent random load over 64 MiB {load0:.0} ns before, {load1:.0} ns after"
    );
    let _ = writeln!(
        out,
        "- data: {} ({:.0} MB of JSON lines, seed {}); {} variants per shape; each shape sampled ≥ {} runs or {} s per side, in {} passes over all shapes (p50 and p99: the medians of the passes'); p99 is nearest-rank",
        ctx.data.display(),
        ctx.data_bytes as f64 / 1e6,
        cfg.seed,
        cfg.variants,
        cfg.min_runs,
        cfg.shape_secs,
        cfg.query_passes
    );
    let mut args = format!("--jobs {}", cfg.jobs);
    for (name, value, default) in [
        ("--seed", cfg.seed as f64, 42.0),
        ("--variants", cfg.variants as f64, 8.0),
        ("--min-runs", cfg.min_runs as f64, 50.0),
        ("--shape-secs", cfg.shape_secs, 1.0),
        ("--query-passes", cfg.query_passes as f64, 3.0),
        ("--write-secs", cfg.write_secs, 3.0),
        ("--writers", cfg.writers as f64, 32.0),
        ("--write-rounds", cfg.write_rounds as f64, 3.0),
    ] {
        if value != default {
            args.push_str(&format!(" {name} {value}"));
        }
    }
    let _ = writeln!(out, "- command: `cargo run --release --manifest-path benches/compare/Cargo.toml -- {args}`\n");

    out.push_str(
        "### Load, open, size, memory, durable writes\n\n| | jobq | SQLite | SQLite / jobq |\n|---|---:|---:|---:|\n",
    );
    if let (Some(j), Some(s)) = (&jobq.load, &sqlite.load) {
        let _ = writeln!(
            out,
            "| bulk load ({} jobs) | {:.2} s | {:.2} s | {} |",
            j.jobs,
            j.millis / 1e3,
            s.millis / 1e3,
            ratio(s.millis, j.millis)
        );
        let _ = writeln!(
            out,
            "| peak memory, load (VmHWM) | {} | {} | {} |",
            mib(j.vm_hwm_kb as f64 * 1024.0),
            mib(s.vm_hwm_kb as f64 * 1024.0),
            ratio(s.vm_hwm_kb as f64, j.vm_hwm_kb as f64)
        );
    }
    let _ = writeln!(
        out,
        "| disk size | {} | {} | {} |",
        mib(jobq.disk as f64),
        mib(sqlite.disk as f64),
        ratio(sqlite.disk as f64, jobq.disk as f64)
    );
    if let (Some(j), Some(s)) = (&jobq.query, &sqlite.query) {
        let _ = writeln!(out, "| open | {:.1} ms | {:.1} ms | {} |", j.open_ms, s.open_ms, ratio(s.open_ms, j.open_ms));
        let _ = writeln!(
            out,
            "| peak memory, queries (VmHWM) | {} | {} | {} |",
            mib(j.vm_hwm_kb as f64 * 1024.0),
            mib(s.vm_hwm_kb as f64 * 1024.0),
            ratio(s.vm_hwm_kb as f64, j.vm_hwm_kb as f64)
        );
    }
    if !jobq.single.is_empty() {
        let rates = |name: &str, j: &[f64], s: &[f64]| {
            let (mj, ms) = (median(j), median(s));
            format!(
                "| {name} (median; rounds {} / {}) | {mj:.0}/s | {ms:.0}/s | {} |\n",
                list(j),
                list(s),
                ratio(ms, mj)
            )
        };
        out.push_str(&rates("durable writes, 1 writer", &jobq.single, &sqlite.single));
        out.push_str(&rates(&format!("durable writes, {} writers", cfg.writers), &jobq.multi, &sqlite.multi));
        let app: Vec<f64> = ctx.raw_fsync.iter().map(|r| r.0).collect();
        let over: Vec<f64> = ctx.raw_fsync.iter().map(|r| r.1).collect();
        let _ = writeln!(
            out,
            "| raw append+fdatasync, 300 B (median; rounds {}) | {:.0}/s | | |",
            list(&app),
            median(&app)
        );
        let _ = writeln!(
            out,
            "| raw overwrite+fdatasync, 300 B (median; rounds {}) | {:.0}/s | | |",
            list(&over),
            median(&over)
        );
        let _ = writeln!(
            out,
            "\nSingle durable writer vs the raw append+fdatasync rate (medians): jobq {:.0}%, SQLite {:.0}%.",
            100.0 * median(&jobq.single) / median(&app).max(1.0),
            100.0 * median(&sqlite.single) / median(&app).max(1.0)
        );
    }

    if let (Some(j), Some(s)) = (&jobq.query, &sqlite.query) {
        out.push_str("\n### Queries (ratio: SQLite time / jobq time; lists are 100 rows rendered as JSON)\n\n");
        queries_table(out, &j.groups, &s.groups);
        let ds = Dataset::new(cfg.jobs, cfg.seed);
        let facts = queries::Facts::gather(&ds);
        let cases = queries::mix(&ds, &facts, cfg.variants);
        mismatches(out, &cases, &j.groups, &s.groups);
        if cfg.explain {
            out.push_str("\n### SQLite query plans (first variant of each shape)\n\n");
            for (g, c) in s.groups.iter().zip(queries::groups(&cases)) {
                let _ = writeln!(
                    out,
                    "- {} {}: `{}`\n  - {}",
                    g.shape,
                    g.kind,
                    describe(&c[0]),
                    g.plan.as_deref().unwrap_or("")
                );
            }
        }
    }
}
