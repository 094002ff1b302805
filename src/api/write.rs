//! The write endpoints. Each parses and checks its whole body before calling the
//! engine, so a refused request stores nothing; an answer is sent only after the
//! engine acknowledged the write (durable, by group commit).

use serde_json::value::RawValue;

use super::{body_text, Answer, Refusal, Response};
use crate::error::Error;
use crate::model::doc::{check_depth, parse_input_object, write_json_str};
use crate::model::JobKey;
use crate::store::fields;
use crate::store::request::{self, changes_from, is_maintained, parse_cancel, parse_push, parse_update};
use crate::store::{Changes, PushResult, Store};

type Params = [(String, String)];

fn not_found(key: JobKey) -> Refusal {
    Refusal::Status(404, format!("no job {key}"))
}

pub(super) fn push(store: &Store, project: u32, body: &[u8], actor: Option<&str>) -> Answer {
    let text = body_text(body)?;
    let mut specs = Vec::new();
    for (n, line) in request::lines(text) {
        specs.push(parse_push(line).map_err(|e| e.at_line(n))?);
    }
    if specs.is_empty() {
        return Err(Error::input("the body holds no job: send one JSON object per line").into());
    }
    let results = store.push(project, &specs, actor)?;
    let mut out = Vec::with_capacity(64 * results.len());
    for (spec, r) in specs.iter().zip(results) {
        match r {
            PushResult::Pushed { key, auth } => {
                out.extend_from_slice(format!("{{\"key\":\"{key}\",\"auth\":").as_bytes());
                match auth {
                    Some(token) => write_json_str(&mut out, &token),
                    None => out.extend_from_slice(b"null"),
                }
                out.push(b'}');
            }
            PushResult::Conflict { unique } => {
                out.extend_from_slice(b"{\"error\":");
                write_json_str(&mut out, &format!("Active job exists with key {unique}"));
                out.extend_from_slice(b",\"request\":");
                out.extend_from_slice(spec.line.get().as_bytes());
                out.push(b'}');
            }
        }
        out.push(b'\n');
    }
    Ok(Response::lines(out))
}

pub(super) fn update(store: &Store, project: u32, body: &[u8], actor: Option<&str>) -> Answer {
    let text = body_text(body)?;
    let mut specs = Vec::new();
    for (n, line) in request::lines(text) {
        specs.push(parse_update(line, project).map_err(|e| e.at_line(n))?);
    }
    if specs.is_empty() {
        return Ok(Response::lines(Vec::new()));
    }
    let changed = store.update(project, &specs, actor)?;
    let mut out = Vec::with_capacity(48 * changed.len());
    for (key, prev) in changed {
        out.extend_from_slice(format!("{{\"key\":\"{key}\",\"prevstate\":\"{prev}\"}}\n").as_bytes());
    }
    Ok(Response::lines(out))
}

/// The one JSON object of a body (blank lines around it allowed): one line, or a
/// whole body that is one object spread over lines (pretty-printed).
fn one_object(body: &[u8], what: &str) -> Result<Option<String>, Error> {
    let text = body_text(body)?;
    let mut objects = request::lines(text);
    let first = objects.next();
    if let Some((n, _)) = objects.next() {
        let whole = text.trim();
        if whole.starts_with('{') && serde_json::from_str::<&serde_json::value::RawValue>(whole).is_ok() {
            return Ok(Some(whole.to_string()));
        }
        return Err(Error::input(format!("{what} takes one JSON object, found another")).at_line(n));
    }
    Ok(first.map(|(_, l)| l.to_string()))
}

pub(super) fn start_job(store: &Store, project: u32, body: &[u8], actor: Option<&str>) -> Answer {
    let changes = start_fields(body)?;
    Ok(start(store, project, &changes, actor)?.unwrap_or_else(nothing_started))
}

/// The answer of a `startjob` that found nothing pending: an empty body.
pub fn nothing_started() -> Response {
    Response::value(Vec::new())
}

