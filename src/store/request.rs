//! Parsing what clients send (push and update lines, metadata objects) into typed
//! requests, checked whole before anything is written.

use serde_json::value::RawValue;

use crate::error::{Error, Result};
use std::borrow::Cow;

use crate::codec::json::{self, RawField};
use crate::model::doc::{parse_input_object, Field};
use crate::model::{JobKey, JobState, SpiderKey, TIME_FIELDS};

/// Longest spider name, tag and `unique` value, in bytes.
pub const MAX_NAME: usize = 1024;
pub const MAX_TAG: usize = 1024;
pub const MAX_UNIQUE: usize = 4096;
pub const MAX_TAGS: usize = 1000;
/// Largest metadata document, in bytes.
pub const MAX_DOC: usize = 16 << 20;
/// The default priority of a pushed job.
pub const DEFAULT_PRIORITY: i64 = 2;

/// Fields the service maintains: ignored when a client sends them as metadata.
pub fn is_maintained(name: &str) -> bool {
    matches!(
        name,
        "key"
            | "auth"
            | "state"
            | "project"
            | "spider"
            | "unique"
            | "scheduled_by"
            | "started_by"
            | "completed_by"
            | "deleted_by"
    ) || TIME_FIELDS.contains(&name)
}

/// A field value owned.
pub type OwnedField = (String, Box<RawValue>);

fn own(name: &str, v: &RawValue) -> OwnedField {
    (name.to_string(), v.to_owned())
}

/// One line of a push.
#[derive(Debug, Clone)]
pub struct PushSpec {
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

/// One line of an update.
#[derive(Debug, Clone)]
pub struct UpdateSpec {
    pub target: Target,
    pub state: Option<JobState>,
    pub changes: Changes,
}

fn str_value(name: &str, v: &RawValue) -> Result<String> {
    serde_json::from_str::<String>(v.get())
        .map_err(|_| Error::field(name, format!("must be a string, got {}", v.get())))
}

/// An integer in i64 range: no fraction, no exponent.
pub fn int_value(name: &str, v: &RawValue) -> Result<i64> {
    let t = v.get();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::field(name, format!("must be an integer, got {t}")));
    }
    t.parse::<i64>().map_err(|_| Error::field(name, format!("integer out of range: {t}")))
}

fn check_tag(t: &str) -> Result<()> {
    if t.is_empty() || t.len() > MAX_TAG {
        return Err(Error::field("tags", format!("a tag must be 1 to {MAX_TAG} bytes")));
    }
    Ok(())
}

