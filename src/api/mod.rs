//! The JobQ HTTP API as plain functions: a method, a path, a query string, a body
//! and the caller's identity in; a status and JSON lines out. The server and
//! `jobq query` both answer through [`handle`], so they cannot disagree.
//!
//! Answers are JSON lines ending with `\n`, never a blank line; an empty answer is
//! an empty body. Errors are one line `{"error": "..."}`.

pub mod changes;
mod read;
pub mod route;
mod rows;
pub mod write;

pub use route::{Method, Route, RouteError};
pub use rows::{Cancel, Rows, CHUNK_BYTES};

use crate::error::Error;
use crate::model::doc::write_json_str;
use crate::model::JobKey;
use crate::store::Store;

/// Who is calling, as the server's authentication established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The name recorded in `*_by` fields; `None` records nothing.
    pub actor: Option<String>,
    pub scope: Scope,
}

/// What a caller may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every project.
    All,
    /// These projects only.
    Projects(Vec<u32>),
    /// One job's own `jobs/...` endpoints (a job token).
    Job(JobKey),
}

impl Caller {
    /// Full access, recording no actor (`jobq query`, a server without auth).
    pub fn unrestricted() -> Caller {
        Caller { actor: None, scope: Scope::All }
    }

    /// May this caller use this endpoint?
    pub fn may(&self, route: &Route) -> bool {
        match (&self.scope, route) {
            (Scope::All, _) | (_, Route::ServerTime) => true,
            (Scope::Projects(ps), r) => r.project().is_some_and(|p| ps.contains(&p)),
            (Scope::Job(k), Route::Job(j) | Route::JobField(j, _)) => k == j,
            (Scope::Job(_), _) => false,
        }
    }
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// The path, without the query string.
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
    /// Set when the answer is no longer wanted: a streamed answer stops rendering.
    pub cancel: Cancel,
}

impl<'a> Request<'a> {
    /// A GET of `target` (`path?query`).
    pub fn get(target: &'a str) -> Request<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request { method: Method::Get, path, query, body: b"", cancel: Cancel::new() }
    }
}

/// Settings of the API.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The largest `count` of one listing (the default is 1000, or this when lower).
    pub max_count: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_count: 1000 }
    }
}

/// What the endpoint answers with, for callers that convert answers (`jobq query`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// At most one line: a value (count, a job, a field, a spider id); empty when none.
    Value,
    /// Any number of lines (list, summary, jobsummary, and the write answers).
    Lines,
}

/// The body of an answer.
pub enum Body {
    /// Complete JSON lines (possibly empty).
    Full(Vec<u8>),
    /// Lines rendered on demand.
    Stream(Rows),
}

/// One answer.
pub struct Response {
    pub status: u16,
    pub body: Body,
    pub shape: Shape,
    /// The methods the path allows, for a `405`'s `Allow` header.
    pub allow: Option<&'static str>,
    /// The change feed's position to pass as the next `since` (`X-Jobq-Seq`).
    pub feed_position: Option<u64>,
}

impl Response {
    pub(crate) fn lines(body: Vec<u8>) -> Response {
        Response { status: 200, body: Body::Full(body), shape: Shape::Lines, allow: None, feed_position: None }
    }

    pub(crate) fn value(body: Vec<u8>) -> Response {
        Response { status: 200, body: Body::Full(body), shape: Shape::Value, allow: None, feed_position: None }
    }

    pub(crate) fn stream(rows: Rows) -> Response {
        Response { status: 200, body: Body::Stream(rows), shape: Shape::Lines, allow: None, feed_position: None }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            body: Body::Full(error_line(message)),
            shape: Shape::Value,
            allow: None,
            feed_position: None,
        }
    }

    /// The answer for a failed engine call: 400 for bad input, 5xx for faults.
    pub fn from_error(e: &Error) -> Response {
        Response::error(status_of(e), &e.to_string())
    }
}

/// One line `{"error": message}\n`.
pub fn error_line(message: &str) -> Vec<u8> {
    let mut out = b"{\"error\":".to_vec();
    write_json_str(&mut out, message);
    out.extend_from_slice(b"}\n");
    out
}

/// The HTTP status for an engine error.
pub fn status_of(e: &Error) -> u16 {
    match e {
        _ if e.is_input() => 400,
        Error::Poisoned { .. } | Error::Closed | Error::ReadOnly | Error::Locked { .. } => 503,
        // Refused, nothing written, until the operator frees space: Insufficient Storage.
        Error::LowSpace { .. } => 507,
        // A write cut after it met a full disk (nothing of it kept), or the write
        // that poisoned the store on one.
        _ if e.is_disk_full() => 507,
        // A cluster write at a node that lost the leadership, or without a majority in time.
        Error::NotLeader { .. } | Error::InDoubt(_) | Error::Unavailable(_) => 503,
        _ => 500,
    }
}

