//! The server side of cluster traffic (`/_raft/*`, after the signature is
//! checked), the forwarding envelope, and the operator's `/cluster` endpoints.
//! Bodies come from peers holding the key, but are still decoded as untrusted:
//! a body that does not decode is a 400, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{net, Cluster, Hello, ReadIndex, HELLO, READ_INDEX};
use jobq::api::{Caller, Scope};
use jobq::cluster::snapshot::receive::receive_chunk;
use jobq::JobKey;

/// A whole answer.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Seconds, on a 503 the client should retry.
    pub retry_after: Option<u32>,
}

impl Reply {
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply { status: 200, body, retry_after: None }
    }

    pub fn error(status: u16, message: &str) -> Reply {
        Reply { status, body: jobq::api::error_line(message), retry_after: None }
    }

    pub fn unavailable(message: &str) -> Reply {
        Reply { retry_after: Some(1), ..Reply::error(503, message) }
    }

    fn json(v: &impl Serialize) -> Reply {
        match serde_json::to_vec(v) {
            Ok(mut b) => {
                b.push(b'\n');
                Reply::ok(b)
            }
            Err(e) => Reply::error(500, &format!("encoding the answer failed: {e}")),
        }
    }
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| Reply::error(400, &format!("the request body does not decode: {e}")))
}

/// Answer a signed `/_raft/*` request other than `/_raft/forward`.
pub async fn raft_call(c: &Cluster, path: &str, body: &[u8]) -> Reply {
    // A node about to seed a cluster holds jobs in no entry: another cluster's
    // entries, votes or snapshots must not reach it before it formed its own.
    if matches!(path, net::APPEND | net::VOTE | net::SNAPSHOT)
        && c.node.seeding()
        && !c.raft.is_initialized().await.unwrap_or(true)
    {
        return Reply::unavailable("this node is about to seed a new cluster with a single node's jobs");
    }
    let r = match path {
        net::APPEND => match decode(body) {
            Ok(req) => Reply::json(&c.raft.append_entries(req).await),
            Err(r) => r,
        },
        net::VOTE if !c.voting() => {
            Reply::unavailable("this node started less than an election timeout ago: it grants no vote yet")
        }
        net::VOTE => match decode(body) {
            Ok(req) => Reply::json(&c.raft.vote(req).await),
            Err(r) => r,
        },
        net::SNAPSHOT => match decode::<net::SnapshotChunk>(body) {
            Ok(req) => Reply::json(&receive_chunk(&c.raft, req.into()).await),
            Err(r) => r,
        },
        HELLO => {
            let initialized = c.raft.is_initialized().await.unwrap_or(true);
            Reply::json(&Hello { id: c.id, initialized })
        }
        READ_INDEX => match c.leader_read_index().await {
            Ok(index) => Reply::json(&ReadIndex { index }),
            Err(e) => Reply::unavailable(&format!("not the leader, or leadership not confirmed: {e}")),
        },
        _ => Reply::error(404, &format!("no such cluster endpoint: {path}")),
    };
    r
}

/// What a follower sends the leader with a forwarded request: the request as
/// the client made it and who the follower authenticated.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Forwarded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub actor: Option<String>,
    pub scope: ForwardedScope,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedScope {
    All,
    Projects(Vec<u32>),
    Job(String),
}

impl Forwarded {
    pub fn caller(&self) -> Result<Caller, String> {
        let scope = match &self.scope {
            ForwardedScope::All => Scope::All,
            ForwardedScope::Projects(ps) => Scope::Projects(ps.clone()),
            ForwardedScope::Job(k) => Scope::Job(k.parse::<JobKey>().map_err(|e| format!("the job scope: {e}"))?),
        };
        Ok(Caller { actor: self.actor.clone(), scope })
    }

    pub fn scope_of(caller: &Caller) -> ForwardedScope {
        match &caller.scope {
            Scope::All => ForwardedScope::All,
            Scope::Projects(ps) => ForwardedScope::Projects(ps.clone()),
            Scope::Job(k) => ForwardedScope::Job(k.to_string()),
        }
    }
}

/// A forwarded request or its answer on the wire: `u32` (little-endian) length
/// of a JSON head, the head, then the body bytes.
pub fn envelope(head: &impl Serialize, body: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(head).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + h.len() + body.len());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out
}

/// The head and body of an [`envelope`].
pub fn open_envelope<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<(T, &[u8]), String> {
    let len = bytes.get(..4).ok_or("the envelope is shorter than its length")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let head = bytes.get(4..4usize.saturating_add(len)).ok_or("the envelope's head is cut short")?;
    let head = serde_json::from_slice(head).map_err(|e| format!("the envelope's head does not decode: {e}"))?;
    Ok((head, &bytes[4 + len..]))
}

