//! Request targets: which endpoint a path names, and the query string's pairs.
//! Paths are relative to the server root; a leading `/` and one trailing `/` are
//! optional. Each path segment is percent-decoded on its own.

use crate::error::{Error, Result};
use crate::model::{JobKey, JobState};

/// The JobQ endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Count(u32),
    List(u32),
    /// `jobq/:pid[/:sid]/summary[/:state]`.
    Summary {
        project: u32,
        spider: Option<u32>,
        state: Option<JobState>,
    },
    JobSummary(u32),
    /// `jobq/:pid/changes`: the change feed.
    Changes(u32),
    Push(u32),
    Update(u32),
    StartJob(u32),
    Cancel(u32),
    /// `jobq/:pid/:sid/:jid/cancel`.
    CancelJob(JobKey),
    /// `jobs/:pid/:sid/:jid`.
    Job(JobKey),
    /// `jobs/:pid/:sid/:jid/:field`.
    JobField(JobKey, String),
    /// `ids/:pid/spider/:name` (the name may hold `/`).
    SpiderId {
        project: u32,
        name: String,
    },
    /// `system/ts`: the server's clock in ms (the hubstorage client's `server_timestamp`).
    ServerTime,
}

/// An HTTP method, as far as the API cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    Other,
}

impl Method {
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// Why a path names no endpoint.
#[derive(Debug)]
pub enum RouteError {
    /// No such endpoint (404).
    NotFound,
    /// An endpoint's path with a malformed part: project, spider or job id, state (400).
    Bad(Error),
}

impl From<Error> for RouteError {
    fn from(e: Error) -> RouteError {
        RouteError::Bad(e)
    }
}

const PROJECT_OPS: [&str; 9] =
    ["count", "list", "summary", "jobsummary", "changes", "push", "update", "startjob", "cancel"];

impl Route {
    /// The project the endpoint is about (none for `system/ts`).
    pub fn project(&self) -> Option<u32> {
        match self {
            Route::Count(p)
            | Route::List(p)
            | Route::JobSummary(p)
            | Route::Changes(p)
            | Route::Push(p)
            | Route::Update(p)
            | Route::StartJob(p)
            | Route::Cancel(p) => Some(*p),
            Route::Summary { project, .. } | Route::SpiderId { project, .. } => Some(*project),
            Route::CancelJob(k) | Route::Job(k) | Route::JobField(k, _) => Some(k.project),
            Route::ServerTime => None,
        }
    }

    /// The methods the endpoint answers, for `405` and its `Allow` header.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Count(_)
            | Route::List(_)
            | Route::Summary { .. }
            | Route::JobSummary(_)
            | Route::Changes(_)
            | Route::SpiderId { .. }
            | Route::ServerTime => "GET",
            Route::Push(_) | Route::Update(_) | Route::StartJob(_) | Route::Cancel(_) | Route::CancelJob(_) => "POST",
            Route::Job(_) => "GET, POST",
            Route::JobField(..) => "GET, POST, DELETE",
        }
    }

    pub fn allows(&self, m: Method) -> bool {
        let name = match m {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => return false,
        };
        self.allow().split(", ").any(|a| a == name)
    }
}

/// Parse a path (without its query string) into a route.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut segs = Vec::new();
    for raw in trimmed.split('/') {
        segs.push(percent_decode(raw, false).map_err(|e| Error::input(format!("path segment {raw:?}: {e}")))?);
    }
    if segs.iter().any(String::is_empty) {
        return Err(RouteError::NotFound);
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["jobq", p, rest @ ..] => jobq(parse_id(p, "project id")?, rest),
        ["jobs", p, rest @ ..] => {
            let project = parse_id(p, "project id")?;
            match rest {
                [sid, jid] => Ok(Route::Job(job_key(project, sid, jid)?)),
                [sid, jid, field] => Ok(Route::JobField(job_key(project, sid, jid)?, field.to_string())),
                _ => Err(RouteError::NotFound),
            }
        }
        ["ids", p, "spider", name @ ..] if !name.is_empty() => {
            Ok(Route::SpiderId { project: parse_id(p, "project id")?, name: name.join("/") })
        }
        ["ids", p, ..] => {
            parse_id(p, "project id")?;
            Err(RouteError::NotFound)
        }
        ["system", "ts"] => Ok(Route::ServerTime),
        _ => Err(RouteError::NotFound),
    }
}

