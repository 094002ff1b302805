//! Export: every job as a JSON line of the import format, each project's spider
//! catalog first, so that importing the output reproduces every answer.

use std::io::Write;

use super::import_line::write_catalog_line;
use super::Snapshot;
use crate::codec::record::SpiderEntry;
use crate::error::{Error, Result};

/// Write every project's (or one project's) catalog and jobs as JSON lines: per
/// project, ascending, first a line per spider (`{"spider_catalog": ...}`: id,
/// name, next job id), then the jobs, whole metadata plus `key`, in the order they
/// entered their states, so that importing the output reproduces every answer.
/// `catalog` is the store's, sorted. Returns the number of jobs.
fn export(snap: &Snapshot, catalog: &[SpiderEntry], project: Option<u32>, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    let mut line = Vec::with_capacity(1024);
    let mut emit = |line: &mut Vec<u8>| {
        line.push(b'\n');
        out.write_all(line).map_err(|e| Error::io("write", "export output", e))
    };
    let mut projects = snap.version.projects();
    projects.extend(catalog.iter().map(|e| e.project));
    projects.sort_unstable();
    projects.dedup();
    for p in projects.into_iter().filter(|p| project.is_none_or(|q| q == *p)) {
        for e in catalog.iter().filter(|e| e.project == p) {
            line.clear();
            write_catalog_line(e, &mut line);
            emit(&mut line)?;
        }
        for (_, loc) in snap.version.live_docs(p) {
            let job = snap.reader.read(loc)?;
            if job.state == crate::model::JobState::Purged {
                continue;
            }
            line.clear();
            snap.render_metadata(&job, true, &mut line);
            emit(&mut line)?;
            n += 1;
        }
    }
    Ok(n)
}

impl super::Store {
    /// Write the catalog and every job (or one project's) as JSON lines, the
    /// import format: importing them into an empty store reproduces every answer.
    pub fn export(&self, project: Option<u32>, out: &mut dyn Write) -> Result<u64> {
        // The catalog (with next job ids, which snapshots do not carry) and the
        // snapshot together: the writer's catalog may be ahead of the snapshot by
        // writes not yet durable, which only reserves what they will hold.
        let (snap, catalog) = {
            let inner = self.inner();
            let w = super::rebuild::clean_writer(&inner)?;
            (self.snapshot(), w.catalog.entries(&w.job_ids))
        };
        export(&snap, &catalog, project, out)
    }
}
