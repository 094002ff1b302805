//! The JobQ filter and paging parameters, parsed from a query string.

use crate::error::{Error, Result};
use crate::hash::FastSet;
use crate::model::{Job, JobKey, JobState, MAX_CLOSE_REASON};
use crate::store::fields::{MAX_NAME, MAX_TAG};

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
    /// Every one of these tags (AND).
    pub has_tags_all: Vec<String>,
    /// None of these tags (AND).
    pub lacks_tags: Vec<String>,
    /// A `close_reason` indexed under one of these terms (OR; see
    /// [`crate::model::close_reason_term`]).
    pub close_reasons: Vec<String>,
    /// Only these jobs (when `Some`).
    pub keys: Option<Vec<JobKey>>,
}

/// Paging of a listing: `stop` and `startafter` first, then `start`, then `count`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paging {
    pub count: u64,
    pub start: u64,
    /// Only jobs newer than this one (a key naming no job of the project is ignored).
    pub stop: Option<JobKey>,
    /// Only jobs older than this one, which must be a job of the project: the
    /// listing continues after it.
    pub startafter: Option<JobKey>,
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
            && job.state != JobState::Purged
            && (self.states.is_empty() || self.states.contains(&job.state))
            && self.startts.is_none_or(|t| ts >= t)
            && self.endts.is_none_or(|t| ts < t)
            && (self.has_tags.is_empty() || self.has_tags.iter().any(|t| job.tags.contains(t)))
            && self.has_tags_all.iter().all(|t| job.tags.contains(t))
            && !self.lacks_tags.iter().any(|t| job.tags.contains(t))
            && (self.close_reasons.is_empty() || self.matches_close_reason(job.close_reason().as_deref()))
            && self.keys.as_ref().is_none_or(|k| k.contains(&job.key))
    }

    /// Does a job with this close_reason term pass the `close_reason` filter?
    pub fn matches_close_reason(&self, term: Option<&str>) -> bool {
        close_reason_passes(&self.close_reasons, term)
    }
}

/// Does a close_reason term pass a `close_reason` filter of these values (none:
/// every job)?
pub fn close_reason_passes(wanted: &[String], term: Option<&str>) -> bool {
    wanted.is_empty() || term.is_some_and(|t| wanted.iter().any(|c| c == t))
}

/// Most distinct `key` values of one request (list, count, jobsummary).
pub const MAX_KEYS: usize = 1000;
/// Most distinct `has_tag` values, `has_tag_all` values, and `lacks_tag` values,
/// of one request.
pub const MAX_TAG_FILTERS: usize = 100;
/// Most distinct `close_reason` values of one request.
pub const MAX_CLOSE_REASONS: usize = 100;
/// Most distinct `jobmeta` names of one request.
pub const MAX_JOBMETA: usize = 256;

pub(crate) fn number(name: &str, v: &str) -> Result<u64> {
    let t = v.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map_err(|_| Error::field(name, format!("{t} is too large (at most {})", u64::MAX)));
    }
    Err(Error::field(name, format!("must be a non-negative integer, got {v:?}")))
}

/// A filter value that names something: never empty (an empty one would match
/// nothing, or for `state` fall back to the default, without saying so).
fn named<'a>(name: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() {
        return Err(Error::field(name, "is empty (give a value or leave the parameter out)"));
    }
    Ok(v)
}

/// A spider name or a tag to filter by: named, and no longer than one can be
/// (a longer one would match nothing without saying why).
fn at_most<'a>(name: &str, v: &'a str, max: usize) -> Result<&'a str> {
    if v.len() > max {
        return Err(Error::field(name, format!("is {} bytes, at most {max}", v.len())));
    }
    named(name, v)
}

