//! The HTTP side of a cluster node: `/_raft/*` requests (signature, method,
//! size limits, then [`routes`]), forwarding a write to the leader and
//! answering one forwarded here, and `/cluster` (admin key).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header;
use tokio::time::Instant;

use super::client::Failed;
use super::routes::{self, open_envelope, Forwarded, ForwardedAnswer, Reply};
use super::{net, sign, Cluster, FORWARD, FORWARD_TIMEOUT};
use crate::server::http::{
    closing, dispatch, from_api, read_body, refuse, too_large, unavailable, App, BodyError, Call, Prepared, Via, Whole,
};
use jobq::api::{self, Caller, Cancel, Route, Scope};

/// The largest `append` or `snapshot` body: a batch of entries, JSON-encoded.
pub const MAX_RAFT_BODY: usize = 256 << 20;
/// The largest body of the other cluster requests (votes, hellos, read indexes).
const MAX_SMALL_BODY: usize = 64 << 10;

fn reply(r: Reply) -> Prepared {
    Prepared::Whole(Whole { retry_after: r.retry_after, ..Whole::new(r.status, r.body) })
}

fn unauthorized(message: &str) -> Whole {
    Whole { unauthorized: Some("JobqCluster"), ..Whole::new(401, api::error_line(message)) }
}

/// A signed `/_raft/*` request.
pub async fn raft(
    app: &Arc<App>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    started: Instant,
    cancel: Cancel,
) -> Prepared {
    let c = app.cluster.as_ref().expect("a cluster target on a cluster node");
    let path = parts.uri.path();
    let authorization = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !sign::is_cluster_scheme(authorization) {
        return refuse(
            unauthorized("cluster requests are signed with the cluster key; API keys never work here"),
            &body,
        );
    }
    if parts.method != hyper::Method::POST {
        return refuse(
            Whole { allow: Some("POST"), ..Whole::new(405, api::error_line("cluster requests are POSTs")) },
            &body,
        );
    }
    let limit = match path {
        net::APPEND | net::SNAPSHOT => MAX_RAFT_BODY,
        FORWARD => app.max_body + MAX_SMALL_BODY,
        _ => MAX_SMALL_BODY,
    };
    let Some(declared) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return refuse(
            Whole::new(411, api::error_line("cluster requests carry a Content-Length (their signature covers it)")),
            &body,
        );
    };
    if declared > limit as u64 {
        return refuse(too_large(limit), &body);
    }
    // IMPORTANT: the head is checked before any of the body is read: without the
    // key, nothing is buffered.
    let Some(body_tag) = c.key.verify_head(authorization, "POST", path, declared) else {
        return refuse(unauthorized("the cluster signature does not match (another cluster key?)"), &body);
    };
    // Meant for another node: this process must not answer for it (it would
    // count as two nodes toward a quorum). Known from the head: no body is read.
    let to = parts.headers.get(super::client::TO_NODE).map(|v| v.to_str().ok().and_then(|t| t.parse::<u64>().ok()));
    match to {
        Some(Some(to)) if to == c.id => {}
        Some(to) => {
            let meant = to.map_or_else(|| "a node id that does not parse".to_string(), |t| format!("node {t}"));
            let why = format!(
                "this is node {}, and the request was meant for {meant}: a --peer address names the wrong node, or a \
                 data directory runs under another --node-id",
                c.id
            );
            tracing::warn!(node = c.id, ?to, "cluster: a request meant for another node refused");
            return refuse(Whole::new(421, api::error_line(&why)), &body);
        }
        // An older node's request: addressed to whoever listens.
        None => {}
    }
    let bytes = match tokio::time::timeout_at(started + app.body_timeout, read_body(body, declared as usize)).await {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => return closing(Prepared::Whole(too_large(declared as usize))),
        Ok(Err(BodyError::Read(e))) => {
            return closing(reply(Reply::error(400, &format!("reading the body failed: {e}"))))
        }
        Err(_) => return closing(reply(Reply::error(408, "the request body did not arrive in time"))),
    };
    if !c.key.verify_body(&body_tag, "POST", path, &bytes) {
        return Prepared::Whole(unauthorized("the cluster signature does not match (another cluster key?)"));
    }
    if path == FORWARD {
        return forwarded(app, &bytes, cancel).await;
    }
    reply(routes::raft_call(c, path, &bytes).await)
}

