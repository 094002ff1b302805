//! Parsing what clients send (push and update lines, metadata objects) into typed
//! requests, checked whole before anything is written.

use serde_json::value::RawValue;

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::{Error, Result};

use crate::model::doc::{parse_input_object, Field};
use crate::model::{JobKey, JobState, SpiderKey};

use super::fields::{self, union_tags};
pub use super::fields::{
    is_maintained, DEFAULT_PRIORITY, DOC_SLACK, MAX_DOC, MAX_META_FIELDS, MAX_NAME, MAX_PRIORITY, MAX_TAG, MAX_TAGS,
    MAX_UNIQUE,
};
pub use super::import_line::{parse_import_item, parse_import_line, write_import_doc, ImportItem, ImportLine};
pub use super::import_parse::{import_paths_differ, MAX_LINE as MAX_IMPORT_LINE};

/// A field value owned.
pub type OwnedField = (String, Box<RawValue>);

fn own(name: &str, v: &RawValue) -> OwnedField {
    (name.to_string(), v.to_owned())
}

/// One line of a push, parsed ([`parse_push`]). Shared, not copied, by clones:
/// a push hands its lines to the writer that runs it.
#[derive(Debug, Clone)]
pub struct PushSpec(Arc<PushLine>);

impl std::ops::Deref for PushSpec {
    type Target = PushLine;
    fn deref(&self) -> &PushLine {
        &self.0
    }
}

/// The fields of a push line.
#[derive(Debug)]
pub struct PushLine {
    pub spider: String,
    pub state: JobState,
    pub priority: i64,
    pub tags: Vec<String>,
    pub unique: Option<String>,
    /// Metadata fields in the order given (`units` included, defaulted to 1).
    pub meta: Vec<OwnedField>,
    /// The line as sent, for conflict answers.
    pub line: Box<RawValue>,
}

/// Changes to a job's fields (update lines, metadata posts).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub priority: Option<i64>,
    pub tags: Option<Vec<String>>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub set: Vec<OwnedField>,
    pub remove: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.priority.is_none()
            && self.tags.is_none()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.set.is_empty()
            && self.remove.is_empty()
    }
}

/// What an update line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Job(JobKey),
    /// Every job of a spider that is not deleted.
    Spider(SpiderKey),
}

/// One line of an update, parsed ([`parse_update`]); clones share it, as
/// [`PushSpec`]'s do.
#[derive(Debug, Clone)]
pub struct UpdateSpec(Arc<UpdateLine>);

impl std::ops::Deref for UpdateSpec {
    type Target = UpdateLine;
    fn deref(&self) -> &UpdateLine {
        &self.0
    }
}

/// The fields of an update line.
#[derive(Debug)]
pub struct UpdateLine {
    pub target: Target,
    pub state: Option<JobState>,
    pub changes: Changes,
}

fn str_value(name: &str, v: &RawValue) -> Result<String> {
    fields::string(name, v.get())
}

/// An integer in i64 range: no fraction, no exponent.
pub fn int_value(name: &str, v: &RawValue) -> Result<i64> {
    fields::integer(name, v.get())
}

/// A tag list: a list of strings or one string; duplicates dropped.
pub fn tags_value(name: &str, v: &RawValue) -> Result<Vec<String>> {
    fields::tag_list(name, v.get())
}

/// Metadata a client write may leave: at most [`MAX_META_FIELDS`] fields and
/// [`MAX_DOC`] bytes.
pub fn check_doc_limits(fields: usize, bytes: usize) -> Result<()> {
    if fields > MAX_META_FIELDS {
        return Err(Error::input(format!("a job has at most {MAX_META_FIELDS} metadata fields, not {fields}")));
    }
    if bytes > MAX_DOC {
        return Err(Error::input(format!("metadata of {bytes} bytes is over the {MAX_DOC}-byte limit")));
    }
    Ok(())
}

fn doc_bytes(fields: &[OwnedField]) -> usize {
    fields.iter().map(|(n, v)| n.len() + v.get().len() + 4).sum()
}