/// Distinct values in first-occurrence order, at most `max` of them.
struct Distinct<T> {
    name: &'static str,
    max: usize,
    seen: FastSet<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Distinct<T> {
    fn new(name: &'static str, max: usize) -> Self {
        Distinct { name, max, seen: FastSet::default() }
    }

    /// Append `v` to `out` unless it is there already.
    fn push(&mut self, v: T, out: &mut Vec<T>) -> Result<()> {
        if self.seen.insert(v.clone()) {
            if self.seen.len() > self.max {
                return Err(Error::field(self.name, format!("at most {} distinct values per request", self.max)));
            }
            out.push(v);
        }
        Ok(())
    }
}

/// Parse query parameters for `project`. `default_state` applies when no `state`
/// is given (finished for count and list); unknown parameters are ignored.
/// Repeated values count once, in the order first given.
pub fn parse_query(
    params: &[(String, String)],
    project: u32,
    default_state: Option<JobState>,
    limits: Limits,
) -> Result<Query> {
    let mut q = Query::default();
    let mut count = None;
    let mut has_tags = Distinct::new("has_tag", MAX_TAG_FILTERS);
    let mut lacks_tags = Distinct::new("lacks_tag", MAX_TAG_FILTERS);
    let mut all_tags = Distinct::new("has_tag_all", MAX_TAG_FILTERS);
    let mut reasons = Distinct::new("close_reason", MAX_CLOSE_REASONS);
    let mut keys = Distinct::new("key", MAX_KEYS);
    let mut jobmeta = Distinct::new("jobmeta", MAX_JOBMETA);
    for (name, v) in params {
        match name.as_str() {
            "spider" => q.filter.spider = Some(at_most("spider", v, MAX_NAME)?.to_string()),
            "state" => {
                for s in v.split(',').map(str::trim) {
                    let st: JobState = named("state", s)?.parse()?;
                    if !q.filter.states.contains(&st) {
                        q.filter.states.push(st);
                    }
                }
            }
            "startts" => q.filter.startts = Some(number("startts", v)?),
            "endts" => q.filter.endts = Some(number("endts", v)?),
            "has_tag" => has_tags.push(at_most("has_tag", v, MAX_TAG)?.to_string(), &mut q.filter.has_tags)?,
            "lacks_tag" => lacks_tags.push(at_most("lacks_tag", v, MAX_TAG)?.to_string(), &mut q.filter.lacks_tags)?,
            "has_tag_all" => {
                all_tags.push(at_most("has_tag_all", v, MAX_TAG)?.to_string(), &mut q.filter.has_tags_all)?
            }
            "close_reason" => {
                if v.len() > MAX_CLOSE_REASON {
                    let why = format!("at most {MAX_CLOSE_REASON} bytes (longer close_reason values are not indexed)");
                    return Err(Error::field("close_reason", why));
                }
                // Empty is a value like another: a job may close with reason "".
                reasons.push(v.to_string(), &mut q.filter.close_reasons)?
            }
            "count" => count = Some(number("count", v)?),
            "start" => q.paging.start = number("start", v)?,
            "stop" => {
                let k: JobKey = v.parse().map_err(|e: Error| Error::field("stop", e.to_string()))?;
                q.paging.stop = (k.project == project).then_some(k);
            }
            "startafter" => {
                let k: JobKey = v.parse().map_err(|e: Error| Error::field("startafter", e.to_string()))?;
                if k.project != project {
                    return Err(Error::field("startafter", format!("{k} is not a job of project {project}")));
                }
                q.paging.startafter = Some(k);
            }
            "key" => {
                let k: JobKey = v.parse().map_err(|e: Error| Error::field("key", e.to_string()))?;
                if k.project != project {
                    return Err(Error::field("key", format!("{k} belongs to project {}, not {project}", k.project)));
                }
                keys.push(k, q.filter.keys.get_or_insert_with(Vec::new))?;
            }
            "jobmeta" => {
                let out = q.jobmeta.get_or_insert_with(Vec::new);
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    jobmeta.push(f.to_string(), out)?;
                }
            }
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
            ("state", ""),
            ("state", "pending,"),
            ("spider", ""),
            ("has_tag", ""),
            ("lacks_tag", ""),
            ("has_tag_all", ""),
            ("startafter", ""),
            ("startafter", "53/1"),
            ("startafter", "54/1/1"),
        ] {
            assert!(parse_query(&p(&[bad]), 53, None, Limits::default()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_too_large_say_so() {
        for name in ["count", "start", "startts", "endts"] {
            let e = parse_query(&p(&[(name, "99999999999999999999")]), 53, None, Limits::default()).unwrap_err();
            assert!(e.to_string().contains("too large"), "{name}: {e}");
            let e = parse_query(&p(&[(name, "-1")]), 53, None, Limits::default()).unwrap_err();
            assert!(e.to_string().contains("non-negative integer"), "{name}: {e}");
        }
        let q = parse_query(&p(&[("startts", "18446744073709551615")]), 53, None, Limits::default()).unwrap();
        assert_eq!(q.filter.startts, Some(u64::MAX));
    }

    #[test]
    fn repeated_values_count_once_up_to_a_limit() {
        let mut pairs =
            vec![("key", "53/1/2"), ("key", "53/1/1"), ("key", "53/1/2"), ("jobmeta", "a,b"), ("jobmeta", "a")];
        pairs.extend([("has_tag", "x"), ("has_tag", "x"), ("lacks_tag", "y"), ("lacks_tag", "y")]);
        let q = parse_query(&p(&pairs), 53, None, Limits::default()).unwrap();
        assert_eq!(q.filter.keys, Some(vec![JobKey::new(53, 1, 2), JobKey::new(53, 1, 1)]));
        assert_eq!(q.jobmeta, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!((q.filter.has_tags.len(), q.filter.lacks_tags.len()), (1, 1));
        // 5,000 repeats of one key are one key; the limits count distinct values.
        let repeats: Vec<(String, String)> = vec![("key".into(), "53/1/1".into()); 5000];
        assert_eq!(parse_query(&repeats, 53, None, Limits::default()).unwrap().filter.keys.unwrap().len(), 1);
        for (name, max) in [
            ("key", MAX_KEYS),
            ("has_tag", MAX_TAG_FILTERS),
            ("lacks_tag", MAX_TAG_FILTERS),
            ("has_tag_all", MAX_TAG_FILTERS),
            ("close_reason", MAX_CLOSE_REASONS),
            ("jobmeta", MAX_JOBMETA),
        ] {
            let value = |i: usize| if name == "key" { format!("53/1/{}", i + 1) } else { format!("v{i}") };
            let at_most: Vec<(String, String)> = (0..max).map(|i| (name.to_string(), value(i))).collect();
            assert!(parse_query(&at_most, 53, None, Limits::default()).is_ok(), "{name}");
            let over: Vec<(String, String)> = (0..=max).map(|i| (name.to_string(), value(i))).collect();
            let e = parse_query(&over, 53, None, Limits::default()).unwrap_err().to_string();
            assert!(e.contains(&format!("at most {max} distinct values")), "{name}: {e}");
        }
    }

    #[test]
    fn close_reason_has_tag_all_and_startafter() {
        let pairs = [
            ("close_reason", "failed"),
            ("close_reason", "404"),
            ("close_reason", "failed"),
            ("has_tag_all", "a"),
            ("has_tag_all", "b"),
            ("has_tag_all", "a"),
            ("startafter", "53/2/7"),
        ];
        let q = parse_query(&p(&pairs), 53, None, Limits::default()).unwrap();
        assert_eq!(q.filter.close_reasons, vec!["failed", "404"]);
        let empty = parse_query(&p(&[("close_reason", "")]), 53, None, Limits::default()).unwrap();
        assert_eq!(empty.filter.close_reasons, vec![""], "a job may close with an empty reason");
        assert_eq!(q.filter.has_tags_all, vec!["a", "b"]);
        assert_eq!(q.paging.startafter, Some(JobKey::new(53, 2, 7)));
        let e = parse_query(&p(&[("startafter", "54/1/1")]), 53, None, Limits::default()).unwrap_err().to_string();
        assert!(e.contains("startafter") && e.contains("54/1/1"), "{e}");
        let longest = "x".repeat(MAX_CLOSE_REASON);
        assert!(parse_query(&p(&[("close_reason", &longest)]), 53, None, Limits::default()).is_ok());
        let longer = "x".repeat(MAX_CLOSE_REASON + 1);
        let e = parse_query(&p(&[("close_reason", &longer)]), 53, None, Limits::default()).unwrap_err().to_string();
        assert!(e.contains(&format!("at most {MAX_CLOSE_REASON} bytes")), "{e}");
    }

    #[test]
    fn tags_and_spiders_longer_than_any_are_refused() {
        for (name, max) in
            [("has_tag", MAX_TAG), ("lacks_tag", MAX_TAG), ("has_tag_all", MAX_TAG), ("spider", MAX_NAME)]
        {
            let longest = "x".repeat(max);
            assert!(parse_query(&p(&[(name, &longest)]), 53, None, Limits::default()).is_ok(), "{name}");
            let longer = "x".repeat(max + 1);
            let e = parse_query(&p(&[(name, &longer)]), 53, None, Limits::default()).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(&format!("at most {max}")), "{e}");
        }
    }
}
