//! The read endpoints, each answered from one snapshot: count, list, summary,
//! jobsummary, a job's metadata or one field, a spider's id.

use super::{Answer, Config, Refusal, Response, Rows};
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
    let params = without(params, &["count", "start", "stop", "jobmeta"]);
    let q = parse_query(&params, project, Some(JobState::Finished), Limits::default())?;
    let n = store.snapshot().count(project, &q.filter)?;
    Ok(Response::value(format!("{n}\n").into_bytes()))
}

/// The default `count` of a listing (lower when the configured maximum is).
const LIST_COUNT: u64 = 1000;

pub(super) fn list(store: &Store, project: u32, params: &Params, config: &Config) -> Answer {
    let limits = Limits { default_count: LIST_COUNT.min(config.max_count), max_count: config.max_count };
    let q = parse_query(params, project, Some(JobState::Finished), limits)?;
    let snap = store.snapshot();
    let hits = snap.list(project, &q.filter, &q.paging)?;
    let jobmeta = q.jobmeta;
    Ok(Response::stream(Rows::new(hits, move |hit, out| snap.render_row(project, &hit, jobmeta.as_deref(), out))))
}

/// Filters a summary cannot apply: refused rather than silently ignored.
const NOT_FOR_SUMMARY: [&str; 7] = ["state", "startts", "endts", "has_tag", "lacks_tag", "key", "stop"];

pub(super) fn summary(
    store: &Store,
    project: u32,
    spider: Option<u32>,
    state: Option<JobState>,
    params: &Params,
    config: &Config,
) -> Answer {
    if let Some((name, _)) = params.iter().find(|(n, _)| NOT_FOR_SUMMARY.contains(&n.as_str())) {
        let hint = if name == "state" { " (ask for summary/<state>)" } else { "" };
        return Err(Error::field(name, format!("summary does not filter by {name}{hint}")).into());
    }
    let limits = Limits { default_count: SUMMARY_COUNT, max_count: config.max_count };
    let q = parse_query(params, project, None, limits)?;
    let snap = store.snapshot();
    // A spider named in the query (`?spider=name`) narrows like the path's id does;
    // a name the project does not know matches nothing.
    let (spider, nothing) = match (&q.filter.spider, spider) {
        (Some(name), path_id) => match snap.spider_id(project, name) {
            Some(id) if path_id.is_none_or(|p| p == id) => (Some(id), false),
            _ => (None, true),
        },
        (None, path_id) => (path_id, false),
    };
    let states = match state {
        Some(s) => vec![s],
        None => vec![JobState::Pending, JobState::Running, JobState::Finished],
    };
    let (paging, jobmeta) = (q.paging, q.jobmeta);
    Ok(Response::stream(Rows::new(states, move |st, out| {
        if nothing {
            out.extend_from_slice(format!("{{\"name\":\"{st}\",\"count\":0,\"summary\":[]}}").as_bytes());
            return Ok(());
        }
        snap.summary_line(project, spider, st, &paging, jobmeta.as_deref(), out)
    })))
}

pub(super) fn jobsummary(store: &Store, project: u32, params: &Params, config: &Config) -> Answer {
    let only = params.iter().filter(|(n, _)| n == "key" || n == "jobmeta").cloned().collect::<Vec<_>>();
    let limits = Limits { default_count: config.max_count, max_count: config.max_count };
    let q = parse_query(&only, project, None, limits)?;
    let keys: Vec<JobKey> = q.filter.keys.unwrap_or_default();
    let snap = store.snapshot();
    let jobmeta = q.jobmeta;
    Ok(Response::stream(Rows::new(keys, move |key, out| {
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

pub(super) fn job_field(store: &Store, key: JobKey, field: &str) -> Answer {
    let snap = store.snapshot();
    let mut out = Vec::new();
    if let Some(job) = snap.get(key)? {
        let spider = snap.spider_name(key.project, key.spider);
        if let Some(v) = job.field_json(field, spider.as_deref().unwrap_or("")) {
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
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
                return Err(Refusal::Engine(Error::field(n, format!("must be 1 or 0, got {other:?}"))));
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