fn jobq(project: u32, rest: &[&str]) -> Result<Route, RouteError> {
    let state = |s: &str| -> Result<JobState, RouteError> { Ok(s.parse::<JobState>()?) };
    match rest {
        ["count"] => Ok(Route::Count(project)),
        ["list"] => Ok(Route::List(project)),
        ["summary"] => Ok(Route::Summary { project, spider: None, state: None }),
        ["summary", st] => Ok(Route::Summary { project, spider: None, state: Some(state(st)?) }),
        ["jobsummary"] => Ok(Route::JobSummary(project)),
        ["changes"] => Ok(Route::Changes(project)),
        ["push"] => Ok(Route::Push(project)),
        ["update"] => Ok(Route::Update(project)),
        ["startjob"] => Ok(Route::StartJob(project)),
        ["cancel"] => Ok(Route::Cancel(project)),
        [op, ..] if PROJECT_OPS.contains(op) => Err(RouteError::NotFound),
        [sid, "summary"] => Ok(Route::Summary { project, spider: Some(parse_id(sid, "spider id")?), state: None }),
        [sid, "summary", st] => {
            Ok(Route::Summary { project, spider: Some(parse_id(sid, "spider id")?), state: Some(state(st)?) })
        }
        [sid, jid, "cancel"] => Ok(Route::CancelJob(job_key(project, sid, jid)?)),
        _ => Err(RouteError::NotFound),
    }
}

fn job_key(project: u32, sid: &str, jid: &str) -> Result<JobKey> {
    Ok(JobKey::new(project, parse_id(sid, "spider id")?, parse_id(jid, "job id")?))
}

/// A positive decimal integer that fits 32 bits, written without sign or leading zeros.
pub fn parse_id(s: &str, what: &str) -> Result<u32> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !(s.len() > 1 && s.starts_with('0'));
    match s.parse::<u32>() {
        Ok(n) if plain && n > 0 => Ok(n),
        _ => Err(Error::input(format!("{what} must be a positive integer below 2^32, got {s:?}"))),
    }
}

/// The pairs of a query string (`a=1&b=2`), decoded as HTML forms encode them.
pub fn parse_query_string(query: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let decode =
            |s: &str| percent_decode(s, true).map_err(|e| Error::input(format!("query parameter {part:?}: {e}")));
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// Decode `%XX` escapes (and `+` as a space in query strings); the result must be UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.ok_or_else(|| "a '%' not followed by two hex digits".to_string())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> Route {
        parse(p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    #[test]
    fn endpoints() {
        assert_eq!(ok("/jobq/53/count"), Route::Count(53));
        assert_eq!(ok("jobq/53/list/"), Route::List(53));
        assert_eq!(
            ok("/jobq/53/summary/running"),
            Route::Summary { project: 53, spider: None, state: Some(JobState::Running) }
        );
        assert_eq!(ok("/jobq/53/7/summary"), Route::Summary { project: 53, spider: Some(7), state: None });
        assert_eq!(ok("/jobq/53/7/81/cancel"), Route::CancelJob(JobKey::new(53, 7, 81)));
        assert_eq!(ok("/jobs/53/7/81/close%20reason"), Route::JobField(JobKey::new(53, 7, 81), "close reason".into()));
        assert_eq!(ok("/ids/53/spider/a/b"), Route::SpiderId { project: 53, name: "a/b".into() });
        assert_eq!(ok("/system/ts"), Route::ServerTime);
        assert_eq!(ok("/jobq/53/changes"), Route::Changes(53));
    }

    #[test]
    fn refusals() {
        for p in [
            "/",
            "/jobq/53",
            "/jobq/53/nope",
            "/jobq/53/count/x",
            "/jobs/53/7",
            "/jobs/53/7/1/a/b",
            "/x",
            "/jobq//count",
        ] {
            assert!(matches!(parse(p), Err(RouteError::NotFound)), "{p}");
        }
        for p in [
            "/jobq/abc/count",
            "/jobq/0/list",
            "/jobq/053/list",
            "/jobs/53/x/1",
            "/jobq/53/summary/done",
            "/jobq/53/x/summary",
            "/jobq/%zz/count",
        ] {
            assert!(matches!(parse(p), Err(RouteError::Bad(_))), "{p}");
        }
    }

    #[test]
    fn query_strings() {
        let q = parse_query_string("has_tag=a+b&has_tag=%C3%A9&flag&&x=").unwrap();
        let want = [("has_tag", "a b"), ("has_tag", "é"), ("flag", ""), ("x", "")];
        assert_eq!(q, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
        assert!(parse_query_string("a=%ff").is_err());
        assert!(parse_query_string("a=%4").is_err());
    }
}
