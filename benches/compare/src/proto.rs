//! What a child process reports to the parent (one JSON line on stdout).

use serde::{Deserialize, Serialize};

pub const RESULT_PREFIX: &str = "RESULT ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Jobq,
    Sqlite,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Jobq => "jobq",
            Side::Sqlite => "sqlite",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadOut {
    pub jobs: u64,
    /// From an empty directory to the store closed, durable and indexed.
    pub millis: f64,
    pub vm_hwm_kb: u64,
}

/// A count, or the listed keys in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Count(u64),
    Keys(Vec<String>),
}

/// One query shape and kind: latencies over all its variants, and each
/// variant's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupOut {
    pub shape: String,
    pub kind: String,
    pub runs: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub mean_ns: u64,
    pub answers: Vec<Answer>,
    /// SQLite's query plan of the first variant (with --explain).
    pub plan: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QueryOut {
    /// Open, until the first query can run.
    pub open_ms: f64,
    pub vm_hwm_kb: u64,
    pub groups: Vec<GroupOut>,
}

/// One durable-write test: `writers` threads pushing for a while.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WriteOut {
    pub rate: Rate,
    pub writers: usize,
    pub vm_hwm_kb: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Rate {
    pub writes: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.writes as f64 / self.secs
        } else {
            0.0
        }
    }
}
