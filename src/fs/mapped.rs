//! Read-only bytes of an immutable file: a memory map of a real file, or shared
//! bytes in memory (the simulated file system, and index images built in memory).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Immutable bytes, cheap to clone.
#[derive(Clone)]
pub struct MappedBytes(Arc<Backing>);

enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl MappedBytes {
    pub(crate) fn from_map(map: memmap2::Mmap) -> MappedBytes {
        MappedBytes(Arc::new(Backing::Map(map)))
    }

    /// Bytes held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> MappedBytes {
        MappedBytes(Arc::new(Backing::Owned(bytes)))
    }

    /// True when the bytes are a memory map of a file.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.0, Backing::Map(_))
    }
}

impl Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedBytes({} bytes, mapped: {})", self.len(), self.is_mapped())
    }
}
