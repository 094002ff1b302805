//! Structured inputs decoded from the fuzz bytes with `arbitrary`.

use arbitrary::{Arbitrary, Result, Unstructured};
use jobq::codec::record::SpiderEntry;
use jobq::model::{Job, JobKey, JobState, MetaDoc};

/// Short strings over a small alphabet (so that values collide), or any string.
#[derive(Debug, Clone)]
pub struct Word(pub String);

impl<'a> Arbitrary<'a> for Word {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(3, 4)? {
            let n = u.int_in_range(0..=4)?;
            let mut s = String::new();
            for _ in 0..n {
                s.push(*u.choose(&['a', 'b', 'é', '"', '\\', '/', '\u{1}', '😀', ' ', '%'])?);
            }
            Ok(Word(s))
        } else {
            let s: String = u.arbitrary()?;
            Ok(Word(s.chars().take(64).collect()))
        }
    }
}

pub fn state(code: u8) -> JobState {
    JobState::ALL[usize::from(code % 4)]
}

/// A job version as the encoder takes it. Zero ids and a missing state time are
/// allowed: the decoder must refuse those.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbJob {
    pub project: u32,
    pub spider: u32,
    pub job: u32,
    pub state: u8,
    pub priority: i64,
    pub times: [Option<u64>; 4],
    pub order_seq: u64,
    pub tags: Vec<Word>,
    pub unique: Option<Word>,
    pub meta: Vec<(Word, ArbValue)>,
}

/// A JSON value text.
#[derive(Debug, Clone)]
pub struct ArbValue(pub String);

impl<'a> Arbitrary<'a> for ArbValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const V: [&str; 10] =
            ["1", "-0", "2.50", "1e400", "123456789012345678901234567890", "null", "true", "\"x\\u00e9\"", "[1,{\"k\":[]}]", "{}"];
        if u.ratio(1, 4)? {
            let s: String = u.arbitrary()?;
            Ok(ArbValue(serde_json::to_string(&s).expect("a string serialises")))
        } else {
            Ok(ArbValue(u.choose(&V)?.to_string()))
        }
    }
}

impl ArbJob {
    pub fn to_job(&self) -> Job {
        let mut tags: Vec<String> = self.tags.iter().map(|t| t.0.clone()).collect();
        tags.truncate(u16::MAX as usize);
        let raws: Vec<(String, Box<serde_json::value::RawValue>)> = self
            .meta
            .iter()
            .map(|(n, v)| (n.0.clone(), serde_json::value::RawValue::from_string(v.0.clone()).expect("valid JSON")))
            .collect();
        Job {
            key: JobKey::new(self.project, self.spider, self.job),
            state: state(self.state),
            priority: self.priority,
            times: self.times,
            order_seq: self.order_seq,
            tags,
            unique: self.unique.as_ref().map(|u| u.0.clone()),
            meta: MetaDoc::from_fields(raws.iter().map(|(n, v)| (n.as_str(), &**v))),
        }
    }

    /// Would the decoder accept this job?
    pub fn valid(&self) -> bool {
        let j = self.to_job();
        j.key.project != 0 && j.key.spider != 0 && j.key.job != 0 && j.times[j.state as usize].is_some()
    }
}

/// A catalog or spider frame entry.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbSpider {
    pub project: u32,
    pub spider: u32,
    pub next_job: u32,
    pub name: Word,
}

impl ArbSpider {
    pub fn entry(&self) -> SpiderEntry {
        SpiderEntry { project: self.project, spider: self.spider, next_job: self.next_job, name: self.name.0.as_str().into() }
    }

    pub fn valid_in_catalog(&self) -> bool {
        self.project != 0 && self.spider != 0 && self.next_job != 0 && !self.name.0.is_empty()
    }

    pub fn valid_as_spider(&self) -> bool {
        self.project != 0 && self.spider != 0 && !self.name.0.is_empty()
    }
}

/// Small ids (so that keys and terms collide), or any id.
pub fn small_or_any(u: &mut Unstructured<'_>, max: u32) -> Result<u32> {
    if u.ratio(7, 8)? {
        u.int_in_range(1..=max)
    } else {
        u.arbitrary()
    }
}
