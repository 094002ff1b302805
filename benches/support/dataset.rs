//! A deterministic, seeded generator of JobQ jobs in the import format (one JSON
//! object a line), shared by the criterion benches and `benches/compare`.
//!
//! The shape: about 200 projects, project 1 holding 30% of the jobs and the rest
//! Zipf-distributed; Zipf-distributed spiders per project and tags (a vocabulary
//! of 500, 0-4 per job); states 2% pending, 1% running, 92% finished, 5% deleted;
//! `ts` over two years, in roughly increasing order through the file (as an
//! export writes it: state-entry order, with up to an hour of jitter); 3-6 extra
//! metadata fields, about 300 bytes a line. Jobs are generated one at a time,
//! so any number can be streamed.

use std::io::{self, Read, Write};

/// Bumped whenever the generated data changes (cached stores are keyed by it).
pub const GEN_VERSION: u32 = 2;
/// 2023-11-14T22:13:20Z, the earliest `ts`.
pub const T0: u64 = 1_700_000_000_000;
/// Two years of milliseconds.
pub const SPAN_MS: u64 = 2 * 365 * 86_400_000;
pub const PROJECTS: u32 = 200;
pub const TAGS: u32 = 500;
/// The project holding 30% of the jobs.
pub const BIG_PROJECT: u32 = 1;
pub const STATES: [&str; 4] = ["pending", "running", "finished", "deleted"];
const TIME_FIELDS: [&str; 4] = ["pending_time", "running_time", "finished_time", "deleted_time"];
const HOUR: u64 = 3_600_000;

/// SplitMix64.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Log-uniform in [lo, hi).
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + (b - a) * self.f64()).exp() as u64
    }
}

/// Zipf(s) over ranks 0..n, by inverse CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|c| *c /= sum);
        Zipf { cdf }
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Probability of rank `k`.
    pub fn p(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }
}

/// One generated job.
#[derive(Clone, Debug)]
pub struct GenJob {
    /// Position in the file, from 0: the write order of the import.
    pub seq: u64,
    pub project: u32,
    pub spider: u32,
    pub job: u32,
    /// Index into [`STATES`].
    pub state: usize,
    pub times: [Option<u64>; 4],
    pub priority: i64,
    /// Tag ranks, distinct, in the order drawn.
    pub tags: Vec<u16>,
    /// Seeds the extra metadata fields (drawn only when written).
    pub meta_seed: u64,
}

impl GenJob {
    pub fn ts(&self) -> u64 {
        self.times[self.state].expect("the current state has its time")
    }

    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.project, self.spider, self.job)
    }

    /// Append the job as one import line (with the newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut r = Rng::new(self.meta_seed);
        let _ = write!(
            out,
            r#"{{"key":"{}","spider":"{}","state":"{}","priority":{}"#,
            self.key(),
            spider_name(self.spider),
            STATES[self.state],
            self.priority
        );
        for (i, t) in self.times.iter().enumerate() {
            if let Some(t) = t {
                let _ = write!(out, r#","{}":{t}"#, TIME_FIELDS[i]);
            }
        }
        if !self.tags.is_empty() {
            out.extend_from_slice(br#","tags":["#);
            for (i, t) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "\"{}\"", tag_name(u32::from(*t)));
            }
            out.push(b']');
        }
        write_extras(self, &mut r, out);
        out.extend_from_slice(b"}\n");
    }
}

const VERSIONS: [&str; 6] = ["1.0.3", "1.4.27-py3", "2.0.0", "2.1.5-hotfix", "3.2.0", "0.9.12"];
const REASONS: [&str; 4] = ["finished", "finished", "finished", "closespider_timeout"];
const HOSTS: [&str; 5] = ["shop", "news", "catalog", "forum", "jobs"];

