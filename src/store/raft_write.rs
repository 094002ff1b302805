//! A cluster leader's writes (docs/cluster.md, "Decided once, on the leader").
//! A write-queue batch runs its operations as on a single node, against the
//! applied state, with the log's room for an entry frame reserved (zeros) ahead
//! of its frames. Its frames become a normal Raft entry: when openraft appends
//! that entry here, the entry frame is written over the zeros, and when it
//! applies, the batch's records, already in the writer, are published. If
//! anything else takes the log first (a new leader's blank entry, a lost
//! leadership), the reserved batch is cut off and the writer state is rebuilt
//! from the log: nothing not in an entry is ever applied.
//!
//! Batches are serial: the next one starts once the previous one applied, so
//! decisions always see every earlier write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::queue::{run_ops, Request};
use super::raft::Speculative;
use super::rebuild::rebuild;
use super::writer::Writer;
use super::Inner;
use crate::codec::entry::ENTRY_FIXED;
use crate::codec::frame::HEADER_LEN;
use crate::error::{Error, Result};

/// The bytes of a normal entry's entry frame.
pub const ENTRY_FRAME_LEN: u64 = (HEADER_LEN + ENTRY_FIXED) as u64;

/// How long a write waits for entries in flight to apply before it is refused.
const SETTLE: Duration = Duration::from_secs(10);

/// A cluster node's link to Raft, for the store's writes.
pub trait Proposer: Send + Sync {
    /// `Ok` while this node is the leader; else the leader it knows.
    fn leader(&self) -> std::result::Result<(), Option<u64>>;
    /// Propose a normal entry of `data` (whole data frames) and wait until it is
    /// applied here; its index.
    fn propose(&self, data: Vec<u8>) -> Result<u64>;
}

/// Run `batch` as a cluster leader (or refuse it: not the leader).
pub(crate) fn leader_batch(inner: &Inner, batch: &[Arc<Request>], proposer: Option<&dyn Proposer>) {
    let refuse = |e: &dyn Fn() -> Error| {
        for req in batch {
            req.op.lock().take();
            req.answer(Err(e()));
        }
    };
    let Some(p) = proposer else {
        return refuse(&|| Error::NotLeader { leader: None });
    };
    if let Err(leader) = p.leader() {
        return refuse(&|| Error::NotLeader { leader });
    }
    let mut w = match settle(inner) {
        Ok(w) => w,
        Err(e) => {
            let why = e.to_string();
            return refuse(&|| Error::Replication(why.clone()));
        }
    };
    let Some(log) = w.log.as_mut() else {
        return refuse(&|| Error::ReadOnly);
    };
    let seq = log.next_seq();
    let at = match log.begin_reserved(ENTRY_FRAME_LEN) {
        Ok(at) => at,
        Err(e) => {
            inner.commit.poison(&e);
            let why = e.to_string();
            return refuse(&|| Error::Poisoned { cause: why.clone() });
        }
    };
    w.next_seq = seq + 1;
    w.spec_open = true;
    let results = run_ops(inner, &mut w, batch, None);
    w.spec_open = false;
    let log = w.log.as_mut().expect("checked above");
    if !results.iter().any(|(_, wrote)| *wrote) {
        log.cancel_reserved(at, seq);
        w.next_seq = seq;
        drop(w);
        for (req, (r, _)) in batch.iter().zip(results) {
            req.answer(r);
        }
        return;
    }
    let data = log.written_since(at.offset + ENTRY_FRAME_LEN);
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            inner.commit.poison(&e);
            drop(w);
            return answer(batch, results, Err(e));
        }
    };
    let end = log.end();
    w.spec = Some(Speculative { at, seq, end, data: data.clone(), appended: None });
    drop(w);
    let outcome = p.propose(data);
    if let Err(e) = &outcome {
        // The batch did not become an applied entry (yet): its records leave.
        let mut w = inner.writer.lock();
        let appended = match w.spec.take() {
            Some(s) if s.appended.is_none() && s.at == at => {
                let log = w.log.as_mut().expect("checked above");
                if let Err(cut) = log.truncate_to(s.at, s.seq) {
                    inner.commit.poison(&cut);
                }
                log.release_rotation();
                w.reader.forget_from(s.at.segment);
                false
            }
            Some(_) => true,
            None => w.replay_end < end,
        };
        w.mark_dirty();
        drop(w);
        let outcome: Result<()> = match appended {
            true => Err(Error::InDoubt(e.to_string())),
            false => Err(match e {
                Error::NotLeader { leader } => Error::NotLeader { leader: *leader },
                other => Error::Replication(other.to_string()),
            }),
        };
        return answer(batch, results, outcome);
    }
    answer(batch, results, Ok(()));
}

/// Hand each operation its result; those that wrote get `outcome`'s error.
fn answer(batch: &[Arc<Request>], results: Vec<(Result<super::queue::Erased>, bool)>, outcome: Result<()>) {
    for (req, (r, wrote)) in batch.iter().zip(results) {
        let r = match (&outcome, wrote) {
            (Err(e), true) => Err(copy_error(e)),
            _ => r,
        };
        req.answer(r);
    }
}

fn copy_error(e: &Error) -> Error {
    match e {
        Error::NotLeader { leader } => Error::NotLeader { leader: *leader },
        Error::InDoubt(w) => Error::InDoubt(w.clone()),
        Error::Replication(w) => Error::Replication(w.clone()),
        Error::Unavailable(w) => Error::Unavailable(w.clone()),
        other => Error::Poisoned { cause: other.to_string() },
    }
}

/// The writer once every entry appended here is applied (a new leader's blank
/// entry, entries a follower got before it led) and its state is clean.
fn settle(inner: &Inner) -> Result<MutexGuard<'_, Writer>> {
    let deadline = Instant::now() + SETTLE;
    let mut w = inner.writer.lock();
    loop {
        inner.commit.check()?;
        if w.dirty {
            drop(w);
            rebuild(inner)?;
            w = inner.writer.lock();
            continue;
        }
        let log_seq = w.log.as_ref().ok_or(Error::ReadOnly)?.next_seq();
        if w.spec.is_none() && w.next_seq == log_seq {
            return Ok(w);
        }
        if Instant::now() > deadline {
            return Err(Error::Unavailable(
                "entries appended here did not apply within 10 s (no majority?); nothing of this write was sent".into(),
            ));
        }
        inner.applied.wait_for(&mut w, Duration::from_millis(20));
    }
}
