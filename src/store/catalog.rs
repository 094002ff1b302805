//! Spiders: per project, names and ids both ways. Ids are allocated in order and
//! never reused; each spider also has the next job id to allocate.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::record::SpiderEntry;

#[derive(Clone, Default, Debug)]
struct ProjectSpiders {
    by_name: HashMap<Arc<str>, u32>,
    by_id: HashMap<u32, Arc<str>>,
    max_id: u32,
}

/// Every spider of every project.
#[derive(Clone, Default, Debug)]
pub struct Catalog {
    projects: HashMap<u32, ProjectSpiders>,
    next_job: HashMap<(u32, u32), u32>,
}

impl Catalog {
    pub fn from_entries(entries: &[SpiderEntry]) -> Catalog {
        let mut c = Catalog::default();
        for e in entries {
            c.register(e.project, e.spider, &e.name);
            c.note_job(e.project, e.spider, e.next_job.saturating_sub(1));
        }
        c
    }

    /// Every spider with its next job id, sorted.
    pub fn entries(&self) -> Vec<SpiderEntry> {
        let mut out: Vec<SpiderEntry> = self
            .projects
            .iter()
            .flat_map(|(p, s)| {
                s.by_id.iter().map(move |(id, name)| SpiderEntry {
                    project: *p,
                    spider: *id,
                    next_job: self.next_job(*p, *id),
                    name: name.to_string(),
                })
            })
            .collect();
        out.sort_by_key(|e| (e.project, e.spider));
        out
    }

    pub fn id(&self, project: u32, name: &str) -> Option<u32> {
        self.projects.get(&project)?.by_name.get(name).copied()
    }

    pub fn name(&self, project: u32, id: u32) -> Option<&Arc<str>> {
        self.projects.get(&project)?.by_id.get(&id)
    }

    /// The id the next new spider of `project` gets.
    pub fn next_spider_id(&self, project: u32) -> u32 {
        self.projects.get(&project).map_or(1, |p| p.max_id + 1)
    }

    pub fn register(&mut self, project: u32, id: u32, name: &str) {
        let p = self.projects.entry(project).or_default();
        let name: Arc<str> = Arc::from(name);
        p.by_name.insert(name.clone(), id);
        p.by_id.insert(id, name);
        p.max_id = p.max_id.max(id);
    }

    /// The next job id of a spider.
    pub fn next_job(&self, project: u32, spider: u32) -> u32 {
        self.next_job.get(&(project, spider)).copied().unwrap_or(1)
    }

    /// Record that job id `job` exists, so it is never allocated again.
    pub fn note_job(&mut self, project: u32, spider: u32, job: u32) {
        let next = self.next_job.entry((project, spider)).or_insert(1);
        *next = (*next).max(job.saturating_add(1));
    }

    /// Spiders over all projects.
    pub fn len(&self) -> usize {
        self.projects.values().map(|p| p.by_id.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
