//! The free-form metadata of a job: a JSON object kept as compact text whose values
//! are stored byte for byte as they were given (key order, unicode, big integers and
//! float spellings survive untouched), parsed only when a field is asked for.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::json::{nesting_depth, MAX_DEPTH, MAX_OBJECT_FIELDS};
use crate::error::Error;
use crate::hash::FastMap;

/// One field: a name and its raw JSON value.
pub type Field<'a> = (Cow<'a, str>, &'a RawValue);

/// A JSON object as text. Invariant: valid JSON, an object, compact between fields.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MetaDoc(String);

/// Fields up to which a repeated name is found by scanning, not hashing.
const SCAN_FIELDS: usize = 16;

/// Collects an object's fields, each name once (first place, last value), and
/// gives up past `limit` fields (counting repeats).
struct FieldsVisitor<'c> {
    limit: usize,
    over_limit: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Vec<Field<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<Field<'de>> = Vec::with_capacity(map.size_hint().unwrap_or(8));
        // Built once the object outgrows a scan: name -> place in `out`.
        let mut places: Option<FastMap<Cow<'de, str>, usize>> = None;
        let mut seen = 0usize;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            seen += 1;
            if seen > self.limit {
                self.over_limit.set(true);
                return Err(serde::de::Error::custom(format!("more than {} fields", self.limit)));
            }
            let value: &'de RawValue = map.next_value()?;
            let place = match &mut places {
                Some(p) => p.get(&name).copied(),
                None => out.iter().position(|(n, _)| *n == name),
            };
            match place {
                Some(i) => out[i].1 = value,
                None => {
                    if let Some(p) = &mut places {
                        p.insert(name.clone(), out.len());
                    }
                    out.push((name, value));
                    if places.is_none() && out.len() > SCAN_FIELDS {
                        places = Some(out.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect());
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_fields(text: &str, limit: usize) -> Result<Vec<Field<'_>>, Error> {
    let over_limit = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de).deserialize_map(FieldsVisitor { limit, over_limit: &over_limit }).map_err(|e| {
        if over_limit.get() {
            Error::input(format!("a JSON object has at most {limit} fields"))
        } else if ["hex escape", "surrogate"].iter().any(|w| e.to_string().contains(w)) {
            // serde_json's words for a name with a lone surrogate (`"\ud800"`).
            Error::input(format!("not a JSON object: {e} (a lone surrogate escape in a field name is not a character)"))
        } else {
            Error::input(format!("not a JSON object: {e}"))
        }
    })?;
    de.end().map_err(|e| Error::input(format!("trailing characters after the JSON object: {e}")))?;
    Ok(fields)
}

/// Parse a JSON object into its fields, in order (a repeated name keeps its first
/// place and its last value). Linear in the text.
pub fn parse_object(text: &str) -> Result<Vec<Field<'_>>, Error> {
    parse_fields(text, usize::MAX)
}

/// A client's JSON object ([`parse_object`]), refused when it has more than
/// [`MAX_OBJECT_FIELDS`] fields or is nested deeper than import accepts, so that
/// whatever is stored exports and imports back.
pub fn parse_input_object(text: &str) -> Result<Vec<Field<'_>>, Error> {
    let fields = parse_fields(text, MAX_OBJECT_FIELDS)?;
    check_depth(text, 0).map_err(Error::input)?;
    Ok(fields)
}

/// Refuse client JSON nested deeper than import accepts, with `outer` levels
/// (enclosing objects) around it.
pub fn check_depth(text: &str, outer: usize) -> Result<(), String> {
    let limit = MAX_DEPTH - outer;
    if nesting_depth(text) > limit {
        return Err(format!("JSON nested more than {limit} levels deep"));
    }
    Ok(())
}

/// Visits an object's fields once, handing each name and raw value to `f`.
struct EachField<F>(F);

impl<'de, F: FnMut(&str, &'de RawValue)> Visitor<'de> for EachField<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            (self.0)(&name, value);
        }
        Ok(())
    }
}

/// Call `f` with each field of a JSON object text, in order (repeats included).
fn each_field<'a>(object: &'a str, f: impl FnMut(&str, &'a RawValue)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(object);
    (&mut de).deserialize_map(EachField(f))
}