/// Parse one push line.
pub fn parse_push(line: &str) -> Result<PushSpec> {
    let fields = parse_input_object(line)?;
    let mut spec = PushLine {
        spider: String::new(),
        state: JobState::Pending,
        priority: DEFAULT_PRIORITY,
        tags: Vec::new(),
        unique: None,
        meta: Vec::new(),
        line: RawValue::from_string(line.trim().to_string()).map_err(|e| Error::input(e.to_string()))?,
    };
    let mut has_units = false;
    for (name, v) in &fields {
        match name.as_ref() {
            "spider" => spec.spider = str_value("spider", v)?,
            "state" => spec.state = str_value("state", v)?.parse()?,
            "priority" => spec.priority = fields::priority(v.get())?,
            "tags" | "add_tag" => union_tags(&mut spec.tags, tags_value(name, v)?)?,
            "unique" => spec.unique = fields::unique(v.get())?.map(Cow::into_owned),
            "units" => {
                fields::units(v.get())?;
                has_units = true;
                spec.meta.push(own(name, v));
            }
            n if is_maintained(n) => {}
            _ => spec.meta.push(own(name, v)),
        }
    }
    if spec.spider.is_empty() {
        return Err(Error::field("spider", "is required (a non-empty string)"));
    }
    if spec.spider.len() > MAX_NAME {
        return Err(Error::field("spider", format!("a spider name is at most {MAX_NAME} bytes")));
    }
    if !has_units {
        spec.meta.push(("units".to_string(), RawValue::from_string(fields::DEFAULT_UNITS.into()).expect("valid JSON")));
    }
    check_doc_limits(spec.meta.len(), doc_bytes(&spec.meta))?;
    Ok(PushSpec(Arc::new(spec)))
}

