//! openraft's network over HTTP: `append_entries`, `vote` and `install_snapshot`
//! as signed JSON POSTs to the peer's `/_raft/append`, `/_raft/vote`,
//! `/_raft/snapshot`. The peer answers 200 with `Result<response, RaftError>` as
//! JSON; anything else (no connection, a timeout, another status, an answer
//! that does not decode) makes the peer unreachable for this call.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::client::{Failed, Link, Pool};
use jobq::cluster::{Frames, TypeConfig};

pub const APPEND: &str = "/_raft/append";
pub const VOTE: &str = "/_raft/vote";
pub const SNAPSHOT: &str = "/_raft/snapshot";

/// A snapshot chunk on the wire: openraft's `InstallSnapshotRequest` with its
/// data as one base64 string (its own serde writes a JSON array of numbers, up
/// to four bytes a byte, slow to decode).
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: openraft::Vote<u64>,
    pub meta: openraft::SnapshotMeta<u64, BasicNode>,
    pub offset: u64,
    pub data: Frames,
    pub done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> SnapshotChunk {
        SnapshotChunk { vote: r.vote, meta: r.meta, offset: r.offset, data: Frames(r.data), done: r.done }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest { vote: c.vote, meta: c.meta, offset: c.offset, data: c.data.0, done: c.done }
    }
}

/// Makes a node's links to its peers (addresses from the membership), from
/// the node's pool: openraft makes a client for every leadership check (a
/// heartbeat round for each linearizable read index), which then reuses an
/// open connection instead of connecting anew.
#[derive(Clone)]
pub struct HttpNet {
    pub pool: Pool,
    pub acks: Acks,
}

/// For each peer, the latest append (entries or a heartbeat) it answered
/// without a higher vote while this node led: the term it carried and when it
/// was sent. A peer that answers has renewed this leader's lease with it
/// (docs/cluster.md, "Leader lease").
#[derive(Clone, Default)]
pub struct Acks(Arc<Mutex<HashMap<u64, (u64, Instant)>>>);

impl Acks {
    fn record(&self, target: u64, term: u64, sent: Instant) {
        let mut m = self.0.lock();
        let e = m.entry(target).or_insert((term, sent));
        *e = (*e).max((term, sent));
    }

    /// When `target`'s latest answered append of `term` was sent.
    pub fn sent(&self, target: u64, term: u64) -> Option<Instant> {
        self.0.lock().get(&target).filter(|(t, _)| *t == term).map(|(_, at)| *at)
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNet {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer { target, link: Some(self.pool.take(&node.addr)), pool: self.pool.clone(), acks: self.acks.clone() }
    }
}

/// One node's link to a peer; back to the pool when dropped.
pub struct Peer {
    target: u64,
    link: Option<Link>,
    pool: Pool,
    acks: Acks,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            self.pool.give_back(link);
        }
    }
}

fn unreachable<E: std::error::Error>(why: impl std::fmt::Display) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())))
}

impl Peer {
    async fn rpc<Req, Resp, E>(
        &mut self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let link = self.link.as_mut().expect("a peer's link until it is dropped");
        let answer = match link.call(path, body, option.hard_ttl(), self.target).await {
            Ok(a) => a,
            Err(e @ (Failed::NotSent(_) | Failed::Unreachable(_) | Failed::Status(..))) => {
                return Err(unreachable(format!("node {}: {e}", self.target)))
            }
        };
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&answer)
            .map_err(|e| unreachable(format!("node {}: its answer does not decode: {e}", self.target)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let (sent, vote) = (Instant::now(), rpc.vote);
        let r = self.rpc(APPEND, &rpc, &option).await;
        if let Ok(answer) = &r {
            // Accepted the vote (a conflict too: the peer took the vote first).
            if vote.committed && !matches!(answer, AppendEntriesResponse::HigherVote(_)) {
                self.acks.record(self.target, vote.leader_id.term, sent);
            }
        }
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.rpc(SNAPSHOT, &SnapshotChunk::from(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(VOTE, &rpc, &option).await
    }
}