/// 3-6 extra fields: units, version and spider_args always, then some of
/// scheduled_by, close_reason (finished jobs), items/pages counters.
fn write_extras(j: &GenJob, r: &mut Rng, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        r#","units":{},"version":"{}""#,
        1 + u64::from(r.below(10) == 0),
        VERSIONS[r.below(VERSIONS.len() as u64) as usize]
    );
    let extra = 1 + r.below(4);
    let _ = write!(
        out,
        r#","spider_args":{{"url":"https://{}-{}.example.com/c/{}","pages":{}}}"#,
        HOSTS[r.below(5) as usize],
        r.below(5000),
        r.below(100_000),
        10 * (1 + r.below(100))
    );
    if extra >= 2 {
        let _ = write!(out, r#","scheduled_by":"user{}@example.org""#, r.below(300));
    }
    if extra >= 3 {
        if j.state >= 2 {
            let _ = write!(out, r#","close_reason":"{}""#, REASONS[r.below(4) as usize]);
        } else {
            let _ = write!(out, r#","dash_job":{}"#, r.below(1 << 30));
        }
    }
    if extra >= 4 {
        let _ = write!(out, r#","stats":{{"items":{},"responses":{}}}"#, r.below(100_000), r.below(1_000_000));
    }
}

pub fn spider_name(id: u32) -> String {
    format!("spider-{id}")
}

pub fn tag_name(rank: u32) -> String {
    format!("tag-{rank}")
}

/// The number of spiders of a project (ids 1..=n).
pub fn spiders_of(project: u32) -> u32 {
    (300.0 / f64::from(project).sqrt()).max(3.0) as u32
}

/// N jobs from a seed.
pub struct Dataset {
    pub jobs: u64,
    pub seed: u64,
    /// Projects 2..=PROJECTS (rank 0 is project 2).
    others: Zipf,
    /// Per project (index project-1).
    spiders: Vec<Zipf>,
    pub tags: Zipf,
}

impl Dataset {
    pub fn new(jobs: u64, seed: u64) -> Dataset {
        Dataset {
            jobs,
            seed,
            others: Zipf::new(PROJECTS as usize - 1, 1.0),
            spiders: (1..=PROJECTS).map(|p| Zipf::new(spiders_of(p) as usize, 1.1)).collect(),
            tags: Zipf::new(TAGS as usize, 1.0),
        }
    }

    /// Fraction of jobs in project `p` (expected).
    pub fn project_share(&self, p: u32) -> f64 {
        if p == BIG_PROJECT {
            0.3
        } else {
            0.7 * self.others.p(p as usize - 2)
        }
    }

    pub fn iter(&self) -> Jobs<'_> {
        let next_job = (1..=PROJECTS).map(|p| vec![0; spiders_of(p) as usize]).collect();
        Jobs { ds: self, rng: Rng::new(self.seed), seq: 0, next_job }
    }

    /// The import file as a byte stream.
    pub fn reader(&self) -> JsonReader<'_> {
        JsonReader { jobs: self.iter(), buf: Vec::with_capacity(1 << 16), pos: 0 }
    }

    /// Write the whole import file; returns its size in bytes.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<u64> {
        io::copy(&mut self.reader(), out)
    }
}

/// The jobs of a dataset, in file order.
pub struct Jobs<'a> {
    ds: &'a Dataset,
    rng: Rng,
    seq: u64,
    next_job: Vec<Vec<u32>>,
}

impl Iterator for Jobs<'_> {
    type Item = GenJob;

    fn next(&mut self) -> Option<GenJob> {
        if self.seq >= self.ds.jobs {
            return None;
        }
        let (ds, r) = (self.ds, &mut self.rng);
        let project = if r.f64() < 0.3 { BIG_PROJECT } else { 2 + ds.others.sample(r) as u32 };
        let spider = 1 + ds.spiders[project as usize - 1].sample(r) as u32;
        let slot = &mut self.next_job[project as usize - 1][spider as usize - 1];
        *slot += 1;
        let job = *slot;
        let u = r.f64();
        let state = if u < 0.02 {
            0
        } else if u < 0.03 {
            1
        } else if u < 0.95 {
            2
        } else {
            3
        };
        // Roughly increasing through the file, up to an hour either way.
        let base = T0 + HOUR + (u128::from(self.seq) * u128::from(SPAN_MS - 2 * HOUR) / u128::from(ds.jobs)) as u64;
        let ts = base + r.below(2 * HOUR) - HOUR;
        let mut times = [None; 4];
        times[state] = Some(ts);
        let mut t = ts;
        if state == 3 {
            t -= r.log_uniform(HOUR, 30 * 24 * HOUR);
            times[2] = Some(t);
        }
        if state >= 2 {
            t -= r.log_uniform(60_000, 6 * HOUR);
            times[1] = Some(t);
        }
        if state >= 1 {
            times[0] = Some(t - r.below(600_000));
        }
        let priority = if r.below(5) == 0 { r.below(5) as i64 } else { 2 };
        // 0..=4 tags: 20%, 30%, 25%, 15%, 10%.
        let n = match r.f64() {
            u if u < 0.2 => 0,
            u if u < 0.5 => 1,
            u if u < 0.75 => 2,
            u if u < 0.9 => 3,
            _ => 4,
        };
        let mut tags: Vec<u16> = Vec::with_capacity(n);
        while tags.len() < n {
            let t = ds.tags.sample(r) as u16;
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let meta_seed = r.next_u64();
        let seq = self.seq;
        self.seq += 1;
        Some(GenJob { seq, project, spider, job, state, times, priority, tags, meta_seed })
    }
}

/// Streams the import lines of a dataset through `Read`.
pub struct JsonReader<'a> {
    jobs: Jobs<'a>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for JsonReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            while self.buf.len() < (1 << 16) - 1024 {
                match self.jobs.next() {
                    Some(j) => j.write_json(&mut self.buf),
                    None => break,
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
