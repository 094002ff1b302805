//! Results numbered 0, 1, 2 … that finish in any order (parallel workers),
//! handed on in their order: the import's parsed chunks, an index's pieces.

use std::collections::BTreeMap;

/// Results that came, kept until those before them came too.
pub(crate) struct InOrder<T> {
    ready: BTreeMap<u64, T>,
    next: u64,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder { ready: BTreeMap::new(), next: 0 }
    }
}

impl<T> InOrder<T> {
    /// Result number `n` came.
    pub fn put(&mut self, n: u64, item: T) {
        self.ready.insert(n, item);
    }

    /// The next result in order, once it came.
    pub fn pop(&mut self) -> Option<T> {
        let item = self.ready.remove(&self.next)?;
        self.next += 1;
        Some(item)
    }

    /// How many results were handed on (the number of the next one).
    pub fn handed(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_out_in_their_order() {
        let mut o = InOrder::default();
        o.put(2, 'c');
        assert_eq!(o.pop(), None, "0 has not come");
        o.put(0, 'a');
        assert_eq!((o.pop(), o.pop()), (Some('a'), None));
        o.put(1, 'b');
        assert_eq!((o.pop(), o.pop(), o.pop()), (Some('b'), Some('c'), None));
        assert_eq!(o.handed(), 3);
    }
}