/// Changes from metadata fields: maintained fields are ignored, `tags` replaces
/// the tags, `add_tag`/`remove_tag` edit them, `priority` sets the priority;
/// `units` is checked.
pub fn changes_from(fields: &[Field<'_>]) -> Result<Changes> {
    let mut c = Changes::default();
    for (name, v) in fields {
        match name.as_ref() {
            "priority" => c.priority = Some(fields::priority(v.get())?),
            "tags" => c.tags = Some(tags_value("tags", v)?),
            "add_tag" => c.add_tags.extend(tags_value("add_tag", v)?),
            "remove_tag" => c.remove_tags.extend(tags_value("remove_tag", v)?),
            n if is_maintained(n) => {}
            n => {
                if n == "units" {
                    fields::units(v.get())?;
                }
                c.set.push(own(name, v));
            }
        }
    }
    check_doc_limits(c.set.len(), doc_bytes(&c.set))?;
    Ok(c)
}

/// Parse one update line for `project`; a key of another project is refused.
pub fn parse_update(line: &str, project: u32) -> Result<UpdateSpec> {
    let fields = parse_input_object(line)?;
    let raw_key = fields.iter().find(|(n, _)| n == "key").ok_or_else(|| Error::field("key", "is required"))?.1;
    let key = str_value("key", raw_key)?;
    let target = if key.matches('/').count() == 1 { Target::Spider(key.parse()?) } else { Target::Job(key.parse()?) };
    let p = match target {
        Target::Job(k) => k.project,
        Target::Spider(s) => s.project,
    };
    if p != project {
        return Err(Error::field("key", format!("{key} belongs to project {p}, not {project}")));
    }
    let state = match fields.iter().find(|(n, _)| n == "state") {
        Some((_, v)) => Some(str_value("state", v)?.parse()?),
        None => None,
    };
    let rest: Vec<Field<'_>> = fields.into_iter().filter(|(n, _)| n != "key" && n != "state").collect();
    Ok(UpdateSpec(Arc::new(UpdateLine { target, state, changes: changes_from(&rest)? })))
}

/// Split a JSON-lines body into its non-blank lines with 1-based line numbers.
pub fn lines(body: &str) -> impl Iterator<Item = (u64, &str)> {
    body.split('\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// Keys of a cancel body: a JSON list of `{"key": K}`, or such objects one a line.
pub fn parse_cancel(body: &str, project: u32) -> Result<Vec<JobKey>> {
    // Errors name the line, or for a JSON list the element (1-based), as "line".
    let items: Vec<(u64, &RawValue)> = match serde_json::from_str::<Vec<&RawValue>>(body) {
        Ok(v) => v.into_iter().enumerate().map(|(i, v)| (i as u64 + 1, v)).collect(),
        Err(_) => {
            let mut v = Vec::new();
            for (n, l) in lines(body) {
                let raw: &RawValue =
                    serde_json::from_str(l).map_err(|e| Error::input(format!("bad JSON: {e}")).at_line(n))?;
                v.push((n, raw));
            }
            v
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (n, raw) in items {
        let fields = parse_input_object(raw.get()).map_err(|e| e.at_line(n))?;
        let key =
            fields.iter().find(|(f, _)| f == "key").ok_or_else(|| Error::field("key", "is required").at_line(n))?.1;
        let k: JobKey = str_value("key", key).and_then(|k| k.parse()).map_err(|e| e.at_line(n))?;
        if k.project != project {
            return Err(Error::field("key", format!("{k} belongs to project {}, not {project}", k.project)).at_line(n));
        }
        out.push(k);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_defaults_and_fields() {
        let s = parse_push(r#"{"spider":"s1","foo":[1,2],"tags":["a","a","b"],"priority":4,"unique":"u"}"#).unwrap();
        assert_eq!((s.spider.as_str(), s.state, s.priority), ("s1", JobState::Pending, 4));
        assert_eq!(s.tags, vec!["a", "b"]);
        assert_eq!(s.unique.as_deref(), Some("u"));
        let names: Vec<&str> = s.meta.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["foo", "units"]);
    }

    #[test]
    fn push_refusals() {
        for bad in [
            r#"{"foo":1}"#,
            r#"{"spider":""}"#,
            r#"{"spider":1}"#,
            r#"{"spider":"s","state":"bogus"}"#,
            r#"{"spider":"s","priority":1.5}"#,
            r#"{"spider":"s","priority":"2"}"#,
            r#"{"spider":"s","units":"x"}"#,
            r#"[1]"#,
            r#"{"spider":"s""#,
        ] {
            assert!(parse_push(bad).unwrap_err().is_input(), "{bad}");
        }
        assert!(parse_push(r#"{"spider":"s","unique":null}"#).unwrap().unique.is_none());
        // Deeper than import accepts (the line is one level, "x" 128 more).
        let deep = format!(r#"{{"spider":"s","x":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        assert!(parse_push(&deep).unwrap_err().to_string().contains("nested"));
        assert!(parse_push(&deep.replacen('[', "", 1).replacen(']', "", 1)).is_ok());
    }

    #[test]
    fn update_keys() {
        let u = parse_update(r#"{"key":"53/7/81","state":"finished","close_reason":"ok","add_tag":"x"}"#, 53).unwrap();
        assert_eq!(u.target, Target::Job(JobKey::new(53, 7, 81)));
        assert_eq!(u.state, Some(JobState::Finished));
        assert_eq!(u.changes.add_tags, vec!["x"]);
        assert_eq!(u.changes.set.len(), 1);
        assert_eq!(
            parse_update(r#"{"key":"53/7"}"#, 53).unwrap().target,
            Target::Spider(SpiderKey { project: 53, spider: 7 })
        );
        assert!(parse_update(r#"{"key":"54/7/1"}"#, 53).is_err());
        assert!(parse_update(r#"{"key":"53/x/1"}"#, 53).is_err());
        assert!(parse_update(r#"{"state":"finished"}"#, 53).is_err());
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    #[test]
    fn cancel_errors_name_the_element() {
        let e = parse_cancel(r#"[{"key":"5/1/1"},{"nokey":1}]"#, 5).unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        let e = parse_cancel(r#"[{"key":"5/1/1"},{"key":"5/x/1"}]"#, 5).unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        assert_eq!(parse_cancel("{\"key\":\"5/1/1\"}\n{\"key\":\"5/1/2\"}", 5).unwrap().len(), 2);
    }
}
