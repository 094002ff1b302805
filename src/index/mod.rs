//! Indexes: immutable, memory-mapped index files built from the log (one section
//! per project: docs in `ts`-descending order, columns, postings), the set of their
//! superseded docs, and the in-memory index of the log's tail.

pub mod block_cache;
pub mod build;
pub mod deadset;
pub mod format;
pub mod memtable;
pub mod merge;
pub mod packed;
pub mod posting;
pub mod segment;
pub mod spill;
pub mod spill_build;
pub mod terms;

pub use build::DocEntry;
pub use deadset::DeadSet;
pub use format::SegmentMeta;
pub use memtable::{MemProject, MemSnapshot, MemTable};
pub use segment::{IndexSegment, Section};
