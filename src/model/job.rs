//! A job version: the fields the engine maintains and indexes, plus the free-form
//! metadata document.

use std::borrow::Cow;

use super::doc::write_json_str;
use super::{JobKey, JobState, MetaDoc, Millis};

/// The metadata field indexed as `close_reason` (format-spec/index.md, field 6).
pub const CLOSE_REASON: &str = "close_reason";
/// The longest `close_reason` term indexed, in bytes: longer values are in no
/// close_reason posting list (and a filter value this long is refused).
pub const MAX_CLOSE_REASON: usize = 1024;

/// The term a `close_reason` value (its raw JSON text) is indexed under: a
/// string's decoded text; any other value, and a string holding an unpaired
/// surrogate escape, its JSON text exactly as stored. `None` when the term is
/// longer than [`MAX_CLOSE_REASON`].
pub fn close_reason_term(raw: &str) -> Option<Cow<'_, str>> {
    let term = match raw.starts_with('"') {
        true => crate::codec::json::string_value(raw).unwrap_or(Cow::Borrowed(raw)),
        false => Cow::Borrowed(raw),
    };
    (term.len() <= MAX_CLOSE_REASON).then_some(term)
}

/// Names of the per-state time fields, indexed by the state's code.
pub const TIME_FIELDS: [&str; 4] = ["pending_time", "running_time", "finished_time", "deleted_time"];

/// One version of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub key: JobKey,
    pub state: JobState,
    pub priority: i64,
    /// When the job entered each state, if it did (indexed by the state's code).
    pub times: [Option<Millis>; 4],
    /// Sequence number of the write that moved the job into its current state: the
    /// tie-break of the `ts` order. Writes that keep the state keep it.
    pub order_seq: u64,
    pub tags: Vec<String>,
    /// The push's `unique` value; it blocks other pushes while the job is active.
    pub unique: Option<String>,
    /// Everything else: user fields and service fields the engine does not index
    /// (`units`, `*_by`, `close_reason`, `auth`, ...).
    pub meta: MetaDoc,
}

impl Job {
    /// The time the job entered its current state: its place in listings.
    pub fn ts(&self) -> Millis {
        self.times[self.state.time_slot()].unwrap_or(0)
    }

    /// The term this version is indexed under as `close_reason`, if any.
    pub fn close_reason(&self) -> Option<Cow<'_, str>> {
        self.meta.get(CLOSE_REASON).and_then(|v| close_reason_term(v.get()))
    }

    /// Write the job's whole metadata as one JSON object: the maintained fields
    /// (`project`, `spider`, `state`, `priority`, `tags`, `unique`, `*_time`), then the
    /// metadata document's fields in their order. `extra` fields go first.
    pub fn write_metadata(&self, spider_name: &str, extra: &[(&str, &str)], out: &mut Vec<u8>) {
        out.push(b'{');
        for (name, raw) in extra {
            write_json_str(out, name);
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"project\":");
        out.extend_from_slice(self.key.project.to_string().as_bytes());
        out.extend_from_slice(b",\"spider\":");
        write_json_str(out, spider_name);
        out.extend_from_slice(b",\"state\":\"");
        out.extend_from_slice(self.state.as_str().as_bytes());
        out.extend_from_slice(b"\",\"priority\":");
        out.extend_from_slice(self.priority.to_string().as_bytes());
        out.extend_from_slice(b",\"tags\":");
        write_tags(&self.tags, out);
        if let Some(u) = &self.unique {
            out.extend_from_slice(b",\"unique\":");
            write_json_str(out, u);
        }
        for (i, t) in self.times.iter().enumerate() {
            if let Some(t) = t {
                out.push(b',');
                write_json_str(out, TIME_FIELDS[i]);
                out.push(b':');
                out.extend_from_slice(t.to_string().as_bytes());
            }
        }
        let doc = self.meta.as_str().as_bytes();
        if doc.len() > 2 {
            out.push(b',');
            out.extend_from_slice(&doc[1..doc.len() - 1]);
        }
        out.push(b'}');
    }

    /// The raw JSON of one field of the whole metadata, if the job has it.
    pub fn field_json(&self, name: &str, spider_name: &str) -> Option<String> {
        let mut out = Vec::new();
        crate::codec::record::JobView::of(self)
            .field_json(name, spider_name, &mut out)
            .then(|| String::from_utf8(out).expect("JSON is UTF-8"))
    }
}

/// Append a JSON array of strings.
pub fn write_tags<S: AsRef<str>>(tags: &[S], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, t.as_ref());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_terms() {
        let term = |raw: &str| close_reason_term(raw).map(|t| t.into_owned());
        assert_eq!(term(r#""failed""#).as_deref(), Some("failed"));
        assert_eq!(term(r#""caf\u00e9 \"x\"""#).as_deref(), Some("café \"x\""));
        // Other values: their JSON text as stored, so 404 and "404" share a term.
        assert_eq!(term("404").as_deref(), Some("404"));
        assert_eq!(term(r#"{"a": [1, 2.50]}"#).as_deref(), Some(r#"{"a": [1, 2.50]}"#));
        assert_eq!(term("null").as_deref(), Some("null"));
        assert_eq!(term(r#""\ud800x""#).as_deref(), Some(r#""\ud800x""#));
        let long = format!("\"{}\"", "x".repeat(MAX_CLOSE_REASON));
        assert_eq!(term(&long).map(|t| t.len()), Some(MAX_CLOSE_REASON));
        let longer = format!("\"{}\"", "x".repeat(MAX_CLOSE_REASON + 1));
        assert_eq!(term(&longer), None);
    }
}
