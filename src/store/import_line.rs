//! One line of an import (the export format): a job's whole metadata plus its
//! key, or a spider of the catalog. Fields are checked by the same rules as
//! every other write path (fields.rs); values are kept as raw slices of the line.

use std::borrow::Cow;

use super::fields::{self, DOC_SLACK, MAX_DOC, MAX_NAME};
use crate::codec::json::{self, RawField, MAX_OBJECT_FIELDS};
use crate::codec::record::SpiderEntry;
use crate::error::{Error, Result};
use crate::hash::FastMap;
use crate::model::doc::write_json_str;
use crate::model::{JobKey, JobState, TIME_FIELDS};

/// The name of the one field of a catalog line.
pub const CATALOG_FIELD: &str = "spider_catalog";

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

impl<'a> ImportLine<'a> {
    /// The term the job is indexed under as `close_reason`, if any (the document
    /// holds each name once).
    pub fn close_reason(&self) -> Option<Cow<'a, str>> {
        let f = self.doc.iter().rev().find(|f| f.name().is_ok_and(|n| n == crate::model::CLOSE_REASON))?;
        crate::model::close_reason_term(f.value)
    }
}

/// What an import line holds.
#[derive(Debug, Clone)]
pub enum ImportItem<'a> {
    Job(ImportLine<'a>),
    /// `{"spider_catalog": {"project": P, "id": S, "name": N, "next_job": J}}`:
    /// a spider with its id and the id its next job gets.
    Spider(SpiderEntry),
}

fn raw_str<'a>(name: &str, v: &'a str) -> Result<Cow<'a, str>> {
    fields::string_cow(name, v)
}

/// A positive 32-bit id.
fn raw_id(name: &str, v: &str) -> Result<u32> {
    let n = fields::integer(name, v)?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::field(name, format!("must be from 1 to {}", u32::MAX)))
}

/// Scan a line into `fields` (scratch space), at most [`MAX_OBJECT_FIELDS`].
fn scan<'a>(line: &'a str, fields: &mut Vec<RawField<'a>>) -> Result<()> {
    fields.clear();
    json::scan_object(line, fields).map_err(|e| Error::input(e.to_string()))?;
    if fields.len() > MAX_OBJECT_FIELDS {
        return Err(Error::input(format!("a JSON object has at most {MAX_OBJECT_FIELDS} fields")));
    }
    Ok(())
}

/// Parse one import line: a job or a catalog spider. `fields` is scratch space.
pub fn parse_import_item<'a>(line: &'a str, fields: &mut Vec<RawField<'a>>) -> Result<ImportItem<'a>> {
    scan(line, fields)?;
    // The name decoded: `"spider\u005fcatalog"` is the same JSON name.
    match fields.first() {
        Some(f) if f.name().is_ok_and(|n| n == CATALOG_FIELD) => {
            if fields.len() > 1 {
                return Err(Error::input(format!("a {CATALOG_FIELD} line has no other field")));
            }
            let value = f.value;
            Ok(ImportItem::Spider(parse_catalog(value, fields)?))
        }
        _ => Ok(ImportItem::Job(parse_job(fields)?)),
    }
}

/// Parse one import line that must be a job.
pub fn parse_import_line<'a>(line: &'a str, fields: &mut Vec<RawField<'a>>) -> Result<ImportLine<'a>> {
    match parse_import_item(line, fields)? {
        ImportItem::Job(l) => Ok(l),
        ImportItem::Spider(_) => Err(Error::input(format!("a {CATALOG_FIELD} line where a job was expected"))),
    }
}

fn parse_catalog<'a>(value: &'a str, fields: &mut Vec<RawField<'a>>) -> Result<SpiderEntry> {
    fields.clear();
    json::scan_object(value, fields)
        .map_err(|_| Error::field(CATALOG_FIELD, "must be an object {\"project\",\"id\",\"name\",\"next_job\"}"))?;
    let (mut project, mut spider, mut name, mut next_job) = (None, None, None, None);
    for f in fields.iter() {
        match f.name {
            "project" => project = Some(raw_id("project", f.value)?),
            "id" => spider = Some(raw_id("id", f.value)?),
            "next_job" => next_job = Some(raw_id("next_job", f.value)?),
            "name" => name = Some(raw_str("name", f.value)?.into_owned()),
            other => return Err(Error::field(CATALOG_FIELD, format!("unknown field {other:?}"))),
        }
    }
    let missing = |what| Error::field(CATALOG_FIELD, format!("{what} is required"));
    let name = name.ok_or_else(|| missing("name"))?;
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::field("name", format!("a spider name is 1 to {MAX_NAME} bytes")));
    }
    Ok(SpiderEntry {
        project: project.ok_or_else(|| missing("project"))?,
        spider: spider.ok_or_else(|| missing("id"))?,
        next_job: next_job.ok_or_else(|| missing("next_job"))?,
        name: name.into(),
    })
}