/// The raw value of field `name` of a JSON object text, if it has one (the last
/// one when the name repeats). One pass, nothing collected.
pub fn field<'a>(object: &'a str, name: &str) -> Option<&'a RawValue> {
    // A key that decodes to `name` is spelled out in the text, or holds an
    // escape: with neither, no field has the name (no parse needed).
    let (text, wanted) = (object.as_bytes(), name.as_bytes());
    if !wanted.is_empty() && memchr::memchr(b'\\', text).is_none() && memchr::memmem::find(text, wanted).is_none() {
        return None;
    }
    let mut found = None;
    each_field(object, |n, v| {
        if n == name {
            found = Some(v);
        }
    })
    .ok()?;
    found
}

/// One pass over a JSON object text: `found[i]` gets the value of the field that
/// `wanted` maps to `i` (the last one when a name repeats), `None` when absent.
pub(crate) fn pick_fields<'a>(object: &'a str, wanted: &FastMap<&str, usize>, found: &mut [Option<&'a RawValue>]) {
    found.fill(None);
    let _ = each_field(object, |n, v| {
        if let Some(&i) = wanted.get(n) {
            found[i] = Some(v);
        }
    });
}

/// Append `s` as a JSON string literal (format-spec/conventions.md: serde_json's
/// compact escaping).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if !write_plain_json_str(out, s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing a str to a Vec cannot fail");
    }
}

/// Append the UTF-8 bytes `s` as a JSON string literal, as [`write_json_str`]
/// would. Bytes that are not UTF-8 and need escaping write nothing: false.
pub fn write_json_utf8(out: &mut Vec<u8>, s: &[u8]) -> bool {
    write_plain_json_str(out, s)
        || std::str::from_utf8(s).is_ok_and(|s| {
            write_json_str(out, s);
            true
        })
}

/// The common case: nothing to escape (no quote, backslash or control character), so the
/// literal is the bytes in quotes. False, writing nothing, otherwise.
fn write_plain_json_str(out: &mut Vec<u8>, s: &[u8]) -> bool {
    if needs_escape(s) {
        return false;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
    true
}

/// Whether `s` holds a quote, a backslash or a control character (eight bytes at a
/// time, as the JSON scanner looks for them).
fn needs_escape(s: &[u8]) -> bool {
    crate::codec::json::plain_run(s) != s.len()
}

/// Append `v` in decimal (a listing writes several numbers a row, most of them
/// 13-digit milliseconds): eight digits at a time computed in one register (see
/// [`eight_digits`]); the leading zeros are counted from the digits' own bits, and
/// each group is stored with one copy of constant length: no loop over digits, no
/// call to memcpy.
#[inline]
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    if v < E8 {
        return write_leading(out, eight_digits(v as u32));
    }
    if v >= E8 * E8 {
        return write_huge(out, v);
    }
    write_leading(out, eight_digits((v / E8) as u32));
    write_eight(out, eight_digits((v % E8) as u32));
}

const E8: u64 = 100_000_000;

/// [`write_u64`] of 17 digits or more (out of line: listings rarely have them).
#[cold]
#[inline(never)]
fn write_huge(out: &mut Vec<u8>, v: u64) {
    write_leading(out, eight_digits((v / (E8 * E8)) as u32));
    write_eight(out, eight_digits((v / E8 % E8) as u32));
    write_eight(out, eight_digits((v % E8) as u32));
}

/// Bytes of a [`Pieces`] buffer. Its users bound what they put between two
/// [`Pieces::take`]s below `PIECES - 8` (a number's last group is stored as 8 bytes).
const PIECES: usize = 256;

/// Short pieces of a row (constant strings and numbers) written on the stack, then
/// appended to the output at once: no capacity check and length update of the
/// output per piece. Writing past its end panics: callers bound their pieces.
pub struct Pieces {
    buf: [u8; PIECES],
    len: usize,
}

impl Default for Pieces {
    fn default() -> Pieces {
        Pieces { buf: [0; PIECES], len: 0 }
    }
}

impl Pieces {
    #[inline(always)]
    pub fn put(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    /// `v` in decimal, as [`write_u64`].
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        if v < E8 {
            return self.leading(eight_digits(v as u32));
        }
        if v >= E8 * E8 {
            self.leading(eight_digits((v / (E8 * E8)) as u32));
            self.eight(eight_digits((v / E8 % E8) as u32));
        } else {
            self.leading(eight_digits((v / E8) as u32));
        }
        self.eight(eight_digits((v % E8) as u32));
    }

