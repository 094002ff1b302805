//! The store's first dictionary, trained while it serves: once it holds
//! [`TRAIN_AT`] live jobs and no dictionary, the maintenance thread samples their
//! documents (outside the writer lock), trains a dictionary and appends its frame
//! through the write queue, like any write. From then on the writer packs every
//! document it writes; older records stay text until `jobq compact`.
//!
//! The frame precedes every record packed with it in the log, and recovery only
//! cuts a suffix, so a record that survives a crash has its dictionary.

use super::queue::{self, Erased};
use super::{maintain, Inner};
use crate::codec::docz;
use crate::error::Result;

/// Live jobs a store holds before it trains its first dictionary.
pub const TRAIN_AT: u64 = 10_000;

/// Train and append the first dictionary if it is due; whether one was added.
pub(crate) fn train_if_due(inner: &Inner) -> Result<bool> {
    if inner.opts.read_only || !inner.reader.dicts.is_empty() || inner.commit.check().is_err() {
        return Ok(false);
    }
    // A cluster follower's write would be refused: it learns the leader's.
    if super::reclaim_role::role(inner) == super::reclaim_role::Role::Follower {
        return Ok(false);
    }
    let version = inner.commit.published();
    let live: u64 = version.segments.iter().map(|s| s.live_docs()).sum::<u64>() + version.mem.len() as u64;
    if live < TRAIN_AT {
        return Ok(false);
    }
    let projects = version.projects();
    let Some(dict) = super::compact::train_dict(inner, &version, &projects, live)? else {
        return Ok(false);
    };
    let mut payload = Vec::new();
    docz::encode_dict(&dict, &mut payload);
    let op: queue::Op = Box::new(move |w, ctx| {
        // Another writer (an import) may have added one meanwhile: keep it.
        if !w.reader.dicts.is_empty() {
            return Ok(Box::new(false) as Erased);
        }
        w.append_dict(&payload, ctx.durable_seq).map(|()| Box::new(true) as Erased)
    });
    let (r, froze) = inner.queue.submit(inner, queue::Request::new(None, op));
    if froze {
        maintain::after_freeze(inner)?;
    }
    Ok(*r?.downcast::<bool>().expect("the dictionary write answers a bool"))
}
