//! The free-form metadata of a job: a JSON object kept as compact text whose values
//! are stored byte for byte as they were given (key order, unicode, big integers and
//! float spellings survive untouched), parsed only when a field is asked for.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::json::{nesting_depth, MAX_DEPTH};
use crate::error::Error;

/// One field: a name and its raw JSON value.
pub type Field<'a> = (Cow<'a, str>, &'a RawValue);

/// A JSON object as text. Invariant: valid JSON, an object, compact between fields.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MetaDoc(String);

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<Field<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<Field<'de>> = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => out.push((name, value)),
            }
        }
        Ok(out)
    }
}

/// Parse a JSON object into its fields, in order (a repeated name keeps its first
/// place and its last value).
pub fn parse_object(text: &str) -> Result<Vec<Field<'_>>, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields =
        (&mut de).deserialize_map(FieldsVisitor).map_err(|e| Error::input(format!("not a JSON object: {e}")))?;
    de.end().map_err(|e| Error::input(format!("trailing characters after the JSON object: {e}")))?;
    Ok(fields)
}

/// A client's JSON object ([`parse_object`]), refused when nested deeper than
/// import accepts, so that whatever is stored exports and imports back.
pub fn parse_input_object(text: &str) -> Result<Vec<Field<'_>>, Error> {
    let fields = parse_object(text)?;
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

/// The raw value of field `name` of a JSON object text, if it has one.
pub fn field<'a>(object: &'a str, name: &str) -> Option<&'a RawValue> {
    parse_object(object).ok()?.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Append `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing a str to a Vec cannot fail");
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
            out.extend_from_slice(value.get().as_bytes());
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

    /// A copy with `set` fields replaced or appended (in their order) and `remove`
    /// fields dropped.
    pub fn merged(&self, set: &[(&str, &RawValue)], remove: &[&str]) -> MetaDoc {
        let own = self.fields().unwrap_or_default();
        let mut fields: Vec<(&str, &RawValue)> =
            own.iter().map(|(n, v)| (n.as_ref(), *v)).filter(|(n, _)| !remove.contains(n)).collect();
        for (name, value) in set {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => fields.push((name, value)),
            }
        }
        MetaDoc::from_fields(fields)
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
    fn merges_and_removes() {
        let doc = MetaDoc::parse(r#"{"a":1,"b":2,"c":3}"#).unwrap();
        let v: Box<RawValue> = RawValue::from_string("[4]".into()).unwrap();
        let w: Box<RawValue> = RawValue::from_string("5".into()).unwrap();
        let m = doc.merged(&[("b", &v), ("d", &w)], &["a"]);
        assert_eq!(m.as_str(), r#"{"b":[4],"c":3,"d":5}"#);
    }

    #[test]
    fn refuses_non_objects() {
        for bad in ["[]", "1", "\"x\"", "{", "{\"a\":}", "{} x", ""] {
            assert!(MetaDoc::parse(bad).is_err(), "{bad}");
        }
    }
}
