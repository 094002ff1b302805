//! Hash maps and sets with a fast, randomly seeded hasher (foldhash), and a string
//! interner on them. Keys from clients (spider names, tags) stay safe from
//! collision flooding thanks to the seed.

/// A `HashMap` with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Strings shared between the values that hold them: one `Arc<str>` per distinct text.
#[derive(Default, Debug, Clone)]
pub struct Interner(FastSet<std::sync::Arc<str>>);

impl Interner {
    /// Distinct strings held.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&mut self, s: &str) -> std::sync::Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: std::sync::Arc<str> = std::sync::Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}