/// A tag list: a list of strings or one string; duplicates dropped.
pub fn tags_value(name: &str, v: &RawValue) -> Result<Vec<String>> {
    let list: Vec<String> = match serde_json::from_str::<Vec<String>>(v.get()) {
        Ok(l) => l,
        Err(_) => vec![serde_json::from_str::<String>(v.get())
            .map_err(|_| Error::field(name, "must be a list of strings or a string"))?],
    };
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for t in list {
        check_tag(&t)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::field(name, format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

fn check_doc_size(fields: &[OwnedField]) -> Result<()> {
    let size: usize = fields.iter().map(|(n, v)| n.len() + v.get().len() + 4).sum();
    if size > MAX_DOC {
        return Err(Error::input(format!("metadata of {size} bytes is over the {MAX_DOC}-byte limit")));
    }
    Ok(())
}

/// Parse one push line.
pub fn parse_push(line: &str) -> Result<PushSpec> {
    let fields = parse_input_object(line)?;
    let mut spec = PushSpec {
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
            "priority" => spec.priority = int_value("priority", v)?,
            "tags" | "add_tag" => {
                for t in tags_value(name, v)? {
                    if !spec.tags.contains(&t) {
                        spec.tags.push(t);
                    }
                }
            }
            "unique" => spec.unique = unique_value(v)?,
            "units" => {
                int_value("units", v)?;
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
    if spec.tags.len() > MAX_TAGS {
        return Err(Error::field("tags", format!("at most {MAX_TAGS} tags")));
    }
    if !has_units {
        spec.meta.push(("units".to_string(), RawValue::from_string("1".into()).expect("valid JSON")));
    }
    check_doc_size(&spec.meta)?;
    Ok(spec)
}

fn unique_value(v: &RawValue) -> Result<Option<String>> {
    let t = v.get();
    let u = if t == "null" {
        return Ok(None);
    } else if t.starts_with('"') {
        str_value("unique", v)?
    } else if int_value("unique", v).is_ok() {
        t.to_string()
    } else {
        return Err(Error::field("unique", format!("must be a string, an integer or null, got {t}")));
    };
    if u.len() > MAX_UNIQUE {
        return Err(Error::field("unique", format!("at most {MAX_UNIQUE} bytes")));
    }
    Ok(Some(u))
}

/// Changes from metadata fields: maintained fields are ignored, `tags` replaces
/// the tags, `add_tag`/`remove_tag` edit them, `priority` sets the priority.
pub fn changes_from(fields: &[Field<'_>]) -> Result<Changes> {
    let mut c = Changes::default();
    for (name, v) in fields {
        match name.as_ref() {
            "priority" => c.priority = Some(int_value("priority", v)?),
            "tags" => c.tags = Some(tags_value("tags", v)?),
            "add_tag" => c.add_tags.extend(tags_value("add_tag", v)?),
            "remove_tag" => c.remove_tags.extend(tags_value("remove_tag", v)?),
            n if is_maintained(n) => {}
            _ => c.set.push(own(name, v)),
        }
    }
    check_doc_size(&c.set)?;
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
    Ok(UpdateSpec { target, state, changes: changes_from(&rest)? })
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

/// One line of an import, borrowed from the line: a job's whole metadata plus its key.
#[derive(Debug, Clone)]
pub struct ImportLine<'a> {
    pub key: JobKey,
    pub spider: Cow<'a, str>,
    pub state: JobState,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    pub tags: Vec<Cow<'a, str>>,
    pub unique: Option<Cow<'a, str>>,
    /// The metadata document's fields, raw, in order, each name once.
    pub doc: Vec<RawField<'a>>,
}

fn raw_str<'a>(name: &str, v: &'a str) -> Result<Cow<'a, str>> {
    json::string_value(v).ok_or_else(|| Error::field(name, format!("must be a string, got {v}")))
}

fn raw_int(name: &str, v: &str) -> Result<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::field(name, format!("must be an integer, got {v}")));
    }
    v.parse::<i64>().map_err(|_| Error::field(name, format!("integer out of range: {v}")))
}

/// Parse one import line (the export format). `key`, `spider`, `state` and the
/// time of that state are required. `*_by`, `auth`, `units` and every other field
/// are kept, raw, as metadata. `fields` is scratch space.
pub fn parse_import_line<'a>(line: &'a str, fields: &mut Vec<RawField<'a>>) -> Result<ImportLine<'a>> {
    fields.clear();
    json::scan_object(line, fields).map_err(|e| Error::input(e.to_string()))?;
    let (mut key, mut spider, mut state, mut project) = (None, None, None, None);
    let mut l = ImportLine {
        key: JobKey::new(1, 1, 1),
        spider: Cow::Borrowed(""),
        state: JobState::Pending,
        priority: DEFAULT_PRIORITY,
        times: [None; 4],
        tags: Vec::new(),
        unique: None,
        doc: Vec::with_capacity(fields.len()),
    };
    for f in fields.iter() {
        let name = f.name().map_err(|e| Error::input(e.to_string()))?;
        match name.as_ref() {
            "key" => key = Some(raw_str("key", f.value)?.parse::<JobKey>()?),
            "spider" => spider = Some(raw_str("spider", f.value)?),
            "state" => state = Some(raw_str("state", f.value)?.parse::<JobState>()?),
            "priority" => l.priority = raw_int("priority", f.value)?,
            "project" => project = Some(raw_int("project", f.value)?),
            "tags" => {
                let mut list: Vec<Cow<'a, str>> = Vec::new();
                match f.value.as_bytes().first() {
                    Some(b'[') => json::string_array(f.value, &mut list)
                        .map_err(|_| Error::field("tags", "must be a list of strings"))?,
                    _ => list.push(raw_str("tags", f.value)?),
                };
                for t in list {
                    if t.is_empty() || t.len() > MAX_TAG {
                        return Err(Error::field("tags", format!("a tag must be 1 to {MAX_TAG} bytes")));
                    }
                    if !l.tags.contains(&t) {
                        l.tags.push(t);
                    }
                }
                if l.tags.len() > MAX_TAGS {
                    return Err(Error::field("tags", format!("at most {MAX_TAGS} tags")));
                }
            }
            "unique" => {
                l.unique = match f.value {
                    "null" => None,
                    v if v.starts_with('"') => Some(raw_str("unique", v)?),
                    v => Some(Cow::Owned(raw_int("unique", v).map(|_| v.to_string())?)),
                }
            }
            n => match TIME_FIELDS.iter().position(|t| *t == n) {
                Some(i) => {
                    let t = raw_int(n, f.value)?;
                    l.times[i] = Some(u64::try_from(t).map_err(|_| Error::field(n, "must not be negative"))?);
                }
                None => match l.doc.iter().position(|d| d.name == f.name) {
                    Some(i) => l.doc[i].value = f.value,
                    None => l.doc.push(*f),
                },
            },
        }
    }
    l.key = key.ok_or_else(|| Error::field("key", "is required"))?;
    l.spider = spider.filter(|s| !s.is_empty()).ok_or_else(|| Error::field("spider", "is required"))?;
    l.state = state.ok_or_else(|| Error::field("state", "is required"))?;
    if l.times[l.state as usize].is_none() {
        return Err(Error::field(l.state.time_field(), format!("is required for a {} job", l.state)));
    }
    if project.is_some_and(|p| p != i64::from(l.key.project)) {
        return Err(Error::field("project", format!("does not match the key {}", l.key)));
    }
    if l.spider.len() > MAX_NAME || l.unique.as_ref().is_some_and(|u| u.len() > MAX_UNIQUE) {
        return Err(Error::input("spider name or unique value too long"));
    }
    let size: usize = l.doc.iter().map(|f| f.name.len() + f.value.len() + 4).sum();
    if size > MAX_DOC {
        return Err(Error::input("metadata over the size limit"));
    }
    Ok(l)
}

/// Write the document of an import line: `{"name":value,...}`.
pub fn write_import_doc(doc: &[RawField<'_>], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, f) in doc.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(f.value.as_bytes());
    }
    out.push(b'}');
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
