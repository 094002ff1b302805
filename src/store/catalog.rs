//! Spiders: per project, names and ids both ways, shared by snapshots and copied
//! per project on change; and, for the writer only, each spider's next job id.
//! Ids are allocated in order and never reused.

use crate::hash::FastMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::codec::record::SpiderEntry;

/// A project's spiders. Most projects have a handful: ids and names in one
/// sorted vector (a search by id, a scan by name), a hash by name only past
/// [`SCAN_SPIDERS`] (a store of many small projects holds them all at open).
#[derive(Clone, Default, Debug)]
struct ProjectSpiders {
    /// (id, name), ascending by id.
    by_id: Vec<(u32, Arc<str>)>,
    by_name: Option<Box<FastMap<Arc<str>, u32>>>,
    max_id: u32,
    /// Each name as a JSON string literal, indexed by id, for ids below
    /// [`JSON_IDS`] (ids are allocated in order: this is all of them in practice).
    json: Vec<Option<Box<[u8]>>>,
}

/// Ids up to this have their name's JSON kept (see [`ProjectSpiders::json`]).
const JSON_IDS: u32 = 1 << 16;
/// Spiders a project's names are scanned for, at most; past it they are hashed.
const SCAN_SPIDERS: usize = 8;

impl ProjectSpiders {
    fn id(&self, name: &str) -> Option<u32> {
        match &self.by_name {
            Some(map) => map.get(name).copied(),
            None => self.by_id.iter().find(|(_, n)| &**n == name).map(|(id, _)| *id),
        }
    }

    fn name(&self, id: u32) -> Option<&Arc<str>> {
        let i = self.by_id.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(&self.by_id[i].1)
    }

    /// Name spider `id` `name` (a name given again to an id replaces the old one).
    fn set(&mut self, id: u32, name: Arc<str>) {
        match self.by_id.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(i) => {
                let old = std::mem::replace(&mut self.by_id[i].1, name.clone());
                if let Some(map) = &mut self.by_name {
                    map.remove(&old);
                }
            }
            Err(i) => self.by_id.insert(i, (id, name.clone())),
        }
        match &mut self.by_name {
            Some(map) => {
                map.insert(name, id);
            }
            None if self.by_id.len() > SCAN_SPIDERS => {
                self.by_name = Some(Box::new(self.by_id.iter().map(|(i, n)| (n.clone(), *i)).collect()));
            }
            None => {}
        }
    }
}

/// Every spider name of every project. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    projects: Arc<FastMap<u32, Arc<ProjectSpiders>>>,
    /// Names this content: a clone keeps it, a change or another catalog gets a new one.
    stamp: u64,
}

/// The next catalog stamp (0 is never given).
fn new_stamp() -> u64 {
    static STAMPS: AtomicU64 = AtomicU64::new(1);
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog { projects: Arc::default(), stamp: new_stamp() }
    }
}

impl Catalog {
    /// Equal stamps, equal spiders (names and ids; next job ids are [`JobIds`]').
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    pub fn id(&self, project: u32, name: &str) -> Option<u32> {
        self.projects.get(&project)?.id(name)
    }

    pub fn name(&self, project: u32, id: u32) -> Option<&Arc<str>> {
        self.projects.get(&project)?.name(id)
    }

    /// The name of spider `id` as a JSON string literal, as a listing row writes
    /// it; `None` for an unknown or a very large id.
    #[inline]
    pub fn name_json(&self, project: u32, id: u32) -> Option<&[u8]> {
        self.projects.get(&project)?.json.get(id as usize)?.as_deref()
    }

    /// Every name of `project` as [`Catalog::name_json`] answers them, indexed by
    /// id (a listing looks its project up once).
    pub fn names_json(&self, project: u32) -> &[Option<Box<[u8]>>] {
        self.projects.get(&project).map_or(&[], |p| &p.json[..])
    }

    /// The id the next new spider of `project` gets; None once id `u32::MAX` is
    /// taken (an id is never given twice, and 0 is no id).
    pub fn next_spider_id(&self, project: u32) -> Option<u32> {
        self.projects.get(&project).map_or(Some(1), |p| p.max_id.checked_add(1))
    }

    /// How many new spiders `project` may still get.
    pub fn spider_ids_left(&self, project: u32) -> u64 {
        u64::from(u32::MAX) - u64::from(self.projects.get(&project).map_or(0, |p| p.max_id))
    }

