//! Named crash points for kill tests. With `JOBQ_CRASH_AT=<name>[:<n>]` in the
//! environment, the process aborts (no unwinding, no flush: what `kill -9` does) the
//! n-th time (default 1) it passes the point `name`. Without the variable a point is
//! one relaxed atomic load.
//!
//! Points: `before_fsync` (group commit, before fdatasync), `before_ack` (a write is
//! durable, not yet answered), `publish_before_rename` (a new file written and synced,
//! not yet renamed: index files, log segments, CURRENT), `merge_before_install`,
//! `compact_before_switch`, `compact_after_switch`, `backup_before_commit` (the new
//! bytes of a copy's last segment synced, their first checksum not yet written),
//! `before_preallocate` / `after_preallocate` (the log writer extends its segment
//! with zeros; after: the zeros written, the frame that needed them not yet).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 armed
static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn plan() -> &'static Option<(String, u64)> {
    PLAN.get_or_init(|| {
        let v = std::env::var("JOBQ_CRASH_AT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Pass the crash point `name`.
pub fn hit(name: &str) {
    let state = STATE.load(Ordering::Relaxed);
    if state == 1 {
        return;
    }
    let Some((want, n)) = plan() else {
        STATE.store(1, Ordering::Relaxed);
        return;
    };
    STATE.store(2, Ordering::Relaxed);
    if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        eprintln!("jobq: crash point {name} reached, aborting");
        std::process::abort();
    }
}
