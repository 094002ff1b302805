//! The import path's validating JSON scanner against serde_json.
//!
//! For any UTF-8 text:
//! - `scan_object` accepts exactly when serde_json accepts the text as one JSON
//!   object (read the way the engine reads metadata: a map of `RawValue`s), except
//!   that the scanner refuses nesting deeper than `MAX_DEPTH` (128) levels, which
//!   serde_json's `RawValue` does not limit; the write paths (`parse_input_object`)
//!   refuse such nesting too;
//! - for accepted objects: the same fields in the same order (duplicates kept),
//!   the same decoded names and the same raw value texts;
//! - `string_array` agrees with serde_json on arrays of strings, `string_value`
//!   and `unescape` with serde_json on strings;
//! - the request parsers built on them (`parse_import_line`, `parse_push`,
//!   `parse_update`, `parse_cancel`) never panic, and what they accept is sane;
//! - the import's fast path and its general path read every text (as one
//!   line, and as lines) alike: records, index entries, errors and their lines.

#![no_main]

use std::borrow::Cow;
use std::fmt;

use jobq::codec::json::{self, RawField, MAX_DEPTH};
use jobq::store::request;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

struct Keep;

impl<'de> Visitor<'de> for Keep {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            out.push((k, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

/// serde_json's reading: one object, fields in order with duplicates.
fn serde_fields(text: &str) -> Option<Fields<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let f = (&mut de).deserialize_map(Keep).ok()?;
    de.end().ok()?;
    Some(f)
}

/// Deepest nesting of arrays and objects in a text known to be JSON. Written apart
/// from the engine's `json::nesting_depth` on purpose: an oracle, not a copy.
fn depth(text: &str) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d -= 1,
            _ => {}
        }
    }
    max
}

fn scan(text: &str) {
    let mut fields: Vec<RawField<'_>> = Vec::new();
    let ours = json::scan_object(text, &mut fields);
    if let Err(e) = &ours {
        assert!(e.offset <= text.len(), "error offset past the text: {e}");
    }
    // Names are decoded when used: a name that does not decode refuses the line.
    let names: Option<Vec<Cow<'_, str>>> = ours.as_ref().ok().and_then(|_| fields.iter().map(|f| f.name().ok()).collect());
    let theirs = serde_fields(text);
    match (&names, &theirs) {
        (Some(names), Some(t)) => {
            assert!(depth(text) <= MAX_DEPTH, "scanner accepted {} levels", depth(text));
            assert_eq!(names.len(), t.len(), "field count differs for {text:?}");
            for ((n, f), (tn, tv)) in names.iter().zip(&fields).zip(t) {
                assert_eq!(n, tn, "field name differs in {text:?}");
                assert_eq!(f.value, tv.get(), "raw value of {n:?} differs in {text:?}");
                assert_eq!(f.escaped, f.name.contains('\\'), "escaped flag of {:?}", f.name);
            }
        }
        (None, None) => {}
        (None, Some(_)) => {
            let d = depth(text);
            let too_deep = ours.as_ref().err().is_some_and(|e| e.what == "nested too deep");
            assert!(d > MAX_DEPTH && too_deep, "scanner refused what serde_json accepts ({ours:?}, depth {d}): {text:?}");
            // Every write path refuses what import would: whatever is stored exports
            // and imports back.
            assert!(jobq::model::doc::parse_input_object(text).is_err(), "push accepts {d} levels, import refuses them");
        }
        (Some(_), None) => panic!("scanner accepted what serde_json refuses: {text:?}"),
    }
    // The import line parser on top of the scanner.
    let mut scratch = Vec::new();
    if let Ok(line) = request::parse_import_line(text, &mut scratch) {
        assert!(names.is_some(), "an import line the scanner refuses was accepted");
        assert!(line.times[line.state as usize].is_some());
        assert!(!line.spider.is_empty());
        // The same field rules as every write path.
        assert!((0..=request::MAX_PRIORITY).contains(&line.priority));
        assert!(line.tags.len() <= request::MAX_TAGS);
        let mut doc = Vec::new();
        request::write_import_doc(&line.doc, &mut doc);
        let doc = String::from_utf8(doc).expect("UTF-8");
        // The document written from an import line is a JSON object serde_json reads back.
        let back = serde_fields(&doc).unwrap_or_else(|| panic!("import wrote a document serde_json refuses: {doc:?} from {text:?}"));
        assert_eq!(back.len(), line.doc.len());
        let mut names: Vec<&str> = line.doc.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), line.doc.len(), "import kept a field name twice: {doc:?}");
    }
}

fn strings(text: &str) {
    // string_array: on arrays of strings serde_json reads, the same strings.
    let mut ours = Vec::new();
    let r = json::string_array(text, &mut ours);
    if let Ok(want) = serde_json::from_str::<Vec<String>>(text) {
        if text.trim_start().starts_with('[') {
            assert!(r.is_ok(), "string_array refused {text:?}: {r:?}");
            assert_eq!(ours, want, "string_array of {text:?}");
        }
    }
    // string_value: on a string serde_json reads (no surrounding space), the same.
    if let Ok(want) = serde_json::from_str::<String>(text) {
        if text.starts_with('"') && text.ends_with('"') {
            assert_eq!(json::string_value(text).as_deref(), Some(want.as_str()), "string_value of {text:?}");
        }
    }
    // unescape on any text: no panic; when it decodes a JSON string body, serde agrees.
    let quoted = format!("\"{text}\"");
    let u = json::unescape(text, 0);
    if let Ok(want) = serde_json::from_str::<String>(&quoted) {
        assert_eq!(u.as_deref().ok(), Some(want.as_str()), "unescape of {text:?}");
    }
}

fn requests(text: &str) {
    if let Ok(p) = request::parse_push(text) {
        assert!(!p.spider.is_empty() && p.spider.len() <= request::MAX_NAME);
        assert!((0..=request::MAX_PRIORITY).contains(&p.priority) && p.tags.len() <= request::MAX_TAGS);
        assert!(p.meta.iter().any(|(n, _)| n == "units"));
        assert!(p.meta.iter().all(|(n, _)| !request::is_maintained(n)));
    }
    for project in [1, 53] {
        if let Ok(u) = request::parse_update(text, project) {
            let p = match u.target {
                request::Target::Job(k) => k.project,
                request::Target::Spider(s) => s.project,
            };
            assert_eq!(p, project);
        }
        if let Ok(keys) = request::parse_cancel(text, project) {
            assert!(keys.iter().all(|k| k.project == project));
        }
    }
    for line in request::lines(text) {
        assert!(!line.1.trim().is_empty());
    }
}

/// The import's two paths agree (store/import_fast.rs).
fn import_paths(text: &str) {
    if let Some(d) = request::import_paths_differ(text, None) {
        panic!("the import paths differ on {text:?}:\n{d}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    import_paths(text);
    scan(text);
    strings(text);
    requests(text);
});
