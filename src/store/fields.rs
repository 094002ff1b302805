//! The fields the service maintains, checked the same way on every path that
//! writes them: push, update lines, startjob, `POST jobs/P/S/J[/FIELD]`, import.
//! Each checker takes the field's raw JSON text (valid JSON), so the request
//! parsers (serde) and the import scanner share it.

use std::borrow::Cow;

use crate::codec::json;
use crate::error::{Error, Result};
use crate::hash::FastSet;
use crate::model::TIME_FIELDS;

/// Longest spider name, tag and `unique` value, in bytes.
pub const MAX_NAME: usize = 1024;
pub const MAX_TAG: usize = 1024;
pub const MAX_UNIQUE: usize = 4096;
/// Most tags a job has.
pub const MAX_TAGS: usize = 1000;
/// Largest metadata document a client write may leave, in bytes.
pub const MAX_DOC: usize = 16 << 20;
/// Most metadata fields a client write may leave a job with.
pub const MAX_META_FIELDS: usize = 10_000;
/// What import accepts beyond [`MAX_DOC`]: the room the fields the service writes
/// itself (`*_by`, `auth`, `cancel_time`, ...) may take after a job's last
/// client write, so that every export imports back.
pub const DOC_SLACK: usize = 64 << 10;
/// Priorities: 0 lowest, 4 highest; 2 by default.
pub const MAX_PRIORITY: i64 = 4;
pub const DEFAULT_PRIORITY: i64 = 2;
/// A job's `units` when a push or an import line gives none (JSON text).
pub const DEFAULT_UNITS: &str = "1";

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

/// A JSON string's value.
pub fn string(name: &str, raw: &str) -> Result<String> {
    Ok(string_cow(name, raw)?.into_owned())
}

pub(crate) fn string_cow<'a>(name: &str, raw: &'a str) -> Result<Cow<'a, str>> {
    json::string_value(raw).ok_or_else(|| not_string(name, raw, "must be a string", is_quoted(raw)))
}

/// A scanned JSON string that does not decode holds a lone surrogate (`"\ud800"`).
fn is_quoted(raw: &str) -> bool {
    raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"')
}

/// A value that is not a string as `expected`, or one holding a lone surrogate.
fn not_string(name: &str, raw: &str, expected: &str, lone: bool) -> Error {
    let why = if lone { " (a lone surrogate escape is not a character)" } else { "" };
    Error::field(name, format!("{expected}{why}, got {}", shorten(raw)))
}

/// Enough of a bad value to recognise it in an error message.
fn shorten(raw: &str) -> &str {
    match raw.char_indices().nth(64) {
        Some((at, _)) => &raw[..at],
        None => raw,
    }
}

/// An integer in i64 range: no fraction, no exponent.
pub fn integer(name: &str, raw: &str) -> Result<i64> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, raw),
    };
    // One pass over the digits (every import line has several): checked and
    // summed, saturating; the range is checked once every byte is a digit.
    let (mut n, mut digit_only) = (0u64, !digits.is_empty());
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            digit_only = false;
            break;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    if !digit_only {
        return Err(Error::field(name, format!("must be an integer, got {}", shorten(raw))));
    }
    let v = if negative { 0i64.checked_sub_unsigned(n) } else { i64::try_from(n).ok() };
    v.ok_or_else(|| Error::field(name, format!("integer out of range: {}", shorten(raw))))
}

/// `priority`: an integer from 0 to 4.
pub fn priority(raw: &str) -> Result<i64> {
    let p = integer("priority", raw)?;
    if !(0..=MAX_PRIORITY).contains(&p) {
        return Err(Error::field("priority", format!("must be from 0 to {MAX_PRIORITY}, got {p}")));
    }
    Ok(p)
}

/// `units`: a positive integer.
pub fn units(raw: &str) -> Result<i64> {
    let u = integer("units", raw)?;
    if u < 1 {
        return Err(Error::field("units", format!("must be a positive integer, got {u}")));
    }
    Ok(u)
}

/// `unique`: a string of at most [`MAX_UNIQUE`] bytes; `null` means none.
pub fn unique(raw: &str) -> Result<Option<Cow<'_, str>>> {
    if raw == "null" {
        return Ok(None);
    }
    let u =
        json::string_value(raw).ok_or_else(|| not_string("unique", raw, "must be a string or null", is_quoted(raw)))?;
    if u.len() > MAX_UNIQUE {
        return Err(Error::field("unique", format!("at most {MAX_UNIQUE} bytes")));
    }
    Ok(Some(u))
}

/// One tag: 1 to [`MAX_TAG`] bytes.
pub fn check_tag(name: &str, t: &str) -> Result<()> {
    if t.is_empty() || t.len() > MAX_TAG {
        return Err(Error::field(name, format!("a tag must be 1 to {MAX_TAG} bytes")));
    }
    Ok(())
}

