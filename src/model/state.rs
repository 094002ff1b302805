//! Job states.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The state of a job. The discriminants are the on-disk codes (format-spec/log.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    Pending = 0,
    Running = 1,
    Finished = 2,
    Deleted = 3,
    /// Engine-internal, never named by the API: a deleted job the retention
    /// dropped. Its record is a tombstone; the job answers nowhere any more.
    Purged = 4,
}

impl JobState {
    pub const ALL: [JobState; 4] = [JobState::Pending, JobState::Running, JobState::Finished, JobState::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Deleted => "deleted",
            JobState::Purged => "purged",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every code a record or index may hold: the API's states and `Purged`.
    pub fn from_code(code: u8) -> Option<JobState> {
        JobState::ALL.get(usize::from(code)).copied().or((code == 4).then_some(JobState::Purged))
    }

    /// The slot of `times` that holds when the job entered this state (a purged
    /// job keeps its deletion time: its place in the `ts` order).
    pub fn time_slot(self) -> usize {
        match self {
            JobState::Purged => JobState::Deleted as usize,
            s => s as usize,
        }
    }

    /// Pending and running jobs are active: they hold their `unique` value.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }

    /// The field holding the time the job entered this state.
    pub fn time_field(self) -> &'static str {
        crate::model::TIME_FIELDS[self.time_slot()]
    }

    /// The field naming who moved the job into this state.
    pub fn actor_field(self) -> &'static str {
        match self {
            JobState::Pending => "scheduled_by",
            JobState::Running => "started_by",
            JobState::Finished => "completed_by",
            JobState::Deleted | JobState::Purged => "deleted_by",
        }
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobState, Error> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            Error::field("state", format!("unknown state {s:?} (expected pending, running, finished or deleted)"))
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
