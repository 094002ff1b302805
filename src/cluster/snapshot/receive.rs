//! Receiving a snapshot's chunks without calling an election meanwhile.
//!
//! openraft 0.9 takes the chunks outside its core (`Chunked::receive_snapshot`),
//! so a follower streaming a large snapshot, then installing it, hears nothing
//! from the leader as far as its election timer knows, and the leader sends it
//! nothing else meanwhile. Past its election timeout the follower campaigns; its
//! higher term then makes the leader step down, and writes wait for an election
//! (docs/cluster.md, "Snapshots and catch-up").
//!
//! So a chunk of the leader's vote counts as hearing from the leader: an empty
//! append of that vote goes to the node's own core when the chunk arrives, and
//! again every quarter of the smallest election timeout while the chunk is
//! received and, for the last one, installed. Such an append only renews the
//! vote's time (or takes the vote, as the chunk would): it has no entry, commits
//! nothing (`leader_commit` none), and its `prev_log_id` none matches any log. A
//! vote lower than the node's is refused by the core as any append's is.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse};

use crate::cluster::TypeConfig;

type Raft = openraft::Raft<TypeConfig>;

/// Hand `req` to `raft`, renewing its election timer with the chunk's vote now
/// and every quarter election timeout until the chunk is taken (installed, for
/// the last one).
pub async fn receive_chunk(
    raft: &Raft,
    req: InstallSnapshotRequest<TypeConfig>,
) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
    let every = Duration::from_millis((raft.config().election_timeout_min / 4).max(1));
    let vote = req.vote;
    let renewing = {
        let raft = raft.clone();
        tokio::spawn(async move {
            loop {
                let beat = AppendEntriesRequest { vote, prev_log_id: None, entries: Vec::new(), leader_commit: None };
                // The core renews the timer when it takes the append; its answer
                // waits while an install runs (answers go out in order), so it
                // is not awaited past the next beat.
                let _ = tokio::time::timeout(every, raft.append_entries(beat)).await;
                tokio::time::sleep(every).await;
            }
        })
    };
    // Stopped however this ends, a caller that went away included.
    let _stop = AbortOnDrop(renewing);
    raft.install_snapshot(req).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