    /// `v` in decimal with its sign, as [`write_i64`].
    #[inline(always)]
    pub fn i64(&mut self, v: i64) {
        if v < 0 {
            self.put(b"-");
        }
        self.u64(v.unsigned_abs());
    }

    /// Write again the bytes `at..end` already written.
    #[inline(always)]
    pub fn repeat(&mut self, at: usize, end: usize) {
        self.buf.copy_within(at..end, self.len);
        self.len += end - at;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn leading(&mut self, digits: u64) {
        let zeros = ((digits | (1 << 56)).trailing_zeros() / 8) as usize;
        self.buf[self.len..self.len + 8].copy_from_slice(&((digits | ASCII_ZEROS) >> (8 * zeros)).to_le_bytes());
        self.len += 8 - zeros;
    }

    #[inline(always)]
    fn eight(&mut self, digits: u64) {
        self.buf[self.len..self.len + 8].copy_from_slice(&(digits | ASCII_ZEROS).to_le_bytes());
        self.len += 8;
    }

    /// Append what was written to `out`, and start again.
    #[inline(always)]
    pub fn take(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf[..self.len]);
        self.len = 0;
    }
}

/// Eight digits with their leading zeros left out (one digit, "0", when all are zero).
#[inline(always)]
fn write_leading(out: &mut Vec<u8>, digits: u64) {
    // The first digit is in the low byte: leading zero digits are low zero bytes.
    let zeros = ((digits | (1 << 56)).trailing_zeros() / 8) as usize;
    let len = out.len();
    out.extend_from_slice(&((digits | ASCII_ZEROS) >> (8 * zeros)).to_le_bytes());
    out.truncate(len + 8 - zeros);
}

#[inline(always)]
fn write_eight(out: &mut Vec<u8>, digits: u64) {
    out.extend_from_slice(&(digits | ASCII_ZEROS).to_le_bytes());
}

pub(crate) const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// `v` (below 10^8) as eight decimal digit values (0 to 9), first digit in the low
/// byte: computed in one register, as four 2-digit lanes, then eight 1-digit lanes.
#[inline(always)]
pub(crate) fn eight_digits(v: u32) -> u64 {
    // Lanes of 32 bits: the first four digits, the last four.
    let x = u64::from(v / 10_000) | (u64::from(v % 10_000) << 32);
    // Each lane (below 10^4) by 100: 5243 / 2^19 rounds down exactly below 43,699.
    let q = ((x * 5243) >> 19) & 0x0000_007F_0000_007F;
    let y = q | ((x - q * 100) << 16);
    // Each 16-bit lane (below 100) by 10: 103 / 2^10 rounds down exactly below 179.
    let t = ((y * 103) >> 10) & 0x000F_000F_000F_000F;
    t | ((y - t * 10) << 8)
}

/// Append `v` in decimal, with its sign.
#[inline]
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

/// Append a field's JSON value (already checked) to a document, without its
/// line breaks: a checked value holds `\n` and `\r` only as whitespace between
/// its tokens (inside strings they are escaped), and every answer is JSON lines.
pub fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    match memchr::memchr2(b'\n', b'\r', value) {
        None => out.extend_from_slice(value),
        Some(_) => out.extend(value.iter().filter(|b| !matches!(b, b'\n' | b'\r'))),
    }
}

