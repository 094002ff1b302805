//! A validating JSON scanner for the bulk import path: it checks a line is one JSON
//! object (RFC 8259, nesting at most 128 deep) and returns each field's name and
//! raw value as slices of the line, without allocating or decoding values.

use std::borrow::Cow;

/// Deepest nesting accepted, here and by every write path (so that whatever is
/// stored can be exported and imported back).
pub const MAX_DEPTH: usize = 128;

/// Most fields of one JSON object of a request or an import line (repeats
/// counted): a job's 10,000 metadata fields plus room for the fields the service
/// maintains, so that what `GET jobs/...` answers can be posted back and every
/// export imports back. Nested objects are kept as raw text and not counted.
pub const MAX_OBJECT_FIELDS: usize = 10_100;

/// How deeply the containers of a valid JSON text nest (`1` for `{}` or `[1]`,
/// `0` for a scalar). Brackets inside strings do not count.
pub fn nesting_depth(valid_json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in valid_json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A field of a scanned object: the name as written between its quotes (escapes
/// kept) and the value's exact text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawField<'a> {
    pub name: &'a str,
    pub value: &'a str,
    /// The name holds an escape.
    pub escaped: bool,
}

impl<'a> RawField<'a> {
    /// The name with escapes decoded.
    pub fn name(&self) -> Result<Cow<'a, str>, JsonError> {
        if self.escaped {
            unescape(self.name, 0)
        } else {
            Ok(Cow::Borrowed(self.name))
        }
    }
}

/// Where and why a text is not JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub what: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.what)
    }
}

/// Length of the leading run of bytes that need no attention in a string: not a
/// quote, not a backslash, not a control character. Eight bytes at a time.
pub(crate) fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |w: u64| {
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))) | below_space
    };
    // The lowest flagged byte of a word is exact (a borrow only runs upwards
    // from a byte that is special), and bytes checked before are plain: a word
    // may overlap them.
    let first = |w: u64, skip: usize| (special(w) != 0).then(|| (special(w).trailing_zeros() / 8) as usize - skip);
    let n = b.len();
    let mut i = 0;
    while i + 8 <= n {
        if let Some(k) = first(u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes")), 0) {
            return i + k;
        }
        i += 8;
    }
    // The last 1 to 7 bytes (short strings: tags, names) without a loop: the
    // last eight bytes, or the first four and the last four.
    let left = n - i;
    if left == 0 {
        return n;
    }
    let found = if n >= 8 {
        first(u64::from_le_bytes(b[n - 8..].try_into().expect("eight bytes")), 8 - left).map(|k| i + k)
    } else if n >= 4 {
        let (lo, hi) = (&b[..4], &b[n - 4..]);
        let w = u64::from(u32::from_le_bytes(lo.try_into().expect("four bytes")))
            | u64::from(u32::from_le_bytes(hi.try_into().expect("four bytes"))) << 32;
        first(w, 0).map(|k| if k < 4 { k } else { k + n - 8 })
    } else {
        b.iter().position(|c| matches!(c, b'"' | b'\\' | 0..=0x1F))
    };
    found.unwrap_or(n)
}

struct Scanner<'a> {
    s: &'a [u8],
    pos: usize,
    /// The last string scanned held an escape.
    escaped: bool,
}

fn err<T>(offset: usize, what: &'static str) -> Result<T, JsonError> {
    Err(JsonError { offset, what })
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        self.pos = skip_ws(self.s, self.pos);
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() != Some(b) {
            return err(self.pos, what);
        }
        self.pos += 1;
        Ok(())
    }

    /// A string; returns the text between the quotes.
    fn string(&mut self) -> Result<(usize, usize), JsonError> {
        self.escaped = false;
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        loop {
            self.pos += plain_run(&self.s[self.pos..]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((start, self.pos - 1));
                }
                Some(b'\\') => {
                    self.escaped = true;
                    match self.s.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                        Some(b'u') => {
                            let hex = self.s.get(self.pos + 2..self.pos + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return err(self.pos, "bad \\u escape");
                            }
                            self.pos += 6;
                        }
                        _ => return err(self.pos, "bad escape"),
                    }
                }
                Some(_) => return err(self.pos, "control character in a string"),
                None => return err(self.pos, "unterminated string"),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return err(self.pos, "bad number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return err(self.pos, "bad number: digits expected after '.'");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return err(self.pos, "bad number: digits expected in the exponent");
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            err(self.pos, "unknown literal")
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => err(self.pos, "expected a value"),
            None => err(self.pos, "unexpected end"),
        }
    }

    /// An object or array (the opening byte is next).
    fn container(&mut self, depth: usize, close: u8, object: bool) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return err(self.pos, "nested too deep");
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if object {
                self.string()?;
                self.ws();
                self.expect(b':', "expected ':'")?;
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return err(self.pos, "expected ',' or the end of the container"),
            }
        }
    }
}

