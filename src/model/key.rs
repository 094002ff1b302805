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
    // One pass: digits checked and summed (saturating: the range is checked last).
    let mut n = 0u64;
    for b in part.bytes() {
        if !b.is_ascii_digit() {
            return Err(bad("components must be decimal integers"));
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(bad("components must not have leading zeros"));
    }
    match u32::try_from(n) {
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
        // The two slashes found in one pass over the bytes (every import line has a key).
        let (mut slashes, mut n) = ([0usize; 2], 0);
        for (i, b) in s.bytes().enumerate() {
            if b == b'/' {
                if n == 2 {
                    n = 3;
                    break;
                }
                slashes[n] = i;
                n += 1;
            }
        }
        if n != 2 {
            return Err(Error::InvalidKey { input: s.to_string(), reason: "expected project/spider/job" });
        }
        let (p, sp, j) = (&s[..slashes[0]], &s[slashes[0] + 1..slashes[1]], &s[slashes[1] + 1..]);
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

    /// The key as `str::split` and `u32::from_str` read it (the parser before
    /// the one-pass one): the same key or the same reason, for any text.
    fn by_split(s: &str) -> Result<JobKey, &'static str> {
        let parts: Vec<&str> = s.split('/').collect();
        let [p, sp, j] = parts[..] else { return Err("expected project/spider/job") };
        let id = |part: &str| -> Result<u32, &'static str> {
            if part.is_empty() {
                return Err("an empty component");
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err("components must be decimal integers");
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err("components must not have leading zeros");
            }
            match part.parse::<u32>() {
                Ok(0) => Err("components must be positive"),
                Ok(n) => Ok(n),
                Err(_) => Err("a component is larger than 4294967295"),
            }
        };
        Ok(JobKey { project: id(p)?, spider: id(sp)?, job: id(j)? })
    }

    proptest::proptest! {
        #[test]
        fn one_pass_reads_keys_as_split_does(s in "[0-9/a ]{0,24}|[1-9][0-9]{0,11}/[0-9]{1,3}/[0-9]{1,12}") {
            let got = s.parse::<JobKey>().map_err(|e| match e {
                Error::InvalidKey { reason, .. } => reason,
                other => panic!("{other}"),
            });
            proptest::prop_assert_eq!(got, by_split(&s));
        }
    }
}
