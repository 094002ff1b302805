//! Hash maps with a fast, randomly seeded hasher (foldhash). Keys from clients
//! (spider names, tags) stay safe from collision flooding thanks to the seed.

/// A `HashMap` with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
