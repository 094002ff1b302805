//! The fast path of an import line: a job line of the common shape is checked,
//! its row fields taken and its metadata document written in one pass over the
//! line. Anything else (a catalog line, an escaped or repeated name, an escaped
//! string where a row field is taken, more than [`FEW`] tags, any error) gives
//! `None`, and the general path (import_line.rs) parses the line again: it
//! alone words errors. For every line the fast path takes, both paths give the
//! same record and index entry (tests below, and the `json_scan` fuzz target).

use super::fields::{self, DOC_SLACK, MAX_DOC, MAX_NAME};
use super::import_line::CATALOG_FIELD;
use crate::codec::json::{skip_ws as ws, string_at, value_end, MAX_OBJECT_FIELDS};
use crate::model::{JobKey, JobState, CLOSE_REASON, TIME_FIELDS};

/// Tags and document names the fast path compares one by one, at most.
const FEW: usize = 16;

/// A job line taken by the fast path. Its document is in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FastJob<'a> {
    pub key: JobKey,
    pub spider: &'a str,
    pub state: JobState,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    pub unique: Option<&'a str>,
    /// Raw values of the document's `close_reason` and `auth` fields.
    pub close_reason: Option<&'a str>,
    pub auth: Option<&'a str>,
}

/// Row fields seen, one bit each (a second one sends the line to the general path).
const KEY: u16 = 1;
const SPIDER: u16 = 2;
const STATE: u16 = 4;
const PRIORITY: u16 = 8;
const PROJECT: u16 = 16;
const TAGS: u16 = 32;
const UNIQUE: u16 = 64;
const TIME: u16 = 128;

/// The text of an escape-free string value (with its quotes), or None.
fn plain_str(raw: &str) -> Option<&str> {
    let (end, escaped) = string_at(raw.as_bytes(), 0)?;
    (!escaped && end + 1 == raw.len()).then(|| &raw[1..end])
}

/// Escape-free tags of a raw `tags` value into `tags`, repeats dropped (the first
/// kept), each checked as fields.rs checks tags; None to leave it to the general path.
fn take_tags<'a>(raw: &'a str, tags: &mut Vec<&'a str>) -> Option<()> {
    tags.clear();
    let b = raw.as_bytes();
    let add = |t: &'a str, tags: &mut Vec<&'a str>| -> Option<()> {
        fields::check_tag("tags", t).ok()?;
        if !tags.contains(&t) {
            if tags.len() == FEW {
                return None;
            }
            tags.push(t);
        }
        Some(())
    };
    if b.first() == Some(&b'"') {
        return add(plain_str(raw)?, tags);
    }
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = ws(b, 1);
    if b.get(i) == Some(&b']') {
        return (i + 1 == b.len()).then_some(());
    }
    loop {
        let (end, escaped) = string_at(b, i)?;
        if escaped {
            return None;
        }
        add(&raw[i + 1..end], tags)?;
        i = ws(b, end + 1);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b']') if i + 1 == b.len() => return Some(()),
            _ => return None,
        }
    }
}

/// A time field's value, as the general path takes it.
fn time(name: &str, raw: &str) -> Option<u64> {
    u64::try_from(fields::integer(name, raw).ok()?).ok()
}

/// A JSON number at `pos` of `b` that is an integer from 0 to `i64::MAX` written
/// without sign, fraction or exponent: where it ends and its value. None for
/// anything else (the caller scans it as any value): a sign, a leading `0` with
/// digits after it, a `.`, `e` or `E` after the digits, or more than `i64::MAX`.
fn plain_u63(b: &[u8], pos: usize) -> Option<(usize, u64)> {
    let (mut end, mut v) = (pos, 0u64);
    while let Some(&d) = b.get(end) {
        if !d.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        end += 1;
    }
    // Up to 19 digits fit a u64 (the sum wraps only past them).
    let n = end - pos;
    if n == 0 || n > 19 || (n > 1 && b[pos] == b'0') || matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    (v <= i64::MAX as u64).then_some((end, v))
}

