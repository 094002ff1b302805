//! The writer's state rebuilt from the store's files, as open builds it: the
//! index files of the chain, then the log after the last of them replayed. For
//! a writer whose state holds records the log does not (a cluster leader's
//! batch cut off before it became an entry; a batch cut after the disk filled
//! up, queue.rs), marked `dirty` until this has run.

use super::writer::Writer;
use super::{chain, open, Inner};
use crate::error::Result;
use crate::log::recovery;

/// Rebuild a dirty writer from the index files and the log, as open does; the
/// log writer, the reader and the token map carry over.
pub(crate) fn rebuild(inner: &Inner) -> Result<()> {
    let _maintenance = inner.maint_lock.lock();
    let mut w = inner.writer.lock();
    rebuild_locked(inner, &mut w)
}

/// [`rebuild`] with the maintenance lock and the writer held.
pub(crate) fn rebuild_locked(inner: &Inner, w: &mut Writer) -> Result<()> {
    if !w.dirty {
        return Ok(());
    }
    let fs = &*inner.opts.fs;
    let gen_dir = &inner.gen_dir;
    let first = open::first_segment(fs, gen_dir, w.generation)?;
    let mut report = open::OpenReport::default();
    let mut slots = chain::choose_chain(fs, gen_dir, w.generation, first.first_seq, &mut report)?;
    chain::kill_superseded(&mut slots);
    let (start, start_seq, catalog) = match slots.last() {
        Some(s) => {
            (s.seg.meta().log_end, s.seg.meta().hi_seq + 1, super::catalog::Catalog::from_entries(&s.seg.catalog()))
        }
        None => (
            crate::log::LogPos { segment: first.number, offset: first.data_start() },
            first.first_seq,
            Default::default(),
        ),
    };
    // A cluster node's state is the applied entries; a single node's, the log.
    let applied = if inner.opts.raft_log { w.replay_end } else { w.log_end() };
    let last = slots.last().map(|s| (s.seg.meta().last_frame, s.seg.meta().log_end));
    let mut nw = Writer::new(
        start_seq,
        w.generation,
        gen_dir.clone(),
        slots,
        start_seq,
        catalog,
        w.reader.clone(),
        inner.opts.bulk_entries,
    );
    nw.last_frame = last.map(|l| l.0);
    nw.last_frame_end = last.map(|l| l.1);
    nw.replay_end = start;
    w.tokens.clear();
    nw.tokens = w.tokens.clone();
    for slot in &nw.segments {
        nw.tokens.learn_segment(slot);
    }
    recovery::replay(fs, gen_dir, start, applied, &mut |f| {
        open::replay_frame(&mut nw, f.pos, &f.header, f.payload, false)
    })?;
    nw.replay_end = applied;
    nw.log = w.log.take();
    nw.freeze_at = w.freeze_at;
    nw.epoch = w.epoch.clone();
    nw.writes = w.writes;
    // Compaction cycles that began before the cut start again (they compare it).
    nw.cuts = w.cuts;
    *w = nw;
    if inner.opts.raft_log {
        inner.commit.publish_now(w.version());
    } else {
        // Written frames not yet durable stay unpublished: their sync publishes them.
        super::maintain::publish_if_clean(inner, w);
    }
    Ok(())
}

/// The writer, rebuilt first if a cut batch left it dirty (between the cut and
/// its rebuild, which waits for maintenance, another thread may lock it).
pub(crate) fn clean_writer(inner: &Inner) -> Result<parking_lot::MutexGuard<'_, Writer>> {
    loop {
        let w = inner.writer.lock();
        // A poisoned store keeps its state as it is (reads go on; no write will).
        if !w.dirty || inner.opts.raft_log || inner.commit.check().is_err() {
            return Ok(w);
        }
        drop(w);
        rebuild(inner)?;
    }
}
