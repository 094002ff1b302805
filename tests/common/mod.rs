#![allow(dead_code)]
pub mod model;

use jobq::model::JobKey;
use jobq::query::{Filter, Paging};
use jobq::Store;
use model::MPush;

/// A push line as the API takes it.
pub fn push_json(l: &MPush) -> String {
    let mut o = format!("{{\"spider\":{:?},\"state\":\"{}\"", l.spider, l.state);
    if let Some(p) = l.priority {
        o += &format!(",\"priority\":{p}");
    }
    if !l.tags.is_empty() {
        o += &format!(",\"tags\":{}", serde_json::to_string(&l.tags).unwrap());
    }
    if let Some(u) = &l.unique {
        o += &format!(",\"unique\":{u:?}");
    }
    if let Some((n, v)) = &l.field {
        o += &format!(",{n:?}:{v}");
    }
    o + "}"
}

/// Assert that the store holds exactly the model's jobs, in the model's order.
pub fn assert_store_is(store: &Store, m: &model::Model, context: &str) {
    let snap = store.snapshot();
    let all = Paging { count: 1_000_000, start: 0, stop: None, startafter: None };
    let mut projects: Vec<u32> = m.jobs.keys().map(|k| k.project).collect();
    projects.extend([1, 2]);
    projects.sort_unstable();
    projects.dedup();
    for p in projects {
        let got: Vec<JobKey> =
            snap.list(p, &Filter::default(), &all).unwrap().iter().map(|h| JobKey::from_local(p, h.local)).collect();
        assert_eq!(got, m.list(p, &Filter::default(), &all), "{context}: jobs of project {p}");
    }
    for (key, want) in &m.jobs {
        let j = snap.get(*key).unwrap().unwrap_or_else(|| panic!("{context}: {key} missing"));
        assert_eq!(
            (j.state, j.priority, j.times, &j.tags),
            (want.state, want.priority, want.times, &want.tags),
            "{context}: {key}"
        );
    }
}

/// Copy the directory tree `from` to `to` (a fixture, before a test changes it).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
