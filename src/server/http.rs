//! The request handler. Everything that needs only the head is decided before a
//! byte of the body is read: who is calling (401), the path (404/400), the
//! caller's right to it (403), the method (405), a declared length over the
//! limit (413). A request refused there has its body left unread and its
//! connection closed after the answer. Then the body is read (within the size
//! limit and the body timeout) and the request answered through `jobq::api` on
//! the blocking pool (engine calls wait for fsync or read the log); a read under
//! a render permit, its answer covered by `--max-buffered` before the permit goes.
//!
//! HEAD is answered as GET without the body (a whole answer's length is said).
//! If the client goes away, the handler's future is dropped and so is its
//! [`CancelOnDrop`]: a listing being rendered stops at the next row.
//!
//! `/health` and `/metrics` (ops.rs) are answered before any API key is asked
//! for. Once the server is shutting down, API requests get 503 and every
//! answer closes its connection.

use std::sync::Arc;

use http_body::Body as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::Instant;

use super::auth::{basic_credentials, Auth, Refused};
use super::body::{Held, Reply};
use super::budget::{Budget, Renders, Share};
use super::conn::Activity;
use super::metrics::ServerMetrics;
use super::ops::{self, Ops, OpsAnswer, Port, Target};
use super::raft::{self, Cluster};
use super::wait;
use jobq::api::{self, Caller, Cancel, Route};
use jobq::Store;

pub const JSON_LINES: &str = "application/x-jsonlines";

/// What every request shares.
pub struct App {
    pub store: Arc<Store>,
    pub auth: Arc<Auth>,
    pub config: api::Config,
    pub max_body: usize,
    /// The memory large bodies and whole answers may hold at once (`--max-buffered`).
    pub budget: Arc<Budget>,
    /// Answers rendered at once (budget.rs).
    pub renders: Arc<Renders>,
    /// Long polls waiting at once (wait.rs).
    pub long_polls: Arc<wait::LongPolls>,
    /// The longest a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    pub metrics: Arc<ServerMetrics>,
    pub ops: Arc<Ops>,
    /// The listener this app answers on.
    pub port: Port,
    /// The store's durable position, as group commit moves it (long polls park on it).
    pub durable: tokio::sync::watch::Receiver<u64>,
    /// This node's part of a cluster (`serve --node-id`).
    pub cluster: Option<Arc<Cluster>>,
}

/// An answer ready to send: whole, or a first chunk and the rows after it.
pub(crate) enum Prepared {
    Whole(Whole),
    Streamed { first: Vec<u8>, share: Share, rest: api::Rows },
}

pub(crate) struct Whole {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body's share of --max-buffered, once taken ([`cover`]).
    pub share: Share,
    pub allow: Option<&'static str>,
    /// A 401's challenge (`WWW-Authenticate`).
    pub unauthorized: Option<&'static str>,
    /// The request body was left unread: close the connection after answering.
    pub close: bool,
    pub content_type: &'static str,
    /// The change feed's next `since` (`X-Jobq-Seq`).
    pub position: Option<u64>,
    /// Seconds after which a 503 may be retried (`Retry-After`).
    pub retry_after: Option<u32>,
}

impl Whole {
    pub fn new(status: u16, body: Vec<u8>) -> Whole {
        Whole {
            status,
            body,
            share: Share::default(),
            allow: None,
            unauthorized: None,
            close: false,
            content_type: JSON_LINES,
            position: None,
            retry_after: None,
        }
    }
}

/// The header naming the change feed's next `since`.
pub const FEED_POSITION_HEADER: &str = "x-jobq-seq";

pub(crate) fn whole(status: u16, body: Vec<u8>) -> Prepared {
    Prepared::Whole(Whole::new(status, body))
}

impl From<OpsAnswer> for Whole {
    fn from(a: OpsAnswer) -> Whole {
        let unauthorized = a.unauthorized.then_some("Basic realm=\"jobq metrics\"");
        Whole { unauthorized, content_type: a.content_type, ..Whole::new(a.status, a.body) }
    }
}