/// The answer to a forwarded request, as the leader gave it.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct ForwardedAnswer {
    pub status: u16,
    pub allow: Option<String>,
    pub position: Option<u64>,
    pub retry_after: Option<u32>,
}

/// `GET /cluster`: what this node knows of the cluster (openraft's metrics);
/// the replication positions are known on the leader only.
pub fn status(c: &Cluster) -> Reply {
    let m = c.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index;
    let replication = m.replication.as_ref();
    let members: Vec<_> = membership
        .nodes()
        .map(|(id, n)| {
            let matched = if *id == c.id { m.last_applied } else { replication.and_then(|r| r.get(id).copied().flatten()) };
            let known = *id == c.id || replication.is_some();
            json!({
                "id": id,
                "addr": n.addr,
                "voter": voters.contains(id),
                "applied": if *id == c.id { m.last_applied.map(|l| l.index) } else { None },
                "matched": matched.map(|l| l.index),
                "lag": if known { Some(last.unwrap_or(0).saturating_sub(matched.map_or(0, |l| l.index))) } else { None },
            })
        })
        .collect();
    let (state, leader) = role(c.id, &m);
    Reply::json(&json!({
        "node": c.id,
        "state": state,
        "leader": leader,
        "term": m.current_term,
        "last_log_index": last,
        "applied": m.last_applied.map(|l| l.index),
        "snapshot": m.snapshot.map(|l| l.index),
        "purged": m.purged.map(|l| l.index),
        // This node is seeding a new cluster with a single node's jobs (docs/cluster.md).
        "seeding": c.node.seeding(),
        "read_consistency": match c.consistency { super::ReadConsistency::Linearizable { .. } => "linearizable", _ => "stale" },
        "read_lease": matches!(c.consistency, super::ReadConsistency::Linearizable { lease: true }),
        "members": members,
    }))
}

/// This node's state and leader as `GET /cluster` reports them. A leader that
/// took itself out of the members steps down to Learner in openraft 0.9 but
/// keeps itself as the current leader (no member contacts it again): a node
/// its own membership no longer lists is `Removed`, with no leader known, and
/// no node names itself leader unless it leads.
fn role(me: u64, m: &openraft::RaftMetrics<u64, BasicNode>) -> (String, Option<u64>) {
    if removed(me, m) {
        return ("Removed".into(), None);
    }
    let leader = m.current_leader.filter(|&l| l != me || m.state == openraft::ServerState::Leader);
    (format!("{:?}", m.state), leader)
}

/// Node `me` is not in a membership that has members (taken out by a change).
pub(super) fn removed(me: u64, m: &openraft::RaftMetrics<u64, BasicNode>) -> bool {
    let membership = m.membership_config.membership();
    membership.nodes().next().is_some() && membership.get_node(&me).is_none()
}

/// `POST /cluster/members` at the leader: `{"add":{"id":4,"addr":"h:p"}}` (a
/// learner first, a voter once it caught up) or `{"remove":4}`.
pub async fn change_members(c: &Cluster, body: &[u8]) -> Reply {
    #[derive(Deserialize)]
    struct Add {
        id: u64,
        addr: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        add: Option<Add>,
        remove: Option<u64>,
    }
    let change: Change = match decode(body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let voters: BTreeSet<u64> = c.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    let next = match (change.add, change.remove) {
        (Some(a), None) => {
            if a.id == 0 || !is_host_port(&a.addr) {
                return Reply::error(400, "add needs a node id above 0 and an address HOST:PORT");
            }
            if voters.contains(&a.id) {
                return Reply::json(&json!({"voters": voters.into_iter().collect::<Vec<_>>()}));
            }
            // One process is one node: an address another member has would count
            // that process twice toward a quorum.
            let members = c.raft.metrics().borrow().membership_config.clone();
            let taken = members.membership().nodes().find(|(id, n)| **id != a.id && n.addr == a.addr);
            if let Some((other, _)) = taken {
                return Reply::error(400, &format!("{} is node {other}'s address: a node needs its own", a.addr));
            }
            let added = match c.raft.add_learner(a.id, BasicNode { addr: a.addr.clone() }, false).await {
                Ok(r) => r.log_id.index,
                Err(e) => return Reply::unavailable(&format!("adding node {} as a learner failed: {e}", a.id)),
            };
            // openraft's own wait counts a learner within 5,000 entries as caught
            // up, even one never reached: wait for it to hold the entry adding it.
            if !caught_up(c, a.id, added).await {
                let gone = c.raft.change_membership(ChangeMembers::RemoveNodes([a.id].into()), false).await;
                let gone = if gone.is_ok() { "taken out again" } else { "left a learner" };
                return Reply::unavailable(&format!(
                    "node {} at {} did not catch up within {} s: it was not made a voter ({gone})",
                    a.id,
                    a.addr,
                    c.member_catch_up.as_secs()
                ));
            }
            voters.iter().copied().chain([a.id]).collect::<BTreeSet<u64>>()
        }
        (None, Some(id)) if voters.contains(&id) && voters.len() > 1 => {
            voters.iter().copied().filter(|v| *v != id).collect()
        }
        (None, Some(id)) => return Reply::error(400, &format!("node {id} is not a voter, or the last one")),
        _ => return Reply::error(400, "expected {\"add\":{\"id\":N,\"addr\":\"host:port\"}} or {\"remove\":N}"),
    };
    match c.raft.change_membership(next.clone(), false).await {
        Ok(_) => Reply::json(&json!({"voters": next.into_iter().collect::<Vec<_>>()})),
        Err(e) => Reply::unavailable(&format!("changing the membership failed: {e}")),
    }
}

/// Has `id` replicated the log up to `index`, within `--member-catch-up`?
async fn caught_up(c: &Cluster, id: u64, index: u64) -> bool {
    let holds = |m: &openraft::RaftMetrics<u64, BasicNode>| {
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten();
        matched.is_some_and(|l| l.index >= index)
    };
    c.raft.wait(Some(c.member_catch_up)).metrics(holds, "the new node caught up").await.is_ok()
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !h.contains(char::is_whitespace) && p.parse::<u16>().is_ok())
}

