//! The job model: keys, states, the stored job version and its metadata document.

pub mod doc;
pub mod edit;
pub mod job;
mod key;
mod state;

pub use doc::MetaDoc;
pub use job::{close_reason_term, Job, CLOSE_REASON, MAX_CLOSE_REASON, TIME_FIELDS};
pub use key::{JobKey, SpiderKey};
pub use state::JobState;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Where time comes from: the system clock, or a manual clock in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicU64::new(start))
    }
    pub fn set(&self, ms: Millis) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