/// Where the JSON whitespace at `pos` of `text` ends.
pub(crate) fn skip_ws(text: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = text.get(pos) {
        pos += 1;
    }
    pos
}

/// A string at `pos` of `text` (its opening quote), checked as [`scan_object`]
/// checks one: where its text ends (the closing quote) and whether it holds an
/// escape; None if it is not a valid string.
pub(crate) fn string_at(text: &[u8], pos: usize) -> Option<(usize, bool)> {
    // Most strings are plain to their closing quote: no scanner needed.
    if text.get(pos) != Some(&b'"') {
        return None;
    }
    let end = pos + 1 + plain_run(&text[pos + 1..]);
    if text.get(end) == Some(&b'"') {
        return Some((end, false));
    }
    let mut sc = Scanner { s: text, pos, escaped: false };
    let (_, end) = sc.string().ok()?;
    Some((end, sc.escaped))
}

/// A value at `pos` of `text` (no whitespace before it), checked as
/// [`scan_object`] checks a field's value (nesting included): where it ends;
/// None if it is not valid JSON.
pub(crate) fn value_end(text: &[u8], pos: usize) -> Option<usize> {
    if text.get(pos) == Some(&b'"') {
        return string_at(text, pos).map(|(end, _)| end + 1);
    }
    let mut sc = Scanner { s: text, pos, escaped: false };
    sc.value(1).ok()?;
    Some(sc.pos)
}

/// Check that `text` is exactly one JSON object and append its fields to `out`.
pub fn scan_object<'a>(text: &'a str, out: &mut Vec<RawField<'a>>) -> Result<(), JsonError> {
    let mut sc = Scanner { s: text.as_bytes(), pos: 0, escaped: false };
    sc.ws();
    sc.expect(b'{', "expected a JSON object")?;
    sc.ws();
    if sc.peek() == Some(b'}') {
        sc.pos += 1;
    } else {
        loop {
            let (ns, ne) = sc.string()?;
            let escaped = sc.escaped;
            sc.ws();
            sc.expect(b':', "expected ':'")?;
            sc.ws();
            let vs = sc.pos;
            sc.value(1)?;
            out.push(RawField { name: &text[ns..ne], value: &text[vs..sc.pos], escaped });
            sc.ws();
            match sc.peek() {
                Some(b',') => {
                    sc.pos += 1;
                    sc.ws();
                }
                Some(b'}') => {
                    sc.pos += 1;
                    break;
                }
                _ => return err(sc.pos, "expected ',' or '}'"),
            }
        }
    }
    sc.ws();
    if sc.pos != text.len() {
        return err(sc.pos, "trailing characters after the object");
    }
    Ok(())
}

/// Decode the escapes of a string's inner text (`offset` locates it in errors).
pub fn unescape(raw: &str, offset: usize) -> Result<Cow<'_, str>, JsonError> {
    if memchr::memchr(b'\\', raw.as_bytes()).is_none() {
        return Ok(Cow::Borrowed(raw));
    }
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().position(|&c| c == b'\\').unwrap_or(b.len() - i);
        out.push_str(&raw[i..i + run]);
        i += run;
        if i >= b.len() {
            break;
        }
        let c = match b.get(i + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hex = |at: usize| raw.get(at..at + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
                let hi = hex(i + 2).ok_or(JsonError { offset: offset + i, what: "bad \\u escape" })?;
                i += 6;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    let lo = (raw.get(i..i + 2) == Some("\\u")).then(|| hex(i + 2)).flatten();
                    match lo {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            i += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        _ => return err(offset + i, "lone surrogate in a \\u escape"),
                    }
                } else {
                    hi
                };
                out.push(
                    char::from_u32(code)
                        .ok_or(JsonError { offset: offset + i, what: "lone surrogate in a \\u escape" })?,
                );
                continue;
            }
            _ => return err(offset + i, "bad escape"),
        };
        out.push(c);
        i += 2;
    }
    Ok(Cow::Owned(out))
}

/// The strings of a raw JSON array of strings (already checked to be JSON).
pub fn string_array<'a>(raw: &'a str, out: &mut Vec<Cow<'a, str>>) -> Result<(), JsonError> {
    let mut sc = Scanner { s: raw.as_bytes(), pos: 0, escaped: false };
    sc.ws();
    sc.expect(b'[', "expected a list")?;
    sc.ws();
    if sc.peek() == Some(b']') {
        return Ok(());
    }
    loop {
        let (a, b) = sc.string()?;
        out.push(unescape(&raw[a..b], a)?);
        sc.ws();
        match sc.peek() {
            Some(b',') => {
                sc.pos += 1;
                sc.ws();
            }
            Some(b']') => return Ok(()),
            _ => return err(sc.pos, "expected ',' or ']'"),
        }
    }
}