/// A tag list (`tags`, `add_tag`, `remove_tag`): a list of strings or one
/// string, each a valid tag; repeats dropped (the first kept), at most
/// [`MAX_TAGS`] distinct tags.
pub fn tags<'a>(name: &str, raw: &'a str) -> Result<Vec<Cow<'a, str>>> {
    let mut list: Vec<Cow<'a, str>> = Vec::new();
    if raw.starts_with('[') {
        json::string_array(raw, &mut list).map_err(|e| {
            not_string(name, raw, "must be a list of strings or a string", e.what.contains("surrogate"))
        })?;
    } else {
        let one = json::string_value(raw);
        list.push(one.ok_or_else(|| not_string(name, raw, "must be a list of strings or a string", is_quoted(raw)))?);
    }
    // Keep the first of equal tags, in order: a scan for short lists (no set to
    // allocate), a set for long ones.
    let mut kept = 0;
    let mut seen: Option<FastSet<Cow<'a, str>>> = None;
    for i in 0..list.len() {
        check_tag(name, &list[i])?;
        if seen.is_none() && kept > 16 {
            seen = Some(list[..kept].iter().cloned().collect());
        }
        let new = match &mut seen {
            Some(set) => set.insert(list[i].clone()),
            None => !list[..kept].contains(&list[i]),
        };
        if new {
            list.swap(kept, i);
            kept += 1;
            if kept > MAX_TAGS {
                return Err(Error::field(name, format!("at most {MAX_TAGS} tags")));
            }
        }
    }
    list.truncate(kept);
    Ok(list)
}

/// [`tags`], owned.
pub fn tag_list(name: &str, raw: &str) -> Result<Vec<String>> {
    Ok(tags(name, raw)?.into_iter().map(Cow::into_owned).collect())
}

/// Append `more` to `tags`, skipping those it holds; at most [`MAX_TAGS`].
pub fn union_tags(tags: &mut Vec<String>, more: Vec<String>) -> Result<()> {
    let mut seen: FastSet<String> = tags.iter().cloned().collect();
    for t in more {
        if seen.insert(t.clone()) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(Error::field("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `integer` as it was written before its one-pass loop.
    fn integer_by_parse(raw: &str) -> std::result::Result<i64, &'static str> {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be an integer");
        }
        raw.parse::<i64>().map_err(|_| "integer out of range")
    }

    #[test]
    fn integer_edges_read_as_i64_parse_does() {
        for raw in [
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999999x",
            "-0",
            "007",
            "",
            "-",
            "+1",
            "1e3",
            "1.0",
            " 1",
        ] {
            let got = integer("n", raw).map_err(|e| {
                if e.to_string().contains("must be an integer") {
                    "must be an integer"
                } else {
                    "integer out of range"
                }
            });
            assert_eq!(got, integer_by_parse(raw), "{raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn integer_reads_as_i64_parse_does(raw in "-?[0-9]{0,22}|[-+0-9.e a]{0,6}|-?9223372036854775[0-9]{3}") {
            let got = integer("n", &raw).map_err(|e| {
                let text = e.to_string();
                if text.contains("must be an integer") { "must be an integer" } else { "integer out of range" }
            });
            proptest::prop_assert_eq!(got, integer_by_parse(&raw));
        }
    }

    #[test]
    fn one_rule_per_field() {
        assert_eq!(priority("4").unwrap(), 4);
        for bad in ["5", "-1", "100", "-9223372036854775808", "2.0", "\"2\"", "1e1", "null"] {
            assert!(priority(bad).is_err(), "{bad}");
        }
        assert_eq!(units("3").unwrap(), 3);
        for bad in ["0", "-3", "\"3\"", "{\"x\":1}", "1.5", "99999999999999999999"] {
            assert!(units(bad).is_err(), "{bad}");
        }
        assert_eq!(unique("\"u\"").unwrap().as_deref(), Some("u"));
        assert_eq!(unique("null").unwrap(), None);
        for bad in ["5", "true", "[\"u\"]", "{}"] {
            let e = unique(bad).unwrap_err().to_string();
            assert!(e.contains("must be a string or null"), "{bad}: {e}");
        }
        assert!(unique(&format!("\"{}\"", "u".repeat(MAX_UNIQUE + 1))).is_err());
        assert_eq!(tags("tags", r#"["a","b","a","\u0062"]"#).unwrap(), ["a", "b"]);
        assert_eq!(tags("tags", r#""a""#).unwrap(), ["a"]);
        for bad in ["[1]", "[\"\"]", "3", "{}", "[\"a\",null]"] {
            assert!(tags("tags", bad).is_err(), "{bad}");
        }
        let many = |n: usize| serde_json::to_string(&(0..n).map(|i| i.to_string()).collect::<Vec<_>>()).unwrap();
        assert_eq!(tags("tags", &many(MAX_TAGS)).unwrap().len(), MAX_TAGS);
        assert!(tags("tags", &many(MAX_TAGS + 1)).unwrap_err().to_string().contains("at most 1000 tags"));
        let e = string("spider", &format!("[{}]", "1,".repeat(500) + "1")).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn a_lone_surrogate_is_named_as_such() {
        let lone = "lone surrogate escape";
        for e in [
            string("spider", r#""a\ud800""#),
            unique(r#""\udc00x""#).map(|_| String::new()),
            tags("tags", r#"["a","\ud800"]"#).map(|_| String::new()),
            tags("tags", r#""\ud800""#).map(|_| String::new()),
        ] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains(lone), "{e}");
        }
        for e in [string("spider", "5"), unique("5").map(|_| String::new()), tags("tags", "[5]").map(|_| String::new())]
        {
            let e = e.unwrap_err().to_string();
            assert!(e.contains("must be") && !e.contains(lone), "{e}");
        }
        assert_eq!(string("spider", r#""\ud83d\ude00""#).unwrap(), "\u{1F600}");
    }

    #[test]
    fn repeated_tags_cost_one_probe_each() {
        // 200,000 tags, all distinct: refused at the 1,001st; all equal: one kept.
        let distinct = serde_json::to_string(&(0..200_000).map(|i| i.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(tags("tags", &distinct).is_err());
        let same = serde_json::to_string(&vec!["t"; 200_000]).unwrap();
        assert_eq!(tags("tags", &same).unwrap(), ["t"]);
    }
}
