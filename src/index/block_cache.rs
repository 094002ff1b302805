//! Decoded blocks of an index file's array containers, kept for reuse, as
//! Lucene's query cache keeps the bit sets of frequent filters. An array
//! container is a sorted `u16` list: combining it with a block costs a bit set a
//! value, thousands a block for a common term, where a bitmap costs a word
//! operation per 64 docs. A term used again (a dashboard polling a spider's
//! finished jobs) combines the cached bitmap instead.
//!
//! Each index file has its own cache, dropped with it: keys are offsets in that
//! one immutable file, so an entry can never describe other bytes.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::hash::FastMap;
use crate::query::docset::Block;

/// Containers with fewer values are cheaper to decode than to look up and keep.
pub const ADMIT_VALUES: u32 = 512;
/// Blocks one file keeps at most: 2,048 × 8 KiB = 16 MiB.
pub const MAX_BLOCKS: usize = 2048;

/// A posting list's block, by the list's offset in its file.
type Key = (u64, u32);

pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    map: FastMap<Key, (Arc<Block>, u64)>,
    clock: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCache({} of {} blocks)", self.inner.lock().map.len(), self.capacity)
    }
}

impl BlockCache {
    /// A cache for a file of `blocks` posting blocks (project sections' 64k-doc
    /// blocks): room for eight common terms' every block, at most [`MAX_BLOCKS`].
    pub fn for_blocks(blocks: usize) -> BlockCache {
        BlockCache { inner: Mutex::new(Inner::default()), capacity: (blocks * 8).clamp(16, MAX_BLOCKS) }
    }

    pub fn get(&self, list: u64, block: u32) -> Option<Arc<Block>> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let (bits, used) = inner.map.get_mut(&(list, block))?;
        *used = now;
        Some(bits.clone())
    }

    /// Keep `bits` as block `block` of the list at `list`. When full, the least
    /// recently used eighth goes first.
    pub fn put(&self, list: u64, block: u32, bits: Arc<Block>) {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&(list, block)) {
            let mut ages: Vec<u64> = inner.map.values().map(|(_, used)| *used).collect();
            let cut = ages.len() / 8;
            let (_, oldest, _) = ages.select_nth_unstable(cut);
            let oldest = *oldest;
            inner.map.retain(|_, (_, used)| *used > oldest);
        }
        inner.map.insert((list, block), (bits, now));
    }

    /// Memory of the blocks held.
    pub fn bytes(&self) -> u64 {
        (self.len() * std::mem::size_of::<Block>()) as u64
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::docset::BLOCK_WORDS;

    fn block(v: u64) -> Arc<Block> {
        Arc::new([v; BLOCK_WORDS])
    }

    #[test]
    fn keeps_what_is_used_and_stays_bounded() {
        let c = BlockCache::for_blocks(2);
        assert_eq!(c.capacity, 16);
        for i in 0..16u64 {
            c.put(i, 0, block(i));
        }
        // The first is used again: it outlives the eviction the next put makes.
        assert_eq!(c.get(0, 0).unwrap()[5], 0);
        c.put(100, 1, block(100));
        assert!(c.len() <= 16);
        assert!(c.get(0, 0).is_some() && c.get(100, 1).is_some());
        assert!(c.get(1, 0).is_none(), "the least recently used went first");
        assert!(c.get(100, 0).is_none(), "keys are list and block");
        for i in 200..400u64 {
            c.put(i, 7, block(i));
            assert!(c.len() <= 16);
        }
        assert_eq!(c.get(399, 7).unwrap()[0], 399);
    }
}
