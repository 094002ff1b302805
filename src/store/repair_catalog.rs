//! What `jobq repair` keeps of the catalog: every spider (id and name) and every
//! job id it can still find — in the index files (each ends with a copy of the
//! catalog, and the cut sets some of them aside), in the spider and catalog
//! frames of the cut bytes, and in the keys of the job versions it drops. After
//! the cut they are written back as one catalog frame, so that no spider is
//! forgotten and no job id is given again (ids are never reused, also not those
//! of jobs a repair lost).

use std::path::Path;
use std::sync::Arc;

use super::reclaim::{durable, submit};
use super::{Inner, Store};
use crate::codec::docz::Dict;
use crate::codec::record::SpiderEntry;
use crate::error::Result;
use crate::fs::FileSystem;
use crate::hash::FastMap;
use crate::index::{format, IndexSegment};
use crate::model::JobKey;

/// What a repair knows of spiders and job ids, saved before its cut until its
/// catalog frame is durable (layout.md).
pub(crate) const PENDING: &str = "REPAIR";

/// Spiders and the next job id of each, as found; merged by the highest id.
#[derive(Default, Debug)]
pub(crate) struct Found {
    spiders: FastMap<(u32, u32), (Option<String>, u32)>,
    /// The dictionaries the index files hold copies of (memory only: for a log
    /// whose dictionary frames were in segments lost before it).
    dicts: Vec<Arc<Dict>>,
}

impl Found {
    pub fn spider(&mut self, e: &SpiderEntry) {
        self.merge((e.project, e.spider), Some(&e.name), e.next_job);
    }

    /// A spider's name (the first one known stays) and next job id (the highest).
    fn merge(&mut self, key: (u32, u32), name: Option<&str>, next_job: u32) {
        let v = self.spiders.entry(key).or_insert((None, 1));
        if let (None, Some(n)) = (&v.0, name) {
            v.0 = Some(n.to_string());
        }
        v.1 = v.1.max(next_job);
    }

    pub fn job(&mut self, key: JobKey) {
        let v = self.spiders.entry((key.project, key.spider)).or_insert((None, 1));
        v.1 = v.1.max(key.job.saturating_add(1));
    }

    /// The catalogs of every index file of `gen_dir` that opens.
    pub fn index_files(&mut self, fs: &dyn FileSystem, gen_dir: &Path) -> Result<()> {
        let names = fs.read_dir(gen_dir).map_err(|e| crate::Error::io("list", gen_dir, e))?;
        for name in names.iter().filter(|n| format::parse_name(n).is_some()) {
            let path = gen_dir.join(name);
            let Ok(bytes) = fs.map(&path) else { continue };
            let Ok(seg) = IndexSegment::open(bytes, &path, true) else { continue };
            for e in seg.catalog() {
                self.spider(&e);
            }
            for d in seg.dicts().unwrap_or_default() {
                self.dict(d);
            }
        }
        Ok(())
    }

    /// Whether any dictionary was found (none: the log needs none back).
    pub fn has_dicts(&self) -> bool {
        !self.dicts.is_empty()
    }

    /// A dictionary found (the first of an id stays).
    pub fn dict(&mut self, d: Arc<Dict>) {
        if !self.dicts.iter().any(|x| x.id == d.id) {
            self.dicts.push(d);
        }
    }

    /// Merge in what an interrupted repair saved in `DIR/REPAIR` (none: nothing).
    pub fn load_pending(&mut self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = dir.join(PENDING);
        let bytes = match crate::fs::read_all(fs, &path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(crate::Error::io("read", &path, e)),
        };
        let mut offset = 0u64;
        for line in bytes.split(|b| *b == b'\n') {
            let bad = || crate::Error::corrupt(&path, offset, "not a line of an interrupted repair's catalog");
            if !line.is_empty() {
                let v: serde_json::Value = serde_json::from_slice(line).map_err(|_| bad())?;
                let num = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad);
                self.merge((num("project")?, num("spider")?), v["name"].as_str(), num("next_job")?);
            }
            offset += line.len() as u64 + 1;
        }
        Ok(())
    }

    /// Save what this run knows to `DIR/REPAIR` (new-file protocol), before it
    /// forgets anything (a cut, index files removed): a run after a crash reads
    /// it back, so the catalog frame it appends still keeps every id.
    pub fn save_pending(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let mut out = String::new();
        let mut keys: Vec<_> = self.spiders.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let (name, next) = &self.spiders[&k];
            let line = serde_json::json!({"project": k.0, "spider": k.1, "next_job": next, "name": name});
            out += &line.to_string();
            out.push('\n');
        }
        crate::fs::publish_file(fs, dir, PENDING, out.as_bytes())
            .map_err(|e| crate::Error::io("publish", dir.join(PENDING), e))
    }

    /// The catalog frame is durable: `DIR/REPAIR` goes.
    pub fn clear_pending(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = dir.join(PENDING);
        match fs.remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            r => r.map_err(|e| crate::Error::io("remove", &path, e))?,
        }
        // IMPORTANT: fsync folder, so the removal is durable.
        fs.sync_dir(dir).map_err(|e| crate::Error::io("fsync dir", dir, e))
    }

    /// Append a dictionary frame for each dictionary found (in the index files,
    /// in the cut bytes) that the log does not hold (`held`: its frames' ids) at
    /// the log's end `(pos, next_seq)`, durably: the log then decodes without the
    /// files. Returns the ids appended.
    pub fn append_dicts(
        &self,
        fsys: &Arc<dyn FileSystem>,
        gen_dir: &Path,
        generation: u64,
        (end, next_seq): (crate::log::LogPos, u64),
        segment_bytes: u64,
        held: &[u32],
    ) -> Result<Vec<u32>> {
        let missing: Vec<&Arc<Dict>> = self.dicts.iter().filter(|d| !held.contains(&d.id)).collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let mut log =
            crate::log::writer::LogWriter::resume(fsys.clone(), gen_dir, generation, end, next_seq, segment_bytes)?;
        let mut payload = Vec::new();
        for d in &missing {
            payload.clear();
            crate::codec::docz::encode_dict(d, &mut payload);
            log.append(crate::codec::frame::FrameKind::Dict, 0, 1, next_seq.saturating_sub(1), &payload)?;
        }
        log.seal()?;
        Ok(missing.iter().map(|d| d.id).collect())
    }

    /// Write back what the store no longer knows, as one durable catalog frame;
    /// returns how many spiders and job ids it restored.
    pub fn restore(self, store: &Store) -> Result<usize> {
        let inner: std::sync::Arc<Inner> = store.inner();
        let op = Box::new(move |w: &mut super::writer::Writer, ctx: &super::ops::Ctx<'_>| {
            let mut restored = 0usize;
            for ((project, spider), (name, next)) in &self.spiders {
                let known = w.catalog.name(*project, *spider).is_some();
                match name {
                    Some(n) if !known && w.catalog.id(*project, n).is_none() => {
                        w.register_spider(*project, *spider, n);
                        restored += 1;
                    }
                    _ => {}
                }
                if *next > w.job_ids.next(*project, *spider) && w.catalog.name(*project, *spider).is_some() {
                    w.job_ids.note(*project, *spider, next - 1);
                    restored += 1;
                }
            }
            if restored > 0 {
                w.append_catalog(ctx.durable_seq)?;
            }
            Ok(Box::new(restored) as super::queue::Erased)
        });
        let restored = *submit(&inner, op)?.downcast::<usize>().expect("the count");
        durable(&inner)?;
        Ok(restored)
    }
}
