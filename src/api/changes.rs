//! `GET jobq/:pid/changes?since=SEQ&count=N&wait=SECS`: the change feed. One JSON
//! line per job version written after position `since`, in write order:
//! `{"seq","key","state","prevstate","ts","spider"}`, and `"deleted": true` for a
//! version in state `deleted`. The position to pass as the next `since` goes in
//! the `X-Jobq-Seq` header (also when nothing matched, so a quiet feed moves on).
//!
//! Here a request is answered from one read of the log (what `jobq query` does);
//! the server long-polls with `wait` on top of the same functions.

use std::time::Duration;

use super::{error_line, Answer, Body, Config, Response, Shape};
use crate::error::Result;
use crate::model::doc::write_json_str;
use crate::query::filter::number;
use crate::query::ChangeFilter;
use crate::store::{Change, FeedFrom, FeedPage, Store};

/// The longest a request may wait for a change (`wait` is capped to it).
pub const MAX_WAIT_SECS: u64 = 60;

/// A parsed feed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesRequest {
    pub project: u32,
    /// After this position; `None`: from now.
    pub since: Option<u64>,
    /// At most this many lines (`--max-count` at most, and by default).
    pub count: usize,
    /// How long to wait for a change when there is none yet (0: answer at once).
    pub wait: Duration,
    pub filter: ChangeFilter,
}

/// `wait=SECS` (changes, startjob): whole seconds, at most [`MAX_WAIT_SECS`] (more is
/// capped); absent, 0.
pub fn parse_wait(params: &[(String, String)]) -> Result<Duration> {
    let secs = last(params, "wait").map(|v| number("wait", v)).transpose()?.unwrap_or(0);
    Ok(Duration::from_secs(secs.min(MAX_WAIT_SECS)))
}

/// The last value of a parameter given once (a repeated one: the last counts).
fn last<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

impl ChangesRequest {
    /// Parse the request's parameters; a bad value is refused naming the parameter.
    pub fn parse(project: u32, params: &[(String, String)], config: &Config) -> Result<ChangesRequest> {
        let since = last(params, "since").map(|v| number("since", v)).transpose()?;
        let count = last(params, "count").map(|v| number("count", v)).transpose()?.unwrap_or(config.max_count);
        Ok(ChangesRequest {
            project,
            since,
            count: count.min(config.max_count) as usize,
            wait: parse_wait(params)?,
            filter: ChangeFilter::parse(params, project)?,
        })
    }
}

/// Append one change as a JSON line.
pub fn write_change(c: &Change, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!("{{\"seq\":{},\"key\":\"{}\",\"state\":\"{}\",\"prevstate\":", c.seq, c.key, c.state).as_bytes(),
    );
    match c.prevstate {
        Some(p) => out.extend_from_slice(format!("\"{p}\"").as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(format!(",\"ts\":{},\"spider\":", c.ts).as_bytes());
    write_json_str(out, &c.spider);
    if c.state == crate::model::JobState::Deleted {
        out.extend_from_slice(b",\"deleted\":true");
    }
    out.extend_from_slice(b"}\n");
}

/// The answer for `changes` found, read up to position `seq`.
pub fn lines(changes: &[Change], seq: u64) -> Response {
    let mut out = Vec::with_capacity(128 * changes.len());
    for c in changes {
        write_change(c, &mut out);
    }
    Response { feed_position: Some(seq), ..Response::lines(out) }
}

/// 410: the changes after `since` were removed by compaction.
pub fn gone(since: u64, oldest: u64) -> Response {
    let message = format!(
        "the changes after position {since} were removed by compaction; the oldest position is {oldest}: \
         list the jobs again, then follow the feed from a position taken before listing"
    );
    let mut body = error_line(&message);
    body.truncate(body.len() - 2);
    body.extend_from_slice(format!(",\"oldest\":{oldest}}}\n").as_bytes());
    Response { status: 410, body: Body::Full(body), shape: Shape::Value, allow: None, feed_position: Some(oldest) }
}

/// One read of the feed for `req`, starting at `from` (a position or a mark).
pub fn read(store: &Store, req: &ChangesRequest, from: FeedFrom) -> Result<FeedPage> {
    store.changes(req.project, from, &req.filter, req.count)
}

/// Answer from one read, without waiting.
pub(super) fn changes(store: &Store, project: u32, params: &[(String, String)], config: &Config) -> Answer {
    let req = ChangesRequest::parse(project, params, config)?;
    let since = req.since.unwrap_or_else(|| store.feed_position());
    Ok(match read(store, &req, FeedFrom::Seq(since))? {
        FeedPage::Changes { changes, mark, .. } => lines(&changes, mark.seq),
        FeedPage::Gone { oldest } => gone(since, oldest),
    })
}