/// Answer one request.
pub fn handle(store: &Store, caller: &Caller, config: &Config, req: &Request<'_>) -> Response {
    match admit(caller, req.method, req.path) {
        Ok(route) => respond(store, caller, config, route, req),
        Err(refusal) => refusal,
    }
}

/// What is checked before a request's body is read, from its method and path
/// alone: the path names an endpoint (else 404, or 400 for a malformed id or
/// state), the caller may use it (403), it answers the method (405).
pub fn admit(caller: &Caller, method: Method, path: &str) -> Result<Route, Response> {
    let route = match route::parse(path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => return Err(Response::error(404, &format!("no such endpoint: {path}"))),
        Err(RouteError::Bad(e)) => return Err(Response::from_error(&e)),
    };
    if !caller.may(&route) {
        let message = match (&caller.scope, route.project()) {
            (Scope::Job(own), _) => format!("a job token may use only its own job's endpoints (jobs/{own})"),
            (_, Some(p)) => format!("this credential may not use project {p}"),
            (_, None) => "this credential may not use this endpoint".to_string(),
        };
        return Err(Response::error(403, &message));
    }
    if !route.allows(method) {
        let mut r = Response::error(405, &format!("{path} accepts only {}", route.allow()));
        r.allow = Some(route.allow());
        return Err(r);
    }
    Ok(route)
}

/// Answer a request [`admit`] let through to `route`.
pub fn respond(store: &Store, caller: &Caller, config: &Config, route: Route, req: &Request<'_>) -> Response {
    let params = match route::parse_query_string(req.query) {
        Ok(p) => p,
        Err(e) => return Response::from_error(&e),
    };
    let actor = caller.actor.as_deref();
    let result = match (req.method, route) {
        (Method::Get, Route::Count(p)) => read::count(store, p, &params),
        (Method::Get, Route::List(p)) => read::list(store, p, &params, config, &req.cancel),
        (Method::Get, Route::Summary { project, spider, state }) => {
            read::summary(store, project, spider, state, &params, config, &req.cancel)
        }
        (Method::Get, Route::JobSummary(p)) => read::jobsummary(store, p, &params, config, &req.cancel),
        (Method::Get, Route::Changes(p)) => changes::changes(store, p, &params, config),
        (Method::Get, Route::Job(k)) => read::job(store, k),
        (Method::Get, Route::JobField(k, f)) => read::job_field(store, k, &f),
        (Method::Get, Route::SpiderId { project, name }) => read::spider_id(store, project, &name, &params),
        (Method::Get, Route::ServerTime) => Ok(read::server_time()),
        (Method::Post, Route::Push(p)) => write::push(store, p, req.body, actor),
        (Method::Post, Route::Update(p)) => write::update(store, p, req.body, actor),
        (Method::Post, Route::StartJob(p)) => write::start_job(store, p, req.body, actor),
        (Method::Post, Route::Cancel(p)) => write::cancel(store, p, req.body, &params, actor),
        (Method::Post, Route::CancelJob(k)) => write::cancel_one(store, k, actor),
        (Method::Post, Route::Job(k)) => write::merge_metadata(store, k, req.body, actor),
        (Method::Post, Route::JobField(k, f)) => write::set_field(store, k, &f, req.body, actor),
        (Method::Delete, Route::JobField(k, f)) => write::delete_field(store, k, &f, actor),
        (_, r) => Err(Refusal::Engine(Error::input(format!(
            "{} does not answer this method (allowed: {})",
            req.path,
            r.allow()
        )))),
    };
    result.unwrap_or_else(|e| match e {
        Refusal::Engine(e) => Response::from_error(&e),
        Refusal::Status(status, message) => Response::error(status, &message),
    })
}

/// Why an endpoint refused a request.
pub(crate) enum Refusal {
    Engine(Error),
    /// A status other than the engine error's (404 for a missing job, say).
    Status(u16, String),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Engine(e)
    }
}

pub(crate) type Answer = std::result::Result<Response, Refusal>;

/// The body as UTF-8, or a 400 naming the line of the first bad byte.
pub(crate) fn body_text(body: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        Error::input("the body is not UTF-8").at_line(line)
    })
}
