//! The read endpoints, each answered from one snapshot: count, list, summary,
//! jobsummary, a job's metadata or one field, a spider's id.

use super::{Answer, Cancel, Config, Refusal, Response, Rows};
use crate::error::Error;
use crate::model::{Clock, JobKey, JobState, SystemClock};
use crate::query::{parse_query, Limits};
use crate::store::Store;

type Params = [(String, String)];

/// Default `count` of a summary line.
const SUMMARY_COUNT: u64 = 5;

fn without(params: &Params, names: &[&str]) -> Vec<(String, String)> {
    params.iter().filter(|(n, _)| !names.contains(&n.as_str())).cloned().collect()
}

pub(super) fn count(store: &Store, project: u32, params: &Params) -> Answer {
    // Paging means nothing to a count: its parameters are ignored, not checked.
    let params = without(params, &["count", "start", "stop", "startafter", "jobmeta"]);
    let q = parse_query(&params, project, Some(JobState::Finished), Limits::default())?;
    let n = store.snapshot().count(project, &q.filter)?;
    Ok(Response::value(format!("{n}\n").into_bytes()))
}

/// The default `count` of a listing (lower when the configured maximum is).
const LIST_COUNT: u64 = 1000;

pub(super) fn list(store: &Store, project: u32, params: &Params, config: &Config, cancel: &Cancel) -> Answer {
    let limits = Limits { default_count: LIST_COUNT.min(config.max_count), max_count: config.max_count };
    let q = parse_query(params, project, Some(JobState::Finished), limits)?;
    let snap = store.snapshot();
    let hits = snap.list(project, &q.filter, &q.paging)?;
    let jobmeta = q.jobmeta;
    // Rendered a run of rows at a time, as many as fit a chunk (a row of
    // megabytes alone); cancel is checked between runs.
    Ok(Response::stream(Rows::runs(hits, cancel.clone(), move |run, out, limit| {
        snap.render_rows_within(project, run, jobmeta.as_deref(), out, limit)
    })))
}

pub(super) fn summary(
    store: &Store,
    project: u32,
    spider: Option<u32>,
    state: Option<JobState>,
    params: &Params,
    config: &Config,
    cancel: &Cancel,
) -> Answer {
    if params.iter().any(|(n, _)| n == "state") {
        return Err(Error::field("state", "summary has a line per state (ask for summary/<state>)").into());
    }
    let limits = Limits { default_count: SUMMARY_COUNT, max_count: config.max_count };
    // `startafter` pages a listing; a summary ignores it, unchecked.
    let q = parse_query(&without(params, &["startafter"]), project, None, limits)?;
    let snap = store.snapshot();
    // The path's spider id and a `?spider=name` must agree; a name the project does
    // not know matches nothing (the filter keeps the unknown name).
    let mut filter = q.filter;
    if let Some(id) = spider {
        let name = snap.spider_name(project, id).map(|n| n.to_string());
        match (&filter.spider, name) {
            (Some(asked), Some(name)) if *asked != name => filter.spider = Some(String::new()),
            (_, Some(name)) => filter.spider = Some(name),
            (_, None) => filter.spider = Some(String::new()),
        }
    }
    let states = match state {
        Some(s) => vec![s],
        None => vec![JobState::Pending, JobState::Running, JobState::Finished],
    };
    let (paging, jobmeta) = (q.paging, q.jobmeta);
    // A line may list many rows: rendering also stops between them.
    let stop = cancel.clone();
    Ok(Response::stream(Rows::new(states, cancel.clone(), move |st, out| {
        snap.summary_line(project, &filter, st, &paging, jobmeta.as_deref(), &|| stop.is_cancelled(), out)
    })))
}

pub(super) fn jobsummary(store: &Store, project: u32, params: &Params, config: &Config, cancel: &Cancel) -> Answer {
    let only = params.iter().filter(|(n, _)| n == "key" || n == "jobmeta").cloned().collect::<Vec<_>>();
    let limits = Limits { default_count: config.max_count, max_count: config.max_count };
    let q = parse_query(&only, project, None, limits)?;
    let keys: Vec<JobKey> = q.filter.keys.unwrap_or_default();
    let snap = store.snapshot();
    let jobmeta = q.jobmeta;
    Ok(Response::stream(Rows::new(keys, cancel.clone(), move |key, out| {
        if let Some(job) = snap.get(key)? {
            snap.render_job(project, &job, jobmeta.as_deref(), out);
        }
        Ok(())
    })))
}

pub(super) fn job(store: &Store, key: JobKey) -> Answer {
    let snap = store.snapshot();
    let mut out = Vec::new();
    if let Some(job) = snap.get(key)? {
        snap.render_metadata(&job, false, &mut out);
        out.push(b'\n');
    }
    Ok(Response::value(out))
}

/// One field of a job: `null` when the job lacks it (as the real service
/// answers; `ScrapinghubClient`'s `metadata.get` needs a line), nothing for an
/// unknown job (as for the whole metadata).
pub(super) fn job_field(store: &Store, key: JobKey, field: &str) -> Answer {
    let snap = store.snapshot();
    let mut out = Vec::new();
    if let Some(job) = snap.get(key)? {
        let spider = snap.spider_name(key.project, key.spider);
        match job.field_json(field, spider.as_deref().unwrap_or("")) {
            Some(v) => out.extend_from_slice(v.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'\n');
    }
    Ok(Response::value(out))
}

pub(super) fn spider_id(store: &Store, project: u32, name: &str, params: &Params) -> Answer {
    let mut create = false;
    for (n, v) in params.iter().filter(|(n, _)| n == "create") {
        create = match v.as_str() {
            "1" | "true" | "" => true,
            "0" | "false" => false,
            other => {
                return Err(Refusal::Engine(Error::field(
                    n,
                    format!("must be 1, true or empty (create) or 0, false, got {other:?}"),
                )));
            }
        };
    }
    let id = store.spider_id(project, name, create)?;
    let text = id.map_or_else(|| "null".to_string(), |i| i.to_string());
    Ok(Response::value(format!("{text}\n").into_bytes()))
}

pub(super) fn server_time() -> Response {
    Response::value(format!("{}\n", SystemClock.now_ms()).into_bytes())
}