pub(crate) fn from_api(resp: api::Response) -> Whole {
    let body = match resp.body {
        api::Body::Full(b) => b,
        // `admit` refuses with whole answers only.
        api::Body::Stream(rows) => rows.collect_bytes().unwrap_or_default(),
    };
    Whole { allow: resp.allow, position: resp.feed_position, ..Whole::new(resp.status, body) }
}

/// Cancels the answer's rows when dropped, unless the rows went into a response.
struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// Answer one request of a connection (whose `activity` counts it in flight
/// until the response body is dropped).
pub async fn handle(app: Arc<App>, activity: &Arc<Activity>, req: hyper::Request<Incoming>) -> Response<Reply> {
    let in_flight = activity.request_started();
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let head_only = parts.method == hyper::Method::HEAD;
    let method = if head_only { api::Method::Get } else { api::Method::parse(parts.method.as_str()) };
    let target = Target::of(&app, parts.uri.path());
    let mut observed = app.metrics.start(target.endpoint(parts.uri.path()));
    let mut cancel = CancelOnDrop(Some(Cancel::new()));
    let request_cancel = cancel.0.clone().expect("armed");
    let closing = app.ops.closing().is_some();
    let prepared = match target {
        Target::Api if closing => {
            let message = "the server is shutting down; retry once it is back";
            refuse(Whole { close: true, ..Whole::new(503, api::error_line(message)) }, &body)
        }
        Target::Api => prepare(&app, &parts, body, method, started, request_cancel).await,
        Target::Raft | Target::Cluster if closing => {
            refuse(Whole { close: true, ..Whole::new(503, api::error_line("the server is shutting down")) }, &body)
        }
        Target::Raft => raft::serve::raft(&app, &parts, body, started, request_cancel).await,
        Target::Cluster => raft::serve::cluster(&app, &parts, body, method, started).await,
        Target::NotHere(message) => refuse(Whole::new(404, api::error_line(&message)), &body),
        Target::Health | Target::Metrics if method != api::Method::Get => {
            let message = format!("{} accepts only GET", parts.uri.path());
            refuse(Whole { allow: Some("GET"), ..Whole::new(405, api::error_line(&message)) }, &body)
        }
        Target::Health => refuse(ops::health(&app).into(), &body),
        Target::Metrics => {
            let authorization = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            refuse(ops::metrics(&app, authorization).await.into(), &body)
        }
    };
    let status_of = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Renders were covered as they ended (dispatch); this covers the rest.
    let prepared = cover(&app.budget, prepared);
    let status = match &prepared {
        Prepared::Whole(w) => status_of(w.status),
        Prepared::Streamed { .. } => StatusCode::OK,
    };
    observed.answered(status.as_u16());
    let held = Held { in_flight, observed };
    let (reply, extra) = match prepared {
        Prepared::Whole(mut w) => {
            if w.close {
                activity.body_left_unread();
            }
            let length = w.body.len();
            let body = std::mem::take(&mut w.body);
            let share = std::mem::take(&mut w.share);
            let reply = if head_only { Reply::nothing(held) } else { Reply::whole(body, share, held) };
            (reply, Some((w, length)))
        }
        Prepared::Streamed { first, share, rest } if head_only => {
            drop((first, share, rest));
            (Reply::nothing(held), None)
        }
        Prepared::Streamed { first, share, rest } => {
            let flag = cancel.0.take().expect("armed");
            let (budget, renders) = (app.budget.clone(), app.renders.clone());
            (Reply::stream(first, share, rest, (budget, renders), flag, held), None)
        }
    };
    drop(cancel);
    let micros = started.elapsed().as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(method = %parts.method, path = %parts.uri.path(), status = status.as_u16(), micros, "request failed");
    } else {
        tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = status.as_u16(), micros, "request");
    }
    let mut resp = Response::new(reply);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_LINES));
    if closing {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some((w, length)) = extra {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(w.content_type));
        if let Some(a) = w.allow {
            h.insert(header::ALLOW, HeaderValue::from_static(a));
        }
        if let Some(challenge) = w.unauthorized {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if w.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seq) = w.position {
            h.insert(FEED_POSITION_HEADER, HeaderValue::from(seq));
        }
        if let Some(secs) = w.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if head_only {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    resp
}

pub(crate) fn too_large(limit: usize) -> Whole {
    let body = api::error_line(&format!("the request body is over the {limit}-byte limit (--max-body)"));
    Whole::new(413, body)
}

/// Refuse without reading the body; close the connection if there is one.
pub(crate) fn refuse(mut w: Whole, body: &Incoming) -> Prepared {
    w.close = !body.is_end_stream();
    Prepared::Whole(w)
}

async fn prepare(
    app: &Arc<App>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    method: api::Method,
    started: Instant,
    cancel: Cancel,
) -> Prepared {
    let path = parts.uri.path();
    let authorization = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let mut authenticated = app.auth.authenticate(&app.store, authorization);
    if let (Some(c), Err(Refused::Unknown)) = (&app.cluster, &authenticated) {
        // A job's token may be newer than this node's store (a startjob the
        // leader acknowledged): once it has applied the read index, look again.
        if names_a_job(authorization) && c.read_barrier().await.is_ok() {
            authenticated = app.auth.authenticate(&app.store, authorization);
        }
    }
    let caller = match authenticated {
        Ok(c) => c,
        // The clock is public (the hubstorage client asks for it without credentials).
        Err(_) if api::route::parse(path).is_ok_and(|r| r == Route::ServerTime) => {
            Caller { actor: None, scope: api::Scope::Projects(Vec::new()) }
        }
        Err(refused) => {
            let body_text = api::error_line(&refused.message());
            let challenge = Some("Basic realm=\"jobq\"");
            return refuse(Whole { unauthorized: challenge, ..Whole::new(401, body_text) }, &body);
        }
    };
    let route = match api::admit(&caller, method, path) {
        Ok(r) => r,
        Err(resp) => return refuse(from_api(resp), &body),
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        return refuse(too_large(app.max_body), &body);
    }
    let deadline = started + app.body_timeout;
    // A large body waits for its share of --max-buffered before any of it is read.
    let mut share = Share::default();
    if let Some(n) = declared {
        if tokio::time::timeout_at(deadline, app.budget.cover(&mut share, n as usize)).await.is_err() {
            return refuse(busy(), &body);
        }
    }
    let read = read_body_within(body, app.max_body, declared, Some((&app.budget, &mut share)));
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => return closing(Prepared::Whole(too_large(app.max_body))),
        Ok(Err(BodyError::Read(e))) => {
            return closing(whole(400, api::error_line(&format!("reading the request body failed: {e}"))))
        }
        Err(_) => {
            let message =
                format!("the request body did not arrive within {} s (--body-timeout)", app.body_timeout.as_secs());
            return closing(whole(408, api::error_line(&message)));
        }
    };
    // Parsing a body holds more than its bytes: the share covers that while the
    // request runs.
    let parsing = parsing_bytes(&bytes);
    if tokio::time::timeout_at(deadline, app.budget.cover(&mut share, parsing)).await.is_err() {
        return Prepared::Whole(busy());
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let request = Call { method, path: path.to_string(), query, body: bytes };
    let answer = dispatch(app, caller, route, request, cancel, Via::Client).await;
    // The body is gone with the request: its share too.
    drop(share);
    answer
}

/// Memory a body's line holds while parsed and written, beyond its bytes
/// (a pushed job's spec, record and index entry: 16 MiB of `{"spider":"a"}`
/// lines took 600 MB) ...
const PARSE_BYTES_PER_LINE: usize = 512;
/// ... and each JSON object in it (an element of a one-line list, as a cancel
/// body's `{"key":K}`: 750,000 in 16 MB took 120 MB).
const PARSE_BYTES_PER_OBJECT: usize = 128;

/// What parsing and running `body` may hold at most, by its lines and objects.
fn parsing_bytes(body: &[u8]) -> usize {
    let lines = memchr::memchr_iter(b'\n', body).count().saturating_add(1);
    let objects = memchr::memchr_iter(b'{', body).count();
    body.len()
        .saturating_add(lines.saturating_mul(PARSE_BYTES_PER_LINE))
        .saturating_add(objects.saturating_mul(PARSE_BYTES_PER_OBJECT))
}

/// `p` holding its share of --max-buffered from now until its bytes are sent
/// (or its connection closed), or, without room, a 503 in its place: `p` is
/// dropped at once (a stream's rows cancelled with it), its memory freed, not held.
pub(crate) fn cover(budget: &Budget, p: Prepared) -> Prepared {
    let (len, held) = match &p {
        Prepared::Whole(w) => (w.body.len(), w.share.bytes()),
        Prepared::Streamed { first, share, .. } => (first.len(), share.bytes()),
    };
    if held >= len {
        return p;
    }
    match (budget.try_cover(len), p) {
        (None, _) => Prepared::Whole(busy()),
        (Some(share), Prepared::Whole(w)) => Prepared::Whole(Whole { share, ..w }),
        (Some(share), Prepared::Streamed { first, rest, .. }) => Prepared::Streamed { first, share, rest },
    }
}

/// 503: the server holds as much as --max-buffered allows.
pub(crate) fn busy() -> Whole {
    let message = "the server holds as much buffered data as --max-buffered allows; retry shortly";
    Whole { retry_after: Some(1), ..Whole::new(503, api::error_line(message)) }
}

/// A request as the client made it, its body read.
pub(crate) struct Call {
    pub method: api::Method,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

/// Where a request came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Client,
    /// A follower forwarded it here: it is never forwarded again.
    Forwarded,
}

/// Answer an admitted request. In a cluster, a write goes to the leader (a
/// follower forwards it) and a read waits for the read barrier first.
pub(crate) async fn dispatch(
    app: &Arc<App>,
    caller: Caller,
    route: Route,
    call: Call,
    cancel: Cancel,
    via: Via,
) -> Prepared {
    if let Some(c) = &app.cluster {
        let write =
            matches!(call.method, api::Method::Post | api::Method::Delete) || creates_spider(&route, &call.query);
        if write {
            match c.await_leader().await {
                Some((id, _)) if id == c.id => {}
                None if c.removed() => {
                    return unavailable("this node was removed from the cluster: send writes to a member")
                }
                None => return unavailable("no leader is known yet (an election may be under way)"),
                Some(_) if via == Via::Forwarded => return unavailable("this node is no longer the leader"),
                Some((id, addr)) => return raft::serve::forward(c, &caller, &route, &call, id, &addr).await,
            }
        } else if call.method == api::Method::Get {
            if let Err(why) = c.read_barrier().await {
                return unavailable(&format!("a linearizable read is not possible now: {why}"));
            }
        }
    }
    let Call { method, path, query, body: bytes } = call;
    // Long polls wait here, on no thread; a malformed query string gets its 400 below.
    if let Ok(params) = api::route::parse_query_string(&query) {
        let waited = match route {
            Route::Changes(p) => Some(wait::changes(app, p, &params).await),
            Route::StartJob(p) if wait::waits(&route, &params) => {
                Some(wait::startjob(app, &caller, p, &params, &bytes).await)
            }
            _ => None,
        };
        if let Some(resp) = waited {
            return Prepared::Whole(from_api(resp));
        }
    }
    // A read renders its answer under a permit (waiting here, on no thread), and
    // its bytes are covered before the permit goes. Writes wait for their fsync
    // on the thread: a permit would serialize group commit.
    let permit = if method == api::Method::Get { app.renders.permit().await } else { None };
    let app2 = app.clone();
    let task = tokio::task::spawn_blocking(move || {
        let request = api::Request { method, path: &path, query: &query, body: &bytes, cancel };
        // Held by the render even when the request is dropped meanwhile.
        let answer = answer(&app2, &caller, route, &request);
        (cover(&app2.budget, answer), permit)
    });
    match task.await.map(|(answer, _permit)| answer) {
        // A cluster write refused for now (leadership lost, no majority in time): retry.
        Ok(Prepared::Whole(w)) if w.status == 503 && app.cluster.is_some() => {
            Prepared::Whole(Whole { retry_after: w.retry_after.or(Some(1)), ..w })
        }
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            whole(500, api::error_line("internal error: the request handler failed"))
        }
    }
}