/// Document fields up to which a repeated name is found by scanning, not hashing.
const SCAN_FIELDS: usize = 16;

/// `key`, `spider`, `state` and the time of that state are required. `*_by`,
/// `auth`, `units` and every other field are kept, raw, as metadata; a line
/// without `units` gets `"units":1` last, as a push does.
fn parse_job<'a>(fields: &[RawField<'a>]) -> Result<ImportLine<'a>> {
    let (mut key, mut spider, mut state, mut project) = (None, None, None, None);
    let mut l = ImportLine {
        key: JobKey::new(1, 1, 1),
        spider: Cow::Borrowed(""),
        state: JobState::Pending,
        priority: fields::DEFAULT_PRIORITY,
        times: [None; 4],
        tags: Vec::new(),
        unique: None,
        doc: Vec::with_capacity(fields.len()),
    };
    // The decoded names of `l.doc` while they are few (no allocation per
    // line), past that their places.
    let mut few: [Cow<'a, str>; SCAN_FIELDS] = Default::default();
    let mut places: Option<FastMap<Cow<'a, str>, usize>> = None;
    let mut has_units = false;
    for f in fields {
        let name = f.name().map_err(|e| Error::input(e.to_string()))?;
        match name.as_ref() {
            "key" => key = Some(raw_str("key", f.value)?.parse::<JobKey>()?),
            "spider" => spider = Some(raw_str("spider", f.value)?),
            "state" => state = Some(raw_str("state", f.value)?.parse::<JobState>()?),
            "priority" => l.priority = fields::priority(f.value)?,
            "project" => project = Some(fields::integer("project", f.value)?),
            "tags" => l.tags = fields::tags("tags", f.value)?,
            "unique" => l.unique = fields::unique(f.value)?,
            n => match TIME_FIELDS.iter().position(|t| *t == n) {
                Some(i) => {
                    let t = fields::integer(n, f.value)?;
                    l.times[i] = Some(u64::try_from(t).map_err(|_| Error::field(n, "must not be negative"))?);
                }
                None => {
                    if n == "units" {
                        fields::units(f.value)?;
                        has_units = true;
                    }
                    // While `places` is None, `few[..l.doc.len()]` holds every name.
                    let place = match &places {
                        Some(p) => p.get(&name).copied(),
                        None => few[..l.doc.len()].iter().position(|d| *d == name),
                    };
                    match place {
                        Some(i) => l.doc[i].value = f.value,
                        None => {
                            let i = l.doc.len();
                            l.doc.push(*f);
                            match &mut places {
                                Some(p) => {
                                    p.insert(name, i);
                                }
                                None if i < SCAN_FIELDS => few[i] = name,
                                None => {
                                    let mut p: FastMap<Cow<'a, str>, usize> =
                                        few.iter_mut().enumerate().map(|(j, n)| (std::mem::take(n), j)).collect();
                                    p.insert(name, i);
                                    places = Some(p);
                                }
                            }
                        }
                    }
                }
            },
        }
    }
    if !has_units {
        // As a push: a job has `units`, 1 unless given.
        l.doc.push(RawField { name: "units", value: fields::DEFAULT_UNITS, escaped: false });
    }
    l.key = key.ok_or_else(|| Error::field("key", "is required"))?;
    l.spider = spider.filter(|s| !s.is_empty()).ok_or_else(|| Error::field("spider", "is required"))?;
    l.state = state.ok_or_else(|| Error::field("state", "is required"))?;
    if l.times[l.state.time_slot()].is_none() {
        return Err(Error::field(l.state.time_field(), format!("is required for a {} job", l.state)));
    }
    if project.is_some_and(|p| p != i64::from(l.key.project)) {
        return Err(Error::field("project", format!("does not match the key {}", l.key)));
    }
    if l.spider.len() > MAX_NAME {
        return Err(Error::field("spider", format!("a spider name is at most {MAX_NAME} bytes")));
    }
    let size: usize = l.doc.iter().map(|f| f.name.len() + f.value.len() + 4).sum();
    if size > MAX_DOC + DOC_SLACK {
        return Err(Error::input(format!("metadata of {size} bytes is over the {}-byte limit", MAX_DOC + DOC_SLACK)));
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
        crate::model::doc::put_value(out, f.value.as_bytes());
    }
    out.push(b'}');
}

