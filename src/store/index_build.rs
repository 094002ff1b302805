//! Building one index file from entries read back from others (a merge, a trim by
//! online compaction), in bounded memory: up to `bulk_entries` entries are built in
//! memory; past that they are sorted in runs spilled to a temp file and merged into
//! the file piece by piece (the import's external sort, index/spill.rs), so that a
//! merge of big files never holds them whole. Both ways make the same bytes.

use std::path::PathBuf;

use super::{maintain, Inner};
use crate::codec::record::SpiderEntry;
use crate::error::{Error, Result};
use crate::index::spill::{Repeats, Runs};
use crate::index::{build, spill_build, DocEntry, IndexSegment, SegmentMeta};

/// Entries per spilled run, at most (as the import's).
const RUN_DOCS: usize = 1 << 18;

/// Where the entries go while they come.
enum Sink {
    Memory(Vec<DocEntry>),
    Spill { runs: Option<Box<Runs>>, run: Vec<DocEntry>, run_len: usize },
}

/// The entries of one index file being built.
pub(crate) struct IndexBuild {
    sink: Sink,
}

impl IndexBuild {
    /// A build of about `docs` entries (an upper bound); `what` names its temp
    /// run file, which must be unique among the builds that may run at once.
    pub fn new(inner: &Inner, docs: u64, what: &str) -> Result<IndexBuild> {
        let bulk = inner.opts.bulk_entries.max(1);
        if docs <= bulk as u64 {
            return Ok(IndexBuild { sink: Sink::Memory(Vec::new()) });
        }
        let path: PathBuf = inner.gen_dir.join(format!("{what}.runs.tmp"));
        let runs = Box::new(Runs::create(inner.opts.fs.clone(), &path)?);
        let run_len = bulk.min(RUN_DOCS);
        Ok(IndexBuild { sink: Sink::Spill { runs: Some(runs), run: Vec::new(), run_len } })
    }

    /// Add entries (any order).
    pub fn push(&mut self, docs: Vec<DocEntry>) -> Result<()> {
        match &mut self.sink {
            Sink::Memory(all) => all.extend(docs),
            Sink::Spill { runs, run, run_len } => {
                run.extend(docs);
                if run.len() >= *run_len {
                    spill(runs, std::mem::take(run))?;
                }
            }
        }
        Ok(())
    }

    /// Build the file `meta` names and publish it (temp, fsync, rename, fsync the
    /// directory) once the log under it is durable; the file, mapped.
    pub fn publish(mut self, inner: &Inner, meta: SegmentMeta, catalog: &[SpiderEntry]) -> Result<IndexSegment> {
        let path = inner.gen_dir.join(meta.file_name());
        match &mut self.sink {
            Sink::Memory(all) => {
                let image = build::build(std::mem::take(all), meta, catalog, &inner.reader.dicts.all());
                let seg = IndexSegment::open(crate::fs::MappedBytes::from_vec(image), &path, false)?;
                maintain::write_file(inner, &seg)
            }
            Sink::Spill { runs, run, .. } => {
                if let Some(r) = runs.as_mut() {
                    r.stage(std::mem::take(run));
                    r.keep_last_run();
                }
                let runs = runs.take().ok_or_else(|| Error::corrupt(&path, 0, "an index build was published twice"))?;
                if inner.commit.durable_seq() < meta.hi_seq {
                    // IMPORTANT: an index is never ahead of the durable log.
                    if let Err(e) = inner.commit.wait_durable(meta.hi_seq) {
                        (*runs).discard();
                        return Err(e);
                    }
                }
                let dicts = inner.reader.dicts.all();
                let path = spill_build::build_file(*runs, &Repeats::default(), meta, catalog, &dicts, &inner.gen_dir)?;
                let fsys = &*inner.opts.fs;
                let bytes = fsys.map(&path).map_err(|e| Error::io("map", &path, e))?;
                IndexSegment::open(bytes, &path, true)
            }
        }
    }
}

fn spill(runs: &mut Option<Box<Runs>>, docs: Vec<DocEntry>) -> Result<()> {
    match runs.as_mut() {
        Some(r) => r.add_run(docs),
        None => Ok(()),
    }
}

impl Drop for IndexBuild {
    /// A build that was not published removes its run file.
    fn drop(&mut self) {
        if let Sink::Spill { runs, .. } = &mut self.sink {
            if let Some(r) = runs.take() {
                (*r).discard();
            }
        }
    }
}
