//! The JobQ filter and paging parameters, parsed from a query string.

use crate::error::{Error, Result};
use crate::model::{Job, JobKey, JobState};

/// Which jobs a count, list or summary is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Spider name.
    pub spider: Option<String>,
    /// Any of these states; empty means every state.
    pub states: Vec<JobState>,
    /// `startts <= ts < endts`.
    pub startts: Option<u64>,
    pub endts: Option<u64>,
    /// At least one of these tags (OR).
    pub has_tags: Vec<String>,
    /// None of these tags (AND).
    pub lacks_tags: Vec<String>,
    /// Only these jobs (when `Some`).
    pub keys: Option<Vec<JobKey>>,
}

/// Paging of a listing: `stop` first, then `start`, then `count`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paging {
    pub count: u64,
    pub start: u64,
    pub stop: Option<JobKey>,
}

/// A parsed request: filter, paging and requested metadata fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub paging: Paging,
    pub jobmeta: Option<Vec<String>>,
}

/// Defaults and limits of a listing.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub default_count: u64,
    pub max_count: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { default_count: 1000, max_count: 1000 }
    }
}

impl Filter {
    /// Does a job version pass the filter? (`spider` is given as the job's spider name.)
    pub fn matches(&self, job: &Job, spider_name: &str) -> bool {
        let ts = job.ts();
        self.spider.as_ref().is_none_or(|s| s == spider_name)
            && (self.states.is_empty() || self.states.contains(&job.state))
            && self.startts.is_none_or(|t| ts >= t)
            && self.endts.is_none_or(|t| ts < t)
            && (self.has_tags.is_empty() || self.has_tags.iter().any(|t| job.tags.contains(t)))
            && !self.lacks_tags.iter().any(|t| job.tags.contains(t))
            && self.keys.as_ref().is_none_or(|k| k.contains(&job.key))
    }
}

fn number(name: &str, v: &str) -> Result<u64> {
    v.trim().parse::<u64>().map_err(|_| Error::field(name, format!("must be a non-negative integer, got {v:?}")))
}

/// Parse query parameters for `project`. `default_state` applies when no `state`
/// is given (finished for count and list); unknown parameters are ignored.
pub fn parse_query(
    params: &[(String, String)],
    project: u32,
    default_state: Option<JobState>,
    limits: Limits,
) -> Result<Query> {
    let mut q = Query::default();
    let mut count = None;
    for (name, v) in params {
        match name.as_str() {
            "spider" => q.filter.spider = Some(v.clone()),
            "state" => {
                for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let st: JobState = s.parse()?;
                    if !q.filter.states.contains(&st) {
                        q.filter.states.push(st);
                    }
                }
            }
            "startts" => q.filter.startts = Some(number("startts", v)?),
            "endts" => q.filter.endts = Some(number("endts", v)?),
            "has_tag" => q.filter.has_tags.push(v.clone()),
            "lacks_tag" => q.filter.lacks_tags.push(v.clone()),
            "count" => count = Some(number("count", v)?),
            "start" => q.paging.start = number("start", v)?,
            "stop" => {
                let k: JobKey = v.parse().map_err(|e: Error| Error::field("stop", e.to_string()))?;
                q.paging.stop = (k.project == project).then_some(k);
            }
            "key" => {
                let k: JobKey = v.parse().map_err(|e: Error| Error::field("key", e.to_string()))?;
                if k.project != project {
                    return Err(Error::field("key", format!("{k} belongs to project {}, not {project}", k.project)));
                }
                q.filter.keys.get_or_insert_with(Vec::new).push(k);
            }
            "jobmeta" => q
                .jobmeta
                .get_or_insert_with(Vec::new)
                .extend(v.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from)),
            _ => {}
        }
    }
    if q.filter.states.is_empty() {
        q.filter.states.extend(default_state);
    }
    q.paging.count = count.unwrap_or(limits.default_count).min(limits.max_count);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parses_and_defaults() {
        let q = parse_query(
            &p(&[("has_tag", "a"), ("has_tag", "b"), ("count", "5000"), ("stop", "53/1/2")]),
            53,
            Some(JobState::Finished),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(q.filter.states, vec![JobState::Finished]);
        assert_eq!(q.filter.has_tags, vec!["a", "b"]);
        assert_eq!(q.paging.count, 1000);
        assert_eq!(q.paging.stop, Some(JobKey::new(53, 1, 2)));
        let q = parse_query(
            &p(&[("state", "pending,running"), ("stop", "54/1/1")]),
            53,
            Some(JobState::Finished),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(q.filter.states, vec![JobState::Pending, JobState::Running]);
        assert_eq!(q.paging.stop, None);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            ("state", "done"),
            ("startts", "x"),
            ("endts", "-1"),
            ("count", "1.5"),
            ("start", ""),
            ("stop", "1/2"),
            ("key", "54/1/1"),
            ("key", "a"),
        ] {
            assert!(parse_query(&p(&[bad]), 53, None, Limits::default()).is_err(), "{bad:?}");
        }
    }
}