/// A document's text as answers carry it: one line (what [`put_value`] keeps of
/// values; a document stored before it may hold line breaks between tokens).
pub fn one_line(text: Cow<'_, str>) -> Cow<'_, str> {
    match memchr::memchr2(b'\n', b'\r', text.as_bytes()) {
        None => text,
        Some(_) => Cow::Owned(text.chars().filter(|c| !matches!(c, '\n' | '\r')).collect()),
    }
}

impl MetaDoc {
    /// The empty object.
    pub fn new() -> MetaDoc {
        MetaDoc("{}".to_string())
    }

    /// Build from fields, in order.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a RawValue)>) -> MetaDoc {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        for (i, (name, value)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, name);
            out.push(b':');
            put_value(&mut out, value.get().as_bytes());
        }
        out.push(b'}');
        MetaDoc(String::from_utf8(out).expect("JSON text built from str is UTF-8"))
    }

    /// Check and keep a JSON object text.
    pub fn parse(text: &str) -> Result<MetaDoc, Error> {
        let fields = parse_object(text)?;
        Ok(MetaDoc::from_fields(fields.iter().map(|(n, v)| (n.as_ref(), *v))))
    }

    /// Wrap text already known to be a valid object (decoded from a checked record).
    pub(crate) fn from_trusted(text: String) -> MetaDoc {
        MetaDoc(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == "{}"
    }

    /// The fields, in order. Fails only on text that did not come from this type.
    pub fn fields(&self) -> Result<Vec<Field<'_>>, Error> {
        parse_object(&self.0)
    }

    /// The raw value of one field.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        field(&self.0, name)
    }
}

