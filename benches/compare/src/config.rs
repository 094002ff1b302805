//! Command-line options of the comparison, and how a child process gets them.

use std::path::PathBuf;
use std::time::Duration;

use crate::dataset::GEN_VERSION;
use crate::proto::Side;
use crate::timing::Budget;

pub const USAGE: &str = "usage: jobq-compare [--jobs N] [--seed S] [--variants V] [--min-runs R]
                    [--shape-secs T] [--query-passes P] [--write-secs T] [--writers W]
                    [--write-rounds R]
                    [--work DIR]
                    [--phases query,write] [--reuse] [--keep] [--explain] [--report FILE]

  --jobs N        jobs to generate and load (default 1000000; 10000000 for the 10M run)
  --seed S        dataset seed (default 42)
  --variants V    concrete queries per shape (default 8)
  --min-runs R    timed runs per shape at least (default 50), also past --shape-secs
  --shape-secs T  time budget per shape and side (default 1), split among the passes
  --query-passes P  passes over every shape, a shape's p50/p99 the medians of its
                  passes' (default 3)
  --write-secs T  duration of each durable-write test (default 3)
  --writers W     concurrent writers of the second write test (default 32)
  --write-rounds R  rounds of write tests, sides interleaved; medians reported (default 3)
  --work DIR      data file and stores (default benches/compare/target/work)
  --phases P      after the load: query, write (default query,write)
  --reuse         keep a store loaded by an earlier run (no load measured)
  --keep          do not delete the stores at the end
  --explain       print SQLite's query plan of each shape's first variant
  --report FILE   also write the markdown report to FILE";

#[derive(Clone, Debug)]
pub struct Config {
    pub jobs: u64,
    pub seed: u64,
    pub variants: usize,
    pub min_runs: usize,
    pub shape_secs: f64,
    pub query_passes: usize,
    pub write_secs: f64,
    pub writers: usize,
    pub write_rounds: usize,
    pub work: PathBuf,
    pub phases: Vec<String>,
    pub reuse: bool,
    pub keep: bool,
    pub explain: bool,
    pub report: Option<PathBuf>,
    /// Set in a child process: which side and phase to run.
    pub child: Option<(Side, String)>,
}

fn num<T: std::str::FromStr>(name: &str, v: Option<&String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{name} needs a value"))?;
    v.replace('_', "").parse().map_err(|_| format!("{name}: bad value {v:?}"))
}

impl Config {
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut c = Config {
            jobs: 1_000_000,
            seed: 42,
            variants: 8,
            min_runs: 50,
            shape_secs: 1.0,
            query_passes: 3,
            write_secs: 3.0,
            writers: 32,
            write_rounds: 3,
            work: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/work"),
            phases: vec!["query".into(), "write".into()],
            reuse: false,
            keep: false,
            explain: false,
            report: None,
            child: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--jobs" => c.jobs = num(a, it.next())?,
                "--seed" => c.seed = num(a, it.next())?,
                "--variants" => c.variants = num::<usize>(a, it.next())?.max(1),
                "--min-runs" => c.min_runs = num(a, it.next())?,
                "--shape-secs" => c.shape_secs = num(a, it.next())?,
                "--query-passes" => c.query_passes = num::<usize>(a, it.next())?.max(1),
                "--write-secs" => c.write_secs = num(a, it.next())?,
                "--writers" => c.writers = num::<usize>(a, it.next())?.max(1),
                "--write-rounds" => c.write_rounds = num::<usize>(a, it.next())?.max(1),
                "--work" => c.work = PathBuf::from(it.next().ok_or("--work needs a value")?),
                "--phases" => {
                    let v = it.next().ok_or("--phases needs a value")?;
                    c.phases = v.split(',').filter(|p| !p.is_empty()).map(String::from).collect();
                }
                "--reuse" => c.reuse = true,
                "--keep" => c.keep = true,
                "--explain" => c.explain = true,
                "--report" => c.report = Some(PathBuf::from(it.next().ok_or("--report needs a value")?)),
                "--child" => {
                    let side = match it.next().map(String::as_str) {
                        Some("jobq") => Side::Jobq,
                        Some("sqlite") => Side::Sqlite,
                        other => return Err(format!("--child: bad side {other:?}")),
                    };
                    c.child = Some((side, it.next().ok_or("--child needs a phase")?.clone()));
                }
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if c.jobs < 1000 {
            return Err("--jobs must be at least 1000".into());
        }
        Ok(c)
    }

    /// The options again, for a child running `phase` of `side`.
    pub fn child_args(&self, side: Side, phase: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--jobs".into(),
            self.jobs.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--variants".into(),
            self.variants.to_string(),
            "--min-runs".into(),
            self.min_runs.to_string(),
            "--shape-secs".into(),
            self.shape_secs.to_string(),
            "--query-passes".into(),
            self.query_passes.to_string(),
            "--write-secs".into(),
            self.write_secs.to_string(),
            "--writers".into(),
            self.writers.to_string(),
            "--work".into(),
            self.work.display().to_string(),
        ];
        if self.explain {
            a.push("--explain".into());
        }
        a.extend(["--child".into(), side.name().into(), phase.into()]);
        a
    }

    pub fn phase(&self, p: &str) -> bool {
        self.phases.iter().any(|x| x == p)
    }

    pub fn data_file(&self) -> PathBuf {
        self.work.join("data").join(format!("jobs-{}-s{}-g{GEN_VERSION}.jsonl", self.jobs, self.seed))
    }

    pub fn store_dir(&self, side: Side) -> PathBuf {
        self.work.join(format!("{}-{}-s{}-g{GEN_VERSION}", side.name(), self.jobs, self.seed))
    }

    pub fn budget(&self) -> Budget {
        Budget { min_runs: self.min_runs, max_runs: 100_000, time: Duration::from_secs_f64(self.shape_secs) }
    }

    pub fn write_time(&self) -> Duration {
        Duration::from_secs_f64(self.write_secs)
    }
}
