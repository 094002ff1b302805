//! What an online compaction cycle may do on this store (docs/cluster.md,
//! "Compaction and purge agree"). A single node relocates and removes. On a
//! cluster, relocation is a write: the leader's cycle relocates through Raft
//! (its frames are entries every node applies), and every node removes a
//! segment only once nothing in it is current any more (the leader's relocation
//! applied) and Raft purged every entry in it (no follower needs it from this
//! node's log again).

use super::Inner;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Role {
    /// Relocate, then remove.
    Single,
    /// Relocate through Raft, then remove what the purge point allows.
    Leader,
    /// Remove what the leader relocated and the purge point allows; write nothing.
    Follower,
}

pub(crate) fn role(inner: &Inner) -> Role {
    #[cfg(feature = "cluster")]
    if inner.opts.raft_log {
        let leads = inner.proposer.read().as_ref().is_some_and(|p| p.leader().is_ok());
        return if leads { Role::Leader } else { Role::Follower };
    }
    let _ = inner;
    Role::Single
}

/// Refuse, on a cluster follower, a write only the leader decides (the
/// retention's purge: which jobs expired is decided once, on the leader's clock,
/// and its tombstones reach every node as an entry).
pub(crate) fn leader_or_single(inner: &Inner) -> crate::error::Result<()> {
    #[cfg(feature = "cluster")]
    if inner.opts.raft_log {
        let leads = inner.proposer.read().as_ref().map_or(Err(None), |p| p.leader());
        return leads.map_err(|leader| crate::error::Error::NotLeader { leader });
    }
    let _ = inner;
    Ok(())
}

/// The last segment a cycle may take, given the one before the tail: on a
/// cluster, only segments before the oldest one holding an unpurged entry.
pub(crate) fn last_removable(inner: &Inner, before_tail: u32) -> u32 {
    #[cfg(feature = "cluster")]
    if inner.opts.raft_log {
        let keep = inner.raft_keep_from.load(std::sync::atomic::Ordering::Acquire);
        return before_tail.min(keep.saturating_sub(1));
    }
    let _ = inner;
    before_tail
}

/// Does the newest index file cover the log up to `kept_seq` (its catalog then
/// holds every spider, next job id and dictionary the segments before held)?
pub(crate) fn index_covers(inner: &Inner, kept_seq: u64) -> bool {
    let w = inner.writer.lock();
    w.segments.last().is_some_and(|s| s.seg.meta().hi_seq + 1 >= kept_seq)
}

/// A follower removes a segment holding a dictionary frame only when the newest
/// index file keeps a copy of it (the leader wrote it again, but where this
/// node's log has that copy is not known after a restart).
pub(crate) fn dict_kept(inner: &Inner, payload: &[u8]) -> crate::error::Result<bool> {
    let Some(id) = payload.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) else { return Ok(false) };
    let newest = inner.writer.lock().segments.last().map(|s| s.seg.clone());
    match newest {
        Some(seg) => Ok(seg.dicts()?.iter().any(|d| d.id == id)),
        None => Ok(false),
    }
}
