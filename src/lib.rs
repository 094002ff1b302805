//! jobq: a persistent storage engine for crawl-job metadata (a "JobQ").
//!
//! The architecture, one module each:
//! - [`fs`]: the one file-system interface (real, and simulated for crash tests);
//! - [`codec`]: the bytes of the log (frames, records);
//! - [`model`]: keys, states, job versions, metadata documents;
//! - [`log`]: the append-only record log: segments, writer, reader, recovery;
//! - [`index`]: memory-mapped index segments and the in-memory tail index;
//! - [`query`]: the cursor algebra and the planner that answer JobQ filters;
//! - [`store`]: the store that ties them together: writes, group commit, snapshots;
//! - [`histogram`]: lock-free fixed-bucket histograms for the store's figures.
//!
//! format-spec/ describes every byte on disk.

pub mod api;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod codec;
pub mod crashpoint;
pub mod error;
pub mod fs;
pub(crate) mod hash;
pub mod histogram;
pub(crate) mod in_order;
pub mod model;

pub use error::{Error, Result};
pub use model::{JobKey, JobState, SpiderKey};
pub mod index;
pub mod log;
pub mod query;
pub mod store;

pub use store::{Durability, Options, Snapshot, Store};
