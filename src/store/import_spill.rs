//! The import's spilling thread: it sorts the index entries the appender hands
//! it in runs and spills them to a run file (index/spill.rs), made on the first
//! run; an import that does not commit stops it and removes the file.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::index::spill::Runs;
use crate::index::DocEntry;

/// Batches of entries waiting for the spilling thread at most.
const SORT_SLACK: usize = 4;

/// The thread that sorts runs of entries and spills them to a run file, made
/// on the first run (index/spill.rs).
pub(crate) struct Spiller {
    tx: Option<mpsc::SyncSender<Vec<DocEntry>>>,
    handle: Option<JoinHandle<Result<Option<Runs>>>>,
}

impl Spiller {
    /// Entries come in batches: each is staged as it comes (index/spill.rs), and
    /// a run is sorted and written once `run_len` entries are staged; the last
    /// is sorted at the end and kept in memory. Only that last sort follows the
    /// import's parse.
    pub fn start(fs: Arc<dyn FileSystem>, path: PathBuf, run_len: usize) -> Result<Spiller> {
        // Room for the batches the appender hands over while a run is sorted
        // and written (about 50 ms for 2^18 entries), so that it does not stall.
        let (tx, rx) = mpsc::sync_channel::<Vec<DocEntry>>(SORT_SLACK);
        let handle = std::thread::Builder::new()
            .name("jobq-import-spill".into())
            .spawn(move || {
                let mut runs: Option<Runs> = None;
                for docs in rx {
                    let r = match &mut runs {
                        Some(r) => r,
                        None => runs.insert(Runs::create(fs.clone(), &path)?),
                    };
                    r.stage(docs);
                    if r.staged() >= run_len {
                        if let Err(e) = r.write_run() {
                            return Err(discarded(runs, e));
                        }
                    }
                }
                if let Some(r) = &mut runs {
                    // The last run goes to the merge from memory, not through the file.
                    r.keep_last_run();
                }
                Ok(runs)
            })
            .map_err(|e| Error::io("spawn", "the import's spilling thread", e))?;
        Ok(Spiller { tx: Some(tx), handle: Some(handle) })
    }

    pub fn send(&mut self, docs: Vec<DocEntry>) -> Result<()> {
        match self.tx.as_ref().map(|tx| tx.send(docs)) {
            Some(Ok(())) => Ok(()),
            // The thread stopped: it says why.
            _ => self.finish().map(|r| r.map_or((), Runs::discard)),
        }
    }

    /// Wait for the runs sent so far to be spilled.
    pub fn finish(&mut self) -> Result<Option<Runs>> {
        drop(self.tx.take());
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(Error::io("spill", "the import's run file", std::io::Error::other("the spilling thread stopped"))),
        }
    }
}

/// `e`, once the run file is removed.
fn discarded(runs: Option<Runs>, e: Error) -> Error {
    if let Some(r) = runs {
        r.discard();
    }
    e
}

impl Drop for Spiller {
    /// An import that did not commit: stop the thread, remove the run file.
    fn drop(&mut self) {
        if self.handle.is_some() {
            if let Ok(Some(runs)) = self.finish() {
                runs.discard();
            }
        }
    }
}

/// The index entries of a committed import: spilled, or (a small import) in memory.
pub(crate) enum Pending {
    Runs(Box<Runs>),
    Docs(Vec<DocEntry>),
}
