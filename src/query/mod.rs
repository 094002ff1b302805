//! The query algebra: cursors over doc ids, their intersection, union and
//! exclusion, and the planner that turns a JobQ filter into a cursor tree.

mod blocked;
pub mod changes;
pub mod docset;
pub mod exec;
pub mod filter;
pub mod ops;
pub mod plan;
mod skip;
#[cfg(test)]
mod words_tests;

pub use changes::ChangeFilter;
pub use exec::Hit;
pub use filter::{
    parse_query, Filter, Limits, Paging, Query, MAX_CLOSE_REASONS, MAX_JOBMETA, MAX_KEYS, MAX_TAG_FILTERS,
};