/// The credentials' user name is a job key (a job token's).
fn names_a_job(authorization: Option<&[u8]>) -> bool {
    authorization.and_then(|h| basic_credentials(h).ok()).is_some_and(|(user, _)| user.parse::<jobq::JobKey>().is_ok())
}

/// `GET ids/:pid/spider/:name?create=1` may write (a new spider id): the leader's to answer.
fn creates_spider(route: &Route, query: &str) -> bool {
    matches!(route, Route::SpiderId { .. })
        && api::route::parse_query_string(query)
            .is_ok_and(|ps| ps.iter().any(|(n, v)| n == "create" && !matches!(v.as_str(), "0" | "false")))
}

/// 503, retry in a second.
pub(crate) fn unavailable(message: &str) -> Prepared {
    Prepared::Whole(Whole { retry_after: Some(1), ..Whole::new(503, api::error_line(message)) })
}

pub(crate) fn closing(p: Prepared) -> Prepared {
    match p {
        Prepared::Whole(w) => Prepared::Whole(Whole { close: true, ..w }),
        streamed => streamed,
    }
}

/// Answer, and render the first chunk of a streamed answer here, so that a
/// failure before anything was sent is still a proper error status, and a short
/// answer goes out whole (with a length, not chunked).
fn answer(app: &App, caller: &Caller, route: Route, request: &api::Request<'_>) -> Prepared {
    let resp = api::respond(&app.store, caller, &app.config, route, request);
    match resp.body {
        api::Body::Full(body) => {
            Prepared::Whole(Whole { allow: resp.allow, position: resp.feed_position, ..Whole::new(resp.status, body) })
        }
        api::Body::Stream(mut rows) => match rows.next() {
            None => whole(resp.status, Vec::new()),
            Some(Err(e)) => whole(api::status_of(&e), api::error_line(&e.to_string())),
            Some(Ok(mut first)) => match rows.next() {
                None => whole(resp.status, first),
                Some(Err(e)) => whole(api::status_of(&e), api::error_line(&e.to_string())),
                Some(Ok(second)) => {
                    first.extend_from_slice(&second);
                    Prepared::Streamed { first, share: Share::default(), rest: rows }
                }
            },
        },
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// The whole request body, refused as soon as it passes `limit` bytes.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Vec<u8>, BodyError> {
    read_body_within(body, limit, None, None).await
}

/// [`read_body`] into a buffer of the `declared` length (else grown by
/// doubling), its memory past [`FREE`] covered by `share` of `budget` (waiting
/// for room as it grows: a chunked body has no length to take up front).
pub(crate) async fn read_body_within(
    mut body: Incoming,
    limit: usize,
    declared: Option<u64>,
    mut budget: Option<(&Budget, &mut Share)>,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(out),
            Some(Err(e)) => return Err(BodyError::Read(e)),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    let need = out.len() + data.len();
                    if need > limit {
                        return Err(BodyError::TooLarge);
                    }
                    if need > out.capacity() {
                        let grown = need.max(out.capacity() * 2).min(limit);
                        if let Some((b, share)) = &mut budget {
                            b.cover(share, grown).await;
                        }
                        out.reserve_exact(grown - out.len());
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_counted_by_its_lines_and_its_objects() {
        let lines = "{\"spider\":\"a\"}\n".repeat(1000);
        assert!(parsing_bytes(lines.as_bytes()) >= 1000 * (PARSE_BYTES_PER_LINE + PARSE_BYTES_PER_OBJECT));
        // A cancel body's list is one line: its elements count all the same.
        let list = format!("[{}]", vec!["{\"key\":\"84/1/1\"}"; 1000].join(","));
        assert!(parsing_bytes(list.as_bytes()) >= list.len() + 1000 * PARSE_BYTES_PER_OBJECT);
        assert_eq!(parsing_bytes(b""), PARSE_BYTES_PER_LINE);
    }
}
