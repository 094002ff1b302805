//! The in-memory index of the log's tail: the newest version of each job written
//! since the last index file, per project. Snapshots share it; a write copies only
//! the 64-entry chunk it changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::DocEntry;
use crate::hash::FastMap;

const CHUNK: usize = 64;

/// One project's tail entries, in no particular order.
#[derive(Clone, Default, Debug)]
pub struct MemProject {
    chunks: Vec<Arc<Vec<DocEntry>>>,
    len: usize,
}

impl MemProject {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &DocEntry> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    fn get(&self, i: usize) -> &DocEntry {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn set(&mut self, i: usize, e: DocEntry) -> DocEntry {
        let chunk = Arc::make_mut(&mut self.chunks[i / CHUNK]);
        std::mem::replace(&mut chunk[i % CHUNK], e)
    }

    fn push(&mut self, e: DocEntry) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(self.chunks.last_mut().expect("a chunk was just ensured")).push(e);
        self.len += 1;
        self.len - 1
    }
}

/// What readers see of the tail: cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct MemSnapshot {
    projects: Arc<BTreeMap<u32, Arc<MemProject>>>,
    len: usize,
}

impl MemSnapshot {
    pub fn project(&self, project: u32) -> Option<&MemProject> {
        self.projects.get(&project).map(|p| &**p)
    }

    /// Entries over all projects.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn projects(&self) -> impl Iterator<Item = (u32, &MemProject)> {
        self.projects.iter().map(|(p, m)| (*p, &**m))
    }
}

/// The writer's tail index: the shared snapshot plus a key lookup table.
#[derive(Default, Debug)]
pub struct MemTable {
    snap: MemSnapshot,
    keys: FastMap<(u32, u64), usize>,
}

impl MemTable {
    pub fn snapshot(&self) -> MemSnapshot {
        self.snap.clone()
    }

    pub fn len(&self) -> usize {
        self.snap.len
    }

    pub fn is_empty(&self) -> bool {
        self.snap.len == 0
    }

    pub fn get(&self, project: u32, local: u64) -> Option<&DocEntry> {
        let i = *self.keys.get(&(project, local))?;
        Some(self.snap.projects[&project].get(i))
    }

    /// Insert or replace the version of a job; returns the version replaced.
    pub fn upsert(&mut self, e: DocEntry) -> Option<DocEntry> {
        let projects = Arc::make_mut(&mut self.snap.projects);
        let p = Arc::make_mut(projects.entry(e.project).or_default());
        match self.keys.get(&(e.project, e.local)) {
            Some(&i) => Some(p.set(i, e)),
            None => {
                let key = (e.project, e.local);
                let i = p.push(e);
                self.keys.insert(key, i);
                self.snap.len += 1;
                None
            }
        }
    }

    /// Keep only the entries `keep` accepts; returns how many went.
    pub fn retain(&mut self, keep: impl Fn(&DocEntry) -> bool) -> usize {
        let all = self.take_all();
        let before = all.len();
        for e in all.into_iter().filter(|e| keep(e)) {
            self.upsert(e);
        }
        before - self.len()
    }

    /// Every entry, leaving the table empty.
    pub fn take_all(&mut self) -> Vec<DocEntry> {
        let snap = std::mem::take(&mut self.snap);
        self.keys.clear();
        let mut out = Vec::with_capacity(snap.len);
        for p in snap.projects.values() {
            out.extend(p.iter().cloned());
        }
        out
    }
}