/// Send a write to the leader (`id` at `addr`) and answer what it answered.
pub async fn forward(c: &Cluster, caller: &Caller, route: &Route, call: &Call, id: u64, addr: &str) -> Prepared {
    let head = Forwarded {
        method: method_name(call.method).to_string(),
        path: call.path.clone(),
        query: call.query.clone(),
        actor: caller.actor.clone(),
        scope: Forwarded::scope_of(caller),
    };
    let env = routes::envelope(&head, &call.body);
    // A long poll (`startjob?wait=`) waits inside the forwarded call.
    let wait = api::route::parse_query_string(&call.query)
        .ok()
        .and_then(|q| api::changes::parse_wait(&q).ok())
        .unwrap_or_default();
    let sent = tokio::select! {
        r = c.post(addr, FORWARD, env, FORWARD_TIMEOUT + wait) => r,
        // The leader stopped or was cut off and another one took over: it may
        // or may not have committed the write first.
        _ = c.replaced(id) => {
            tracing::warn!(leader = id, "the leader was replaced while a forwarded write was with it");
            return unavailable(&format!(
                "the leader (node {id}) was replaced while it held the forwarded request: its outcome is unknown (in doubt)"
            ));
        }
    };
    let answer = match sent {
        Ok(a) if a.status == 200 => a,
        Ok(a) => {
            let why = String::from_utf8_lossy(&a.body).trim().to_string();
            tracing::warn!(leader = id, status = a.status, why, "the leader refused a forwarded request");
            return unavailable(&format!("the leader (node {id}) refused the forwarded request ({})", a.status));
        }
        // Refused for sure: the leader never got it (a client may retry without doubt).
        Err(Failed::NotSent(e)) => {
            return unavailable(&format!("the leader (node {id}) is not reachable, nothing was sent: {e}"))
        }
        // Sent, then the connection broke or no answer came: it may have been applied.
        Err(e) => {
            return unavailable(&format!(
                "the leader (node {id}) did not answer the forwarded request: its outcome is unknown (in doubt): {e}"
            ))
        }
    };
    match open_envelope::<ForwardedAnswer>(&answer.body) {
        Ok((h, body)) => Prepared::Whole(Whole {
            allow: h.allow.is_some().then(|| route.allow()),
            position: h.position,
            retry_after: h.retry_after,
            ..Whole::new(h.status, body.to_vec())
        }),
        Err(e) => unavailable(&format!("the leader's answer does not decode: {e}")),
    }
}

/// A request a follower forwarded here: answered as if its client had come
/// here, with the identity the follower authenticated.
async fn forwarded(app: &Arc<App>, bytes: &[u8], cancel: Cancel) -> Prepared {
    let (head, body) = match open_envelope::<Forwarded>(bytes) {
        Ok(x) => x,
        Err(e) => return reply(Reply::error(400, &e)),
    };
    let caller = match head.caller() {
        Ok(c) => c,
        Err(e) => return reply(Reply::error(400, &e)),
    };
    let method = api::Method::parse(&head.method);
    let answer = if head.path == "/cluster/members" {
        let c = app.cluster.as_ref().expect("cluster");
        let r = if caller.scope == Scope::All { routes::change_members(c, body).await } else { admin_only() };
        reply(r)
    } else {
        match api::admit(&caller, method, &head.path) {
            Err(resp) => Prepared::Whole(from_api(resp)),
            Ok(route) => {
                let call = Call { method, path: head.path, query: head.query, body: body.to_vec() };
                dispatch(app, caller, route, call, cancel, Via::Forwarded).await
            }
        }
    };
    let w = match answer {
        Prepared::Whole(w) => w,
        Prepared::Streamed { mut first, rest, .. } => {
            match tokio::task::spawn_blocking(move || rest.collect_bytes()).await {
                Ok(Ok(more)) => first.extend_from_slice(&more),
                _ => return reply(Reply::error(500, "rendering the forwarded answer failed")),
            }
            Whole::new(200, first)
        }
    };
    let head = ForwardedAnswer {
        status: w.status,
        allow: w.allow.map(str::to_string),
        position: w.position,
        retry_after: w.retry_after,
    };
    Prepared::Whole(Whole::new(200, routes::envelope(&head, &w.body)))
}

fn method_name(m: api::Method) -> &'static str {
    match m {
        api::Method::Get => "GET",
        api::Method::Post => "POST",
        api::Method::Delete => "DELETE",
        api::Method::Other => "OTHER",
    }
}

fn admin_only() -> Reply {
    Reply::error(403, "the cluster endpoints need a key for every project (an admin key)")
}

/// `GET /cluster` and `POST /cluster/members`, with an admin API key.
pub async fn cluster(
    app: &Arc<App>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    method: api::Method,
    started: Instant,
) -> Prepared {
    let c = app.cluster.as_ref().expect("a cluster target on a cluster node");
    let path = parts.uri.path().trim_end_matches('/');
    let caller = match app.auth.authenticate(&app.store, parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        Ok(c) => c,
        Err(refused) => {
            let w = Whole {
                unauthorized: Some("Basic realm=\"jobq\""),
                ..Whole::new(401, api::error_line(&refused.message()))
            };
            return refuse(w, &body);
        }
    };
    if caller.scope != Scope::All {
        return refuse(Whole::new(403, admin_only().body), &body);
    }
    match (path, method) {
        ("/cluster", api::Method::Get) => reply(routes::status(c)),
        ("/cluster/members", api::Method::Post) => {
            let bytes = match tokio::time::timeout_at(started + app.body_timeout, read_body(body, MAX_SMALL_BODY)).await
            {
                Ok(Ok(b)) => b,
                _ => return closing(reply(Reply::error(400, "the request body is too large or did not arrive"))),
            };
            match c.await_leader().await {
                Some((id, _)) if id == c.id => reply(routes::change_members(c, &bytes).await),
                None => unavailable("no leader is known yet"),
                Some((id, addr)) => {
                    let call = Call { method, path: path.to_string(), query: String::new(), body: bytes };
                    forward(c, &caller, &Route::ServerTime, &call, id, &addr).await
                }
            }
        }
        (p, _) => {
            let allow = if p == "/cluster" { "GET" } else { "POST" };
            refuse(
                Whole { allow: Some(allow), ..Whole::new(405, api::error_line(&format!("{p} accepts only {allow}"))) },
                &body,
            )
        }
    }
}
