//! Which changes a change feed answers: a predicate on one job version as its log
//! record holds it, tested as the feed reads the log (no index is consulted).
//!
//! The parameters are count's and list's (`spider`, `state`, `has_tag`,
//! `has_tag_all`, `lacks_tag`, `close_reason`), parsed by [`parse_query`] with its
//! rules and meaning the same: a `close_reason` is compared as the indexes hold
//! it ([`crate::model::close_reason_term`]).

use super::filter::close_reason_passes;
use super::{parse_query, Limits};
use crate::codec::record::JobView;
use crate::error::Result;
use crate::model::JobState;

/// Which job versions a feed reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Spider name.
    pub spider: Option<String>,
    /// The version is in one of these states; empty means any.
    pub states: Vec<JobState>,
    /// At least one of these tags (OR).
    pub has_tags: Vec<String>,
    /// Every one of these tags (AND).
    pub has_tags_all: Vec<String>,
    /// None of these tags.
    pub lacks_tags: Vec<String>,
    /// The version's `close_reason` term is one of these (OR).
    pub close_reasons: Vec<String>,
}

impl ChangeFilter {
    /// The filter of a request's parameters (others are ignored).
    pub fn parse(params: &[(String, String)], project: u32) -> Result<ChangeFilter> {
        let shared: Vec<(String, String)> = params
            .iter()
            .filter(|(n, _)| {
                matches!(n.as_str(), "spider" | "state" | "has_tag" | "has_tag_all" | "lacks_tag" | "close_reason")
            })
            .cloned()
            .collect();
        let f = parse_query(&shared, project, None, Limits::default())?.filter;
        Ok(ChangeFilter {
            spider: f.spider,
            states: f.states,
            has_tags: f.has_tags,
            lacks_tags: f.lacks_tags,
            has_tags_all: f.has_tags_all,
            close_reasons: f.close_reasons,
        })
    }

    /// Does the version `v` (of a spider named `spider_name`) pass?
    pub fn matches(&self, v: &JobView<'_>, spider_name: &str) -> bool {
        let has = |t: &String| v.tags.contains(&t.as_str());
        self.spider.as_ref().is_none_or(|s| s == spider_name)
            && (self.states.is_empty() || self.states.contains(&v.state))
            && (self.has_tags.is_empty() || self.has_tags.iter().any(has))
            && self.has_tags_all.iter().all(has)
            && !self.lacks_tags.iter().any(has)
            && (self.close_reasons.is_empty() || close_reason_passes(&self.close_reasons, v.close_reason().as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, JobKey, MetaDoc};

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn job(state: JobState, tags: &[&str], doc: &str) -> Job {
        Job {
            key: JobKey::new(53, 1, 1),
            state,
            priority: 2,
            times: [Some(1), Some(2), Some(3), Some(4)],
            order_seq: 1,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            unique: None,
            meta: MetaDoc::parse(doc).unwrap(),
        }
    }

    fn passes(params: &[(&str, &str)], j: &Job) -> bool {
        ChangeFilter::parse(&p(params), 53).unwrap().matches(&JobView::of(j), "s1")
    }

    #[test]
    fn each_parameter_as_documented() {
        let j = job(JobState::Finished, &["a", "b"], r#"{"close_reason":"fail\u0065d","x":1}"#);
        assert!(passes(&[], &j), "no parameter: every state, every job");
        assert!(passes(&[("spider", "s1"), ("state", "running,finished")], &j));
        assert!(!passes(&[("spider", "s2")], &j));
        assert!(!passes(&[("state", "pending")], &j));
        assert!(passes(&[("has_tag", "z"), ("has_tag", "b")], &j), "has_tag: any");
        assert!(!passes(&[("has_tag", "z")], &j));
        assert!(passes(&[("has_tag_all", "a"), ("has_tag_all", "b")], &j), "has_tag_all: every");
        assert!(!passes(&[("has_tag_all", "a"), ("has_tag_all", "z")], &j));
        assert!(!passes(&[("lacks_tag", "z"), ("lacks_tag", "a")], &j), "lacks_tag: none of them");
        assert!(passes(&[("close_reason", "cancelled"), ("close_reason", "failed")], &j), "escapes decoded");
        assert!(!passes(&[("close_reason", "cancelled")], &j));
        // As count and list: another value's JSON text, an empty string.
        let number = job(JobState::Finished, &[], r#"{"close_reason":404}"#);
        assert!(passes(&[("close_reason", "404")], &number), "404 and \"404\" share a term");
        assert!(passes(&[("close_reason", "")], &job(JobState::Finished, &[], r#"{"close_reason":""}"#)));
        assert!(passes(&[("has_tag_all", "a"), ("has_tag", "b"), ("lacks_tag", "c"), ("close_reason", "failed")], &j));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (name, value) in [
            ("state", "done"),
            ("spider", ""),
            ("has_tag", ""),
            ("has_tag_all", ""),
            ("close_reason", &"x".repeat(1025)),
        ] {
            let e = ChangeFilter::parse(&p(&[(name, value)]), 53).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
        let many: Vec<(String, String)> =
            (0..=super::super::MAX_CLOSE_REASONS).map(|i| ("close_reason".into(), format!("r{i}"))).collect();
        assert!(ChangeFilter::parse(&many, 53).unwrap_err().to_string().contains("at most 100"));
        let repeated = vec![("has_tag_all".to_string(), "a".to_string()); 500];
        assert_eq!(ChangeFilter::parse(&repeated, 53).unwrap().has_tags_all, ["a"]);
    }
}