impl fmt::Debug for MetaDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_however_its_name_is_spelled() {
        let cases: [(&str, Option<&str>); 9] = [
            (r#"{"close_reason":"done"}"#, Some(r#""done""#)),
            (r#"{"close\u005freason":"esc"}"#, Some(r#""esc""#)),
            (r#"{"a":1,"close_reason":"x","close_reason":"last"}"#, Some(r#""last""#)),
            (r#"{"a":"close_reason"}"#, None),
            (r#"{"a":{"close_reason":1}}"#, None),
            (r#"{"a":"\\"}"#, None),
            (r#"{"a":1}"#, None),
            ("{}", None),
            (r#"{"close_reason":"#, None),
        ];
        for (doc, want) in cases {
            assert_eq!(field(doc, "close_reason").map(|v| v.get()), want, "{doc}");
        }
        assert_eq!(field(r#"{"":2}"#, "").map(|v| v.get()), Some("2"));
        assert_eq!(field(r#"{"q\"":3}"#, "q\"").map(|v| v.get()), Some("3"));
    }

    #[test]
    fn a_lone_surrogate_in_a_name_is_named_so() {
        for doc in [r#"{"\ud800x":1}"#, r#"{"\udc00":1}"#, r#"{"a\ud800\u0041":1}"#] {
            let e = parse_object(doc).unwrap_err().to_string();
            assert!(e.contains("lone surrogate"), "{doc}: {e}");
        }
        let e = parse_object(r#"{"\q":1}"#).unwrap_err().to_string();
        assert!(!e.contains("surrogate"), "{e}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .chain(["", "é\u{2028}😀", "\"\\/", "\u{7f}", "plain"].map(String::from))
            .collect();
        for s in &all {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
            let mut bytes = Vec::new();
            assert!(write_json_utf8(&mut bytes, s.as_bytes()));
            assert_eq!(bytes, out);
        }
        let mut out = Vec::new();
        assert!(!write_json_utf8(&mut out, b"\xff\n") && out.is_empty(), "not UTF-8 and escaped: nothing");
    }

    #[test]
    fn the_word_wise_escape_test_agrees_with_the_byte_wise_one() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for filler in [b'a', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff, 0x01] {
            for len in [7usize, 8, 9, 16, 17, 23] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![filler; len];
                        s[at] = b;
                        assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let mut all = vec![0u64, 7, 10, 99, 100, 101, 1_700_000_000_000, u64::MAX];
        all.extend((0..20).flat_map(|i| [10u64.pow(i), 10u64.pow(i) - 1, 10u64.pow(i) + 1]));
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            all.extend([x, x >> 20, x >> 24, x >> 30, x % 100_000_000, x % 10_000]);
        }
        all.extend(0..200_000);
        for v in all {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
            let mut p = Pieces::default();
            p.put(b"<");
            p.u64(v);
            p.put(b">");
            p.take(&mut out);
            assert_eq!(out, format!("{v}<{v}>").as_bytes());
        }
        for v in [0i64, -1, 42, -1_700_000_000_000, i64::MIN, i64::MAX] {
            let mut out = b"x".to_vec();
            write_i64(&mut out, v);
            assert_eq!(out, format!("x{v}").as_bytes());
            let mut p = Pieces::default();
            p.i64(v);
            let end = p.len();
            p.repeat(0, end);
            p.take(&mut out);
            assert_eq!(out, format!("x{v}{v}{v}").as_bytes());
        }
    }

    #[test]
    fn nesting_is_limited_as_on_import() {
        let nested = |levels: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(levels - 1), "]".repeat(levels - 1));
        assert!(parse_input_object(&nested(MAX_DEPTH)).is_ok());
        let deep = nested(MAX_DEPTH + 1);
        assert!(parse_input_object(&deep).unwrap_err().to_string().contains("nested"));
        // Stored documents are read without the scan.
        assert!(parse_object(&deep).is_ok());
        assert!(crate::codec::json::scan_object(&deep, &mut Vec::new()).is_err());
        assert!(crate::codec::json::scan_object(&nested(MAX_DEPTH), &mut Vec::new()).is_ok());
        // Brackets inside strings do not nest.
        assert!(parse_input_object(&format!(r#"{{"a":"{}\"["}}"#, "[".repeat(300))).is_ok());
    }

    #[test]
    fn keeps_order_and_exact_values() {
        let text =
            r#"{"z":1,"a":{"x":[1, 2.50, 1e400]},"big":123456789012345678901234567890,"u":"\u00e9\ud83d\ude00"}"#;
        let doc = MetaDoc::parse(text).unwrap();
        assert_eq!(
            doc.as_str(),
            r#"{"z":1,"a":{"x":[1, 2.50, 1e400]},"big":123456789012345678901234567890,"u":"\u00e9\ud83d\ude00"}"#
        );
        assert_eq!(doc.get("big").unwrap().get(), "123456789012345678901234567890");
    }

    #[test]
    fn repeated_names_keep_first_place_and_last_value() {
        // Below and above the size where names are hashed, and an escaped spelling.
        for n in [3usize, 40] {
            let mut text: Vec<String> = (0..n).map(|i| format!("\"f{i}\":{i}")).collect();
            text.push("\"f1\":\"again\"".into());
            text.push("\"\\u0066{}\":\"last\"".replace("{}", &(n - 1).to_string()));
            let text = format!("{{{}}}", text.join(","));
            let fields = parse_object(&text).unwrap();
            assert_eq!(fields.len(), n, "{text}");
            assert_eq!((fields[1].0.as_ref(), fields[1].1.get()), ("f1", "\"again\""));
            assert_eq!(fields[n - 1].1.get(), "\"last\"");
            assert_eq!(field(&text, "f1").unwrap().get(), "\"again\"");
            assert_eq!(field(&text, &format!("f{}", n - 1)).unwrap().get(), "\"last\"");
            assert!(field(&text, "nope").is_none());
            let wanted: FastMap<&str, usize> = [("f0", 0), ("nope", 1), ("f1", 2)].into_iter().collect();
            let mut found = [None; 3];
            pick_fields(&text, &wanted, &mut found);
            let got: Vec<Option<&str>> = found.iter().map(|v| v.map(|v| v.get())).collect();
            assert_eq!(got, [Some("0"), None, Some("\"again\"")]);
        }
    }

    #[test]
    fn client_objects_have_a_field_limit() {
        let object = |n: usize| format!("{{{}}}", (0..n).map(|i| format!("\"f{i}\":0")).collect::<Vec<_>>().join(","));
        assert_eq!(parse_input_object(&object(MAX_OBJECT_FIELDS)).unwrap().len(), MAX_OBJECT_FIELDS);
        let e = parse_input_object(&object(MAX_OBJECT_FIELDS + 1)).unwrap_err().to_string();
        assert!(e.contains(&format!("at most {MAX_OBJECT_FIELDS} fields")), "{e}");
        // Repeats count: the work is bounded by what is read, not what is kept.
        let repeats = format!("{{{}}}", vec!["\"a\":1"; MAX_OBJECT_FIELDS + 1].join(","));
        assert!(parse_input_object(&repeats).is_err());
        // Stored documents are read whole.
        assert_eq!(parse_object(&object(MAX_OBJECT_FIELDS + 1)).unwrap().len(), MAX_OBJECT_FIELDS + 1);
    }

    #[test]
    fn refuses_non_objects() {
        for bad in ["[]", "1", "\"x\"", "{", "{\"a\":}", "{} x", ""] {
            assert!(MetaDoc::parse(bad).is_err(), "{bad}");
        }
    }
}