/// The fields a `startjob` body merges into the job it starts (`{}` when empty).
pub fn start_fields(body: &[u8]) -> Result<Changes, Error> {
    let line = one_object(body, "startjob")?.unwrap_or_else(|| "{}".to_string());
    let fields = parse_input_object(&line).map_err(|e| e.at_line(1))?;
    changes_from(&fields).map_err(|e| e.at_line(1))
}

/// Start the next pending job of `project`: the answer (its whole metadata with
/// `key` and `auth`), or `None` when nothing is pending.
pub fn start(store: &Store, project: u32, changes: &Changes, actor: Option<&str>) -> Result<Option<Response>, Error> {
    let Some(job) = store.start_next(project, changes, actor)? else { return Ok(None) };
    let mut out = Vec::new();
    store.snapshot().render_metadata(&job, true, &mut out);
    out.push(b'\n');
    Ok(Some(Response::value(out)))
}

pub(super) fn cancel(store: &Store, project: u32, body: &[u8], params: &Params, actor: Option<&str>) -> Answer {
    let text = body_text(body)?;
    if text.trim().is_empty() {
        let by_count = params.iter().any(|(n, _)| n == "count");
        let why = if by_count { "cancelling by count is not supported; " } else { "" };
        return Err(Error::input(format!("{why}send a JSON list of {{\"key\": K}} in the body")).into());
    }
    let keys = parse_cancel(text, project)?;
    let n = store.cancel(project, &keys, actor)?;
    Ok(Response::lines(format!("{{\"count\":{n}}}\n").into_bytes()))
}

pub(super) fn cancel_one(store: &Store, key: JobKey, actor: Option<&str>) -> Answer {
    let n = store.cancel(key.project, &[key], actor)?;
    Ok(Response::lines(format!("{{\"count\":{n}}}\n").into_bytes()))
}

fn edit(store: &Store, key: JobKey, changes: &Changes, actor: Option<&str>) -> Answer {
    if store.edit(key, changes, actor)? {
        Ok(Response::lines(Vec::new()))
    } else {
        Err(not_found(key))
    }
}

pub(super) fn merge_metadata(store: &Store, key: JobKey, body: &[u8], actor: Option<&str>) -> Answer {
    let line = one_object(body, "a metadata update")?
        .ok_or_else(|| Error::input("the body must be a JSON object of fields to set"))?;
    let fields = parse_input_object(&line).map_err(|e| e.at_line(1))?;
    let changes = changes_from(&fields).map_err(|e| e.at_line(1))?;
    edit(store, key, &changes, actor)
}

fn refuse_maintained(field: &str) -> Refusal {
    Error::field(field, "is maintained by the service and cannot be changed here").into()
}

pub(super) fn set_field(store: &Store, key: JobKey, field: &str, body: &[u8], actor: Option<&str>) -> Answer {
    let text = body_text(body)?.trim();
    let value: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| Error::field(field, format!("the body must be one JSON value: {e}")))?;
    // The value sits one level inside the job's object.
    check_depth(value.get(), 1).map_err(|why| Error::field(field, why))?;
    let changes = match field {
        "tags" => Changes { tags: Some(request::tags_value("tags", &value)?), ..Changes::default() },
        "priority" => Changes { priority: Some(fields::priority(value.get())?), ..Changes::default() },
        f if is_maintained(f) => return Err(refuse_maintained(f)),
        f => {
            let c = changes_from(&[(f.into(), &*value)])?;
            if c.is_empty() {
                return Err(refuse_maintained(f));
            }
            c
        }
    };
    edit(store, key, &changes, actor)
}

pub(super) fn delete_field(store: &Store, key: JobKey, field: &str, actor: Option<&str>) -> Answer {
    let changes = match field {
        "tags" => Changes { tags: Some(Vec::new()), ..Changes::default() },
        // `priority` and `units` have defaults a job always shows: set, never removed.
        f if is_maintained(f) || f == "priority" || f == "units" => return Err(refuse_maintained(f)),
        f => Changes { remove: vec![f.to_string()], ..Changes::default() },
    };
    edit(store, key, &changes, actor)
}