/// The peers of `--peer ID=HOST:PORT` flags, checked: distinct ids above 0, this node among them.
pub fn parse_peers(specs: &[String], me: u64) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (id, addr) = s.split_once('=').ok_or_else(|| format!("--peer {s:?}: expected ID=HOST:PORT"))?;
        let id: u64 =
            id.parse().ok().filter(|i| *i > 0).ok_or_else(|| format!("--peer {s:?}: the id is a number above 0"))?;
        if !is_host_port(addr) {
            return Err(format!("--peer {s:?}: expected ID=HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peer: node {id} is given twice"));
        }
    }
    if !out.contains_key(&me) {
        return Err(format!("--peer must list every member, this node ({me}) too"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let head = Forwarded {
            method: "POST".into(),
            path: "/jobq/1/push".into(),
            query: "a=b".into(),
            actor: Some("alice".into()),
            scope: ForwardedScope::Job("1/2/3".into()),
        };
        let bytes = envelope(&head, b"{\"spider\":\"s\"}\n");
        let (back, body): (Forwarded, _) = open_envelope(&bytes).unwrap();
        assert_eq!((back, body), (head, &b"{\"spider\":\"s\"}\n"[..]));
        for bad in [&b""[..], b"\x05\0\0", b"\xff\xff\xff\xff{}", b"\x02\0\0\0{", b"\x02\0\0\0[]"] {
            assert!(open_envelope::<Forwarded>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_leader_that_removed_itself_is_reported_removed() {
        let members = |ids: &[u64]| {
            let nodes: BTreeMap<u64, BasicNode> =
                ids.iter().map(|id| (*id, BasicNode::new(format!("n{id}")))).collect();
            let m = openraft::Membership::new(vec![ids.iter().copied().collect()], nodes);
            std::sync::Arc::new(openraft::StoredMembership::new(None, m))
        };
        let mut m = openraft::RaftMetrics::<u64, BasicNode>::new_initial(1);
        assert_eq!(role(1, &m), ("Follower".into(), None), "a node not yet in a cluster waits as it did");
        m.state = openraft::ServerState::Leader;
        m.current_leader = Some(1);
        m.membership_config = members(&[1, 2, 3]);
        assert_eq!(role(1, &m), ("Leader".into(), Some(1)));
        // What openraft 0.9 shows once the removal without it is committed.
        m.state = openraft::ServerState::Learner;
        m.membership_config = members(&[2, 3]);
        assert_eq!(role(1, &m), ("Removed".into(), None));
        m.membership_config = members(&[1, 2, 3]);
        assert_eq!(role(1, &m), ("Learner".into(), None), "it names itself leader only while it leads");
        m.state = openraft::ServerState::Follower;
        m.current_leader = Some(2);
        assert_eq!(role(1, &m), ("Follower".into(), Some(2)));
    }

    #[test]
    fn peers() {
        let ok = parse_peers(&["1=127.0.0.1:7071".into(), "2=h:7072".into()], 1).unwrap();
        assert_eq!(ok.len(), 2);
        for bad in [&["1=h"][..], &["0=h:1"], &["1=h:1", "1=h:2"], &["2=h:1"], &["x=h:1"], &["1=:1"]] {
            let v: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_peers(&v, 1).is_err(), "{bad:?}");
        }
    }
}
