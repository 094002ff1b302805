//! Names in order, edited in place: a job's metadata fields or its tags while one
//! write changes them. Each set, remove and lookup is one hash probe, so a write's
//! cost grows with what it changes, not with the size of the job it changes.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::doc::write_json_str;
use super::MetaDoc;
use crate::hash::FastMap;

/// Distinct names in first-insertion order, each with a value. A removed name
/// leaves a hole (skipped when iterating) so that no removal shifts the others.
#[derive(Clone, Debug)]
pub struct Ordered<V> {
    slots: Vec<Option<(Arc<str>, V)>>,
    at: FastMap<Arc<str>, usize>,
}

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered { slots: Vec::new(), at: FastMap::default() }
    }
}

/// Values that tell whether a set changes anything.
pub trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl Same for Box<RawValue> {
    /// The same text (values are kept as sent, so that is what a reader sees).
    fn same(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Same for () {
    fn same(&self, _: &Self) -> bool {
        true
    }
}

impl<V: Same> Ordered<V> {
    /// Items in order; a repeated name keeps its first place and its last value.
    pub fn from_items<'a>(items: impl IntoIterator<Item = (&'a str, V)>) -> Ordered<V> {
        let mut o = Ordered::default();
        for (name, v) in items {
            o.set(name, v);
        }
        o
    }

    /// Names present.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        let i = *self.at.get(name)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.at.contains_key(name)
    }

    /// Replace the value in place, or append the name; true when anything changed.
    pub fn set(&mut self, name: &str, value: V) -> bool {
        match self.at.get(name) {
            Some(&i) => {
                let slot = self.slots[i].as_mut().expect("an indexed slot is filled");
                if slot.1.same(&value) {
                    return false;
                }
                slot.1 = value;
            }
            None => {
                let name: Arc<str> = Arc::from(name);
                self.at.insert(name.clone(), self.slots.len());
                self.slots.push(Some((name, value)));
            }
        }
        true
    }

    /// Drop a name; true when it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.at.remove(name) {
            Some(i) => {
                self.slots[i] = None;
                true
            }
            None => false,
        }
    }

    /// Drop every name.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.at.clear();
    }

    /// Names and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.slots.iter().flatten().map(|(n, v)| (&**n, v))
    }
}

/// A metadata document being edited.
pub type DocEdit = Ordered<Box<RawValue>>;

impl DocEdit {
    /// The fields of a document.
    pub fn of_doc(doc: &MetaDoc) -> DocEdit {
        let fields = doc.fields().unwrap_or_default();
        Ordered::from_items(fields.iter().map(|(n, v)| (n.as_ref(), (*v).to_owned())))
    }

    /// The document again.
    pub fn to_doc(&self) -> MetaDoc {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, name);
            out.push(b':');
            crate::model::doc::put_value(&mut out, value.get().as_bytes());
        }
        out.push(b'}');
        MetaDoc::from_trusted(String::from_utf8(out).expect("JSON text built from str is UTF-8"))
    }
}

/// Tags being edited (their order is the job's).
pub type TagEdit = Ordered<()>;

impl TagEdit {
    pub fn of_tags(tags: &[String]) -> TagEdit {
        Ordered::from_items(tags.iter().map(|t| (t.as_str(), ())))
    }

    pub fn to_tags(&self) -> Vec<String> {
        self.iter().map(|(t, _)| t.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: &str) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn keeps_first_place_and_last_value() {
        let mut d = DocEdit::of_doc(&MetaDoc::parse(r#"{"a":1,"b":2,"c":3}"#).unwrap());
        assert!(d.remove("a"));
        assert!(!d.remove("a"));
        assert!(d.set("b", raw("[4]")));
        assert!(!d.set("b", raw("[4]")), "the same value changes nothing");
        assert!(d.set("d", raw("5")));
        assert!(d.set("a", raw("6")), "a removed name comes back at the end");
        assert_eq!(d.to_doc().as_str(), r#"{"b":[4],"c":3,"d":5,"a":6}"#);
        assert_eq!((d.len(), d.get("c").map(|v| v.get())), (4, Some("3")));
        let mut t = TagEdit::of_tags(&["x".into(), "y".into(), "x".into()]);
        assert_eq!(t.to_tags(), ["x", "y"]);
        t.remove("x");
        t.set("z", ());
        t.set("x", ());
        assert_eq!(t.to_tags(), ["y", "z", "x"]);
        t.clear();
        assert!(t.is_empty() && t.to_tags().is_empty());
    }
}