/// The decoded value of a raw JSON string value (with its quotes).
pub fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    unescape(inner, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(t: &str) -> Result<Vec<(String, String)>, JsonError> {
        let mut out = Vec::new();
        scan_object(t, &mut out)?;
        Ok(out.iter().map(|f| (f.name().unwrap().into_owned(), f.value.to_string())).collect())
    }

    #[test]
    fn scans_fields_and_raw_values() {
        let f = fields(r#" { "a" : 1 , "b\"c":[1, {"x":null}] ,"d":"\u00e9\ud83d\ude00", "e": -0.5e+3 } "#).unwrap();
        assert_eq!(
            f,
            vec![
                ("a".into(), "1".into()),
                ("b\"c".into(), r#"[1, {"x":null}]"#.into()),
                ("d".into(), r#""\u00e9\ud83d\ude00""#.into()),
                ("e".into(), "-0.5e+3".into())
            ]
        );
        assert_eq!(string_value(r#""\u00e9\ud83d\ude00""#).unwrap(), "é😀");
    }

    proptest::proptest! {
        /// The plain-string shortcuts of `string_at` and `value_end` answer as
        /// the scanner alone does, at every position of any text.
        #[test]
        fn shortcuts_answer_as_the_scanner(text in r#"[a"\\ \n{}\[\]:,0-9u\u{e9}]{0,24}"#) {
            let b = text.as_bytes();
            for pos in 0..=b.len() + 1 {
                let mut sc = Scanner { s: b, pos, escaped: false };
                let want = if pos > b.len() { None } else { sc.string().ok().map(|(_, end)| (end, sc.escaped)) };
                proptest::prop_assert_eq!(string_at(b, pos), want, "string at {}", pos);
                let mut sc = Scanner { s: b, pos, escaped: false };
                let want = if pos > b.len() { None } else { sc.value(1).ok().map(|()| sc.pos) };
                proptest::prop_assert_eq!(value_end(b, pos), want, "value at {}", pos);
            }
        }
    }

    #[test]
    fn agrees_with_serde_json() {
        let cases = [
            "{}",
            "{\"a\":1}",
            "[]",
            "1",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":[1,]}",
            "{\"a\":[,1]}",
            "{\"a\":1} x",
            "{\"a\":\"\t\"}",
            "{\"a\":{\"b\":[true,false,null]}}",
            "{\"a\":1e400}",
            "{\"a\":-0}",
            " {} ",
            "{\"a\":1 \"b\":2}",
            "{1:2}",
            "{\"a\":\"\\ud800\"}",
            "{\"\":\"\"}",
            "{\"a\":[[[[]]]]}",
        ];
        for c in cases {
            let ours = fields(c).is_ok();
            let theirs = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(c).is_ok()
                || serde_json::from_str::<&serde_json::value::RawValue>(c)
                    .is_ok_and(|r| r.get().trim_start().starts_with('{'));
            assert_eq!(ours, theirs, "{c:?}");
        }
        for t in ["ab\\\"", "0123456789abcdef\\", "\u{1}xxxxxxxxx", "xxxxxxxxxxxxxxxxxxxxxxxxxx\"", "é€😀\"", ""] {
            let want = t.bytes().position(|b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(t.len());
            assert_eq!(plain_run(t.as_bytes()), want, "{t:?}");
        }
        // Every length up to 20 with special bytes at every place, one or two.
        for n in 0..20 {
            for (i, j) in (0..=n).flat_map(|i| (i..=n).map(move |j| (i, j))) {
                for (x, y) in [(b'"', b'\\'), (0x1F, b'"'), (0, 0x7F), (0xFF, b'"'), (b'\\', 0x80)] {
                    let mut t: Vec<u8> = (0..n).map(|k| [b'a', 0xC3, 0xA9, b' ', 0x7F, b'!'][k % 6]).collect();
                    if i < n {
                        t[i] = x;
                    }
                    if j < n {
                        t[j] = y;
                    }
                    let want = t.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(n);
                    assert_eq!(plain_run(&t), want, "{t:?}");
                }
            }
        }
        let mut v = Vec::new();
        string_array(r#"[ "a" ,"b\u0063"]"#, &mut v).unwrap();
        assert_eq!(v, vec!["a", "bc"]);
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(fields(&deep).is_err());
    }
}
