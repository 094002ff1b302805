//! Retention as a policy: deleted jobs older than `retain_deleted` are purged
//! while the store serves. A purge is a write like any other: a tombstone record
//! (state purged, format-spec/log.md) becomes the job's current version, so the
//! job leaves every answer at once, and after a restart too. Online compaction
//! later drops the tombstones with the segments that hold them.
//!
//! Candidates come from the indexes (the `deleted` posting list, `ts` being the
//! deletion time, below the cutoff): no project is scanned.
//!
//! On a cluster only the leader purges, on its clock: its tombstone frames are
//! an entry like any write, so every node drops the same jobs at the same index
//! and no node's clock decides anything (docs/cluster.md, "Retention").

use std::time::{Duration, Instant};

use super::queue::{self, Erased};
use super::read::Snapshot;
use super::{maintain, Inner};
use crate::error::Result;
use crate::model::{JobKey, JobState};
use crate::query::{Filter, Paging};

/// Tombstones written per write (and per pause).
const BATCH: usize = 512;

/// Purge every deleted job of the store whose deletion is older than the
/// retention; returns how many were purged. Nothing without a retention.
pub(crate) fn purge_expired(inner: &Inner) -> Result<u64> {
    let Some(keep) = inner.opts.retain_deleted else {
        return Ok(0);
    };
    super::reclaim_role::leader_or_single(inner)?;
    let cutoff = inner.opts.clock.now_ms().saturating_sub(keep.as_millis() as u64);
    let filter = Filter { states: vec![JobState::Deleted], endts: Some(cutoff), ..Filter::default() };
    let paging = Paging { count: BATCH as u64, ..Paging::default() };
    let mut purged = 0;
    for project in snapshot(inner).version.projects() {
        // The newest expired jobs, a batch at a time (purged ones leave the list);
        // a batch that purges nothing (all changed meanwhile) ends the round.
        loop {
            if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(purged);
            }
            // Not a listing a client pages on: no place is remembered.
            let hits = snapshot(inner).hits(project, &filter, &paging)?;
            let batch: Vec<(JobKey, u64)> =
                hits.iter().map(|h| (JobKey::from_local(project, h.local), h.loc)).collect();
            let n = if batch.is_empty() { 0 } else { purge_batch(inner, batch, cutoff)? };
            inner.counters.note_purged(n);
            purged += n;
            if n == 0 {
                break;
            }
        }
    }
    Ok(purged)
}

fn snapshot(inner: &Inner) -> Snapshot {
    Snapshot {
        version: inner.commit.published(),
        reader: inner.reader.clone(),
        clock: inner.opts.clock.clone(),
        places: inner.places.clone(),
    }
}

/// One tombstone frame through the write queue, then a pause twice as long as
/// the writer was held (the work takes at most a third of the time).
fn purge_batch(inner: &Inner, batch: Vec<(JobKey, u64)>, cutoff: u64) -> Result<u64> {
    let op: queue::Op = Box::new(move |w, ctx| {
        let t = Instant::now();
        w.purge(&batch, cutoff, ctx.durable_seq).map(|n| Box::new((n, t.elapsed())) as Erased)
    });
    let (r, froze) = inner.queue.submit(inner, queue::Request::new(None, op));
    if froze {
        maintain::after_freeze(inner)?;
    }
    let (n, held) = *r?.downcast::<(u64, Duration)>().expect("purge answers its count");
    std::thread::sleep((held * 2).min(Duration::from_millis(200)));
    Ok(n)
}
