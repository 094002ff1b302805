//! Job keys: `project/spider/job`, three positive integers.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A job's key: project id, spider id (per project), job id (per project and spider).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub project: u32,
    pub spider: u32,
    pub job: u32,
}

/// `project/spider`: every job of one spider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiderKey {
    pub project: u32,
    pub spider: u32,
}

fn parse_id(part: &str, input: &str) -> Result<u32, Error> {
    let bad = |reason| Error::InvalidKey { input: input.to_string(), reason };
    if part.is_empty() {
        return Err(bad("an empty component"));
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("components must be decimal integers"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(bad("components must not have leading zeros"));
    }
    match part.parse::<u32>() {
        Ok(0) => Err(bad("components must be positive")),
        Ok(n) => Ok(n),
        Err(_) => Err(bad("a component is larger than 4294967295")),
    }
}

impl JobKey {
    pub fn new(project: u32, spider: u32, job: u32) -> JobKey {
        JobKey { project, spider, job }
    }

    /// The spider part of this key.
    pub fn spider_key(&self) -> SpiderKey {
        SpiderKey { project: self.project, spider: self.spider }
    }

    /// `spider << 32 | job`: the key within its project, ordered like the key.
    pub fn local(&self) -> u64 {
        (u64::from(self.spider) << 32) | u64::from(self.job)
    }

    pub fn from_local(project: u32, local: u64) -> JobKey {
        JobKey { project, spider: (local >> 32) as u32, job: local as u32 }
    }
}

impl FromStr for JobKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobKey, Error> {
        let mut parts = s.split('/');
        let (Some(p), Some(sp), Some(j), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidKey { input: s.to_string(), reason: "expected project/spider/job" });
        };
        Ok(JobKey { project: parse_id(p, s)?, spider: parse_id(sp, s)?, job: parse_id(j, s)? })
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.project, self.spider, self.job)
    }
}

impl FromStr for SpiderKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<SpiderKey, Error> {
        let mut parts = s.split('/');
        let (Some(p), Some(sp), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidKey { input: s.to_string(), reason: "expected project/spider" });
        };
        Ok(SpiderKey { project: parse_id(p, s)?, spider: parse_id(sp, s)? })
    }
}

impl fmt::Display for SpiderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.spider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let k: JobKey = "53/7/81".parse().unwrap();
        assert_eq!(k, JobKey::new(53, 7, 81));
        assert_eq!(k.to_string(), "53/7/81");
        assert_eq!(JobKey::from_local(53, k.local()), k);
        assert_eq!("53/7".parse::<SpiderKey>().unwrap().to_string(), "53/7");
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "53",
            "53/7",
            "53/7/81/1",
            "53//81",
            "a/7/81",
            "53/7/-1",
            "53/7/0",
            "0/1/1",
            "053/7/81",
            "53/7/81 ",
            " 53/7/81",
            "53/7/4294967296",
            "53/7/+1",
            "53/7/1.0",
            "５/1/1",
        ] {
            let err = bad.parse::<JobKey>().unwrap_err();
            assert!(err.to_string().contains("invalid job key"), "{bad}: {err}");
        }
    }
}