/// What a field name is to an import.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Key,
    Spider,
    State,
    Priority,
    Project,
    Tags,
    Unique,
    Catalog,
    /// A state's time field (its slot).
    Time(usize),
    /// Document fields the import looks at.
    Units,
    CloseReason,
    Auth,
    Other,
}

/// `name` by its length and first byte, then one comparison.
fn known(name: &str) -> Known {
    let b = name.as_bytes();
    let (want, k) = match (b.len(), b.first()) {
        (3, Some(b'k')) => ("key", Known::Key),
        (4, Some(b't')) => ("tags", Known::Tags),
        (4, Some(b'a')) => ("auth", Known::Auth),
        (5, Some(b's')) => ("state", Known::State),
        (5, Some(b'u')) => ("units", Known::Units),
        (6, Some(b's')) => ("spider", Known::Spider),
        (6, Some(b'u')) => ("unique", Known::Unique),
        (7, Some(b'p')) => ("project", Known::Project),
        (8, Some(b'p')) => ("priority", Known::Priority),
        (12, Some(b'p')) => (TIME_FIELDS[0], Known::Time(0)),
        (12, Some(b'r')) => (TIME_FIELDS[1], Known::Time(1)),
        (13, Some(b'f')) => (TIME_FIELDS[2], Known::Time(2)),
        (12, Some(b'd')) => (TIME_FIELDS[3], Known::Time(3)),
        (12, Some(b'c')) => (CLOSE_REASON, Known::CloseReason),
        (14, Some(b's')) => (CATALOG_FIELD, Known::Catalog),
        _ => return Known::Other,
    };
    if same_short(name.as_bytes(), want.as_bytes()) {
        k
    } else {
        Known::Other
    }
}