    pub fn register(&mut self, project: u32, id: u32, name: &str) {
        self.stamp = new_stamp();
        let projects = Arc::make_mut(&mut self.projects);
        let p = Arc::make_mut(projects.entry(project).or_default());
        let name: Arc<str> = Arc::from(name);
        if id < JSON_IDS {
            let i = id as usize;
            if p.json.len() <= i {
                p.json.resize(i + 1, None);
            }
            let mut json = Vec::with_capacity(name.len() + 2);
            crate::model::doc::write_json_str(&mut json, &name);
            p.json[i] = Some(json.into_boxed_slice());
        }
        p.set(id, name);
        p.max_id = p.max_id.max(id);
    }

    /// Spiders over all projects.
    pub fn len(&self) -> usize {
        self.projects.values().map(|p| p.by_id.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every spider with its next job id, sorted.
    pub fn entries(&self, ids: &JobIds) -> Vec<SpiderEntry> {
        let mut out: Vec<SpiderEntry> = self
            .projects
            .iter()
            .flat_map(|(p, s)| {
                s.by_id.iter().map(move |(id, name)| SpiderEntry {
                    project: *p,
                    spider: *id,
                    next_job: ids.next(*p, *id),
                    name: name.clone(),
                })
            })
            .collect();
        out.sort_by_key(|e| (e.project, e.spider));
        out
    }

    /// Names and next job ids from catalog entries.
    pub fn from_entries(entries: &[SpiderEntry]) -> (Catalog, JobIds) {
        let mut c = Catalog::default();
        let mut ids = JobIds::default();
        for e in entries {
            c.register(e.project, e.spider, &e.name);
            ids.note(e.project, e.spider, e.next_job.saturating_sub(1));
        }
        (c, ids)
    }
}

/// The next job id of each spider (the writer's).
#[derive(Clone, Default, Debug)]
pub struct JobIds(FastMap<(u32, u32), u32>);

impl JobIds {
    /// The next job id of a spider.
    pub fn next(&self, project: u32, spider: u32) -> u32 {
        self.0.get(&(project, spider)).copied().unwrap_or(1)
    }

    /// Record that job id `job` exists, so it is never allocated again.
    pub fn note(&mut self, project: u32, spider: u32, job: u32) {
        let next = self.0.entry((project, spider)).or_insert(1);
        *next = (*next).max(job.saturating_add(1));
    }

    /// How many job ids a spider may still give: those from its next id up to
    /// `u32::MAX - 1`. `u32::MAX` itself is never given (a next id of `u32::MAX`
    /// means all are taken, and a catalog records no next id past it).
    pub fn left(&self, project: u32, spider: u32) -> u64 {
        u64::from(u32::MAX - self.next(project, spider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and ids both ways, for few spiders (scanned) and many (hashed), ids
    /// in any order, a name given again to its id, and the JSON of each name.
    #[test]
    fn spiders_both_ways_few_and_many() {
        let mut c = Catalog::default();
        let ids: Vec<u32> = vec![5, 1, 3, 40, 2, 9, 7, 8, 6, 4, 12, 11, 10, 70_000];
        for (n, id) in ids.iter().enumerate() {
            c.register(3, *id, &format!("s{id}"));
            for id in &ids[..=n] {
                let name = format!("s{id}");
                assert_eq!(c.id(3, &name), Some(*id), "after {} spiders", n + 1);
                assert_eq!(c.name(3, *id).map(|n| &**n), Some(name.as_str()));
            }
            assert_eq!(c.len(), n + 1);
        }
        assert_eq!((c.id(3, "nope"), c.name(3, 13), c.id(4, "s1")), (None, None, None));
        assert_eq!(c.name_json(3, 40), Some(&b"\"s40\""[..]));
        assert_eq!(c.name_json(3, 70_000), None, "past the ids whose JSON is kept");
        assert_eq!(c.next_spider_id(3), Some(70_001));
        let e = c.entries(&JobIds::default());
        assert!(e.windows(2).all(|w| w[0].spider < w[1].spider) && e.len() == ids.len());
        // A name given again to its id replaces the old one, scanned or hashed.
        for project in [3, 5] {
            c.register(project, 1, "first");
            c.register(project, 1, "renamed");
            assert_eq!((c.id(project, "first"), c.id(project, "renamed")), (None, Some(1)));
        }
    }
}
