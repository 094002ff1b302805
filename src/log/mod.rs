//! The append-only record log: numbered segment files of framed records.
//! One concern a file: [`segment`] names and headers, [`mark`] the durable marks,
//! [`tail`] the segment being written, [`writer`] appends, [`scan`] reads frames,
//! [`recovery`] decides what survives a crash, [`reach`] how far the log got.

pub mod cursor;
pub mod entries;
pub mod mark;
pub mod reach;
pub mod reader;
pub mod recovery;
pub mod scan;
pub mod segment;
pub mod tail;
pub mod writer;

/// A byte position in the log: segment number and offset in that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPos {
    pub segment: u32,
    pub offset: u64,
}

impl LogPos {
    /// Packed as stored in index files: segment in the high 32 bits.
    pub fn pack(self) -> u64 {
        (u64::from(self.segment) << 32) | (self.offset & 0xFFFF_FFFF)
    }

    pub fn unpack(v: u64) -> LogPos {
        LogPos { segment: (v >> 32) as u32, offset: v & 0xFFFF_FFFF }
    }
}

impl std::fmt::Display for LogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", segment::file_name(self.segment), self.offset)
    }
}