/// `a == b`; names of 4 to 16 bytes in two overlapping loads of each instead
/// of a call to `memcmp` (about ten a line).
fn same_short(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("four bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// Parse `line` as a job line of the common shape; write its document (with
/// `"units":1` last when the line has no `units`) to `doc` and its tags to `tags`
/// (both cleared first). `names` is scratch space.
pub(crate) fn parse_job_fast<'a>(
    line: &'a str,
    doc: &mut Vec<u8>,
    tags: &mut Vec<&'a str>,
    names: &mut Vec<&'a str>,
) -> Option<FastJob<'a>> {
    doc.clear();
    tags.clear();
    names.clear();
    doc.push(b'{');
    let b = line.as_bytes();
    let (mut key, mut spider, mut state, mut project) = (None, None, None, None);
    let mut job = FastJob {
        key: JobKey::new(1, 1, 1),
        spider: "",
        state: JobState::Pending,
        priority: fields::DEFAULT_PRIORITY,
        times: [None; 4],
        unique: None,
        close_reason: None,
        auth: None,
    };
    let (mut seen, mut fields_n, mut size, mut has_units) = (0u16, 0usize, 0usize, false);
    // A bit per document name's length (mod 64): names are compared only on a hit.
    let mut lengths = 0u64;
    // A row field met a second time leaves the line to the general path.
    let once = |bit: u16, seen: &mut u16| -> Option<()> {
        if *seen & bit != 0 {
            return None;
        }
        *seen |= bit;
        Some(())
    };
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    loop {
        let (name_end, escaped) = string_at(b, i)?;
        if escaped {
            return None;
        }
        let name = &line[i + 1..name_end];
        i = ws(b, name_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let vs = ws(b, i + 1);
        let kind = known(name);
        // A time of plain digits is read as it is scanned; any other value is
        // scanned, then read as the general path reads it.
        let digits = match kind {
            Known::Time(_) => plain_u63(b, vs),
            _ => None,
        };
        let (ve, digits) = match digits {
            Some((end, v)) => (end, Some(v)),
            None => (value_end(b, vs)?, None),
        };
        let raw = &line[vs..ve];
        fields_n += 1;
        match kind {
            Known::Key => {
                once(KEY, &mut seen)?;
                key = Some(plain_str(raw)?.parse::<JobKey>().ok()?);
            }
            Known::Spider => {
                once(SPIDER, &mut seen)?;
                spider = Some(plain_str(raw)?);
            }
            Known::State => {
                once(STATE, &mut seen)?;
                state = Some(plain_str(raw)?.parse::<JobState>().ok()?);
            }
            Known::Priority => {
                once(PRIORITY, &mut seen)?;
                job.priority = fields::priority(raw).ok()?;
            }
            Known::Project => {
                once(PROJECT, &mut seen)?;
                project = Some(fields::integer("project", raw).ok()?);
            }
            Known::Tags => {
                once(TAGS, &mut seen)?;
                take_tags(raw, tags)?;
            }
            Known::Unique => {
                once(UNIQUE, &mut seen)?;
                job.unique = match raw {
                    "null" => None,
                    _ => Some(plain_str(raw).filter(|u| u.len() <= fields::MAX_UNIQUE)?),
                };
            }
            Known::Catalog => return None,
            Known::Time(slot) => {
                once(TIME << slot, &mut seen)?;
                job.times[slot] = Some(match digits {
                    Some(v) => v,
                    None => time(name, raw)?,
                });
            }
            doc_field => {
                let bit = 1u64 << (name.len() % 64);
                if lengths & bit != 0 && (names.len() >= FEW || names.contains(&name)) {
                    return None;
                }
                lengths |= bit;
                names.push(name);
                match doc_field {
                    Known::Units => {
                        fields::units(raw).ok()?;
                        has_units = true;
                    }
                    Known::CloseReason => job.close_reason = Some(raw),
                    Known::Auth => job.auth = Some(raw),
                    _ => {}
                }
                if names.len() > 1 {
                    doc.push(b',');
                }
                doc.push(b'"');
                doc.extend_from_slice(name.as_bytes());
                doc.extend_from_slice(b"\":");
                crate::model::doc::put_value(doc, raw.as_bytes());
                size += name.len() + raw.len() + 4;
            }
        }
        i = ws(b, ve);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    if !has_units {
        // As the general path counts it: name, value and 4.
        size += "units".len() + fields::DEFAULT_UNITS.len() + 4;
    }
    if ws(b, i + 1) != b.len() || fields_n > MAX_OBJECT_FIELDS || size > MAX_DOC + DOC_SLACK {
        return None;
    }
    if !has_units {
        if !names.is_empty() {
            doc.push(b',');
        }
        doc.extend_from_slice(b"\"units\":");
        doc.extend_from_slice(fields::DEFAULT_UNITS.as_bytes());
    }
    doc.push(b'}');
    job.key = key?;
    job.spider = spider.filter(|s| !s.is_empty() && s.len() <= MAX_NAME)?;
    job.state = state?;
    job.times[job.state.time_slot()]?;
    if project.is_some_and(|p| p != i64::from(job.key.project)) {
        return None;
    }
    Some(job)
}

#[cfg(test)]
mod tests {
    use super::super::import_parse::import_paths_differ;
    use super::*;

    /// Both paths give the same chunk for `text`, with and without a packer.
    fn agree(text: &str) {
        thread_local! {
            static PACKER: std::cell::RefCell<crate::codec::docz::Packer> = std::cell::RefCell::new(
                crate::codec::docz::Packer::new(crate::codec::docz::tests::sample_dict(1)).unwrap(),
            );
        }
        PACKER.with(|p| agree_with(text, &mut p.borrow_mut()));
    }

    fn agree_with(text: &str, packer: &mut crate::codec::docz::Packer) {
        for packer in [None, Some(packer)] {
            if let Some(d) = import_paths_differ(text, packer) {
                panic!("the paths differ on {text:?}:\n{d}");
            }
        }
    }

    const BASE: &str =
        r#""key":"5/3/7","spider":"s-3","state":"finished","pending_time":1,"running_time":2,"finished_time":3"#;

    #[test]
    fn the_common_line_takes_the_fast_path() {
        let line = format!(
            r#"{{{BASE},"priority":4,"tags":["a","b"],"units":1,"version":"1.4","spider_args":{{"url":"https://x/y","pages":3}},"close_reason":"finished","stats":{{"items":5}}}}"#
        );
        let (mut doc, mut tags, mut names) = (Vec::new(), Vec::new(), Vec::new());
        let f = parse_job_fast(&line, &mut doc, &mut tags, &mut names).expect("taken");
        assert_eq!((f.key, f.spider, f.state, f.priority), (JobKey::new(5, 3, 7), "s-3", JobState::Finished, 4));
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(f.close_reason, Some(r#""finished""#));
        assert_eq!(
            std::str::from_utf8(&doc).unwrap(),
            r#"{"units":1,"version":"1.4","spider_args":{"url":"https://x/y","pages":3},"close_reason":"finished","stats":{"items":5}}"#
        );
        agree(&line);
    }

    #[test]
    fn short_names_compare_as_slices() {
        let names =
            ["", "a", "key", "keys", "kez", "tags", "state", "statf", "priority", "pending_time", "pending_timf"];
        let more =
            ["finished_time", "spider_catalog", "close_reasonX", "0123456789abcdef", "0123456789abcdeg", "xbcdefgh"];
        for a in names.iter().chain(&more) {
            for b in names.iter().chain(&more) {
                assert_eq!(same_short(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn names_are_known_exactly() {
        let all = ["key", "tags", "auth", "state", "units", "spider", "unique", "project", "priority"];
        for n in all.iter().chain(TIME_FIELDS.iter()).chain([CLOSE_REASON, CATALOG_FIELD].iter()) {
            assert!(known(n) != Known::Other, "{n}");
            for other in [format!("{n}x"), format!("x{}", &n[1..]), n.to_uppercase(), n[..n.len() - 1].to_string()] {
                assert!(known(&other) == Known::Other, "{other}");
            }
        }
        assert!(known("") == Known::Other);
    }

    #[test]
    fn both_paths_agree_on_every_shape() {
        let many: String = (0..40).map(|i| format!(r#","f{i}":{i}"#)).collect();
        let many_tags: String = (0..20).map(|i| format!(r#""t{i}""#)).collect::<Vec<_>>().join(",");
        let long = "x".repeat(1025);
        let mut extras = vec![
            String::new(),
            r#","priority":0"#.into(),
            r#","priority":5"#.into(),
            r#","priority":"2""#.into(),
            r#","priority":2.0"#.into(),
            r#","priority":2,"priority":3"#.into(),
            r#","project":5"#.into(),
            r#","project":6"#.into(),
            r#","project":"5""#.into(),
            r#","tags":[]"#.into(),
            r#","tags":[ "a" , "b" ,"a"]"#.into(),
            r#","tags":"solo""#.into(),
            r#","tags":["\u0061","a"]"#.into(),
            r#","tags":[""]"#.into(),
            format!(r#","tags":["{long}"]"#),
            format!(r#","tags":[{many_tags}]"#),
            r#","tags":[1]"#.into(),
            r#","tags":null"#.into(),
            r#","unique":"u""#.into(),
            r#","unique":"""#.into(),
            r#","unique":null"#.into(),
            r#","unique":"\n""#.into(),
            r#","unique":7"#.into(),
            format!(r#","unique":"{}""#, "u".repeat(4097)),
            r#","units":1"#.into(),
            r#","units":0"#.into(),
            r#","units":"1""#.into(),
            r#","a":1,"a":2"#.into(),
            r#","a":1,"\u0061":2"#.into(),
            r#","abc":1,"xyz":2"#.into(),
            r#","auth":"tok""#.into(),
            r#","auth":"t\"ok","close_reason":"\u00e9""#.into(),
            r#","auth":5,"close_reason":7"#.into(),
            format!(r#","close_reason":"{long}""#),
            r#","key":"5/3/8""#.into(),
            r#","finished_time":-1"#.into(),
            r#","deleted_time":18446744073709551616"#.into(),
            r#","deleted_time":4,"state":"deleted""#.into(),
            r#","spider_catalog":{}"#.into(),
            r#","nested":[[[[{"a":[1,2,{"b":null}]}]]]],"t":true,"f":false,"n":null,"e":1.5e-3"#.into(),
            r#","bad":01"#.into(),
            r#","bad":[1,]"#.into(),
            r#","s":"é ü \u20ac \ud83d\ude00""#.into(),
            r#","lone":"\ud800""#.into(),
            many.clone(),
            format!("{many},\"f3\":0"),
        ];
        // Time values the fast path reads as it scans them, or leaves to the general path.
        let times = [
            "9223372036854775807",
            "9223372036854775808",
            "0",
            "00",
            "01",
            "-0",
            "1e3",
            "1E3",
            "1.5",
            "0.0",
            "\"7\"",
            "7 ",
        ];
        extras.extend(times.map(|v| format!(r#","deleted_time":{v}"#)));
        let mut lines = Vec::new();
        for e in &extras {
            lines.push(format!("{{{BASE}{e}}}"));
            lines.push(format!("  {{ {}{e} }}  ", BASE.replace(',', " ,\t")));
        }
        for bad in [
            "",
            "{}",
            "[]",
            "{\"key\":\"5/3/7\"}",
            r#"{"key":"5/3/7","spider":"","state":"pending","pending_time":1}"#,
            r#"{"key":"5/3/7","spider":"s","state":"running","pending_time":1}"#,
            r#"{"key":"5/3/0","spider":"s","state":"pending","pending_time":1}"#,
            r#"{"key":"5/3","spider":"s","state":"pending","pending_time":1}"#,
            r#"{"key":"5/3/7","spider":"s","state":"later","pending_time":1}"#,
            r#"{"key":"5/3/7","spider":"s","state":"pending","pending_time":1} x"#,
            r#"{"key":"5/3/7","spider":"s","state":"pending","pending_time":1,}"#,
            r#"{"key":"5/3/7","spider":"s","state":"pending","pending_time":1"#,
            r#"{"\u006bey":"5/3/7","spider":"s","state":"pending","pending_time":1}"#,
            r#"{"key":"5/3/7","spider":"s\u0031","state":"pending","pending_time":1}"#,
            r#"{"spider_catalog":{"project":5,"id":3,"name":"s","next_job":9}}"#,
        ] {
            lines.push(bad.to_string());
        }
        for line in &lines {
            agree(line);
        }
        // And as one chunk, with blank lines and CRLF: line numbers, offsets.
        agree(&lines.iter().filter(|l| !l.trim().is_empty()).map(|l| format!("{l}\r\n\n")).collect::<String>());
        let good: Vec<&String> = lines.iter().filter(|l| l.contains("5/3/7")).take(20).collect();
        agree(&good.iter().map(|l| format!("{l}\n")).collect::<String>());
        mutations(&lines);
    }

    /// Lines changed at random (a fixed seed): bytes JSON cares about inserted,
    /// replaced or removed, spans repeated. Both paths must still agree.
    fn mutations(lines: &[String]) {
        const BITS: &[&str] = &[
            "\"",
            "\\",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            " ",
            "\t",
            "0",
            "-",
            "1e5",
            ".5",
            "\\u0061",
            "\\ud800",
            "é",
            "null",
            "\"key\":\"5/3/9\",",
            "\"tags\":[\"a\",\"a\"],",
            "\"a\":1,",
            "\"state\":\"running\",",
            "\"running_time\":9,",
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..3000 {
            let mut line = lines[next(lines.len())].clone();
            for _ in 0..1 + next(3) {
                let mut at = next(line.len() + 1);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                match next(3) {
                    0 => line.insert_str(at, BITS[next(BITS.len())]),
                    1 => {
                        let mut end = (at + 1 + next(8)).min(line.len());
                        while !line.is_char_boundary(end) {
                            end += 1;
                        }
                        line.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + next(40)).min(line.len());
                        while !line.is_char_boundary(end) {
                            end += 1;
                        }
                        let span = line[at..end].to_string();
                        line.insert_str(at, &span);
                    }
                }
            }
            agree(&line);
        }
    }
}
