//! A version of the store's indexes: what one snapshot reads. Index files oldest
//! first, each with its superseded docs, then the tail in memory, then the catalog.
//! Every part is shared between versions and copied only where a write changes it.

use std::sync::Arc;

use crate::index::{DeadSet, IndexSegment, MemSnapshot, Section};
use crate::query::docset::DocId;

use super::catalog::Catalog;

/// An index file and its superseded docs (one set per section).
#[derive(Clone, Debug)]
pub struct SegmentSlot {
    pub seg: Arc<IndexSegment>,
    pub dead: Arc<Vec<DeadSet>>,
}

impl SegmentSlot {
    pub fn new(seg: Arc<IndexSegment>) -> SegmentSlot {
        let n = seg.projects().count();
        SegmentSlot { seg, dead: Arc::new(vec![DeadSet::new(); n]) }
    }

    /// A project's section and its superseded docs.
    pub fn project(&self, project: u32) -> Option<(Section<'_>, &DeadSet)> {
        let i = self.seg.section_index(project)?;
        Some((self.seg.section_at(i), &self.dead[i]))
    }

    /// Mark a doc of a project superseded.
    pub fn kill(&mut self, project: u32, doc: DocId) -> bool {
        match self.seg.section_index(project) {
            Some(i) => Arc::make_mut(&mut self.dead)[i].insert(doc),
            None => false,
        }
    }

    /// Docs not superseded.
    pub fn live_docs(&self) -> u64 {
        self.seg.meta().docs - self.dead.iter().map(|d| d.len()).sum::<u64>()
    }
}

/// Where the current version of a job lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// In the tail: the record's packed log position.
    Mem { loc: u64 },
    /// In index file `slot`, as `doc` of the project's section.
    Segment { slot: usize, doc: DocId, loc: u64 },
}

impl Found {
    pub fn loc(&self) -> u64 {
        match *self {
            Found::Mem { loc } | Found::Segment { loc, .. } => loc,
        }
    }
}

/// One consistent state of the indexes.
#[derive(Clone, Debug, Default)]
pub struct Version {
    pub segments: Arc<Vec<SegmentSlot>>,
    pub mem: MemSnapshot,
    pub catalog: Catalog,
    /// The last log sequence number reflected.
    pub seq: u64,
    /// Keeps segments removed by compaction readable while this version lives.
    pub epoch: Arc<crate::log::reader::LogEpoch>,
}

impl Version {
    /// Projects with at least one job, ascending.
    pub fn projects(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.segments.iter().flat_map(|s| s.seg.projects().collect::<Vec<_>>()).collect();
        out.extend(self.mem.projects().map(|(p, _)| p));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every current job of a project as `(order_seq, packed record position)`,
    /// ascending: the order the jobs entered their states.
    pub fn live_docs(&self, project: u32) -> Vec<(u64, u64)> {
        let mut docs: Vec<(u64, u64)> = Vec::new();
        for slot in self.segments.iter() {
            if let Some((sec, dead)) = slot.project(project) {
                docs.extend((0..sec.len()).filter(|d| !dead.contains(*d)).map(|d| (sec.seq(d), sec.loc(d))));
            }
        }
        if let Some(m) = self.mem.project(project) {
            docs.extend(m.iter().map(|e| (e.order_seq, e.loc)));
        }
        docs.sort_unstable();
        docs
    }

    /// The current version of a job, newest source first.
    pub fn find(&self, project: u32, local: u64) -> Option<Found> {
        if let Some(e) = self.mem.project(project).and_then(|p| p.iter().find(|e| e.local == local)) {
            return Some(Found::Mem { loc: e.loc });
        }
        find_in_segments(&self.segments, project, local)
    }
}

/// The live doc of a key in index files, newest first.
pub fn find_in_segments(segments: &[SegmentSlot], project: u32, local: u64) -> Option<Found> {
    for (slot, s) in segments.iter().enumerate().rev() {
        if let Some((sec, dead)) = s.project(project) {
            if let Some(doc) = sec.find(local) {
                if !dead.contains(doc) {
                    return Some(Found::Segment { slot, doc, loc: sec.loc(doc) });
                }
            }
        }
    }
    None
}