/// Append a catalog line (without its newline).
pub fn write_catalog_line(e: &SpiderEntry, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{{\"{CATALOG_FIELD}\":{{\"project\":{},\"id\":{},\"name\":", e.project, e.spider);
    write_json_str(out, &e.name);
    let _ = write!(out, ",\"next_job\":{}}}}}", e.next_job);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(line: &str) -> Result<ImportLine<'_>> {
        parse_import_line(line, &mut Vec::new())
    }

    #[test]
    fn fields_follow_the_write_rules() {
        let base = r#""key":"1/1/1","spider":"s","state":"pending","pending_time":5"#;
        let ok = format!("{{{base},\"priority\":4,\"units\":2,\"unique\":\"u\",\"tags\":[\"a\",\"a\"]}}");
        let l = job(&ok).unwrap();
        assert_eq!((l.priority, l.unique.as_deref(), l.tags.len()), (4, Some("u"), 1));
        for (extra, why) in [
            (r#""priority":100"#, "from 0 to 4"),
            (r#""priority":-9223372036854775808"#, "from 0 to 4"),
            (r#""units":-3"#, "positive"),
            (r#""units":"3""#, "integer"),
            (r#""unique":5"#, "string or null"),
            (r#""tags":[""]"#, "1 to 1024 bytes"),
        ] {
            let e = job(&format!("{{{base},{extra}}}")).unwrap_err().to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn document_names_once_whatever_their_spelling() {
        let many: String = (0..40).map(|i| format!(",\"f{i}\":{i}")).collect();
        for extra in ["", many.as_str()] {
            let line =
                format!(r#"{{"key":"1/1/1","spider":"s","state":"pending","pending_time":5,"a":1{extra},"\u0061":2}}"#);
            let l = job(&line).unwrap();
            let mut doc = Vec::new();
            write_import_doc(&l.doc, &mut doc);
            let doc = String::from_utf8(doc).unwrap();
            assert!(doc.starts_with(r#"{"a":2"#) && doc.matches("\"a\"").count() == 1, "{doc}");
        }
        let too_many: String = (0..MAX_OBJECT_FIELDS).map(|i| format!(",\"f{i}\":{i}")).collect();
        let e = job(&format!(r#"{{"key":"1/1/1","spider":"s","state":"pending","pending_time":5{too_many}}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("at most {MAX_OBJECT_FIELDS} fields")), "{e}");
    }

    #[test]
    fn catalog_lines_round_trip() {
        let e = SpiderEntry { project: 53, spider: 2, next_job: 9, name: "s\"1".into() };
        let mut line = Vec::new();
        write_catalog_line(&e, &mut line);
        let line = String::from_utf8(line).unwrap();
        assert_eq!(line, r#"{"spider_catalog":{"project":53,"id":2,"name":"s\"1","next_job":9}}"#);
        match parse_import_item(&line, &mut Vec::new()).unwrap() {
            ImportItem::Spider(got) => assert_eq!(got, e),
            other => panic!("{other:?}"),
        }
        assert!(job(&line).is_err());
        for bad in [
            r#"{"spider_catalog":{"project":53,"id":2,"name":"s"}}"#,
            r#"{"spider_catalog":{"project":53,"id":0,"name":"s","next_job":1}}"#,
            r#"{"spider_catalog":{"project":53,"id":2,"name":"","next_job":1}}"#,
            r#"{"spider_catalog":{"project":53,"id":2,"name":"s","next_job":1,"x":1}}"#,
            r#"{"spider_catalog":{"project":53,"id":2,"name":"s","next_job":1},"key":"53/2/1"}"#,
            r#"{"spider_catalog":[]}"#,
        ] {
            assert!(parse_import_item(bad, &mut Vec::new()).unwrap_err().is_input(), "{bad}");
        }
        // An escaped name is the same name.
        let escaped = line.replace("spider_catalog", "spider\\u005fcatalog");
        assert_ne!(escaped, line);
        match parse_import_item(&escaped, &mut Vec::new()).unwrap() {
            ImportItem::Spider(got) => assert_eq!(got, e),
            other => panic!("{other:?}"),
        }
    }
}
